//! Surface area (3D) and perimeter (2D) of a digital object from intercept counts (Crofton's
//! formula), the estimator ITK's `LabelShapeStatistics` uses for its perimeter, with direction
//! weights that follow the physical grid.
//!
//! Counting the voxel faces on a label's boundary gives its exact staircase area, which
//! overestimates a smooth surface by 50% on average (a sphere: mean of |nx|+|ny|+|nz| = 3/2);
//! the Crofton estimate converges to the true area instead. For each lattice direction d the
//! intercepts I_d (label voxels whose neighbour at +d, or at -d, is outside the label or the
//! image) measure the object's projected area along d: A_d = I_d · V / (2 |d|), V the voxel
//! volume. Cauchy's formula S = 4 · mean projected area, averaged over the 13 directions of the
//! 26-neighbourhood weighted by the share w_d of the unit sphere nearest to each (its Voronoi
//! cell), gives S = 2 Σ w_d I_d V / |d|. In 2D, P = π · mean width = (π/2) Σ w_d I_d a / |d|
//! over the 4 directions of the 8-neighbourhood, w_d the share of the half circle nearest to d.
//!
//! ITK uses the same formulas with fixed weights for an isotropic grid (3D: 0.0916 per axis,
//! 0.0740 per face diagonal, 0.0704 per body diagonal; 2D: 1/4 each) and says the weights should
//! be recomputed for anisotropic spacing. Here the weights are computed for the actual physical
//! directions (direction · spacing), so on an isotropic grid the result equals ITK's and on an
//! anisotropic one it stays unbiased on average over orientations.
//!
//! Accuracy: exact on average over surface orientations (a digitised sphere of radius 12 voxels
//! comes within 1%), but a plane with normal n is measured at 2 Σ w_d |u_d · n| of its area:
//! 0.93 to 1.02 on an isotropic grid (axis-aligned faces are the low end), 0.90 to 1.08 at
//! 0.78 x 0.78 x 1.25 mm, 0.84 to 1.11 at 0.8 x 1.2 x 2.5 mm; ITK's fixed weights give 0.82 to
//! 1.19 and 0.60 to 1.31 on those two grids. The 49 directions of the 5x5x5 neighbourhood would
//! narrow the isotropic range to 0.98 to 1.01 at four times the neighbour look-ups.

use super::plane::{PlaneBasis, dot3, index_steps, norm3};
use crate::volume::{Geometry, SliceAxis};

/// The 13 lattice directions of the 26-neighbourhood, one of each ± pair: the first nonzero
/// component is positive. Order: the three axes, the six face diagonals, the four body diagonals.
pub const DIRECTIONS: [[isize; 3]; 13] = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [1, 1, 0],
    [1, -1, 0],
    [1, 0, 1],
    [1, 0, -1],
    [0, 1, 1],
    [0, 1, -1],
    [1, 1, 1],
    [1, 1, -1],
    [1, -1, 1],
    [1, -1, -1],
];

/// Indices into `DIRECTIONS` of the four in-plane directions of slices along `axis`:
/// u, v, u + v, u − v.
pub fn in_plane_directions(axis: SliceAxis) -> [usize; 4] {
    let (u, v) = axis.in_plane();
    let unit = |a: usize| {
        let mut d = [0isize; 3];
        d[a] = 1;
        d
    };
    let sum = |s: isize| {
        let mut d = unit(u);
        d[v] = s;
        d
    };
    [unit(u), unit(v), sum(1), sum(-1)].map(|d| DIRECTIONS.iter().position(|x| *x == d).expect("in-plane direction is a lattice direction"))
}

/// Turns 3D intercept counts into a surface area for one grid geometry.
#[derive(Clone, Debug)]
pub struct SurfaceEstimator {
    /// mm² contributed by one intercept along each direction: 2 · w_d · V / |d|.
    per_intercept: [f64; 13],
    /// Area (mm²) of the voxel face crossed by a step along each index axis.
    face_area: [f64; 3],
}

impl SurfaceEstimator {
    pub fn new(g: &Geometry) -> Self {
        let steps = index_steps(g);
        let physical: [[f64; 3]; 13] = DIRECTIONS.map(|d| {
            let mut p = [0.0; 3];
            for (a, step) in steps.iter().enumerate() {
                for r in 0..3 {
                    p[r] += d[a] as f64 * step[r];
                }
            }
            p
        });
        let weights = sphere_voronoi_shares(&physical);
        let volume = crate::volume::det3(&[
            [steps[0][0], steps[1][0], steps[2][0]],
            [steps[0][1], steps[1][1], steps[2][1]],
            [steps[0][2], steps[1][2], steps[2][2]],
        ])
        .abs();
        let mut per_intercept = [0.0; 13];
        for n in 0..13 {
            per_intercept[n] = 2.0 * weights[n] * volume / norm3(physical[n]);
        }
        let cross_norm = |a: [f64; 3], b: [f64; 3]| norm3([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]);
        let face_area = [cross_norm(steps[1], steps[2]), cross_norm(steps[0], steps[2]), cross_norm(steps[0], steps[1])];
        SurfaceEstimator { per_intercept, face_area }
    }

    /// Crofton estimate of the surface area (mm²).
    pub fn area(&self, intercepts: &[u64; 13]) -> f64 {
        intercepts.iter().zip(&self.per_intercept).map(|(&i, &w)| i as f64 * w).sum()
    }

    /// Exact area (mm²) of the voxel faces between the label and the rest: the staircase surface.
    pub fn face_area(&self, intercepts: &[u64; 13]) -> f64 {
        (0..3).map(|a| intercepts[a] as f64 * self.face_area[a]).sum()
    }
}

/// Share of the unit sphere closer to each of the directions ±d than to any other (the sum is 1).
/// Computed on a Fibonacci lattice of 200 000 points, which reproduces ITK's isotropic weights
/// to about 1e-4.
fn sphere_voronoi_shares(directions: &[[f64; 3]; 13]) -> [f64; 13] {
    const SAMPLES: usize = 200_000;
    let units = directions.map(|d| {
        let n = norm3(d);
        [d[0] / n, d[1] / n, d[2] / n]
    });
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    let mut counts = [0usize; 13];
    for s in 0..SAMPLES {
        let z = 1.0 - (2.0 * s as f64 + 1.0) / SAMPLES as f64;
        let r = (1.0 - z * z).sqrt();
        let phi = golden * s as f64;
        let p = [r * phi.cos(), r * phi.sin(), z];
        let mut best = 0;
        let mut best_dot = -1.0;
        for (n, u) in units.iter().enumerate() {
            let d = dot3(p, *u).abs();
            if d > best_dot {
                best_dot = d;
                best = n;
            }
        }
        counts[best] += 1;
    }
    counts.map(|c| c as f64 / SAMPLES as f64)
}

/// Turns 2D intercept counts of one slice into a perimeter.
#[derive(Clone, Debug)]
pub struct PerimeterEstimator {
    /// mm contributed by one intercept along u, v, u + v, u − v: (π/2) · w_d · a / |d|.
    per_intercept: [f64; 4],
}

impl PerimeterEstimator {
    pub fn new(basis: &PlaneBasis) -> Self {
        let dirs = [
            basis.u,
            basis.v,
            [basis.u[0] + basis.v[0], basis.u[1] + basis.v[1]],
            [basis.u[0] - basis.v[0], basis.u[1] - basis.v[1]],
        ];
        let pi = std::f64::consts::PI;
        // Angles folded into [0, π): a line and its opposite are the same direction.
        let angles = dirs.map(|d| d[1].atan2(d[0]).rem_euclid(pi));
        let mut order = [0, 1, 2, 3];
        order.sort_by(|&a, &b| angles[a].total_cmp(&angles[b]));
        let mut weights = [0.0; 4];
        for (pos, &n) in order.iter().enumerate() {
            let prev = angles[order[(pos + 3) % 4]];
            let next = angles[order[(pos + 1) % 4]];
            let before = (angles[n] - prev).rem_euclid(pi);
            let after = (next - angles[n]).rem_euclid(pi);
            weights[n] = (before + after) / 2.0 / pi;
        }
        let area = basis.pixel_area().abs();
        let mut per_intercept = [0.0; 4];
        for n in 0..4 {
            let len = (dirs[n][0] * dirs[n][0] + dirs[n][1] * dirs[n][1]).sqrt();
            per_intercept[n] = pi / 2.0 * weights[n] * area / len;
        }
        PerimeterEstimator { per_intercept }
    }

    /// Crofton estimate of the perimeter (mm).
    pub fn perimeter(&self, intercepts: &[u64; 4]) -> f64 {
        intercepts.iter().zip(&self.per_intercept).map(|(&i, &w)| i as f64 * w).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotropic_weights_equal_itks_constants() {
        let g = Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]);
        let steps = index_steps(&g);
        assert_eq!(steps[0], [1.0, 0.0, 0.0]);
        let physical = DIRECTIONS.map(|d| [d[0] as f64, d[1] as f64, d[2] as f64]);
        let w = sphere_voronoi_shares(&physical);
        // ITK's itkShapeLabelMapFilter constants (per direction, both signs together).
        let itk = [0.045_777_891_204_76 * 2.0, 0.036_980_627_876_08 * 2.0, 0.035_195_639_782_32 * 2.0];
        for (n, weight) in w.iter().enumerate() {
            let class = match n {
                0..3 => 0,
                3..9 => 1,
                _ => 2,
            };
            assert!((weight - itk[class]).abs() < 2e-4, "direction {n}: {weight}");
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn isotropic_perimeter_weights_are_quarters() {
        let g = Geometry::new([2, 2, 2], [2.0; 3], [0.0; 3]);
        let e = PerimeterEstimator::new(&PlaneBasis::new(&g, SliceAxis::Axial));
        // ITK: P = π/4 · (dy·Ix/2 + dx·Iy/2 + dx·dy/|dxy|·Ixy/2) with both diagonals in Ixy.
        let pi = std::f64::consts::PI;
        let expected = [pi / 4.0 * 2.0 / 2.0, pi / 4.0 * 2.0 / 2.0, pi / 4.0 * 4.0 / 8f64.sqrt() / 2.0, pi / 4.0 * 4.0 / 8f64.sqrt() / 2.0];
        for (got, want) in e.per_intercept.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12);
        }
    }

    #[test]
    fn in_plane_directions_lie_in_the_plane() {
        for axis in SliceAxis::ALL {
            for n in in_plane_directions(axis) {
                assert_eq!(DIRECTIONS[n][axis.normal()], 0);
            }
        }
        assert_eq!(in_plane_directions(SliceAxis::Axial), [0, 1, 3, 4]);
    }

    #[test]
    fn face_area_of_one_voxel_is_its_six_faces() {
        let g = Geometry::new([1, 1, 1], [1.0, 2.0, 3.0], [0.0; 3]);
        let e = SurfaceEstimator::new(&g);
        let mut intercepts = [0; 13];
        intercepts[..3].copy_from_slice(&[2, 2, 2]);
        assert!((e.face_area(&intercepts) - 2.0 * (6.0 + 3.0 + 2.0)).abs() < 1e-12);
    }
}
