//! Series geometry: orders the slices of a series along the slice normal and derives the
//! volume's `Geometry` in LPS exactly as SimpleITK reports it, plus the warnings a reader owes
//! the user (uneven spacing, missing slices, sheared stacks, guessed geometry).
//!
//! Index axes: i = column (along a row, ImageOrientationPatient's first vector), j = row (its
//! second vector), k = slice in order of increasing position along normal = row × column.
//! Spacing is [column spacing, row spacing, slice spacing]; PixelSpacing is stored row\column.
//! The slice spacing comes from the positions (never SliceThickness or InstanceNumber).

use crate::io::FormatError;
use crate::volume::Geometry;

/// What the stack needs to know about one slice (a single-frame file or one frame).
#[derive(Clone, Debug)]
pub struct Slice {
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    /// Row spacing, column spacing (mm).
    pub pixel_spacing: Option<[f64; 2]>,
    /// Columns, rows.
    pub size: [u32; 2],
    pub instance_number: Option<i64>,
    /// How messages name the slice (file name, plus the frame for multi-frame files).
    pub name: String,
}

/// Spacing hints for stacks whose positions cannot give one (a single slice, no positions).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpacingHint {
    pub between_slices: Option<f64>,
    pub thickness: Option<f64>,
}

/// The slices in volume order and the geometry they make.
#[derive(Clone, Debug)]
pub struct Stack {
    /// `order[k]` = index (into the input) of the slice at k.
    pub order: Vec<usize>,
    pub geometry: Geometry,
    pub warnings: Vec<String>,
}

/// Two positions closer than this along the normal are the same position (mm).
const SAME_POSITION_MM: f64 = 1e-3;
/// Direction cosines of two slices closer than this are the same orientation.
const SAME_ORIENTATION: f64 = 1e-4;
/// In-plane drift of the slice positions (mm) above which the stack is reported as sheared.
const SHEAR_MM: f64 = 0.05;

/// Orders `slices` and derives the geometry of the volume they make.
pub fn arrange(slices: &[Slice], hint: SpacingHint) -> Result<Stack, FormatError> {
    let first = slices.first().ok_or_else(|| FormatError::Invalid("the series has no slices".into()))?;
    let mut warnings = Vec::new();
    check_sizes(slices)?;
    let (row_dir, col_dir) = orientation(slices, &mut warnings)?;
    let normal = normalize(cross(row_dir, col_dir));
    let [row_spacing, col_spacing] = pixel_spacing(slices, &mut warnings)?;

    let present = slices.iter().filter(|s| s.position.is_some()).count();
    let (order, origin, slice_spacing) = if present == slices.len() {
        let distance: Vec<f64> = slices.iter().map(|s| dot(s.position.unwrap_or_default(), normal)).collect();
        let mut order: Vec<usize> = (0..slices.len()).collect();
        order.sort_by(|&a, &b| distance[a].total_cmp(&distance[b]).then(slices[a].instance_number.cmp(&slices[b].instance_number)));
        let sorted: Vec<f64> = order.iter().map(|&i| distance[i]).collect();
        check_duplicates(slices, &order, &sorted)?;
        let spacing = if slices.len() == 1 {
            hint.between_slices.filter(|s| *s > 0.0).unwrap_or(1.0)
        } else {
            let (spacing, uneven) = slice_spacing(&sorted);
            warnings.extend(uneven);
            spacing
        };
        if let Some(w) = shear_warning(slices, &order, normal) {
            warnings.push(w);
        }
        let origin = slices[order[0]].position.unwrap_or_default();
        (order, origin, spacing)
    } else if present == 0 {
        let mut order: Vec<usize> = (0..slices.len()).collect();
        order.sort_by_key(|&i| slices[i].instance_number);
        let spacing = hint.between_slices.or(hint.thickness).filter(|s| *s > 0.0).unwrap_or(1.0);
        if slices.len() > 1 {
            warnings.push(format!(
                "no ImagePositionPatient: slices are ordered by InstanceNumber, spaced {spacing} mm \
                 (from SpacingBetweenSlices/SliceThickness, else 1 mm), with the origin at 0: positions \
                 and distances across slices are not reliable"
            ));
        } else {
            warnings.push("no ImagePositionPatient: the origin is set to 0".to_string());
        }
        (order, [0.0; 3], spacing)
    } else {
        let missing = slices.iter().find(|s| s.position.is_none()).map(|s| s.name.as_str()).unwrap_or("?");
        return Err(FormatError::malformed(format!(
            "{} of {} slices have no ImagePositionPatient (e.g. {missing}): they cannot be placed in the stack",
            slices.len() - present,
            slices.len()
        )));
    };

    let direction = [
        [row_dir[0], col_dir[0], normal[0]],
        [row_dir[1], col_dir[1], normal[1]],
        [row_dir[2], col_dir[2], normal[2]],
    ];
    let geometry = Geometry {
        dims: [first.size[0] as usize, first.size[1] as usize, slices.len()],
        spacing: [col_spacing, row_spacing, slice_spacing],
        origin,
        direction,
    };
    geometry.validate().map_err(|e| FormatError::malformed(e.to_string()))?;
    Ok(Stack { order, geometry, warnings })
}

fn check_sizes(slices: &[Slice]) -> Result<(), FormatError> {
    let size = slices[0].size;
    if let Some(other) = slices.iter().find(|s| s.size != size) {
        let count = slices.iter().filter(|s| s.size == size).count();
        return Err(FormatError::Invalid(format!(
            "the slices of this series differ in size: {count} are {} x {} ({} ...), {} are not (e.g. {}: {} x {}); \
             they cannot form one volume",
            size[0], size[1], slices[0].name, slices.len() - count, other.name, other.size[0], other.size[1]
        )));
    }
    Ok(())
}

/// Row and column direction cosines shared by every slice (unit length).
fn orientation(slices: &[Slice], warnings: &mut Vec<String>) -> Result<([f64; 3], [f64; 3]), FormatError> {
    let present = slices.iter().filter(|s| s.orientation.is_some()).count();
    if present == 0 {
        warnings.push("no ImageOrientationPatient: rows are assumed to run along L and columns along P (axial)".to_string());
        return Ok(([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]));
    }
    if present < slices.len() {
        let missing = slices.iter().find(|s| s.orientation.is_none()).map(|s| s.name.as_str()).unwrap_or("?");
        return Err(FormatError::malformed(format!(
            "{} of {} slices have no ImageOrientationPatient (e.g. {missing})",
            slices.len() - present,
            slices.len()
        )));
    }
    let reference = slices[0].orientation.unwrap_or_default();
    for s in slices {
        let o = s.orientation.unwrap_or_default();
        if o.iter().zip(&reference).any(|(a, b)| (a - b).abs() > SAME_ORIENTATION) {
            return Err(FormatError::Invalid(format!(
                "the slices of this series differ in orientation: {} has ImageOrientationPatient {:?}, {} has {:?}; \
                 they cannot form one volume",
                slices[0].name, reference, s.name, o
            )));
        }
    }
    let row = [reference[0], reference[1], reference[2]];
    let col = [reference[3], reference[4], reference[5]];
    let (row_norm, col_norm) = (norm(row), norm(col));
    if !(0.5..2.0).contains(&row_norm) || !(0.5..2.0).contains(&col_norm) || (dot(row, col) / (row_norm * col_norm)).abs() > 0.01 {
        return Err(FormatError::malformed(format!(
            "ImageOrientationPatient {reference:?} is not two unit vectors at right angles"
        )));
    }
    Ok((normalize(row), normalize(col)))
}

/// Row spacing and column spacing shared by every slice.
fn pixel_spacing(slices: &[Slice], warnings: &mut Vec<String>) -> Result<[f64; 2], FormatError> {
    let Some(reference) = slices.iter().find_map(|s| s.pixel_spacing) else {
        warnings.push("no PixelSpacing: 1 mm between rows and between columns is assumed".to_string());
        return Ok([1.0, 1.0]);
    };
    // PixelSpacing 0\0 is what some writers put for "unknown": read like a missing one, as
    // SimpleITK (GDCM) does.
    let zero = |p: &[f64; 2]| p.iter().all(|v| *v == 0.0);
    if zero(&reference) && slices.iter().all(|s| s.pixel_spacing.is_none_or(|p| zero(&p))) {
        warnings.push("PixelSpacing is 0\\0 (unknown): 1 mm between rows and between columns is assumed".to_string());
        return Ok([1.0, 1.0]);
    }
    if reference.iter().any(|v| *v <= 0.0) {
        return Err(FormatError::malformed(format!("PixelSpacing {reference:?} must be greater than zero")));
    }
    for s in slices {
        match s.pixel_spacing {
            Some(p) if p.iter().zip(&reference).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)) => {}
            other => {
                return Err(FormatError::Invalid(format!(
                    "the slices of this series differ in PixelSpacing: {reference:?} in {}, {other:?} in {}",
                    slices[0].name, s.name
                )));
            }
        }
    }
    Ok(reference)
}

fn check_duplicates(slices: &[Slice], order: &[usize], sorted: &[f64]) -> Result<(), FormatError> {
    for k in 1..sorted.len() {
        if sorted[k] - sorted[k - 1] < SAME_POSITION_MM {
            return Err(FormatError::Invalid(format!(
                "{} and {} lie at the same position along the slice normal ({:.3} mm): this series holds more \
                 than one image per position (several echoes, phases or acquisitions?) and cannot be read as one volume",
                slices[order[k - 1]].name,
                slices[order[k]].name,
                sorted[k]
            )));
        }
    }
    Ok(())
}

/// Whether two gaps between slices are the same spacing: within 1 % (and at least 1 µm).
fn same_gap(a: f64, b: f64) -> bool {
    (a - b).abs() <= (0.01 * a.max(b)).max(1e-3)
}

/// The most common gap between consecutive positions (mean of its cluster), and a warning
/// naming the gaps that differ from it.
fn slice_spacing(sorted: &[f64]) -> (f64, Option<String>) {
    let gaps: Vec<f64> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    let mut values = gaps.clone();
    values.sort_by(f64::total_cmp);
    // Clusters of similar gaps in increasing order; keep the largest (the smallest on ties).
    let mut best: &[f64] = &values[..1];
    let mut start = 0;
    for end in 1..=values.len() {
        if end == values.len() || !same_gap(values[start], values[end]) {
            if end - start > best.len() {
                best = &values[start..end];
            }
            start = end;
        }
    }
    let spacing = best.iter().sum::<f64>() / best.len() as f64;
    let irregular: Vec<(usize, f64)> = gaps.iter().copied().enumerate().filter(|(_, g)| !same_gap(*g, spacing)).collect();
    if irregular.is_empty() {
        return (spacing, None);
    }
    let (lo, hi) = gaps.iter().fold((f64::MAX, f64::MIN), |(lo, hi), g| (lo.min(*g), hi.max(*g)));
    let described: Vec<String> = irregular
        .iter()
        .take(3)
        .map(|&(k, g)| {
            let ratio = g / spacing;
            let cause = if ratio > 1.5 {
                let missing = (ratio.round() - 1.0).max(1.0) as usize;
                if missing == 1 { " (a slice may be missing)".to_string() } else { format!(" (about {missing} slices may be missing)") }
            } else {
                String::new()
            };
            format!("{g:.3} mm between slices {k} and {}{cause}", k + 1)
        })
        .collect();
    let more = if irregular.len() > 3 { format!(", and {} more irregular gaps", irregular.len() - 3) } else { String::new() };
    let message = format!(
        "slice spacing varies from {lo:.3} to {hi:.3} mm: {}{more}; the volume uses the most common spacing, {spacing:.3} mm, \
         so slices past an irregular gap are shown away from their true position",
        described.join(", ")
    );
    (spacing, Some(message))
}

/// A warning when the slice positions drift within the slice plane (gantry tilt, a sheared
/// stack): the volume places every slice straight along the normal.
fn shear_warning(slices: &[Slice], order: &[usize], normal: [f64; 3]) -> Option<String> {
    let origin = slices[order[0]].position?;
    let mut worst = 0.0f64;
    for &i in order {
        let p = slices[i].position?;
        let d = [p[0] - origin[0], p[1] - origin[1], p[2] - origin[2]];
        let along = dot(d, normal);
        let in_plane = [d[0] - along * normal[0], d[1] - along * normal[1], d[2] - along * normal[2]];
        worst = worst.max(norm(in_plane));
    }
    (worst > SHEAR_MM).then(|| {
        format!(
            "slice positions drift up to {worst:.2} mm within the slice plane across the series (gantry tilt or a \
             sheared stack): the volume stacks the slices straight along the slice normal, so distant slices are shown \
             up to {worst:.2} mm from their true position"
        )
    })
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = norm(a);
    // `+ 0.0` turns -0.0 into 0.0 so printed directions read cleanly.
    [a[0] / n + 0.0, a[1] / n + 0.0, a[2] / n + 0.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(z: f64, instance: i64) -> Slice {
        Slice {
            position: Some([-10.0, -20.0, z]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            pixel_spacing: Some([0.8, 0.6]),
            size: [4, 3],
            instance_number: Some(instance),
            name: format!("z{z}"),
        }
    }

    #[test]
    fn sorts_by_position_not_instance_number() {
        let slices = vec![axial(5.0, 1), axial(-5.0, 3), axial(0.0, 2)];
        let stack = arrange(&slices, SpacingHint::default()).unwrap();
        assert_eq!(stack.order, vec![1, 2, 0]);
        assert_eq!(stack.geometry.origin, [-10.0, -20.0, -5.0]);
        assert_eq!(stack.geometry.spacing, [0.6, 0.8, 5.0]);
        assert_eq!(stack.geometry.dims, [4, 3, 3]);
        assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    }

    #[test]
    fn sagittal_normal_runs_toward_patient_right() {
        // Row direction P, column direction I: normal = (0,1,0) x (0,0,-1) = (-1,0,0).
        let slices: Vec<Slice> = [-4.0, 0.0, 4.0]
            .iter()
            .map(|&x| Slice {
                position: Some([x, -24.75, 94.65]),
                orientation: Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]),
                pixel_spacing: Some([1.1, 0.9]),
                ..axial(0.0, 1)
            })
            .collect();
        let stack = arrange(&slices, SpacingHint::default()).unwrap();
        assert_eq!(stack.order, vec![2, 1, 0]);
        assert_eq!(stack.geometry.origin, [4.0, -24.75, 94.65]);
        assert_eq!(stack.geometry.direction_row_major(), [0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]);
        assert_eq!(stack.geometry.spacing, [0.9, 1.1, 4.0]);
    }

    #[test]
    fn a_missing_slice_is_reported_and_the_regular_spacing_kept() {
        let slices: Vec<Slice> = [0.0, 2.5, 5.0, 10.0, 12.5, 15.0].iter().map(|&z| axial(z, 1)).collect();
        let stack = arrange(&slices, SpacingHint::default()).unwrap();
        assert!((stack.geometry.spacing[2] - 2.5).abs() < 1e-12);
        assert_eq!(stack.warnings.len(), 1);
        let w = &stack.warnings[0];
        assert!(w.contains("between slices 2 and 3") && w.contains("a slice may be missing") && w.contains("2.500 mm"), "{w}");
    }

    #[test]
    fn duplicate_positions_and_mixed_sizes_are_errors() {
        let dup = vec![axial(0.0, 1), axial(2.0, 2), axial(2.0, 3)];
        assert!(arrange(&dup, SpacingHint::default()).unwrap_err().to_string().contains("same position"));
        let mut other = axial(4.0, 4);
        other.size = [8, 8];
        let mixed = vec![axial(0.0, 1), other];
        assert!(arrange(&mixed, SpacingHint::default()).unwrap_err().to_string().contains("differ in size"));
        let mut tilted = axial(4.0, 4);
        tilted.orientation = Some([1.0, 0.0, 0.0, 0.0, 0.8, 0.6]);
        let tilted = vec![axial(0.0, 1), tilted];
        assert!(arrange(&tilted, SpacingHint::default()).unwrap_err().to_string().contains("differ in orientation"));
    }

    #[test]
    fn single_slice_spacing_follows_simpleitk() {
        let one = vec![axial(3.0, 1)];
        let stack = arrange(&one, SpacingHint { between_slices: Some(5.0), thickness: Some(0.8) }).unwrap();
        assert_eq!(stack.geometry.spacing[2], 5.0);
        let stack = arrange(&one, SpacingHint { between_slices: None, thickness: Some(0.8) }).unwrap();
        assert_eq!(stack.geometry.spacing[2], 1.0);
    }

    #[test]
    fn sheared_stack_is_reported() {
        let slices: Vec<Slice> = (0..4)
            .map(|k| {
                let mut s = axial(k as f64 * 2.0, k);
                s.position = Some([-10.0, -20.0 + k as f64 * 0.5, k as f64 * 2.0]);
                s
            })
            .collect();
        let stack = arrange(&slices, SpacingHint::default()).unwrap();
        assert!(stack.warnings.iter().any(|w| w.contains("gantry tilt")), "{:?}", stack.warnings);
    }

    #[test]
    fn no_positions_fall_back_to_instance_number_with_a_warning() {
        let slices: Vec<Slice> = [3, 1, 2]
            .iter()
            .map(|&n| Slice { position: None, ..axial(0.0, n) })
            .collect();
        let stack = arrange(&slices, SpacingHint { between_slices: None, thickness: Some(3.0) }).unwrap();
        assert_eq!(stack.order, vec![1, 2, 0]);
        assert_eq!(stack.geometry.spacing[2], 3.0);
        assert!(stack.warnings[0].contains("InstanceNumber"));
    }
}
