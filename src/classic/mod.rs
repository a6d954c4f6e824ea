//! Classical (weight-free) segmentation tools: threshold inside a box, region growing from a
//! seed, and the classic lung mask of a CT. Each produces a binary mask (`Vec<bool>`, one per
//! voxel of the image, x fastest) that `label_map` turns into a u8 label map with the image's
//! geometry.

pub mod components;
pub mod lung_mask;
pub mod region_grow;
pub mod threshold;

use crate::volume::{Geometry, Volume, VoxelBuffer};
use serde::Serialize;

/// Why a classical tool cannot run on its input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClassicError {
    #[error("the intensity range {lo} .. {hi} is empty or not finite")]
    BadRange { lo: f64, hi: f64 },
    #[error("the box {lo:?} .. {hi:?} is empty or reaches outside the image (dims {dims:?})")]
    BadBox { lo: [usize; 3], hi: [usize; 3], dims: [usize; 3] },
    #[error("the seed {seed:?} lies outside the image (dims {dims:?})")]
    SeedOutside { seed: [usize; 3], dims: [usize; 3] },
    #[error("the seed's value {value} lies outside the range {lo} .. {hi}")]
    SeedNotInRange { value: f64, lo: f64, hi: f64 },
    #[error("the image has {0} timepoints; the classical tools work on 3D images")]
    NotThreeD(usize),
    #[error("no air inside the body (below {threshold} HU, not connected to the image's sides) was found")]
    NoAirInside { threshold: f64 },
    #[error("the dilation radius {0} mm must be finite and not negative")]
    BadDilation(f64),
}

/// Which neighbours of a voxel touch it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connectivity {
    /// Faces only.
    #[default]
    Six,
    /// Faces, edges and corners.
    TwentySix,
}

impl Connectivity {
    /// The neighbour offsets (i, j, k).
    pub fn offsets(self) -> &'static [[isize; 3]] {
        const SIX: [[isize; 3]; 6] = [[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]];
        const TWENTY_SIX: [[isize; 3]; 26] = {
            let mut out = [[0isize; 3]; 26];
            let mut n = 0;
            let mut c = 0;
            while c < 27 {
                let d = [(c % 3) as isize - 1, ((c / 3) % 3) as isize - 1, (c / 9) as isize - 1];
                if c != 13 {
                    out[n] = d;
                    n += 1;
                }
                c += 1;
            }
            out
        };
        match self {
            Connectivity::Six => &SIX,
            Connectivity::TwentySix => &TWENTY_SIX,
        }
    }

    /// From the neighbour count: 6 or 26.
    pub fn from_count(n: u32) -> Option<Self> {
        match n {
            6 => Some(Connectivity::Six),
            26 => Some(Connectivity::TwentySix),
            _ => None,
        }
    }

    pub fn count(self) -> u32 {
        self.offsets().len() as u32
    }
}

/// An inclusive intensity range (HU for CT).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
}

impl Range {
    /// A range with finite bounds, lo ≤ hi.
    pub fn new(lo: f64, hi: f64) -> Result<Self, ClassicError> {
        if lo.is_finite() && hi.is_finite() && lo <= hi {
            Ok(Range { lo, hi })
        } else {
            Err(ClassicError::BadRange { lo, hi })
        }
    }

    pub fn contains(self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }
}

fn check_three_d(image: &Volume) -> Result<(), ClassicError> {
    if image.timepoints != 1 {
        return Err(ClassicError::NotThreeD(image.timepoints));
    }
    Ok(())
}

/// A u8 label map with `geometry`: `label` where `mask` is true, 0 elsewhere.
pub fn label_map(geometry: &Geometry, mask: &[bool], label: u8) -> Volume {
    use rayon::prelude::*;
    let mut volume = Volume::label_map_like(geometry);
    volume.data = VoxelBuffer::U8(mask.par_iter().map(|&m| if m { label } else { 0 }).collect());
    volume
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_six_neighbours_are_all_distinct_and_nonzero() {
        let offsets = Connectivity::TwentySix.offsets();
        assert_eq!(offsets.len(), 26);
        assert!(offsets.iter().all(|d| *d != [0, 0, 0]));
        let mut sorted = offsets.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 26);
        assert_eq!(Connectivity::from_count(6), Some(Connectivity::Six));
        assert_eq!(Connectivity::from_count(18), None);
    }

    #[test]
    fn range_is_inclusive_and_checked() {
        let r = Range::new(-100.0, 50.0).unwrap();
        assert!(r.contains(-100.0) && r.contains(50.0) && !r.contains(50.5));
        assert!(Range::new(10.0, 5.0).is_err());
        assert!(Range::new(f64::NAN, 5.0).is_err());
    }
}
