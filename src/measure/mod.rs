//! Measurements of a label map over its image: per label the voxel count, volume, surface area,
//! bounding box, centroid, intensity statistics, per-slice area and perimeter, RECIST diameters,
//! and agreement with a reference mask (Dice, IoU, HD95, ASSD).
//!
//! Everything is in physical units (mm, mL, LPS world coordinates) from the image's geometry.
//! The work is a few parallel passes: one over the label map (`label_stats`), one over label
//! map and image (`intensity`), then per label the diameters on one slice and, with a
//! reference, distance transforms cropped to the label's bounding box.

pub mod crofton;
pub mod diameters;
pub mod distance_transform;
pub mod export;
pub mod histogram;
pub mod intensity;
pub mod label_stats;
pub mod plane;
pub mod slice_profile;
pub mod surface_distance;

use crate::volume::{Geometry, SliceAxis, Volume, Voxel, extract_slice};
use crate::with_voxels;
use intensity::IntensityStats;
use plane::PlaneBasis;
use rayon::prelude::*;
use serde::Serialize;
use slice_profile::SliceMeasure;
use std::borrow::Cow;
use surface_distance::Agreement;

/// Largest difference (mm) between two geometries' voxel-to-world affines that still counts as
/// the same grid (NIfTI stores them as float32).
pub const GEOMETRY_TOLERANCE_MM: f64 = 1e-4;

/// Why a label map cannot be measured over an image.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeasureError {
    #[error("the {what} has dims {other:?} but the image has {image:?}; they must match voxel for voxel")]
    DimsMismatch { what: &'static str, image: [usize; 3], other: [usize; 3] },
    #[error("the {what}'s geometry (spacing, origin or direction) differs from the image's by {difference_mm:.6} mm, more than {GEOMETRY_TOLERANCE_MM} mm")]
    GeometryMismatch { what: &'static str, difference_mm: f64 },
    #[error("the {what} holds the value {value}, which is not a label 0..=255")]
    NotALabelMap { what: &'static str, value: f64 },
    #[error("the {what} has {timepoints} timepoints; only 3D volumes can be measured")]
    NotThreeD { what: &'static str, timepoints: usize },
}

/// Choices of a measurement run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeasureOptions {
    /// The axis of the per-slice area and perimeter profile.
    pub profile_axis: SliceAxis,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions { profile_axis: SliceAxis::Axial }
    }
}

/// Everything measured about one label.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelMeasurements {
    pub label: u8,
    pub voxels: u64,
    pub volume_ml: f64,
    /// Crofton estimate of the surface area (see `crofton`), what ITK calls the perimeter.
    pub surface_area_mm2: f64,
    /// Area of the voxel faces on the label's boundary (the staircase surface; larger).
    pub voxel_face_area_mm2: f64,
    /// Smallest and largest (i, j, k), inclusive.
    pub bbox_index: [[usize; 3]; 2],
    /// Smallest and largest LPS coordinate of the label's voxel centres (the same as the
    /// corners of `bbox_index` when the direction is the identity).
    pub bbox_lps_mm: [[f64; 3]; 2],
    /// Mean LPS position of the label's voxel centres.
    pub centroid_lps_mm: [f64; 3],
    pub intensity: Option<IntensityStats>,
    pub longest_diameter_mm: f64,
    pub perpendicular_diameter_mm: f64,
    /// Index, along the report's `diameter_axis`, of the slice with the label's largest area.
    pub diameter_slice: usize,
    /// End points (LPS mm) of the longest diameter and of the perpendicular one.
    pub long_axis_lps_mm: [[f64; 3]; 2],
    pub short_axis_lps_mm: [[f64; 3]; 2],
    /// Area and perimeter of every slice holding the label, along the report's `axis`.
    pub slices: Vec<SliceMeasure>,
    /// Agreement with the same label in the reference mask, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Agreement>,
}

/// The measurements of every label present in a label map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasureReport {
    /// Axis of the per-slice profiles.
    pub axis: SliceAxis,
    /// Axis of the slices the diameters are measured on: the index axis closest to the
    /// patient's superior-inferior axis (axial in the anatomical sense).
    pub diameter_axis: SliceAxis,
    /// "HU" when the image is a CT scan.
    pub intensity_unit: Option<&'static str>,
    pub labels: Vec<LabelMeasurements>,
}

/// Measures every nonzero label of `labels` over `image`, and compares each with the same label
/// of `reference` when given. Label maps must have the image's dims and geometry.
pub fn measure(image: &Volume, labels: &Volume, reference: Option<&Volume>, options: &MeasureOptions) -> Result<MeasureReport, MeasureError> {
    check_three_d(image, "image")?;
    check_same_grid(&image.geometry, labels, "mask")?;
    let mask_values = label_values(labels, "mask")?;
    let mask: &[u8] = &mask_values;
    let reference = match reference {
        Some(r) => {
            check_same_grid(&image.geometry, r, "reference")?;
            Some(label_values(r, "reference")?)
        }
        None => None,
    };
    let g = &image.geometry;
    let n = g.voxel_count();
    let plane = g.dims[0] * g.dims[1];
    let accumulated = label_stats::accumulate(mask, g.dims, &plane::index_steps(g), options.profile_axis);
    let intensities: Vec<Option<IntensityStats>> = with_voxels!(&image.data, v => intensity::by_label(mask, &v[..n], plane));
    let surface = crofton::SurfaceEstimator::new(g);
    let profile_basis = PlaneBasis::new(g, options.profile_axis);
    let diameter_axis = SliceAxis::from_normal(g.index_axis_closest_to(2));
    let diameter_basis = PlaneBasis::new(g, diameter_axis);
    let measured: Vec<LabelMeasurements> = accumulated
        .par_iter()
        .map(|(label, acc)| {
            let (lo, hi) = (acc.bbox_min, acc.bbox_max);
            let per_slice = &acc.slice_voxels[diameter_axis.normal()];
            let diameter_slice = largest_slice(per_slice);
            let mut slice = Vec::new();
            extract_slice(mask, g.dims, diameter_axis, diameter_slice, &mut slice);
            let (w, h) = diameter_axis.slice_size(g);
            // The slice with the label's largest area always holds it, so this is never empty.
            let recist = diameters::recist(&slice, w, h, *label, &diameter_basis).unwrap_or_default();
            let to_world = |uv: [f64; 2]| slice_point_to_world(g, diameter_axis, diameter_slice, uv);
            LabelMeasurements {
                label: *label,
                voxels: acc.voxels,
                volume_ml: acc.voxels as f64 * g.voxel_volume_mm3() / 1000.0,
                surface_area_mm2: surface.area(&acc.intercepts),
                voxel_face_area_mm2: surface.face_area(&acc.intercepts),
                bbox_index: [lo, hi],
                bbox_lps_mm: [acc.extent_min, acc.extent_max].map(|e| [0, 1, 2].map(|r| g.origin[r] + e[r])),
                centroid_lps_mm: g.voxel_to_world(acc.mean_index()),
                intensity: intensities[*label as usize],
                longest_diameter_mm: recist.longest_mm,
                perpendicular_diameter_mm: recist.perpendicular_mm,
                diameter_slice,
                long_axis_lps_mm: recist.long_axis.map(to_world),
                short_axis_lps_mm: recist.short_axis.map(to_world),
                slices: slice_profile::profile(&acc.slice_voxels[options.profile_axis.normal()], &acc.slice_intercepts, &profile_basis),
                reference: None,
            }
        })
        .collect();
    let mut measured = measured;
    if let Some(reference) = reference.as_deref() {
        let boxes = label_stats::label_boxes(reference, g.dims);
        for m in &mut measured {
            // Every voxel of either mask lies in the union of the two boxes, so distances
            // computed inside it are exact.
            let [mut lo, mut hi] = m.bbox_index;
            if let Some((a, b)) = boxes[m.label as usize] {
                for c in 0..3 {
                    lo[c] = lo[c].min(a[c]);
                    hi[c] = hi[c].max(b[c]);
                }
            }
            let size = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
            let a = crop(mask, g.dims, lo, size, m.label);
            let b = crop(reference, g.dims, lo, size, m.label);
            m.reference = Some(surface_distance::compare(size, g.spacing, &a, &b));
        }
    }
    Ok(MeasureReport {
        axis: options.profile_axis,
        diameter_axis,
        intensity_unit: image.is_ct().then_some("HU"),
        labels: measured,
    })
}

/// The slice with the most voxels (the lowest index on ties).
fn largest_slice(per_slice: &[u64]) -> usize {
    let mut best = 0;
    for (n, &count) in per_slice.iter().enumerate() {
        if count > per_slice[best] {
            best = n;
        }
    }
    best
}

/// `label == value` over the box of `size` voxels starting at `lo`.
fn crop(labels: &[u8], dims: [usize; 3], lo: [usize; 3], size: [usize; 3], label: u8) -> Vec<bool> {
    let mut out = Vec::with_capacity(size.iter().product());
    for k in lo[2]..lo[2] + size[2] {
        for j in lo[1]..lo[1] + size[1] {
            let start = lo[0] + dims[0] * (j + dims[1] * k);
            out.extend(labels[start..start + size[0]].iter().map(|&x| x == label));
        }
    }
    out
}

/// LPS position of continuous pixel coordinates (u, v) on slice `index` along `axis`.
fn slice_point_to_world(g: &Geometry, axis: SliceAxis, index: usize, uv: [f64; 2]) -> [f64; 3] {
    let (iu, iv) = axis.in_plane();
    let mut ijk = [0.0; 3];
    ijk[axis.normal()] = index as f64;
    ijk[iu] = uv[0];
    ijk[iv] = uv[1];
    g.voxel_to_world(ijk)
}

fn check_three_d(volume: &Volume, what: &'static str) -> Result<(), MeasureError> {
    if volume.timepoints != 1 {
        return Err(MeasureError::NotThreeD { what, timepoints: volume.timepoints });
    }
    Ok(())
}

/// Checks that `other` is a 3D volume on the grid of `image`: same dims, and voxel-to-world
/// affines within `GEOMETRY_TOLERANCE_MM`.
pub fn check_same_grid(image: &Geometry, other: &Volume, what: &'static str) -> Result<(), MeasureError> {
    check_three_d(other, what)?;
    if image.dims != other.geometry.dims {
        return Err(MeasureError::DimsMismatch { what, image: image.dims, other: other.geometry.dims });
    }
    let (a, b) = (image.affine_lps(), other.geometry.affine_lps());
    let difference_mm = (0..3).flat_map(|r| (0..4).map(move |c| (a[r][c] - b[r][c]).abs())).fold(0.0, f64::max);
    if difference_mm > GEOMETRY_TOLERANCE_MM {
        return Err(MeasureError::GeometryMismatch { what, difference_mm });
    }
    Ok(())
}

/// The voxels of a label map as u8: borrowed when stored as u8, else converted after checking
/// that every value is an integer in 0..=255.
pub fn label_values<'a>(volume: &'a Volume, what: &'static str) -> Result<Cow<'a, [u8]>, MeasureError> {
    if let Some(v) = volume.frame::<u8>(0) {
        return Ok(Cow::Borrowed(v));
    }
    let bad = with_voxels!(&volume.data, v => v.par_iter().map(|x| x.to_f64()).find_any(|x| !(x.fract() == 0.0 && (0.0..=255.0).contains(x))));
    if let Some(value) = bad {
        return Err(MeasureError::NotALabelMap { what, value });
    }
    Ok(Cow::Owned(with_voxels!(&volume.data, v => v.par_iter().map(|x| x.to_f64() as u8).collect())))
}
