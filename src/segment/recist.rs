//! RECIST lines as MedSAM2's RECIST-to-3D script (`medsam2_infer_CT_lesion_npz_recist.py`)
//! reads them, and the prompts it makes of them.
//!
//! A case's `recist` array is a label volume on the image's grid: each lesion's longest
//! diameter drawn with its label on one slice. The line's "ends" are its first and last pixel
//! in raster order (row by row, left to right), as `np.where` lists them; from them come the
//! square box (side = the ends' distance, centred on their midpoint, widened by a shift and
//! clipped to the slice) and the point prompts of `--sample-points`.

use crate::segment::numpy_rng::NumpyRandom;
use clap::ValueEnum;

/// How the key slice is prompted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PointSampling {
    /// 9 points on a 3 x 3 grid spanning the square box (corners included).
    #[value(name = "from_box", alias = "from-box")]
    FromBox,
    /// 5 pixels of the line, drawn at random without replacement.
    #[value(name = "from_recist_n", alias = "from-recist-n")]
    FromRecistN,
    /// The midpoint of the line's ends.
    #[value(name = "from_recist_center", alias = "from-recist-center")]
    FromRecistCenter,
    /// The midpoint and the two ends.
    #[value(name = "from_recist_3", alias = "from-recist-3")]
    FromRecist3,
}

impl PointSampling {
    /// The reference's name of the mode (`from_recist_n`...).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Points the reference draws from the line in `from_recist_n` and from the box in `from_box`.
const LINE_POINTS: usize = 5;
const GRID_POINTS: usize = 9;

/// Why a case's RECIST lines cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RecistError {
    #[error("the `recist` array holds no line (every value is 0)")]
    NoLines,
    #[error("`recist` holds the value {value}, which is not a label 1..255")]
    BadLabel { value: f64 },
    #[error("label {label}'s RECIST line spans slices {slices:?}; MedSAM2 needs it on one slice")]
    SeveralSlices { label: u8, slices: Vec<usize> },
    #[error(
        "label {label}'s RECIST line has {pixels} pixels; {needed} are needed to sample {needed} points"
    )]
    TooFewPixels {
        label: u8,
        pixels: usize,
        needed: usize,
    },
}

/// One label's line: its slice and pixels (x, y) in raster order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecistLine {
    pub label: u8,
    pub slice: usize,
    pub pixels: Vec<[usize; 2]>,
}

/// What the scan of a label volume keeps of one label: the slices it is on, and its pixels on
/// the first of them.
#[derive(Clone, Default)]
struct LabelPixels {
    slices: Vec<usize>,
    pixels: Vec<[usize; 2]>,
}

/// The lines of a label volume (`values[i]` for voxel i, x fastest, `dims` [x, y, z]), in
/// ascending label order, as the script visits them.
pub fn lines_of(
    values: impl Iterator<Item = f64>,
    dims: [usize; 3],
) -> Result<Vec<RecistLine>, RecistError> {
    let [width, height, _] = dims;
    let mut found: Vec<Option<LabelPixels>> = vec![None; 256];
    for (i, v) in values.enumerate() {
        if v == 0.0 {
            continue;
        }
        if !(1.0..=255.0).contains(&v) || v.fract() != 0.0 {
            return Err(RecistError::BadLabel { value: v });
        }
        let (x, y, z) = (i % width, (i / width) % height, i / (width * height));
        let LabelPixels { slices, pixels } = found[v as usize].get_or_insert_with(Default::default);
        if slices.last() != Some(&z) {
            slices.push(z);
        }
        if slices.len() == 1 {
            pixels.push([x, y]);
        }
    }
    let lines: Vec<RecistLine> = found
        .into_iter()
        .enumerate()
        .filter_map(|(label, entry)| entry.map(|e| (label as u8, e)))
        .map(
            |(label, LabelPixels { slices, pixels })| match slices.as_slice() {
                [slice] => Ok(RecistLine {
                    label,
                    slice: *slice,
                    pixels,
                }),
                _ => Err(RecistError::SeveralSlices { label, slices }),
            },
        )
        .collect::<Result<_, _>>()?;
    if lines.is_empty() {
        return Err(RecistError::NoLines);
    }
    Ok(lines)
}

impl RecistLine {
    /// The first and last pixel in raster order (the script's "endpoints").
    pub fn ends(&self) -> ([i64; 2], [i64; 2]) {
        let at = |p: &[usize; 2]| [p[0] as i64, p[1] as i64];
        (at(&self.pixels[0]), at(&self.pixels[self.pixels.len() - 1]))
    }

    /// The square box (x0, y0, x1, y1), inclusive: half side = floor(|ends| / 2) around the
    /// ends' midpoint (rounded down), widened by `shift` and clipped to a `width` x `height` slice.
    pub fn square_box(&self, shift: usize, width: usize, height: usize) -> [usize; 4] {
        let (a, b) = self.ends();
        let centre = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
        let (dx, dy) = ((a[0] - b[0]) as f64, (a[1] - b[1]) as f64);
        let half = ((dx * dx + dy * dy).sqrt() / 2.0) as i64;
        let shift = shift as i64;
        let low = |c: i64| (c - half - shift).max(0) as usize;
        let high = |c: i64, size: usize| (c + half + shift).min(size as i64 - 1).max(0) as usize;
        [
            low(centre[0]),
            low(centre[1]),
            high(centre[0], width),
            high(centre[1], height),
        ]
    }

    /// The midpoint of the ends, in float32 as the script computes it.
    pub fn centre(&self) -> [f32; 2] {
        let (a, b) = self.ends();
        [
            ((a[0] + b[0]) as f64 / 2.0) as f32,
            ((a[1] + b[1]) as f64 / 2.0) as f32,
        ]
    }

    /// The point prompt of `sampling` (all positive), in slice pixels (x, y).
    pub fn points(
        &self,
        sampling: PointSampling,
        shift: usize,
        width: usize,
        height: usize,
        rng: &mut NumpyRandom,
    ) -> Result<Vec<[f32; 2]>, RecistError> {
        let (a, b) = self.ends();
        Ok(match sampling {
            PointSampling::FromBox => {
                grid_points(self.square_box(shift, width, height), GRID_POINTS)
            }
            PointSampling::FromRecistN => {
                if self.pixels.len() < LINE_POINTS {
                    return Err(RecistError::TooFewPixels {
                        label: self.label,
                        pixels: self.pixels.len(),
                        needed: LINE_POINTS,
                    });
                }
                let chosen = rng.choice_without_replacement(self.pixels.len(), LINE_POINTS);
                chosen
                    .iter()
                    .map(|&i| self.pixels[i].map(|c| c as f32))
                    .collect()
            }
            PointSampling::FromRecistCenter => vec![self.centre()],
            PointSampling::FromRecist3 => {
                vec![self.centre(), a.map(|c| c as f32), b.map(|c| c as f32)]
            }
        })
    }
}

/// The first `n` points, row by row, of a ceil(sqrt(n))-square grid spanning `bbox` (inclusive),
/// with each axis' positions spaced as `np.linspace(lo, hi, side, dtype=int)` spaces them.
pub fn grid_points(bbox: [usize; 4], n: usize) -> Vec<[f32; 2]> {
    let side = (n as f64).sqrt().ceil() as usize;
    let xs = linspace_int(bbox[0], bbox[2], side);
    let ys = linspace_int(bbox[1], bbox[3], side);
    ys.iter()
        .flat_map(|&y| xs.iter().map(move |&x| [x as f32, y as f32]))
        .take(n)
        .collect()
}

/// `np.linspace(lo, hi, count, dtype=int)` for lo <= hi: start + i * step in float64, truncated,
/// the last one exactly `hi`.
fn linspace_int(lo: usize, hi: usize, count: usize) -> Vec<usize> {
    match count {
        0 => Vec::new(),
        1 => vec![lo],
        _ => {
            let step = (hi as f64 - lo as f64) / (count - 1) as f64;
            let mut values: Vec<usize> = (0..count)
                .map(|i| (i as f64 * step + lo as f64) as usize)
                .collect();
            values[count - 1] = hi;
            values
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 112 x 96 x 8 label volume with the fixtures' lines (tests/fixtures/recist/meta.json):
    /// label 1 on slice 3 from (22, 30) to (48, 44), label 2 on slice 5 from (86, 52) to (70, 74).
    fn fixture_lines() -> Vec<RecistLine> {
        let dims = [112, 96, 8];
        let mut labels = vec![0u8; dims.iter().product()];
        for (label, z, p, q) in [
            (1u8, 3usize, [22.0f64, 30.0], [48.0f64, 44.0]),
            (2, 5, [86.0, 52.0], [70.0, 74.0]),
        ] {
            let steps = f64::max((q[0] - p[0]).abs(), (q[1] - p[1]).abs()) as usize;
            for i in 0..=steps {
                let t = i as f64 / steps as f64;
                let x = (p[0] + t * (q[0] - p[0])).round_ties_even() as usize;
                let y = (p[1] + t * (q[1] - p[1])).round_ties_even() as usize;
                labels[x + 112 * (y + 96 * z)] = label;
            }
        }
        lines_of(labels.iter().map(|&v| f64::from(v)), dims).unwrap()
    }

    #[test]
    fn lines_boxes_and_points_are_the_scripts() {
        // Expected values: the reference's helpers on the same lines (meta.json, shift 2).
        let lines = fixture_lines();
        assert_eq!(
            (
                lines[0].label,
                lines[0].slice,
                lines[1].label,
                lines[1].slice
            ),
            (1, 3, 2, 5)
        );
        assert_eq!(lines[0].ends(), ([22, 30], [48, 44]));
        // Raster order: label 2's first pixel is its top (right) end.
        assert_eq!(lines[1].ends(), ([86, 52], [70, 74]));
        assert_eq!(lines[0].square_box(2, 112, 96), [19, 21, 51, 53]);
        assert_eq!(lines[1].square_box(2, 112, 96), [63, 48, 93, 78]);
        assert_eq!(lines[1].square_box(0, 80, 70), [65, 50, 79, 69]);
        let mut rng = NumpyRandom::seed(2024);
        let grid = lines[1]
            .points(PointSampling::FromBox, 2, 112, 96, &mut rng)
            .unwrap();
        assert_eq!(
            grid[..4],
            [[63.0, 48.0], [78.0, 48.0], [93.0, 48.0], [63.0, 63.0]]
        );
        assert_eq!(grid.len(), 9);
        assert_eq!(
            lines[0]
                .points(PointSampling::FromRecist3, 0, 112, 96, &mut rng)
                .unwrap(),
            [[35.0, 37.0], [22.0, 30.0], [48.0, 44.0]]
        );
        assert_eq!(
            lines[1]
                .points(PointSampling::FromRecistCenter, 0, 112, 96, &mut rng)
                .unwrap(),
            [[78.0, 63.0]]
        );
        let first = lines[0]
            .points(PointSampling::FromRecistN, 0, 112, 96, &mut rng)
            .unwrap();
        let second = lines[1]
            .points(PointSampling::FromRecistN, 0, 112, 96, &mut rng)
            .unwrap();
        assert_eq!(
            first,
            [
                [42.0, 41.0],
                [39.0, 39.0],
                [44.0, 42.0],
                [38.0, 39.0],
                [45.0, 42.0]
            ]
        );
        assert_eq!(
            second,
            [
                [71.0, 72.0],
                [74.0, 69.0],
                [85.0, 54.0],
                [79.0, 61.0],
                [77.0, 64.0]
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let dims = [4, 3, 2];
        let mut v = [0.0; 24];
        assert_eq!(lines_of(v.iter().copied(), dims), Err(RecistError::NoLines));
        v[1] = 3.0;
        v[13] = 3.0;
        assert_eq!(
            lines_of(v.iter().copied(), dims),
            Err(RecistError::SeveralSlices {
                label: 3,
                slices: vec![0, 1]
            })
        );
        v[13] = 0.5;
        assert_eq!(
            lines_of(v.iter().copied(), dims),
            Err(RecistError::BadLabel { value: 0.5 })
        );
        v[13] = 0.0;
        let lines = lines_of(v.iter().copied(), dims).unwrap();
        let mut rng = NumpyRandom::seed(0);
        assert_eq!(
            lines[0].points(PointSampling::FromRecistN, 0, 4, 3, &mut rng),
            Err(RecistError::TooFewPixels {
                label: 3,
                pixels: 1,
                needed: 5
            })
        );
        // A one-pixel line is a one-pixel box, as in the script.
        assert_eq!(lines[0].square_box(0, 4, 3), [1, 0, 1, 0]);
        assert_eq!(lines[0].square_box(5, 4, 3), [0, 0, 3, 2]);
    }

    #[test]
    fn linspace_truncates_like_numpy() {
        // np.linspace(3, 10, 4, dtype=int) -> [3, 5, 7, 10]; np.linspace(0, 7, 3, dtype=int) -> [0, 3, 7]
        assert_eq!(linspace_int(3, 10, 4), [3, 5, 7, 10]);
        assert_eq!(linspace_int(0, 7, 3), [0, 3, 7]);
        assert_eq!(linspace_int(5, 5, 3), [5, 5, 5]);
    }
}
