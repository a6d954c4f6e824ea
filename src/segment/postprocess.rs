//! What SAM2's video predictor and MedSAM2's 3D CT script do to the network's mask logits:
//!
//! * `resize_bilinear`: `F.interpolate(mode="bilinear", align_corners=False)` without
//!   antialiasing, as PyTorch's CPU kernel computes it in float32 (low-res 4E x 4E logits to
//!   the slice's H x W, or to S x S for the memory encoder). PyTorch's AVX2 build contracts
//!   each `a·wa + b·wb` into `fma(a, wa, b·wb)`; doing the same reproduces the reference
//!   tensors bit for bit (plain multiply-add is off by up to 1 ulp).
//! * `fill_small_holes`: SAM2's `fill_holes_in_mask_scores`: background pixels (logit <= 0)
//!   whose 8-connected background component (border-touching ones included) has at most
//!   `max_area` pixels become 0.1.
//! * `mark_foreground` + `keep_largest_component`: the final 3D mask, (logits > 0) of the
//!   forward pass OR the backward pass, reduced to its largest 26-connected component, ties
//!   going to the component that starts first in raster order (as `np.argmax(np.bincount(
//!   skimage.measure.label(seg).flat)[1:])` picks the lowest label).
//!
//! Both connected-component steps share one run-based union-find labelling (no recursion, no
//! per-voxel allocation): a 2D map is a one-slice volume, where the 26-neighbourhood is the
//! 8-neighbourhood.

use crate::volume::{SliceAxis, extract_slice, insert_slice};
use rayon::prelude::*;

/// The logit SAM2 writes into filled holes.
pub const HOLE_FILL_LOGIT: f32 = 0.1;

/// A buffer or index that does not fit the shape it is used with.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MaskShapeError {
    #[error("a {dims:?} grid needs {expected} values, got {actual}")]
    Length { dims: [usize; 3], expected: usize, actual: usize },
    #[error("slice {index} does not exist: the volume has {count} along that axis")]
    NoSuchSlice { index: usize, count: usize },
    #[error("a {dims:?} mask is too large to label (more than 2^32 - 1 voxels)")]
    TooLarge { dims: [usize; 3] },
}

fn check_len(len: usize, dims: [usize; 3]) -> Result<(), MaskShapeError> {
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match expected {
        Some(expected) if expected == len => Ok(()),
        _ => Err(MaskShapeError::Length { dims, expected: expected.unwrap_or(usize::MAX), actual: len }),
    }
}

/// Bilinear resize of a row-major single-channel map from `src_size` to `dst_size` (both
/// (width, height)), as `torch.nn.functional.interpolate(mode="bilinear",
/// align_corners=False)` computes it on the CPU in float32.
pub fn resize_bilinear(src: &[f32], src_size: (usize, usize), dst_size: (usize, usize)) -> Result<Vec<f32>, MaskShapeError> {
    check_len(src.len(), [src_size.0, src_size.1, 1])?;
    let (dw, dh) = dst_size;
    let mut out = vec![0f32; dw * dh];
    if src.is_empty() {
        return Ok(out);
    }
    let xs = LinearTaps::new(src_size.0, dw);
    let ys = LinearTaps::new(src_size.1, dh);
    let sw = src_size.0;
    let along_x = |r: usize, out: &mut Vec<f32>| {
        let line = &src[r * sw..(r + 1) * sw];
        out.clear();
        out.extend((0..dw).map(|x| line[xs.index0[x]].mul_add(xs.lambda0[x], line[xs.index1[x]] * xs.lambda1[x])));
    };
    // Each output row blends two source rows already interpolated along x. The source rows
    // only move forward, so the last two are kept (values identical to interpolating each
    // output pixel from its four source samples).
    let mut upper = (usize::MAX, Vec::with_capacity(dw));
    let mut lower = (usize::MAX, Vec::with_capacity(dw));
    for (y, row) in out.chunks_exact_mut(dw.max(1)).enumerate() {
        let (a, b) = (ys.index0[y], ys.index1[y]);
        if upper.0 != a {
            if lower.0 == a {
                std::mem::swap(&mut upper, &mut lower);
            } else {
                along_x(a, &mut upper.1);
                upper.0 = a;
            }
        }
        if lower.0 != b {
            along_x(b, &mut lower.1);
            lower.0 = b;
        }
        let (wy0, wy1) = (ys.lambda0[y], ys.lambda1[y]);
        for ((o, &top), &bottom) in row.iter_mut().zip(&upper.1).zip(&lower.1) {
            *o = top.mul_add(wy0, bottom * wy1);
        }
    }
    Ok(out)
}

/// Source samples and weights of one axis of a bilinear resize (PyTorch's
/// `compute_source_index_and_lambda`, float32).
struct LinearTaps {
    index0: Vec<usize>,
    index1: Vec<usize>,
    lambda0: Vec<f32>,
    lambda1: Vec<f32>,
}

impl LinearTaps {
    fn new(in_size: usize, out_size: usize) -> Self {
        let mut taps = LinearTaps {
            index0: Vec::with_capacity(out_size),
            index1: Vec::with_capacity(out_size),
            lambda0: Vec::with_capacity(out_size),
            lambda1: Vec::with_capacity(out_size),
        };
        let scale = in_size as f32 / out_size as f32;
        for i in 0..out_size {
            let (i0, i1, l1) = if in_size == out_size {
                (i, i, 0.0)
            } else {
                let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (real as usize).min(in_size - 1);
                let l1 = (real - i0 as f32).clamp(0.0, 1.0);
                (i0, if i0 < in_size - 1 { i0 + 1 } else { i0 }, l1)
            };
            taps.index0.push(i0);
            taps.index1.push(i1);
            taps.lambda0.push(1.0 - l1);
            taps.lambda1.push(l1);
        }
        taps
    }
}

/// SAM2's `fill_holes_in_mask_scores` on one row-major map of `size` (width, height): every
/// 8-connected component of background pixels (logit <= 0) with at most `max_area` pixels is
/// set to `HOLE_FILL_LOGIT`, including components that touch the border. Returns how many
/// pixels changed.
pub fn fill_small_holes(logits: &mut [f32], size: (usize, usize), max_area: usize) -> Result<usize, MaskShapeError> {
    let dims = [size.0, size.1, 1];
    check_len(logits.len(), dims)?;
    let components = Components::label(logits, dims, |&v| v <= 0.0)?;
    let mut changed = 0;
    for (run, &root) in components.runs.iter().zip(&components.root) {
        if components.size[root as usize] as usize <= max_area {
            let row = &mut logits[run.row as usize * size.0..][..size.0];
            row[run.start as usize..run.end as usize].fill(HOLE_FILL_LOGIT);
            changed += (run.end - run.start) as usize;
        }
    }
    Ok(changed)
}

/// Sets the voxels of slice `index` along `axis` of a u8 mask (x fastest, `dims`) to 1 where
/// `logits` (the slice at video resolution, u fastest) is positive; other voxels keep their
/// value, so calling it for both propagation directions ORs them.
pub fn mark_foreground(
    mask: &mut [u8],
    dims: [usize; 3],
    axis: SliceAxis,
    index: usize,
    logits: &[f32],
) -> Result<(), MaskShapeError> {
    check_len(mask.len(), dims)?;
    let count = dims[axis.normal()];
    if index >= count {
        return Err(MaskShapeError::NoSuchSlice { index, count });
    }
    let (u, v) = axis.in_plane();
    check_len(logits.len(), [dims[u], dims[v], 1])?;
    let mut slice = Vec::with_capacity(logits.len());
    extract_slice(mask, dims, axis, index, &mut slice);
    for (m, &l) in slice.iter_mut().zip(logits) {
        if l > 0.0 {
            *m = 1;
        }
    }
    insert_slice(mask, dims, axis, index, &slice);
    Ok(())
}

/// What `keep_largest_component` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargestComponent {
    /// Number of 26-connected components in the input.
    pub components: usize,
    /// Voxels of the component that was kept (0 for an empty mask).
    pub voxels: usize,
}

/// Keeps only the largest 26-connected component of a mask (non-zero = foreground, x fastest,
/// `dims`), set to 1; everything else becomes 0. Of equally large components the one whose
/// first voxel comes first in memory order wins, as with MedSAM2's `getLargestCC`.
pub fn keep_largest_component(mask: &mut [u8], dims: [usize; 3]) -> Result<LargestComponent, MaskShapeError> {
    check_len(mask.len(), dims)?;
    let components = Components::label(mask, dims, |&v| v != 0)?;
    let mut best: Option<u32> = None;
    for (root, &size) in components.size.iter().enumerate() {
        if size > 0 && best.is_none_or(|b| size > components.size[b as usize]) {
            best = Some(root as u32);
        }
    }
    let Some(best) = best else {
        return Ok(LargestComponent { components: 0, voxels: 0 });
    };
    mask.fill(0);
    let nx = dims[0];
    for (run, &root) in components.runs.iter().zip(&components.root) {
        if root == best {
            mask[run.row as usize * nx..][run.start as usize..run.end as usize].fill(1);
        }
    }
    Ok(LargestComponent { components: components.count, voxels: components.size[best as usize] as usize })
}

/// A maximal stretch of foreground voxels along x in one row (y, z) of a volume.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Row number y + ny·z.
    row: u32,
    start: u32,
    /// One past the last voxel.
    end: u32,
}

/// The 26-connected components of a volume's foreground as runs labelled by union-find.
struct Components {
    /// Foreground runs in memory order.
    runs: Vec<Run>,
    /// For each run, its component's first run (the root).
    root: Vec<u32>,
    /// Voxel count per root run (0 for runs that are not roots).
    size: Vec<u32>,
    /// Number of components.
    count: usize,
}

impl Components {
    fn label<T: Sync>(
        data: &[T],
        dims: [usize; 3],
        foreground: impl Fn(&T) -> bool + Sync,
    ) -> Result<Self, MaskShapeError> {
        if data.len() >= u32::MAX as usize {
            return Err(MaskShapeError::TooLarge { dims });
        }
        let [nx, ny, nz] = dims;
        let rows = ny * nz;
        // Runs plane by plane in parallel, concatenated in memory order.
        let plane = nx * ny;
        let per_plane: Vec<Vec<Run>> = if plane == 0 {
            Vec::new()
        } else {
            data.par_chunks(plane)
                .enumerate()
                .map(|(z, voxels)| {
                    let mut runs = Vec::new();
                    for (y, line) in voxels.chunks_exact(nx).enumerate() {
                        push_runs(line, (y + ny * z) as u32, &foreground, &mut runs);
                    }
                    runs
                })
                .collect()
        };
        let runs = per_plane.concat();
        // `first[r]..first[r + 1]` are the runs of row r.
        let mut first = vec![0u32; rows + 1];
        for run in &runs {
            first[run.row as usize + 1] += 1;
        }
        for r in 0..rows {
            first[r + 1] += first[r];
        }
        let span = |r: usize| first[r] as usize..first[r + 1] as usize;

        // Join each row's runs with those of the four earlier rows of its 26-neighbourhood:
        // (y-1, z), and (y-1, z-1), (y, z-1), (y+1, z-1).
        let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
        for z in 0..nz {
            for y in 0..ny {
                let current = span(y + ny * z);
                if current.is_empty() {
                    continue;
                }
                let earlier = [
                    (y > 0).then(|| y - 1 + ny * z),
                    (y > 0 && z > 0).then(|| y - 1 + ny * (z - 1)),
                    (z > 0).then(|| y + ny * (z - 1)),
                    (y + 1 < ny && z > 0).then(|| y + 1 + ny * (z - 1)),
                ];
                for other in earlier.into_iter().flatten() {
                    join_touching(&runs, current.clone(), span(other), &mut parent);
                }
            }
        }

        // Every link points to a smaller index, so one ascending pass resolves the roots, and
        // each root is its component's first run.
        let mut size = vec![0u32; runs.len()];
        let mut count = 0;
        for i in 0..parent.len() {
            let p = parent[parent[i] as usize];
            parent[i] = p;
            count += (p as usize == i) as usize;
            size[p as usize] += runs[i].end - runs[i].start;
        }
        Ok(Components { runs, root: parent, size, count })
    }
}

/// Appends the runs of foreground samples of one row.
fn push_runs<T>(line: &[T], row: u32, foreground: &impl Fn(&T) -> bool, runs: &mut Vec<Run>) {
    let mut x = 0;
    while let Some(offset) = line[x..].iter().position(foreground) {
        let start = x + offset;
        let length = line[start..].iter().position(|v| !foreground(v)).unwrap_or(line.len() - start);
        x = start + length;
        runs.push(Run { row, start: start as u32, end: x as u32 });
    }
}

/// Unions every run of `a` with every run of `b` (two rows that are neighbours) that it
/// touches, diagonal contact along x included. Both ranges are sorted by x.
fn join_touching(runs: &[Run], a: std::ops::Range<usize>, b: std::ops::Range<usize>, parent: &mut [u32]) {
    let (mut i, mut j) = (a.start, b.start);
    while i < a.end && j < b.end {
        let (ra, rb) = (runs[i], runs[j]);
        if rb.start <= ra.end && ra.start <= rb.end {
            union(parent, i as u32, j as u32);
        }
        if rb.end <= ra.end {
            j += 1;
        } else {
            i += 1;
        }
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grandparent = parent[parent[x as usize] as usize];
        parent[x as usize] = grandparent;
        x = grandparent;
    }
    x
}

/// Links the larger root under the smaller one, so roots stay the first runs.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb) as usize] = ra.min(rb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::reference::Fixture;

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Resizes each [n, 1, h, w] map of `from` to the size of `to` and compares.
    fn check_bilinear(file: &str, from: &str, to: &str) -> f32 {
        let f = Fixture::open(file);
        let (src_shape, src) = f.f32(from);
        let (dst_shape, dst) = f.f32(to);
        let (sh, sw, dh, dw) = (src_shape[2], src_shape[3], dst_shape[2], dst_shape[3]);
        let mut worst = 0f32;
        for (s, d) in src.chunks(sh * sw).zip(dst.chunks(dh * dw)) {
            let got = resize_bilinear(s, (sw, sh), (dw, dh)).unwrap();
            worst = worst.max(max_abs_diff(&got, d));
        }
        worst
    }

    #[test]
    fn bilinear_matches_torch_interpolate_on_the_fixtures() {
        let cases = [
            ("03_mask_decoder.safetensors", "pred_masks", "video_res_logits"),
            ("03_mask_decoder.safetensors", "sam_heads.low_res_multimasks", "sam_heads.high_res_multimasks"),
            ("04_memory_encoder.safetensors", "mask_high_res", "mask_high_res"),
            ("06_propagation.safetensors", "fwd.low_res_logits", "fwd.video_res_logits"),
            ("06_propagation.safetensors", "rev.low_res_logits", "rev.video_res_logits"),
            ("07_refine.safetensors", "pass2.low_res_logits", "pass2.video_res_logits"),
            ("07_refine.safetensors", "click.pred_masks", "click.video_res_logits"),
        ];
        for (file, from, to) in cases {
            let worst = check_bilinear(file, from, to);
            assert!(worst == 0.0, "{file} {from} -> {to}: max |diff| {worst}");
        }
        let f3 = Fixture::open("03_mask_decoder.safetensors");
        let f4 = Fixture::open("04_memory_encoder.safetensors");
        let got = resize_bilinear(&f3.f32("pred_masks").1, (32, 32), (128, 128)).unwrap();
        assert_eq!(got, f4.f32("mask_high_res").1);
    }

    #[test]
    fn bilinear_upsampling_by_two_uses_quarter_weights() {
        // align_corners=False: output x=1 sits at source 0.25, x=0 clamps to source 0.
        let got = resize_bilinear(&[0.0, 4.0, 8.0, 12.0], (2, 2), (4, 4)).unwrap();
        assert_eq!(&got[..4], &[0.0, 1.0, 3.0, 4.0]);
        assert_eq!(&got[4..8], &[2.0, 3.0, 5.0, 6.0]);
        assert_eq!(resize_bilinear(&[1.0, 2.0], (2, 1), (2, 1)).unwrap(), [1.0, 2.0]);
        assert!(resize_bilinear(&[1.0], (2, 1), (2, 1)).is_err());
        assert_eq!(resize_bilinear(&[], (0, 0), (2, 1)).unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn fill_holes_matches_sam2_on_the_fixtures() {
        for (file, prefix) in [
            ("06_propagation.safetensors", "fwd."),
            ("06_propagation.safetensors", "rev."),
            ("07_refine.safetensors", "pass2."),
        ] {
            let f = Fixture::open(file);
            let (shape, before) = f.f32(&format!("{prefix}low_res_logits_before_fill"));
            let (_, after) = f.f32(&format!("{prefix}low_res_logits"));
            let (h, w) = (shape[2], shape[3]);
            for (b, a) in before.chunks(h * w).zip(after.chunks(h * w)) {
                let mut got = b.to_vec();
                fill_small_holes(&mut got, (w, h), 8).unwrap();
                assert_eq!(got, a, "{file} {prefix}");
            }
        }
        let f = Fixture::open("03_mask_decoder.safetensors");
        let (_, mut masks) = f.f32("sam_heads.low_res_masks");
        let changed = fill_small_holes(&mut masks, (32, 32), 8).unwrap();
        assert_eq!(masks, f.f32("pred_masks").1);
        assert_eq!(changed as i32, f.i32("fill_holes_changed_pixels").1[0]);
        let f = Fixture::open("07_refine.safetensors");
        let (_, mut masks) = f.f32("click.low_res_masks");
        fill_small_holes(&mut masks, (32, 32), 8).unwrap();
        assert_eq!(masks, f.f32("click.pred_masks").1);
    }

    /// A grid from rows of '#' (foreground, logit 1) and '.' (background, logit -1).
    fn grid(rows: &[&str]) -> (Vec<f32>, (usize, usize)) {
        let w = rows[0].len();
        let values = rows.iter().flat_map(|r| r.chars().map(|c| if c == '#' { 1.0 } else { -1.0 })).collect();
        (values, (w, rows.len()))
    }

    #[test]
    fn fill_holes_fills_small_background_components_with_8_connectivity() {
        let (mut logits, size) = grid(&[
            "#######", //
            "#..####", // a 3-pixel hole joined through a diagonal
            "###.###", //
            "#######", //
            "###....", // a 4-pixel background region on the border
            "..#####", // a 2-pixel one (not touching the 4 pixels: dx = 2)
        ]);
        let changed = fill_small_holes(&mut logits, size, 3).unwrap();
        assert_eq!(changed, 5);
        let filled: Vec<usize> = (0..logits.len()).filter(|&i| logits[i] == HOLE_FILL_LOGIT).collect();
        assert_eq!(filled, [8, 9, 17, 35, 36]);
        assert_eq!(logits.iter().filter(|&&v| v == -1.0).count(), 4);
        assert_eq!(fill_small_holes(&mut [], (0, 0), 8), Ok(0));
        assert_eq!(fill_small_holes(&mut [-1.0], (1, 1), 0), Ok(0));
    }

    fn volume(dims: [usize; 3], voxels: &[[usize; 3]]) -> Vec<u8> {
        let mut m = vec![0u8; dims.iter().product()];
        for &[x, y, z] in voxels {
            m[x + dims[0] * (y + dims[1] * z)] = 1;
        }
        m
    }

    #[test]
    fn largest_component_keeps_the_bigger_blob() {
        let dims = [6, 5, 4];
        let small = [[0, 0, 0], [1, 0, 0]];
        let big = [[4, 3, 2], [4, 4, 2], [5, 4, 3], [4, 3, 3]];
        let mut m = volume(dims, &[small.as_slice(), big.as_slice()].concat());
        let found = keep_largest_component(&mut m, dims).unwrap();
        assert_eq!(found, LargestComponent { components: 2, voxels: 4 });
        assert_eq!(m, volume(dims, &big));
    }

    #[test]
    fn diagonal_contact_joins_under_26_connectivity() {
        // Two voxels meeting only at a corner (dx = dy = dz = 1) and an edge (dy = dz = 1):
        // one component under 26-connectivity, three under 6-connectivity.
        let dims = [4, 4, 4];
        let chain = [[0, 0, 0], [1, 1, 1], [1, 2, 2]];
        let mut m = volume(dims, &chain);
        assert_eq!(keep_largest_component(&mut m, dims).unwrap(), LargestComponent { components: 1, voxels: 3 });
        // Going back up in y on the next slice (dy = -1, dz = 1) also touches.
        let mut m = volume(dims, &[[2, 2, 0], [3, 1, 1], [0, 3, 3]]);
        assert_eq!(keep_largest_component(&mut m, dims).unwrap(), LargestComponent { components: 2, voxels: 2 });
        assert_eq!(m, volume(dims, &[[2, 2, 0], [3, 1, 1]]));
        // Diagonal in the plane, sweeping right to left.
        let mut m = volume(dims, &[[3, 0, 0], [2, 1, 0], [1, 2, 0], [0, 3, 0], [0, 0, 2]]);
        assert_eq!(keep_largest_component(&mut m, dims).unwrap(), LargestComponent { components: 2, voxels: 4 });
    }

    #[test]
    fn ties_go_to_the_component_that_starts_first() {
        let dims = [5, 3, 3];
        let later = [[0, 0, 2], [1, 0, 2]];
        let earlier = [[4, 2, 0], [4, 2, 1]];
        let mut m = volume(dims, &[later.as_slice(), earlier.as_slice()].concat());
        assert_eq!(keep_largest_component(&mut m, dims).unwrap().components, 2);
        assert_eq!(m, volume(dims, &earlier));
    }

    #[test]
    fn u_shape_merges_two_roots_found_earlier() {
        // Two arms first seen as separate runs, joined by a bottom bar on a later row.
        let dims = [5, 3, 1];
        let mut m = volume(dims, &[[0, 0, 0], [4, 0, 0], [0, 1, 0], [4, 1, 0], [0, 2, 0], [1, 2, 0], [2, 2, 0], [3, 2, 0], [4, 2, 0]]);
        assert_eq!(keep_largest_component(&mut m, dims).unwrap(), LargestComponent { components: 1, voxels: 9 });
    }

    #[test]
    fn empty_and_malformed_masks() {
        let mut empty = vec![0u8; 27];
        assert_eq!(keep_largest_component(&mut empty, [3, 3, 3]).unwrap(), LargestComponent { components: 0, voxels: 0 });
        assert_eq!(empty, [0; 27]);
        assert_eq!(keep_largest_component(&mut [], [0, 5, 5]).unwrap().components, 0);
        assert!(keep_largest_component(&mut [1, 1], [3, 1, 1]).is_err());
    }

    #[test]
    fn largest_component_matches_skimage_on_the_fixture() {
        let f = Fixture::open("06_propagation.safetensors");
        let (shape, seg_or) = f.u8("seg_or");
        let (_, seg_lcc) = f.u8("seg_lcc");
        let (_, labels) = f.i32("cc_labels");
        let dims = [shape[2], shape[1], shape[0]];
        let mut m = seg_or.clone();
        let found = keep_largest_component(&mut m, dims).unwrap();
        assert_eq!(m, seg_lcc);
        assert_eq!(found.components as i32, labels.iter().copied().max().unwrap());
        assert_eq!(found.voxels, seg_lcc.iter().filter(|&&v| v != 0).count());
    }

    #[test]
    fn forward_or_backward_logits_rebuild_the_fixture_mask() {
        let f = Fixture::open("06_propagation.safetensors");
        let (shape, seg_or) = f.u8("seg_or");
        let dims = [shape[2], shape[1], shape[0]];
        let plane = dims[0] * dims[1];
        let mut m = vec![0u8; seg_or.len()];
        for pass in ["fwd", "rev"] {
            let (_, order) = f.i32(&format!("{pass}.frame_order"));
            let (_, logits) = f.f32(&format!("{pass}.video_res_logits"));
            for (&z, l) in order.iter().zip(logits.chunks(plane)) {
                mark_foreground(&mut m, dims, SliceAxis::Axial, z as usize, l).unwrap();
            }
        }
        assert_eq!(m, seg_or);
        assert_eq!(
            mark_foreground(&mut m, dims, SliceAxis::Axial, dims[2], &vec![0.0; plane]),
            Err(MaskShapeError::NoSuchSlice { index: dims[2], count: dims[2] })
        );
    }

    #[test]
    fn mark_foreground_writes_along_any_axis() {
        let dims = [3, 4, 5];
        for axis in SliceAxis::ALL {
            let (u, v) = axis.in_plane();
            let (w, h) = (dims[u], dims[v]);
            let logits: Vec<f32> = (0..w * h).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
            let mut m = vec![0u8; 60];
            mark_foreground(&mut m, dims, axis, 1, &logits).unwrap();
            for b in 0..h {
                for a in 0..w {
                    let [x, y, z] = axis.voxel(1, a, b);
                    assert_eq!(m[x + 3 * (y + 4 * z)], ((a + w * b) % 2 == 0) as u8, "{axis:?}");
                }
            }
            assert_eq!(m.iter().map(|&v| v as usize).sum::<usize>(), (w * h).div_ceil(2));
        }
    }

    /// Times the LCC of a 512 x 512 x 300 mask holding an organ-sized ellipsoid (~2.4 M voxels)
    /// plus scattered specks. Run with `cargo test --lib -- --ignored --nocapture timing`.
    #[test]
    #[ignore]
    fn timing_largest_component_512() {
        let dims = [512usize, 512, 300];
        let mut m = vec![0u8; dims.iter().product()];
        let (c, r) = ([250.0, 260.0, 150.0], [90.0, 70.0, 60.0]);
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let d: f64 = [x, y, z].iter().zip(c.iter().zip(&r)).map(|(&p, (&c, &r))| ((p as f64 - c) / r).powi(2)).sum();
                    let speck = (x * 7919 + y * 104729 + z * 1299709) % 4001 == 0;
                    if d <= 1.0 || speck {
                        m[x + 512 * (y + 512 * z)] = 1;
                    }
                }
            }
        }
        let t = std::time::Instant::now();
        let found = keep_largest_component(&mut m, dims).unwrap();
        eprintln!(
            "timing: LCC 512x512x300: {:.1} ms ({} components, kept {} voxels)",
            t.elapsed().as_secs_f64() * 1e3,
            found.components,
            found.voxels
        );
        let low: Vec<f32> = (0..128 * 128).map(|i| (i % 97) as f32 - 48.0).collect();
        let t = std::time::Instant::now();
        for _ in 0..300 {
            std::hint::black_box(resize_bilinear(&low, (128, 128), (512, 512)).unwrap());
        }
        eprintln!("timing: 300 bilinear resizes 128 -> 512: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
