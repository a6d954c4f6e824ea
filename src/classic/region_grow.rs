//! Region growing: the voxels connected to a seed through voxels whose value lies in a range.

use super::components::flood;
use super::{ClassicError, Connectivity, Range, check_three_d};
use crate::volume::{Volume, Voxel};
use crate::with_voxels;

/// The region of voxels with values in `range` connected to `seed` (6- or 26-connected).
pub fn region_grow(image: &Volume, seed: [usize; 3], range: Range, connectivity: Connectivity) -> Result<Vec<bool>, ClassicError> {
    check_three_d(image)?;
    let g = &image.geometry;
    if !g.contains(seed) {
        return Err(ClassicError::SeedOutside { seed, dims: g.dims });
    }
    let start = g.linear_index(seed);
    let value = image.data.get_f64(start);
    if !range.contains(value) {
        return Err(ClassicError::SeedNotInRange { value, lo: range.lo, hi: range.hi });
    }
    let mut region = vec![false; g.voxel_count()];
    with_voxels!(&image.data, v => {
        flood(g.dims, connectivity, [start], |p| range.contains(v[p].to_f64()), &mut region);
    });
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, VolumeMeta, VoxelBuffer};

    #[test]
    fn diagonal_step_needs_26_connectivity() {
        // 3x3x1: bright voxels at (0,0) and (1,1) only touch by a corner.
        let g = Geometry::new([3, 3, 1], [1.0; 3], [0.0; 3]);
        let values = vec![100i16, 0, 0, 0, 100, 0, 0, 0, 0];
        let image = Volume::new(g, 1, VoxelBuffer::I16(values), VolumeMeta::default()).unwrap();
        let range = Range::new(50.0, 200.0).unwrap();
        let six = region_grow(&image, [0, 0, 0], range, Connectivity::Six).unwrap();
        assert_eq!(six.iter().filter(|x| **x).count(), 1);
        let all = region_grow(&image, [0, 0, 0], range, Connectivity::TwentySix).unwrap();
        assert_eq!(all.iter().filter(|x| **x).count(), 2);
        assert!(matches!(region_grow(&image, [1, 0, 0], range, Connectivity::Six), Err(ClassicError::SeedNotInRange { .. })));
        assert!(matches!(region_grow(&image, [3, 0, 0], range, Connectivity::Six), Err(ClassicError::SeedOutside { .. })));
    }
}
