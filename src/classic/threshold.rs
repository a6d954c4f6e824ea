//! Threshold inside a box: the voxels of an inclusive index box whose value lies in a range.

use super::{ClassicError, Range, check_three_d};
use crate::volume::{Volume, Voxel};
use crate::with_voxels;
use rayon::prelude::*;
use serde::Serialize;

/// An inclusive box of voxel indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IndexBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl IndexBox {
    /// Whether (i, j, k) lies in the box.
    pub fn contains(&self, ijk: [usize; 3]) -> bool {
        (0..3).all(|c| ijk[c] >= self.lo[c] && ijk[c] <= self.hi[c])
    }
}

/// The voxels of `image` inside `bounds` whose value lies in `range`.
pub fn threshold_in_box(image: &Volume, bounds: IndexBox, range: Range) -> Result<Vec<bool>, ClassicError> {
    check_three_d(image)?;
    let dims = image.geometry.dims;
    if (0..3).any(|c| bounds.lo[c] > bounds.hi[c] || bounds.hi[c] >= dims[c]) {
        return Err(ClassicError::BadBox { lo: bounds.lo, hi: bounds.hi, dims });
    }
    Ok(with_voxels!(&image.data, v => threshold_typed(v, dims, bounds, range)))
}

fn threshold_typed<T: Voxel>(values: &[T], dims: [usize; 3], bounds: IndexBox, range: Range) -> Vec<bool> {
    let [nx, ny, _] = dims;
    let mut mask = vec![false; values.len()];
    mask.par_chunks_mut(nx * ny).zip(values.par_chunks(nx * ny)).enumerate().for_each(|(k, (out, plane))| {
        if k < bounds.lo[2] || k > bounds.hi[2] {
            return;
        }
        for j in bounds.lo[1]..=bounds.hi[1] {
            for i in bounds.lo[0]..=bounds.hi[0] {
                out[i + nx * j] = range.contains(plane[i + nx * j].to_f64());
            }
        }
    });
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, VolumeMeta, VoxelBuffer};

    #[test]
    fn only_voxels_in_the_box_and_range() {
        let g = Geometry::new([4, 3, 2], [1.0; 3], [0.0; 3]);
        let values: Vec<i16> = (0..24).map(|n| n * 10).collect();
        let image = Volume::new(g, 1, VoxelBuffer::I16(values), VolumeMeta::default()).unwrap();
        let b = IndexBox { lo: [1, 0, 0], hi: [3, 2, 1] };
        let mask = threshold_in_box(&image, b, Range::new(50.0, 150.0).unwrap()).unwrap();
        let hits: Vec<usize> = (0..24).filter(|&n| mask[n]).collect();
        // values 50..150 are voxels 5..15; voxels with i = 0 (8, 12) are outside the box.
        assert_eq!(hits, vec![5, 6, 7, 9, 10, 11, 13, 14, 15]);
        assert!(threshold_in_box(&image, IndexBox { lo: [0, 0, 0], hi: [4, 0, 0] }, Range::new(0.0, 1.0).unwrap()).is_err());
        assert!(threshold_in_box(&image, IndexBox { lo: [2, 0, 0], hi: [1, 0, 0] }, Range::new(0.0, 1.0).unwrap()).is_err());
    }
}
