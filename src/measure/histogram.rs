//! Intensity histograms of an image: over every voxel, and under each label of a label map, in
//! one parallel pass (for the viewer's histogram plot: the image's HU distribution next to the
//! mask's). Integer images get whole-number bin widths centred on the integers, so no bin
//! catches one value more than its neighbour (no comb pattern); float images get equal bins.

use crate::volume::{Volume, Voxel, VoxelType};
use crate::with_voxels;
use rayon::prelude::*;

/// The value range a CT histogram shows: air to dense bone (values outside are left out).
pub const CT_RANGE_HU: (f64, f64) = (-1024.0, 3071.0);

/// Counts per bin of the whole image and of each label.
#[derive(Clone, Debug, PartialEq)]
pub struct Histograms {
    /// Lower edge of bin 0.
    pub lo: f64,
    pub bin_width: f64,
    /// Voxels of the whole image per bin.
    pub image: Vec<u64>,
    /// Voxels under label 0..=255 per bin; empty for a label with no voxel in range.
    pub labels: Vec<Vec<u64>>,
}

impl Histograms {
    /// Centre value of bin `n`.
    pub fn bin_centre(&self, n: usize) -> f64 {
        self.lo + (n as f64 + 0.5) * self.bin_width
    }

    pub fn bins(&self) -> usize {
        self.image.len()
    }
}

/// The range of values to histogram: the image's min..max, cut to `CT_RANGE_HU` for CT.
pub fn value_range(image: &Volume) -> (f64, f64) {
    let (lo, hi) = image.min_max().unwrap_or((0.0, 0.0));
    if image.is_ct() { (lo.max(CT_RANGE_HU.0), hi.min(CT_RANGE_HU.1).max(lo.max(CT_RANGE_HU.0))) } else { (lo, hi) }
}

/// Histograms of frame 0 of `image` over the inclusive range `lo..=hi` in about `bins` bins
/// (never more), overall and under every label of `labels` (one per voxel, x fastest). NaN
/// values and values outside the range are not counted.
pub fn histograms(image: &Volume, labels: &[u8], (lo, hi): (f64, f64), bins: usize) -> Histograms {
    let n = image.geometry.voxel_count();
    assert_eq!(labels.len(), n, "label map and image differ in size");
    let bins = bins.max(1);
    let integer = !matches!(image.voxel_type(), VoxelType::F32 | VoxelType::F64);
    let (lo, hi) = if integer { (lo.round(), hi.round()) } else { (lo, hi) };
    let (start, width, count) = if integer {
        // Whole-number bins with the integers at their centres.
        let span = (hi - lo + 1.0).max(1.0);
        let width = (span / bins as f64).ceil();
        (lo - 0.5, width, (span / width).ceil() as usize)
    } else {
        let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
        (lo, width, bins)
    };
    let plane = (image.geometry.dims[0] * image.geometry.dims[1]).max(1);
    let flat = with_voxels!(&image.data, v => count_bins(&v[..n], labels, plane, (lo, hi), start, width, count));
    let mut image_counts = vec![0u64; count];
    let mut per_label = Vec::with_capacity(256);
    for row in flat.chunks(count) {
        image_counts.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        per_label.push(if row.iter().any(|&c| c > 0) { row.to_vec() } else { Vec::new() });
    }
    Histograms { lo: start, bin_width: width, image: image_counts, labels: per_label }
}

/// Counts per (label, bin), label-major, in one pass over z planes.
fn count_bins<T: Voxel>(values: &[T], labels: &[u8], plane: usize, (lo, hi): (f64, f64), start: f64, width: f64, count: usize) -> Vec<u64> {
    let empty = || vec![0u64; 256 * count];
    values
        .par_chunks(plane)
        .zip(labels.par_chunks(plane))
        .fold(empty, |mut acc, (v, l)| {
            for (&x, &label) in v.iter().zip(l) {
                let x = x.to_f64();
                // NaN fails both comparisons and is skipped here.
                if !(x >= lo && x <= hi) {
                    continue;
                }
                let bin = (((x - start) / width) as usize).min(count - 1);
                acc[label as usize * count + bin] += 1;
            }
            acc
        })
        .reduce(empty, |mut a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            a
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, VolumeMeta, VoxelBuffer};

    #[test]
    fn integer_bins_count_every_value_once() {
        let g = Geometry::new([5, 2, 1], [1.0; 3], [0.0; 3]);
        // values 0..9; label 1 on the last four.
        let image = Volume::new(g, 1, VoxelBuffer::I16((0..10).collect()), VolumeMeta::default()).unwrap();
        let labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
        let h = histograms(&image, &labels, (0.0, 9.0), 5);
        assert_eq!(h.bin_width, 2.0);
        assert_eq!(h.image, vec![2, 2, 2, 2, 2]);
        assert_eq!(h.labels[1], vec![0, 0, 0, 2, 2]);
        assert_eq!(h.labels[0], vec![2, 2, 2, 0, 0]);
        assert!(h.labels[2].is_empty());
        assert_eq!(h.bin_centre(0), 0.5);
        // A range narrower than the values leaves the rest out.
        let part = histograms(&image, &labels, (2.0, 5.0), 100);
        assert_eq!(part.bin_width, 1.0);
        assert_eq!(part.image, vec![1, 1, 1, 1]);
    }

    #[test]
    fn float_bins_include_the_top_and_skip_nan() {
        let g = Geometry::new([4, 1, 1], [1.0; 3], [0.0; 3]);
        let image = Volume::new(g, 1, VoxelBuffer::F32(vec![0.0, 0.5, 1.0, f32::NAN]), VolumeMeta::default()).unwrap();
        let h = histograms(&image, &[1, 1, 1, 1], (0.0, 1.0), 4);
        assert_eq!(h.image, vec![1, 0, 1, 1]);
        assert_eq!(h.labels[1].iter().sum::<u64>(), 3);
    }

    #[test]
    fn ct_range_is_cut_to_air_and_bone() {
        let g = Geometry::new([3, 1, 1], [1.0; 3], [0.0; 3]);
        let meta = VolumeMeta { modality: Some("CT".into()), ..VolumeMeta::default() };
        let image = Volume::new(g, 1, VoxelBuffer::I16(vec![-3024, 40, 4000]), meta).unwrap();
        assert_eq!(value_range(&image), CT_RANGE_HU);
    }
}
