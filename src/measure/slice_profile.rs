//! Per-slice area (mm²) and perimeter (mm) of a label along one slicing axis, from the counts
//! `label_stats` gathers: area = pixels · pixel area, perimeter = 2D Crofton estimate.

use super::crofton::PerimeterEstimator;
use super::plane::PlaneBasis;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SliceMeasure {
    /// Slice index along the profile axis.
    pub index: usize,
    pub area_mm2: f64,
    pub perimeter_mm: f64,
}

/// The measures of every slice holding the label (slices without it are left out), given its
/// pixel count and in-plane intercepts per slice.
pub fn profile(voxels: &[u64], intercepts: &[[u64; 4]], basis: &PlaneBasis) -> Vec<SliceMeasure> {
    let perimeter = PerimeterEstimator::new(basis);
    let pixel_area = basis.pixel_area().abs();
    voxels
        .iter()
        .zip(intercepts)
        .enumerate()
        .filter(|(_, (n, _))| **n > 0)
        .map(|(index, (&n, counts))| SliceMeasure { index, area_mm2: n as f64 * pixel_area, perimeter_mm: perimeter.perimeter(counts) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, SliceAxis};

    #[test]
    fn empty_slices_are_left_out() {
        let g = Geometry::new([4, 4, 3], [0.5, 0.5, 2.0], [0.0; 3]);
        let basis = PlaneBasis::new(&g, SliceAxis::Axial);
        let p = profile(&[0, 4, 0], &[[0; 4], [4, 4, 4, 4], [0; 4]], &basis);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].index, 1);
        assert!((p[0].area_mm2 - 1.0).abs() < 1e-12);
        assert!(p[0].perimeter_mm > 0.0);
    }
}
