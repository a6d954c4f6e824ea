//! Agreement of a mask with a reference: Dice, IoU, 95% Hausdorff distance and average
//! symmetric surface distance, in mm.
//!
//! Definitions (the ones medpy's `hd95` uses, and MONAI for the ASSD):
//! - surface voxels: mask voxels with at least one of their 6 neighbours outside the mask (the
//!   image border counts as outside), as `mask ^ binary_erosion(mask)` with a cross-shaped
//!   structuring element;
//! - d(a, B): Euclidean distance (mm, voxel centres, physical spacing) from a surface voxel of A
//!   to the nearest surface voxel of B, from an exact distance transform;
//! - the pooled distances are d(a, B) for every surface voxel of A together with d(b, A) for
//!   every surface voxel of B;
//! - HD95 is their 95th percentile with linear interpolation between order statistics (numpy's
//!   default, as medpy's `hd95 = percentile(hstack((d_AB, d_BA)), 95)`). MONAI's
//!   `compute_hausdorff_distance(percentile=95)` takes the larger of the two directed 95th
//!   percentiles instead, which can be larger;
//! - ASSD is the mean of the pooled distances (MONAI's symmetric average surface distance and
//!   the original definition of Heimann et al. 2009); medpy's `assd` averages the two directed
//!   means instead, which differs when the two surfaces have different sizes.
//!
//! Both empty: Dice = IoU = 1 and both distances 0. Only one empty: Dice = IoU = 0 and the
//! distances are undefined (`None`).

use super::distance_transform::squared_distance_to;
use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Agreement {
    pub dice: f64,
    pub iou: f64,
    pub hd95_mm: Option<f64>,
    pub assd_mm: Option<f64>,
}

/// Compares mask `a` with reference `b`, two grids of `dims` with voxel `spacing` (mm).
pub fn compare(dims: [usize; 3], spacing: [f64; 3], a: &[bool], b: &[bool]) -> Agreement {
    let n = dims.iter().product::<usize>();
    assert!(a.len() == n && b.len() == n, "masks do not match dims");
    let (size_a, size_b, common) = a
        .par_iter()
        .zip(b)
        .map(|(&x, &y)| (x as u64, y as u64, (x && y) as u64))
        .reduce(|| (0, 0, 0), |p, q| (p.0 + q.0, p.1 + q.1, p.2 + q.2));
    if size_a == 0 && size_b == 0 {
        return Agreement { dice: 1.0, iou: 1.0, hd95_mm: Some(0.0), assd_mm: Some(0.0) };
    }
    let dice = 2.0 * common as f64 / (size_a + size_b) as f64;
    let iou = common as f64 / (size_a + size_b - common) as f64;
    if size_a == 0 || size_b == 0 {
        return Agreement { dice, iou, hd95_mm: None, assd_mm: None };
    }
    let surface_a = surface(dims, a);
    let surface_b = surface(dims, b);
    let mut pooled = directed_distances(dims, spacing, &surface_a, &surface_b);
    pooled.extend(directed_distances(dims, spacing, &surface_b, &surface_a));
    let assd = pooled.iter().sum::<f64>() / pooled.len() as f64;
    Agreement { dice, iou, hd95_mm: Some(percentile(&mut pooled, 95.0)), assd_mm: Some(assd) }
}

/// Mask voxels with a 6-neighbour outside the mask or the grid.
pub fn surface(dims: [usize; 3], mask: &[bool]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    mask.par_iter()
        .enumerate()
        .map(|(p, &m)| {
            if !m {
                return false;
            }
            let (i, j, k) = (p % nx, (p / nx) % ny, p / plane);
            i == 0 || i + 1 == nx || j == 0 || j + 1 == ny || k == 0 || k + 1 == nz
                || !mask[p - 1]
                || !mask[p + 1]
                || !mask[p - nx]
                || !mask[p + nx]
                || !mask[p - plane]
                || !mask[p + plane]
        })
        .collect()
}

/// Distance (mm) from every voxel of surface `from` to the nearest voxel of surface `to`.
fn directed_distances(dims: [usize; 3], spacing: [f64; 3], from: &[bool], to: &[bool]) -> Vec<f64> {
    let field = squared_distance_to(dims, spacing, to);
    from.par_iter().zip(&field).filter(|(f, _)| **f).map(|(_, d)| d.sqrt()).collect()
}

/// The q-th percentile (0..=100) with linear interpolation between the closest ranks, as
/// numpy's default: rank = q/100 · (n − 1). Reorders `values`; NaN for an empty list.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = q / 100.0 * (values.len() - 1) as f64;
    let below = rank.floor() as usize;
    let (_, low, above) = values.select_nth_unstable_by(below, f64::total_cmp);
    let low = *low;
    let fraction = rank - below as f64;
    if fraction == 0.0 || above.is_empty() {
        return low;
    }
    let high = above.iter().copied().fold(f64::INFINITY, f64::min);
    low + fraction * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<bool> {
        let mut m = vec![false; dims.iter().product()];
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                for i in lo[0]..=hi[0] {
                    m[i + dims[0] * (j + dims[1] * k)] = true;
                }
            }
        }
        m
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 95) = 3.85
        assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&mut [7.0], 95.0), 7.0);
        assert_eq!(percentile(&mut [1.0, 5.0, 3.0], 50.0), 3.0);
        assert!(percentile(&mut [], 95.0).is_nan());
    }

    #[test]
    fn identical_masks_agree_perfectly() {
        let dims = [8, 7, 6];
        let a = block(dims, [1, 2, 1], [5, 4, 4]);
        let r = compare(dims, [0.5, 1.0, 2.0], &a, &a);
        assert_eq!(r, Agreement { dice: 1.0, iou: 1.0, hd95_mm: Some(0.0), assd_mm: Some(0.0) });
    }

    #[test]
    fn surface_of_a_box_is_its_shell() {
        let dims = [5, 5, 5];
        let a = block(dims, [0, 0, 0], [4, 4, 4]);
        let s = surface(dims, &a);
        assert_eq!(s.iter().filter(|x| **x).count(), 125 - 27);
    }

    #[test]
    fn empty_cases() {
        let dims = [3, 3, 3];
        let none = vec![false; 27];
        let one = block(dims, [1, 1, 1], [1, 1, 1]);
        assert_eq!(compare(dims, [1.0; 3], &none, &none).dice, 1.0);
        let r = compare(dims, [1.0; 3], &one, &none);
        assert_eq!((r.dice, r.iou, r.hd95_mm, r.assd_mm), (0.0, 0.0, None, None));
    }
}
