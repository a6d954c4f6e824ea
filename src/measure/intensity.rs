//! Intensity statistics of an image inside each label of a label map (HU for CT).
//!
//! The values under every label are gathered in one parallel pass (in their stored type), then
//! reduced exactly: mean, standard deviation with the sample (N − 1) denominator as ITK's
//! `LabelIntensityStatisticsImageFilter` reports it (0 for a single voxel), min, max, and the
//! exact median (the mean of the two middle values for an even count, as numpy does; ITK's
//! median is the centre of a 128-bin histogram bin instead, so it differs by up to half a bin).
//! NaN values are left out.

use crate::volume::Voxel;
use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IntensityStats {
    pub mean: f64,
    /// Sample standard deviation (N − 1 denominator).
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    pub median: f64,
}

/// Statistics of `values` under every label 0..=255 of `labels` (same length, x fastest; one
/// z plane is `plane` voxels). `None` for labels with no (non-NaN) value, and for label 0.
pub fn by_label<T: Voxel>(labels: &[u8], values: &[T], plane: usize) -> Vec<Option<IntensityStats>> {
    assert_eq!(labels.len(), values.len(), "label map and image differ in size");
    let empty = || -> Vec<Vec<T>> { (0..256).map(|_| Vec::new()).collect() };
    // Gathered plane by plane and joined in plane order, so that every run sums the same
    // values in the same order (the same figures to the last digit, whatever the threads did).
    let per_plane: Vec<Vec<Vec<T>>> = labels
        .par_chunks(plane.max(1))
        .zip(values.par_chunks(plane.max(1)))
        .map(|(l, v)| {
            let mut lists = empty();
            for (lrow, vrow) in l.chunks(ROW).zip(v.chunks(ROW)) {
                if lrow.iter().all(|&x| x == 0) {
                    continue;
                }
                for (&a, &x) in lrow.iter().zip(vrow) {
                    // `x == x` leaves out NaN.
                    if a != 0 && x.partial_cmp(&x).is_some() {
                        lists[a as usize].push(x);
                    }
                }
            }
            lists
        })
        .collect();
    let mut gathered = empty();
    for lists in per_plane {
        for (all, part) in gathered.iter_mut().zip(lists) {
            if all.is_empty() {
                *all = part;
            } else {
                all.extend_from_slice(&part);
            }
        }
    }
    gathered.into_par_iter().enumerate().map(|(label, mut v)| if label == 0 { None } else { summarise(&mut v) }).collect()
}

/// Σ f(x) over fixed-size chunks added in order: parallel, and the same to the last bit on
/// every run.
fn ordered_sum<T: Voxel>(values: &[T], f: impl Fn(f64) -> f64 + Sync) -> f64 {
    let partial: Vec<f64> = values.par_chunks(1 << 15).map(|c| c.iter().map(|x| f(x.to_f64())).sum::<f64>()).collect();
    partial.iter().sum()
}

/// Voxels looked at together when skipping background.
const ROW: usize = 256;

/// Exact statistics of a list of values (reordered in place); `None` when empty.
pub fn summarise<T: Voxel>(values: &mut [T]) -> Option<IntensityStats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = ordered_sum(values, |x| x) / n as f64;
    let squares = ordered_sum(values, |x| (x - mean).powi(2));
    let sd = if n > 1 { (squares / (n - 1) as f64).sqrt() } else { 0.0 };
    let order = |a: &T, b: &T| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
    let mid = n / 2;
    let (below, upper, _) = values.select_nth_unstable_by(mid, order);
    let upper = upper.to_f64();
    let median = if n % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().fold(None, |m: Option<T>, x| match m {
            Some(m) if m >= x => Some(m),
            _ => Some(x),
        });
        (lower.map_or(upper, |l| l.to_f64()) + upper) / 2.0
    };
    let (min, max) = crate::volume::min_max(values).unwrap_or((f64::NAN, f64::NAN));
    Some(IntensityStats { mean, sd, min, max, median })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_and_itk_conventions() {
        let mut v: Vec<i16> = vec![5, -3, 10, 7];
        let s = summarise(&mut v).unwrap();
        assert_eq!(s.mean, 4.75);
        // sample variance: sum of squared deviations 92.75 / 3
        assert!((s.sd - (92.75f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (-3.0, 10.0));
        assert_eq!(s.median, 6.0);
        let s = summarise(&mut [3.0f32, 1.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
        let s = summarise(&mut [42u8]).unwrap();
        assert_eq!((s.mean, s.sd, s.median), (42.0, 0.0, 42.0));
        assert!(summarise::<u8>(&mut []).is_none());
    }

    #[test]
    fn values_go_to_their_labels() {
        let labels = [0u8, 1, 1, 2, 0, 2, 2, 1];
        let values = [100i16, 1, 3, -10, 100, -20, 0, 2];
        let stats = by_label(&labels, &values, 4);
        assert!(stats[0].is_none());
        assert_eq!(stats[1].unwrap().mean, 2.0);
        assert_eq!(stats[1].unwrap().median, 2.0);
        assert_eq!(stats[2].unwrap().min, -20.0);
        assert!(stats[3].is_none());
        let fl = [f32::NAN, 1.0, 3.0, 0.0];
        let stats = by_label(&[1u8, 1, 1, 0], &fl, 2);
        assert_eq!(stats[1].unwrap().mean, 2.0);
    }
}
