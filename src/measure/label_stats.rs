//! One parallel pass over a label map that gathers, for every label present, everything the
//! shape measurements need: voxel count, index bounding box, the physical extent, index sums
//! (centroid), intercept counts along the 13 lattice directions (surface area), and per-slice
//! voxel counts along all three index axes plus per-slice in-plane intercepts along one chosen
//! axis (area and perimeter profile).
//!
//! Only label voxels do work: all-background rows are skipped whole, and each label voxel
//! compares itself with its 26 neighbours (the image border counts as outside).

use super::crofton::{DIRECTIONS, in_plane_directions};
use crate::volume::SliceAxis;
use rayon::prelude::*;

/// What one pass gathered about one label.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelAccumulation {
    pub voxels: u64,
    /// Smallest and largest (i, j, k) of the label's voxels (inclusive).
    pub bbox_min: [usize; 3],
    pub bbox_max: [usize; 3],
    /// Smallest and largest of `steps · (i, j, k)` per world axis over the label's voxels: the
    /// physical extent relative to the origin (only boundary voxels can be extreme).
    pub extent_min: [f64; 3],
    pub extent_max: [f64; 3],
    /// Sums of i, j and k over the label's voxels.
    pub index_sum: [u64; 3],
    /// Per direction of `DIRECTIONS`: label voxels whose neighbour at +d is not the label, plus
    /// those whose neighbour at −d is not: the boundary crossings of lines along d.
    pub intercepts: [u64; 13],
    /// Voxel count of every slice along index axis 0, 1 and 2.
    pub slice_voxels: [Vec<u64>; 3],
    /// Per slice along the profile axis: intercepts along its in-plane u, v, u+v, u−v.
    pub slice_intercepts: Vec<[u64; 4]>,
}

impl LabelAccumulation {
    fn new(dims: [usize; 3], profile: SliceAxis) -> Self {
        LabelAccumulation {
            voxels: 0,
            bbox_min: [usize::MAX; 3],
            bbox_max: [0; 3],
            extent_min: [f64::INFINITY; 3],
            extent_max: [f64::NEG_INFINITY; 3],
            index_sum: [0; 3],
            intercepts: [0; 13],
            slice_voxels: [vec![0; dims[0]], vec![0; dims[1]], vec![0; dims[2]]],
            slice_intercepts: vec![[0; 4]; dims[profile.normal()]],
        }
    }

    fn merge(&mut self, other: &LabelAccumulation) {
        self.voxels += other.voxels;
        for a in 0..3 {
            self.bbox_min[a] = self.bbox_min[a].min(other.bbox_min[a]);
            self.bbox_max[a] = self.bbox_max[a].max(other.bbox_max[a]);
            self.extent_min[a] = self.extent_min[a].min(other.extent_min[a]);
            self.extent_max[a] = self.extent_max[a].max(other.extent_max[a]);
            self.index_sum[a] += other.index_sum[a];
            for (x, y) in self.slice_voxels[a].iter_mut().zip(&other.slice_voxels[a]) {
                *x += y;
            }
        }
        for (x, y) in self.intercepts.iter_mut().zip(&other.intercepts) {
            *x += y;
        }
        for (x, y) in self.slice_intercepts.iter_mut().zip(&other.slice_intercepts) {
            for m in 0..4 {
                x[m] += y[m];
            }
        }
    }

    /// Mean voxel index (i, j, k).
    pub fn mean_index(&self) -> [f64; 3] {
        self.index_sum.map(|s| s as f64 / self.voxels as f64)
    }
}

/// Gathers the accumulations of every nonzero label of `labels` (one 3D frame of `dims`),
/// in increasing label order. `steps[c]` is the physical vector of one step along index axis c
/// (`plane::index_steps`).
pub fn accumulate(labels: &[u8], dims: [usize; 3], steps: &[[f64; 3]; 3], profile: SliceAxis) -> Vec<(u8, LabelAccumulation)> {
    let [nx, ny, nz] = dims;
    assert_eq!(labels.len(), nx * ny * nz, "label map does not match dims");
    let plane = nx * ny;
    let offsets: [isize; 13] = DIRECTIONS.map(|d| d[0] + d[1] * nx as isize + d[2] * plane as isize);
    let in_plane = in_plane_directions(profile);
    let normal = profile.normal();
    let empty = || -> Vec<Option<LabelAccumulation>> { (0..256).map(|_| None).collect() };
    let table = (0..nz)
        .into_par_iter()
        .fold(empty, |mut table, k| {
            for j in 0..ny {
                let row_start = nx * (j + ny * k);
                let row = &labels[row_start..row_start + nx];
                if row.iter().all(|&x| x == 0) {
                    continue;
                }
                for (i, &a) in row.iter().enumerate() {
                    if a == 0 {
                        continue;
                    }
                    let acc = table[a as usize].get_or_insert_with(|| LabelAccumulation::new(dims, profile));
                    let ijk = [i, j, k];
                    acc.voxels += 1;
                    for (c, &x) in ijk.iter().enumerate() {
                        acc.bbox_min[c] = acc.bbox_min[c].min(x);
                        acc.bbox_max[c] = acc.bbox_max[c].max(x);
                        acc.index_sum[c] += x as u64;
                        acc.slice_voxels[c][x] += 1;
                    }
                    let p = row_start + i;
                    let interior = i > 0 && i + 1 < nx && j > 0 && j + 1 < ny && k > 0 && k + 1 < nz;
                    let mut crossings = [0u64; 13];
                    for (n, d) in DIRECTIONS.iter().enumerate() {
                        let (forward, backward) = if interior {
                            let o = offsets[n];
                            (labels[(p as isize + o) as usize], labels[(p as isize - o) as usize])
                        } else {
                            (neighbour(labels, dims, ijk, *d, 1), neighbour(labels, dims, ijk, *d, -1))
                        };
                        crossings[n] = (forward != a) as u64 + (backward != a) as u64;
                        acc.intercepts[n] += crossings[n];
                    }
                    if crossings[..3].iter().any(|&c| c > 0) {
                        let position = [0, 1, 2].map(|r| (0..3).map(|c| steps[c][r] * ijk[c] as f64).sum::<f64>());
                        for (r, &x) in position.iter().enumerate() {
                            acc.extent_min[r] = acc.extent_min[r].min(x);
                            acc.extent_max[r] = acc.extent_max[r].max(x);
                        }
                    }
                    let slice = &mut acc.slice_intercepts[ijk[normal]];
                    for (m, &n) in in_plane.iter().enumerate() {
                        slice[m] += crossings[n];
                    }
                }
            }
            table
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                match (x.as_mut(), y) {
                    (Some(x), Some(y)) => x.merge(&y),
                    (None, Some(y)) => *x = Some(y),
                    (_, None) => {}
                }
            }
            a
        });
    table.into_iter().enumerate().filter_map(|(label, acc)| acc.map(|a| (label as u8, a))).collect()
}

/// The label at `ijk + sign · d`, or 0 outside the grid.
fn neighbour(labels: &[u8], dims: [usize; 3], ijk: [usize; 3], d: [isize; 3], sign: isize) -> u8 {
    let mut q = [0usize; 3];
    for c in 0..3 {
        let x = ijk[c] as isize + sign * d[c];
        if x < 0 || x >= dims[c] as isize {
            return 0;
        }
        q[c] = x as usize;
    }
    labels[q[0] + dims[0] * (q[1] + dims[1] * q[2])]
}

/// Inclusive index bounding box (min, max) of every label 0..=255 of `labels`; `None` where the
/// label is absent and for the background (0).
pub fn label_boxes(labels: &[u8], dims: [usize; 3]) -> Vec<Option<([usize; 3], [usize; 3])>> {
    let [nx, ny, _] = dims;
    let empty = || vec![None; 256];
    let grow = |b: &mut Option<([usize; 3], [usize; 3])>, lo: [usize; 3], hi: [usize; 3]| {
        *b = Some(match *b {
            None => (lo, hi),
            Some((a, z)) => ([a[0].min(lo[0]), a[1].min(lo[1]), a[2].min(lo[2])], [z[0].max(hi[0]), z[1].max(hi[1]), z[2].max(hi[2])]),
        });
    };
    labels
        .par_chunks(nx * ny)
        .enumerate()
        .fold(empty, |mut boxes, (k, plane)| {
            for (j, row) in plane.chunks(nx).enumerate() {
                if row.iter().all(|&x| x == 0) {
                    continue;
                }
                for (i, &a) in row.iter().enumerate() {
                    if a != 0 {
                        grow(&mut boxes[a as usize], [i, j, k], [i, j, k]);
                    }
                }
            }
            boxes
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                if let Some((lo, hi)) = y {
                    grow(x, lo, hi);
                }
            }
            a
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

    #[test]
    fn one_voxel_crosses_every_line_twice() {
        let dims = [3, 3, 3];
        let mut labels = vec![0u8; 27];
        labels[13] = 4;
        let acc = accumulate(&labels, dims, &UNIT, SliceAxis::Axial);
        assert_eq!(acc.len(), 1);
        let (label, a) = &acc[0];
        assert_eq!(*label, 4);
        assert_eq!(a.voxels, 1);
        assert_eq!(a.bbox_min, [1, 1, 1]);
        assert_eq!(a.bbox_max, [1, 1, 1]);
        assert_eq!(a.intercepts, [2; 13]);
        assert_eq!(a.slice_voxels[2], vec![0, 1, 0]);
        assert_eq!(a.slice_intercepts[1], [2; 4]);
    }

    #[test]
    fn border_counts_as_outside_and_labels_stay_apart() {
        // A 4x1x1 row: voxels 0,1 = label 1, voxels 2,3 = label 2.
        let labels = vec![1u8, 1, 2, 2];
        let acc = accumulate(&labels, [4, 1, 1], &UNIT, SliceAxis::Axial);
        assert_eq!(acc.len(), 2);
        for (_, a) in &acc {
            assert_eq!(a.voxels, 2);
            assert_eq!(a.intercepts[0], 2, "one run along x: two crossings");
            assert_eq!(a.intercepts[1], 4, "two runs of length 1 along y");
            assert_eq!(a.intercepts[9], 4);
        }
        assert_eq!(acc[1].1.bbox_min, [2, 0, 0]);
        assert_eq!(acc[1].1.index_sum, [5, 0, 0]);
        assert_eq!((acc[1].1.extent_min, acc[1].1.extent_max), ([2.0, 0.0, 0.0], [3.0, 0.0, 0.0]));
    }

    #[test]
    fn boxes_cover_every_label() {
        let mut labels = vec![0u8; 4 * 3 * 2];
        labels[1 + 4 * (2 + 3)] = 7; // (1, 2, 1)
        labels[3] = 7; // (3, 0, 0)
        let boxes = label_boxes(&labels, [4, 3, 2]);
        assert_eq!(boxes[7], Some(([1, 0, 0], [3, 2, 1])));
        assert_eq!(boxes[0], None);
        assert_eq!(boxes[1], None);
    }
}
