//! DICOM series: discovery in files, folders and DICOMDIRs, grouping by SeriesInstanceUID,
//! slice sorting along the normal, rescale to real-world values (HU for CT), compressed
//! transfer syntaxes.
//!
//! Reading is two parallel passes. `discovery` + `header` read every header up to Pixel Data
//! (and where native pixel data sits); `stack` orders the chosen series' slices and derives
//! its geometry; `pixels` reads each slice's samples straight into its slot of the final
//! buffer, which `Rescale` then maps in place. Peak memory is the volume plus small headers.

mod discovery;
mod header;
mod pixels;
mod rle;
mod stack;

use super::limits::{check_compressed, check_plain, payload_bytes, to_usize};
use super::{FormatError, IoError, LoadProgress, SeriesSelector};
use crate::volume::{SourceFormat, Volume, VolumeMeta, VoxelBuffer};
use discovery::Scan;
use header::{Instance, PixelLocation};
use pixels::{FileFrames, SampleLayout};
use stack::{Slice, SpacingHint};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

/// Whether the file has the "DICM" marker at byte 128 of a DICOM Part 10 file.
pub fn has_dicom_preamble(path: &Path) -> bool {
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..132] == b"DICM"
}

/// One series found in a folder, as listed by `info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeriesSummary {
    pub uid: String,
    pub modality: String,
    pub description: String,
    pub slices: usize,
}

/// The images of one series, in path order.
struct Series {
    uid: String,
    number: Option<i64>,
    instances: Vec<Instance>,
    /// Files that repeat the SOPInstanceUID of an image already in `instances` (copies of
    /// the same image are common on exported media): read once.
    duplicates: Vec<std::path::PathBuf>,
}

impl Series {
    fn summary(&self) -> SeriesSummary {
        let first = &self.instances[0];
        SeriesSummary {
            uid: self.uid.clone(),
            modality: first.modality.clone(),
            description: first.description.clone(),
            slices: self.instances.iter().map(|i| i.frame_count() as usize).sum(),
        }
    }
}

/// Groups the images of a scan by SeriesInstanceUID, ordered by SeriesNumber then UID
/// (series without a number last): the order `--series N` counts.
fn group_series(instances: Vec<Instance>) -> Vec<Series> {
    let mut by_uid: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for instance in instances.into_iter().filter(|i| i.image.is_some()) {
        by_uid.entry(instance.series_uid.clone()).or_default().push(instance);
    }
    let mut series: Vec<Series> = by_uid
        .into_iter()
        .map(|(uid, all)| {
            let mut seen = HashSet::new();
            let (instances, copies): (Vec<Instance>, Vec<Instance>) =
                all.into_iter().partition(|i| i.sop_instance_uid.is_empty() || seen.insert(i.sop_instance_uid.clone()));
            Series {
                number: instances.iter().find_map(|i| i.series_number),
                uid,
                instances,
                duplicates: copies.into_iter().map(|i| i.path).collect(),
            }
        })
        .collect();
    series.sort_by(|a, b| (a.number.is_none(), a.number, &a.uid).cmp(&(b.number.is_none(), b.number, &b.uid)));
    series
}

/// Scans `path` and groups what it holds into series; an error when there is no image.
fn find_series(path: &Path) -> Result<(Vec<Series>, Scan), IoError> {
    let mut scan = discovery::scan(path)?;
    let instances = std::mem::take(&mut scan.instances);
    let non_images: Vec<&Instance> = instances.iter().filter(|i| i.image.is_none()).collect();
    if non_images.len() == instances.len() {
        let message = if !scan.many && instances.len() == 1 {
            format!("no pixel data: this DICOM file holds no image (SOP class {})", instances[0].sop_class_uid)
        } else {
            scan.instances = instances;
            discovery::describe_empty(&scan)
        };
        return Err(IoError::new(path, FormatError::Invalid(message)));
    }
    Ok((group_series(instances), scan))
}

/// Lists the series under a DICOM file, folder or DICOMDIR, in the order `--series N` counts.
pub fn list_series(path: &Path) -> Result<Vec<SeriesSummary>, IoError> {
    let (series, _) = find_series(path)?;
    Ok(series.iter().map(Series::summary).collect())
}

/// Opens a DICOM file, folder or DICOMDIR: the only series it holds, or the one `series`
/// selects.
pub fn open(path: &Path, series: Option<&SeriesSelector>) -> Result<Volume, IoError> {
    open_with_progress(path, series, None)
}

/// Like `open`, telling `progress` how many of the series' files have been read.
pub fn open_with_progress(path: &Path, series: Option<&SeriesSelector>, progress: Option<LoadProgress>) -> Result<Volume, IoError> {
    let (mut all, scan) = find_series(path)?;
    let index = select(&all, series).map_err(|e| IoError::new(path, e))?;
    let chosen = all.swap_remove(index);
    let mut volume = load_series(path, chosen, progress)?;
    if !scan.skipped.is_empty() {
        let (first, why) = &scan.skipped[0];
        volume.meta.warnings.push(format!(
            "{} file(s) could not be read and were left out (first: {}: {why}); if one belonged to this series, \
             the slice spacing warning shows the gap it left",
            scan.skipped.len(),
            first.display()
        ));
    }
    Ok(volume)
}

/// The index of the series `selector` names, or an error that lists the series.
fn select(series: &[Series], selector: Option<&SeriesSelector>) -> Result<usize, FormatError> {
    let listing = || {
        series
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let s = s.summary();
                format!("\n  [{n}] {} \"{}\" {} slices  {}", s.modality, s.description, s.slices, s.uid)
            })
            .collect::<String>()
    };
    match selector {
        None if series.len() == 1 => Ok(0),
        None => Err(FormatError::Invalid(format!(
            "{} series found; choose one with --series N (its index) or --series UID:{}",
            series.len(),
            listing()
        ))),
        Some(SeriesSelector::Index(i)) if *i < series.len() => Ok(*i),
        Some(SeriesSelector::Index(i)) => Err(FormatError::Invalid(format!(
            "there is no series {i}: the input holds {} series, numbered from 0:{}",
            series.len(),
            listing()
        ))),
        Some(SeriesSelector::Uid(uid)) => series.iter().position(|s| s.uid == *uid).ok_or_else(|| {
            FormatError::Invalid(format!("no series has SeriesInstanceUID {uid}; the input holds:{}", listing()))
        }),
    }
}

/// Reads one series into a volume.
fn load_series(input: &Path, series: Series, progress: Option<LoadProgress>) -> Result<Volume, IoError> {
    let mut warnings = Vec::new();
    if let Some(first) = series.duplicates.first() {
        warnings.push(format!(
            "{} file(s) repeat an image already read (same SOPInstanceUID) and were skipped, e.g. {}",
            series.duplicates.len(),
            first.display()
        ));
    }
    let instances = series.instances;
    for instance in &instances {
        check_instance(instance).map_err(|e| IoError::new(&instance.path, e))?;
    }
    let mut notes: BTreeMap<&str, (usize, &Path)> = BTreeMap::new();
    for instance in &instances {
        for note in &instance.notes {
            notes.entry(note.as_str()).or_insert((0, instance.path.as_path())).0 += 1;
        }
    }
    for (note, (files, first)) in notes {
        warnings.push(format!("{note} (in {files} file(s), e.g. {})", first.display()));
    }
    let images: Vec<&header::Image> = instances.iter().filter_map(|i| i.image.as_ref()).collect();
    let first = images[0];
    let layout = SampleLayout::of(first);
    if let Some((i, other)) = instances.iter().zip(&images).find(|(_, im)| (im.bits_allocated, im.signed) != (layout.bits_allocated, layout.signed)) {
        return Err(IoError::new(
            &i.path,
            FormatError::Invalid(format!(
                "pixel format differs within the series: {} bits {} here, {} bits {} in {}",
                other.bits_allocated,
                if other.signed { "signed" } else { "unsigned" },
                layout.bits_allocated,
                if layout.signed { "signed" } else { "unsigned" },
                instances[0].path.display()
            )),
        ));
    }
    let stored_type = layout.voxel_type().map_err(|e| IoError::new(&instances[0].path, e))?;
    let frame_bytes = first.frame_bytes().map_err(|e| IoError::new(&instances[0].path, e))?;

    // Compressed frames must be explainable by the compressed bytes on disk.
    let encoded: Vec<&Instance> = instances.iter().filter(|i| i.image.as_ref().is_some_and(|im| im.pixels == PixelLocation::Encoded)).collect();
    if !encoded.is_empty() {
        let frames: u64 = encoded.iter().map(|i| i.frame_count()).sum();
        let needed = payload_bytes(&[frames], frame_bytes).map_err(|e| IoError::new(input, e))?;
        let on_disk: u64 = encoded.iter().map(|i| i.file_len).sum();
        check_compressed(needed, on_disk).map_err(|e| IoError::new(input, e))?;
    }

    let mut slices = Vec::new();
    let mut sources = Vec::new();
    for (n, (instance, image)) in instances.iter().zip(&images).enumerate() {
        let name = instance.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        for frame in 0..image.number_of_frames {
            let placement = image.placement(frame as usize);
            slices.push(Slice {
                position: placement.position,
                orientation: placement.orientation,
                pixel_spacing: placement.pixel_spacing,
                size: [image.columns, image.rows],
                instance_number: instance.instance_number,
                name: if image.number_of_frames > 1 { format!("{name} frame {frame}") } else { name.clone() },
            });
            sources.push((n, frame));
        }
    }
    let hint = SpacingHint { between_slices: first.spacing_between_slices, thickness: first.slice_thickness };
    let stack = stack::arrange(&slices, hint).map_err(|e| IoError::new(input, e))?;
    warnings.extend(stack.warnings);

    let total = payload_bytes(&[slices.len() as u64], frame_bytes).and_then(to_usize).map_err(|e| IoError::new(input, e))?;
    let mut stored = VoxelBuffer::zeros(stored_type, total / stored_type.size());
    let mut slots: Vec<Option<&mut [u8]>> = stored.as_bytes_mut().chunks_exact_mut(frame_bytes as usize).map(Some).collect();
    let mut jobs: Vec<FileFrames> = instances.iter().map(|instance| FileFrames { instance, frames: Vec::new() }).collect();
    for (k, &slice) in stack.order.iter().enumerate() {
        let (n, frame) = sources[slice];
        if let Some(slot) = slots[k].take() {
            jobs[n].frames.push((frame, slot));
        }
    }
    pixels::read_all(jobs, progress)?;

    let rescales: Vec<_> = stack.order.iter().map(|&s| images[sources[s].0].placement(sources[s].1 as usize).rescale).collect();
    let data = pixels::apply_rescales(stored, &rescales);

    if first.photometric == "MONOCHROME1" {
        warnings.push(
            "MONOCHROME1: in this series low values are meant to display white; values are kept as stored \
             (not inverted), so apply an inverted grey map to see it as the modality intended"
                .to_string(),
        );
    }
    let description = instances[0].description.clone();
    let meta = VolumeMeta {
        format: Some(SourceFormat::Dicom),
        modality: (!instances[0].modality.is_empty()).then(|| instances[0].modality.clone()),
        description: (!description.is_empty()).then_some(description),
        stored_type: Some(stored_type),
        nifti_transform: None,
        warnings,
    };
    Volume::new(stack.geometry, 1, data, meta).map_err(|e| IoError::new(input, FormatError::Invalid(e.to_string())))
}

/// Checks that one file's pixels can be read: grayscale, a decodable transfer syntax, pixel
/// data as large as the header promises, per-frame positions for multi-frame images.
fn check_instance(instance: &Instance) -> Result<(), FormatError> {
    let image = instance.image.as_ref().ok_or_else(|| FormatError::Invalid("not an image".into()))?;
    if image.samples_per_pixel != 1 || !image.photometric.starts_with("MONOCHROME") {
        return Err(FormatError::unsupported(format!(
            "{} with {} samples per pixel: only grayscale (MONOCHROME1/2) images are supported",
            image.photometric, image.samples_per_pixel
        )));
    }
    SampleLayout::of(image).voxel_type()?;
    let ts = instance.transfer_syntax;
    if !ts.can_decode_all() {
        return Err(FormatError::unsupported(format!(
            "transfer syntax {} ({}) cannot be decoded: no pure-Rust decoder for it is built in",
            ts.name(),
            ts.uid()
        )));
    }
    let frames = image.number_of_frames;
    let needed = payload_bytes(&[frames], image.frame_bytes()?)?;
    match image.pixels {
        PixelLocation::Absent => return Err(FormatError::malformed("no pixel data: the file has no Pixel Data (7FE0,0010)")),
        PixelLocation::Native { offset, length, .. } => {
            if length < needed {
                return Err(FormatError::truncated(format!(
                    "Rows x Columns x NumberOfFrames ({} x {} x {frames}) at {} bits need {needed} bytes, but Pixel Data \
                     holds only {length}",
                    image.rows, image.columns, image.bits_allocated
                )));
            }
            check_plain(needed, offset, instance.file_len)?;
        }
        PixelLocation::Encoded => {}
    }
    if frames > 1 && image.placements.len() as u64 != frames {
        return Err(FormatError::unsupported(if image.per_frame_items == 0 {
            format!(
                "a multi-frame image of {frames} frames without per-frame positions (no Per-Frame Functional Groups \
                 with Plane Position): its frames cannot be placed in space"
            )
        } else {
            format!("NumberOfFrames is {frames} but the Per-Frame Functional Groups Sequence has {} items", image.per_frame_items)
        }));
    }
    Ok(())
}
