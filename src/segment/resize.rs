//! Pillow's bicubic resize of an 8-bit image, reproduced bit for bit.
//!
//! MedSAM2 squashes every slice to S x S with `Image.resize` on an RGB image, whose default
//! filter is BICUBIC. Pillow resamples separably, skipping a pass whose size does not change.
//! Pillow 13 (the reference's version) runs the horizontal pass first (only over the rows the
//! vertical pass will read) unless the height shrinks by more than twice as many pixels as the
//! width does, in which case the vertical pass runs first; Pillow 12 and older always ran the
//! horizontal pass first, so they differ from this (and from 13) only in that case.
//! Every output sample takes a window of source samples weighted by the cubic kernel (a = -0.5)
//! stretched by the down-scale factor; the weights of a window are normalised to sum 1 in
//! double precision, turned into 22-bit fixed point, and every pass rounds and clamps its result
//! to 0..=255. Resizing to the same size copies the image.
//!
//! Written by hand because no crate reproduces Pillow's integer arithmetic (the `image` crate's
//! filters differ in kernel, support and rounding), and the model input must match the
//! reference exactly. All channels of MedSAM2's RGB image are the same grey level, so one
//! channel is resampled.

/// Fractional bits of the fixed-point weights (32 bits - 8 for the sample - 2 for overshoot).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The precomputed weights of one resampling direction.
#[derive(Clone, Debug)]
struct Pass {
    /// Weights per output sample (only the first `count` of each row are non-zero).
    taps: usize,
    /// First source sample of each output sample's window.
    start: Vec<usize>,
    /// Number of source samples in each window.
    count: Vec<usize>,
    /// `out_size * taps` fixed-point weights.
    weights: Vec<i32>,
}

/// Resizes single-channel 8-bit images of one size to another size as Pillow's BICUBIC does.
/// Build it once per pair of sizes and apply it to every slice.
#[derive(Clone, Debug)]
pub struct BicubicResampler {
    src: (usize, usize),
    dst: (usize, usize),
    horizontal: Option<Pass>,
    vertical: Option<Pass>,
    /// Whether the vertical pass runs before the horizontal one (Pillow 13's choice).
    vertical_first: bool,
    /// Source rows the vertical pass reads: a horizontal pass that runs first computes only these.
    rows: std::ops::Range<usize>,
}

impl BicubicResampler {
    /// A resampler from `src` = (width, height) to `dst` = (width, height).
    pub fn new(src: (usize, usize), dst: (usize, usize)) -> Self {
        let empty = src.0 == 0 || src.1 == 0 || dst.0 == 0 || dst.1 == 0;
        let horizontal = (!empty && src.0 != dst.0).then(|| Pass::new(src.0, dst.0));
        let vertical = (!empty && src.1 != dst.1).then(|| Pass::new(src.1, dst.1));
        let rows = match &vertical {
            Some(v) => v.start[0]..v.start[dst.1 - 1] + v.count[dst.1 - 1],
            None => 0..src.1,
        };
        let shrink_y = src.1 as i64 - dst.1 as i64;
        let shrink_x = src.0 as i64 - dst.0 as i64;
        let vertical_first = shrink_y > 0 && shrink_y > shrink_x * 2;
        BicubicResampler { src, dst, horizontal, vertical, vertical_first, rows }
    }

    /// Source size (width, height).
    pub fn source_size(&self) -> (usize, usize) {
        self.src
    }

    /// Output size (width, height).
    pub fn output_size(&self) -> (usize, usize) {
        self.dst
    }

    /// Resamples `src` (row-major, source size) into `dst` (row-major, output size).
    /// `scratch` holds the horizontal pass between calls so that no call allocates once warm.
    /// Buffers of the wrong length give an all-zero (or empty) output rather than a panic.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], scratch: &mut Vec<u8>) {
        let (sw, sh) = self.src;
        let (dw, dh) = self.dst;
        if dst.len() != dw * dh || dst.is_empty() {
            dst.fill(0);
            return;
        }
        if src.len() != sw * sh || sw == 0 || sh == 0 {
            dst.fill(0);
            return;
        }
        match (&self.horizontal, &self.vertical) {
            (None, None) => dst.copy_from_slice(src),
            (Some(h), None) => h.horizontal(src, sw, self.rows.clone(), dst),
            (None, Some(v)) => v.vertical(src, dw, 0, dst),
            (Some(h), Some(v)) if self.vertical_first => {
                scratch.clear();
                scratch.resize(sw * dh, 0);
                v.vertical(src, sw, 0, scratch);
                h.horizontal(scratch, sw, 0..dh, dst);
            }
            (Some(h), Some(v)) => {
                scratch.clear();
                scratch.resize(dw * self.rows.len(), 0);
                h.horizontal(src, sw, self.rows.clone(), scratch);
                v.vertical(scratch, dw, self.rows.start, dst);
            }
        }
    }
}

impl Pass {
    /// Pillow's coefficient windows for resampling `in_size` samples to `out_size` samples over
    /// the whole source (box 0..in_size), converted to fixed point.
    fn new(in_size: usize, out_size: usize) -> Self {
        // Pillow takes the box as floats and computes the scale in double precision.
        let scale = (in_size as f32) as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = CUBIC_SUPPORT * filter_scale;
        let taps = support.ceil() as usize * 2 + 1;
        let inverse = 1.0 / filter_scale;
        let mut start = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * taps];
        let mut window = vec![0f64; taps];
        for (out, fixed) in weights.chunks_exact_mut(taps).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // C casts truncate toward zero; the clamps make that the same as flooring here.
            let lo = ((center - support + 0.5) as i64).max(0);
            let hi = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (hi - lo).clamp(0, taps as i64) as usize;
            let mut total = 0.0;
            for (i, w) in window[..n].iter_mut().enumerate() {
                *w = cubic(((i as i64 + lo) as f64 - center + 0.5) * inverse);
                total += *w;
            }
            for (w, f) in window[..n].iter().zip(fixed.iter_mut()) {
                let normalised = if total != 0.0 { w / total } else { *w };
                *f = to_fixed(normalised);
            }
            start.push(lo as usize);
            count.push(n);
        }
        Pass { taps, start, count, weights }
    }

    /// Horizontal pass over source rows `rows` of `src` (width `src_width`) into `out`
    /// (one output row per source row in `rows`).
    fn horizontal(&self, src: &[u8], src_width: usize, rows: std::ops::Range<usize>, out: &mut [u8]) {
        let out_width = self.start.len();
        for (row, out_row) in rows.zip(out.chunks_exact_mut(out_width)) {
            let line = &src[row * src_width..(row + 1) * src_width];
            for (x, o) in out_row.iter_mut().enumerate() {
                let (s, n) = (self.start[x], self.count[x]);
                let weights = &self.weights[x * self.taps..x * self.taps + n];
                let mut acc = ROUNDING;
                for (&p, &w) in line[s..s + n].iter().zip(weights) {
                    acc += p as i32 * w;
                }
                *o = clip8(acc);
            }
        }
    }

    /// Vertical pass: `src` holds rows `first_row..` of the (horizontally resampled) image,
    /// `width` samples each; `out` receives every output row.
    fn vertical(&self, src: &[u8], width: usize, first_row: usize, out: &mut [u8]) {
        let mut acc = vec![0i32; width];
        for (y, out_row) in out.chunks_exact_mut(width).enumerate() {
            let (s, n) = (self.start[y] - first_row, self.count[y]);
            let weights = &self.weights[y * self.taps..y * self.taps + n];
            acc.fill(ROUNDING);
            for (i, &w) in weights.iter().enumerate() {
                let line = &src[(s + i) * width..(s + i + 1) * width];
                for (a, &p) in acc.iter_mut().zip(line) {
                    *a += p as i32 * w;
                }
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }
}

/// Half-width of the cubic kernel at scale 1.
const CUBIC_SUPPORT: f64 = 2.0;

/// Initial accumulator value: one half in fixed point, so that the final shift rounds.
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Keys' cubic convolution kernel with a = -0.5, evaluated in Pillow's operation order.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// A normalised weight in fixed point, rounded half away from zero then truncated like C.
fn to_fixed(w: f64) -> i32 {
    let scaled = w * (1i32 << PRECISION_BITS) as f64;
    if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 }
}

/// Drops the fraction (arithmetic shift = floor) and clamps to a byte.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test images of the Pillow reference run: hashed noise (kind 0) or a ramp (kind 1).
    fn test_image(w: usize, h: usize, kind: u8) -> Vec<u8> {
        (0..w * h)
            .map(|i| match kind {
                0 => ((((i as u64 * 2654435761) % (1 << 32)) >> 13) & 255) as u8,
                _ => {
                    let (x, y) = ((i % w) as u64, (i / w) as u64);
                    ((x * 255 / (w as u64 - 1).max(1) + y * 3) % 256) as u8
                }
            })
            .collect()
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    }

    /// (src w, src h, dst w, dst h, image kind, FNV-1a 64 of the output, sum of the output) as
    /// computed by Pillow 13.0.0: `Image.fromarray(a).convert('RGB').resize((dw, dh))`.
    const PILLOW_13: [(usize, usize, usize, usize, u8, u64, u64); 20] = [
        (112, 96, 128, 128, 0, 0x115c04e2d2988ea2, 2088525),
        (7, 5, 16, 16, 0, 0xc8df3a92ea91fe3d, 30842),
        (300, 200, 128, 128, 0, 0xef2524b0cdb711c0, 2088891),
        (512, 300, 512, 512, 0, 0xf98398a9e6a65f0e, 33422563),
        (100, 512, 512, 512, 1, 0x05d6cca8716d39f5, 33422702),
        (512, 512, 512, 512, 0, 0x4db2b16867c26a25, 33423360),
        (333, 517, 512, 512, 0, 0xe7b5f7cf1529cf36, 33422537),
        (64, 64, 1, 1, 0, 0xaf63f24c860211ee, 127),
        (3, 1, 512, 512, 1, 0xa1b20e7e41189725, 33378816),
        (1000, 37, 64, 700, 0, 0x7afcbe99efba6544, 5711737),
        (333, 517, 512, 517, 0, 0x52b38de3e91d2ffb, 33749198),
        (512, 517, 512, 512, 0, 0xb63f5a2bcae73d3f, 33423218),
        (300, 517, 300, 512, 0, 0x3e760b2b4c8826e8, 19583889),
        (300, 520, 300, 512, 0, 0x806b6b8cbe87c62e, 19583601),
        (300, 600, 300, 512, 0, 0x6c8f5a38e81f0377, 19583828),
        (517, 100, 512, 100, 0, 0x3d44f350ba41e35a, 6527621),
        (600, 900, 512, 512, 0, 0x4f3f7e3cf81196d9, 33423100),
        (700, 900, 512, 512, 1, 0x50dd63de6354efe9, 33425528),
        (720, 900, 512, 512, 0, 0xe489437eda270971, 33423566),
        (200, 1000, 64, 64, 0, 0x1cb9e761040923a7, 522250),
    ];

    #[test]
    fn matches_pillow_bit_for_bit() {
        let mut scratch = Vec::new();
        let mut failed = Vec::new();
        for (sw, sh, dw, dh, kind, hash, sum) in PILLOW_13 {
            let src = test_image(sw, sh, kind);
            let mut dst = vec![0u8; dw * dh];
            BicubicResampler::new((sw, sh), (dw, dh)).apply(&src, &mut dst, &mut scratch);
            let got_sum: u64 = dst.iter().map(|&v| v as u64).sum();
            if (fnv1a(&dst), got_sum) != (hash, sum) {
                failed.push(format!("{sw}x{sh} -> {dw}x{dh}: sum {got_sum}, Pillow {sum}"));
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn same_size_is_a_copy() {
        let src = test_image(9, 4, 0);
        let mut dst = vec![0u8; 36];
        BicubicResampler::new((9, 4), (9, 4)).apply(&src, &mut dst, &mut Vec::new());
        assert_eq!(dst, src);
    }

    #[test]
    fn weights_of_each_window_sum_to_one_in_fixed_point() {
        for (i, o) in [(96, 128), (512, 128), (7, 3), (5, 5)] {
            let pass = Pass::new(i, o);
            for x in 0..o {
                let s: i32 = pass.weights[x * pass.taps..][..pass.count[x]].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= pass.taps as i32, "{i}->{o} at {x}: {s}");
            }
        }
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let mut scratch = Vec::new();
        let mut dst = vec![7u8; 4];
        BicubicResampler::new((0, 3), (2, 2)).apply(&[], &mut dst, &mut scratch);
        assert_eq!(dst, [0; 4]);
        BicubicResampler::new((3, 3), (0, 0)).apply(&[1; 9], &mut [], &mut scratch);
        let mut wrong = vec![9u8; 3];
        BicubicResampler::new((3, 3), (2, 2)).apply(&[1; 9], &mut wrong, &mut scratch);
        assert_eq!(wrong, [0; 3]);
    }
}
