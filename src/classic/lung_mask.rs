//! The classic lung mask of a CT, without any learned model:
//! 1. air = voxels below a threshold (−320 HU by default, between lung parenchyma near −850
//!    and soft tissue near 40);
//! 2. the air around the patient is removed: air connected (6-connected, in 3D) to the sides of
//!    the volume, i.e. the four faces that bound the axial slices. The first and last axial
//!    slices are not sides, since a scan often cuts through the lungs there;
//! 3. of the air left inside the body (lungs, trachea, bowel gas, hollow parts of the table),
//!    the largest component is kept, and the second largest too when it holds at least
//!    `second_component_ratio` of the largest (the other lung; when both lungs touch, or join
//!    through the trachea, they are one component);
//! 4. holes are filled slice by slice along the axial axis (vessels and airway walls inside the
//!    lungs, brighter than the threshold);
//! 5. optionally the mask is dilated by a radius in mm (exact Euclidean distance, physical
//!    spacing).
//!
//! "Axial" is the index axis closest to the patient's superior-inferior direction.

use super::components::{Component, components, flood, keep_components};
use super::{ClassicError, Connectivity, check_three_d};
use crate::measure::distance_transform::squared_distance_to;
use crate::volume::{SliceAxis, Volume, Voxel};
use crate::with_voxels;
use rayon::prelude::*;

/// Settings of the lung mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LungMaskOptions {
    /// Voxels below this value (HU) are air.
    pub threshold_hu: f64,
    /// The second largest air component inside the body is kept when it holds at least this
    /// fraction of the largest.
    pub second_component_ratio: f64,
    /// Dilation radius in mm (0 = none).
    pub dilation_mm: f64,
}

impl Default for LungMaskOptions {
    fn default() -> Self {
        LungMaskOptions { threshold_hu: -320.0, second_component_ratio: 0.2, dilation_mm: 0.0 }
    }
}

/// The lung mask and its connected components (6-connected), largest first.
#[derive(Clone, Debug, PartialEq)]
pub struct LungMask {
    pub mask: Vec<bool>,
    pub components: Vec<Component>,
}

/// Segments the lungs of a CT image (values in HU).
pub fn lung_mask(image: &Volume, options: &LungMaskOptions) -> Result<LungMask, ClassicError> {
    check_three_d(image)?;
    if !options.dilation_mm.is_finite() || options.dilation_mm < 0.0 {
        return Err(ClassicError::BadDilation(options.dilation_mm));
    }
    let g = &image.geometry;
    let dims = g.dims;
    let threshold = options.threshold_hu;
    let air: Vec<bool> = with_voxels!(&image.data, v => v.par_iter().map(|x| x.to_f64() < threshold).collect());
    let axial = SliceAxis::from_normal(g.index_axis_closest_to(2));
    let outside = air_touching_sides(&air, dims, axial);
    let inside: Vec<bool> = air.par_iter().zip(&outside).map(|(&a, &o)| a && !o).collect();
    drop((air, outside));
    let found = components(dims, &inside, Connectivity::Six);
    let Some(largest) = found.first() else {
        return Err(ClassicError::NoAirInside { threshold });
    };
    let mut seeds = vec![largest.seed];
    if let Some(second) = found.get(1)
        && second.voxels as f64 >= options.second_component_ratio * largest.voxels as f64
    {
        seeds.push(second.seed);
    }
    let mut mask = keep_components(dims, &inside, Connectivity::Six, &seeds);
    drop(inside);
    fill_holes_per_slice(&mut mask, dims, axial);
    if options.dilation_mm > 0.0 {
        dilate(&mut mask, dims, g.spacing, options.dilation_mm);
    }
    let components = components(dims, &mask, Connectivity::Six);
    Ok(LungMask { mask, components })
}

/// Adds to `mask` every voxel within `radius` mm of it (Euclidean, voxel centres). The distance
/// transform runs on the mask's bounding box grown by the radius, not on the whole volume.
fn dilate(mask: &mut [bool], dims: [usize; 3], spacing: [f64; 3], radius: f64) {
    let [nx, ny, _] = dims;
    let Some((lo, hi)) = (0..mask.len()).filter(|&p| mask[p]).fold(None, |b: Option<([usize; 3], [usize; 3])>, p| {
        let q = [p % nx, (p / nx) % ny, p / (nx * ny)];
        Some(match b {
            None => (q, q),
            Some((lo, hi)) => ([0, 1, 2].map(|c| lo[c].min(q[c])), [0, 1, 2].map(|c| hi[c].max(q[c]))),
        })
    }) else {
        return;
    };
    let margin = [0, 1, 2].map(|c| (radius / spacing[c]).ceil() as usize);
    let lo = [0, 1, 2].map(|c| lo[c].saturating_sub(margin[c]));
    let hi = [0, 1, 2].map(|c| (hi[c] + margin[c]).min(dims[c] - 1));
    let size = [0, 1, 2].map(|c| hi[c] - lo[c] + 1);
    let at = |q: [usize; 3]| (lo[0] + q[0]) + nx * ((lo[1] + q[1]) + ny * (lo[2] + q[2]));
    let index = |n: usize| [n % size[0], (n / size[0]) % size[1], n / (size[0] * size[1])];
    let crop: Vec<bool> = (0..size.iter().product()).map(|n| mask[at(index(n))]).collect();
    let distance = squared_distance_to(size, spacing, &crop);
    let r2 = radius * radius * (1.0 + 1e-12);
    for (n, d) in distance.iter().enumerate() {
        if *d <= r2 {
            mask[at(index(n))] = true;
        }
    }
}

/// Air voxels connected to the four faces of the volume that bound the slices along `axial`.
fn air_touching_sides(air: &[bool], dims: [usize; 3], axial: SliceAxis) -> Vec<bool> {
    let mut visited = vec![false; air.len()];
    if air.is_empty() {
        return visited;
    }
    let probe = crate::volume::Geometry::new(dims, [1.0; 3], [0.0; 3]);
    let mut seeds = Vec::new();
    for c in (0..3).filter(|&c| c != axial.normal()) {
        let face = SliceAxis::from_normal(c);
        let (w, h) = face.slice_size(&probe);
        for index in [0, dims[c] - 1] {
            for v in 0..h {
                for u in 0..w {
                    seeds.push(probe.linear_index(face.voxel(index, u, v)));
                }
            }
        }
    }
    flood(dims, Connectivity::Six, seeds, |q| air[q], &mut visited);
    visited
}

/// Fills, in every slice along `axial`, the background pixels not connected (4-connected) to
/// the slice's border.
fn fill_holes_per_slice(mask: &mut [bool], dims: [usize; 3], axial: SliceAxis) {
    let probe = crate::volume::Geometry::new(dims, [1.0; 3], [0.0; 3]);
    let (w, h) = axial.slice_size(&probe);
    let linear = |s: usize, u: usize, v: usize| {
        let [i, j, k] = axial.voxel(s, u, v);
        i + dims[0] * (j + dims[1] * k)
    };
    let holes: Vec<Vec<usize>> = (0..axial.slice_count(&probe))
        .into_par_iter()
        .map(|s| {
            let lung: Vec<bool> = (0..w * h).map(|n| mask[linear(s, n % w, n / w)]).collect();
            let border = (0..w * h).filter(|&n| {
                let (u, v) = (n % w, n / w);
                u == 0 || v == 0 || u + 1 == w || v + 1 == h
            });
            let mut reached = vec![false; w * h];
            flood([w, h, 1], Connectivity::Six, border, |n| !lung[n], &mut reached);
            (0..w * h).filter(|&n| !lung[n] && !reached[n]).map(|n| linear(s, n % w, n / w)).collect()
        })
        .collect();
    for p in holes.into_iter().flatten() {
        mask[p] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_filled_only_when_enclosed() {
        // One axial slice 5x5: a ring with a hole in the middle, and a C shape open to the side.
        let dims = [5, 5, 1];
        let mut mask = vec![false; 25];
        for n in [6, 7, 8, 11, 13, 16, 17, 18] {
            mask[n] = true;
        }
        fill_holes_per_slice(&mut mask, dims, SliceAxis::Axial);
        assert!(mask[12], "the enclosed pixel is filled");
        let mut open = vec![false; 25];
        for n in [6, 7, 8, 11, 16, 17, 18] {
            open[n] = true;
        }
        fill_holes_per_slice(&mut open, dims, SliceAxis::Axial);
        assert!(!open[12] && !open[13], "an open notch stays open");
    }
}
