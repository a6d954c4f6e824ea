//! Batch segmentation plans: reading a manifest (ours, or the DeepLesion-style CSV of MedSAM2's
//! CT-lesion script), grouping its rows by image, the deterministic split into shards, the mask
//! each image gets, how row masks combine into one label map, and the summary CSV of a run.
//!
//! Rows are numbered by their line in the manifest (the header is line 1), as a spreadsheet
//! shows them. A row that cannot be used keeps its number and a message so that the run can
//! report it and go on with the others.
//!
//! Sharding is by image, never by row: the i-th distinct image of the manifest (0-based, in
//! order of first appearance) belongs to shard `(i mod N) + 1`. Every shard computes the same
//! plan from the same manifest, so a job array needs no coordination; each shard writes its own
//! summary (`summary-K-of-N.csv`; an unsharded run writes `summary.csv`).

use crate::io::atomic::AtomicFile;
use crate::segment::pipeline::{parse_box, parse_range, BoxPrompt, PassBounds};
use crate::volume::{SliceAxis, Window};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a manifest cannot be read at all (single bad rows are `Entry` errors instead).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: no {missing} column (a manifest needs image, slice and box or x0,y0,x1,y1; a DeepLesion CSV File_name, Key_slice_index, Slice_range, Bounding_boxes and DICOM_windows)")]
    MissingColumn { path: PathBuf, missing: &'static str },
    #[error("{path}: cannot list the images folder: {source}")]
    ImagesDir { path: PathBuf, source: std::io::Error },
}

/// Why a summary CSV cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Which kind of manifest a CSV is (told by its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// image, slice, box (or x0,y0,x1,y1), window, label, axis, and optionally range and
    /// stop_after_empty.
    Rows,
    /// File_name, Key_slice_index, Slice_range, Bounding_boxes, DICOM_windows.
    DeepLesion,
}

/// The image a row names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// A file or DICOM folder.
    Path(PathBuf),
    /// A DeepLesion case and slice range with no matching file (e.g. "000015_01_01 081-093").
    Unresolved(String),
    /// The row names no image at all.
    Unnamed,
}

impl ImageRef {
    pub fn describe(&self) -> String {
        match self {
            ImageRef::Path(path) => path.display().to_string(),
            ImageRef::Unresolved(key) => key.clone(),
            ImageRef::Unnamed => String::new(),
        }
    }
}

/// What one usable row asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowPrompt {
    pub prompt: BoxPrompt,
    /// `None`: 8-bit data as stored, anything else over its own min..max (as `segment`).
    pub window: Option<Window>,
    /// 1..=255.
    pub label: u8,
    /// How far the passes go (default: the reference's whole volume).
    pub bounds: PassBounds,
}

/// One manifest row: its line number, its image, and its prompt or why it cannot be used.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub row: usize,
    pub image: ImageRef,
    pub prompt: Result<RowPrompt, String>,
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub format: ManifestFormat,
    pub entries: Vec<Entry>,
}

/// The header's column positions by lower-case name.
struct Columns(HashMap<String, usize>);

impl Columns {
    fn get<'r>(&self, record: &'r csv::StringRecord, name: &str) -> Option<&'r str> {
        self.0.get(name).and_then(|&i| record.get(i)).map(str::trim)
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn require(&self, path: &Path, names: &[&'static str]) -> Result<(), ManifestError> {
        match names.iter().find(|n| !self.has(n)) {
            Some(missing) => Err(ManifestError::MissingColumn { path: path.to_path_buf(), missing }),
            None => Ok(()),
        }
    }
}

impl Manifest {
    /// Reads a manifest. Relative image paths are taken from `images_dir`, else from the
    /// manifest's folder; DeepLesion rows find their file in that folder. Rows without an
    /// axis column use `default_axis` (DeepLesion rows are always axial).
    pub fn read(path: &Path, images_dir: Option<&Path>, default_axis: SliceAxis) -> Result<Manifest, ManifestError> {
        let csv_error = |source| ManifestError::Csv { path: path.to_path_buf(), source };
        let bytes = std::fs::read(path).map_err(|e| csv_error(e.into()))?;
        let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(bytes.as_slice());
        let header = reader.headers().map_err(csv_error)?.clone();
        let columns = Columns(header.iter().enumerate().map(|(i, name)| (name.trim().to_ascii_lowercase(), i)).collect());
        let base = match images_dir {
            Some(dir) => dir.to_path_buf(),
            None => path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        let format = if columns.has("file_name") && columns.has("bounding_boxes") { ManifestFormat::DeepLesion } else { ManifestFormat::Rows };
        let images = match format {
            ManifestFormat::DeepLesion => {
                columns.require(path, &["file_name", "key_slice_index", "slice_range", "bounding_boxes", "dicom_windows"])?;
                Some(list_images(&base)?)
            }
            ManifestFormat::Rows => {
                columns.require(path, &["image", "slice"])?;
                if !columns.has("box") {
                    columns.require(path, &["x0", "y0", "x1", "y1"])?;
                }
                None
            }
        };
        let mut entries = Vec::new();
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let row = record.position().map_or(entries.len() + 2, |p| line_of_record(&bytes, p));
            if record.iter().all(str::is_empty) {
                continue;
            }
            entries.push(match &images {
                Some(images) => deeplesion_entry(&columns, &record, row, &base, images),
                None => rows_entry(&columns, &record, row, &base, default_axis),
            });
        }
        Ok(Manifest { format, entries })
    }
}

/// The line a record starts on: the reader's position points at the empty lines it skipped
/// before the record, so they are counted past.
fn line_of_record(bytes: &[u8], position: &csv::Position) -> usize {
    let mut line = position.line() as usize;
    for &b in bytes.iter().skip(position.byte() as usize).take_while(|&&b| b == b'\n' || b == b'\r') {
        line += usize::from(b == b'\n');
    }
    line
}

/// Image files of a folder as MedSAM2's script lists them: .nii.gz (and .nii), no "._" files,
/// sorted by name.
fn list_images(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let listing = std::fs::read_dir(dir).map_err(|source| ManifestError::ImagesDir { path: dir.to_path_buf(), source })?;
    let mut names: Vec<String> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".nii.gz") || n.ends_with(".nii")) && !n.starts_with("._"))
        .collect();
    names.sort();
    Ok(names)
}

fn rows_entry(columns: &Columns, record: &csv::StringRecord, row: usize, base: &Path, default_axis: SliceAxis) -> Entry {
    let image = match columns.get(record, "image") {
        Some(name) if !name.is_empty() => ImageRef::Path(base.join(name)),
        _ => return Entry { row, image: ImageRef::Unnamed, prompt: Err("no image named".into()) },
    };
    let prompt = (|| -> Result<RowPrompt, String> {
        let slice = columns.get(record, "slice").unwrap_or("");
        let slice = slice.parse::<usize>().map_err(|_| format!("slice {slice:?} is not a non-negative integer"))?;
        let bbox = match columns.get(record, "box") {
            Some(text) => parse_box(text)?,
            None => parse_box(&["x0", "y0", "x1", "y1"].map(|c| columns.get(record, c).unwrap_or("")).join(","))?,
        };
        let window = match columns.get(record, "window") {
            None | Some("") => None,
            Some(text) => Some(Window::from_str(text).map_err(|e| format!("window {e}"))?),
        };
        let label = match columns.get(record, "label") {
            None | Some("") => 1,
            Some(text) => text.parse::<u8>().ok().filter(|&l| l > 0).ok_or_else(|| format!("label {text:?} is not 1..255"))?,
        };
        let axis = match columns.get(record, "axis") {
            None | Some("") => default_axis,
            Some(text) => SliceAxis::from_str(text, true).map_err(|_| format!("axis {text:?} is not axial, coronal or sagittal"))?,
        };
        let range = match columns.get(record, "range") {
            None | Some("") => None,
            Some(text) => Some(parse_range(text)?),
        };
        let stop_after_empty = match columns.get(record, "stop_after_empty") {
            None | Some("") => 0,
            Some(text) => text.parse::<usize>().map_err(|_| format!("stop_after_empty {text:?} is not a non-negative integer"))?,
        };
        let bounds = PassBounds { range, stop_after_empty };
        Ok(RowPrompt { prompt: BoxPrompt { axis, slice, bbox }, window, label, bounds })
    })();
    Entry { row, image, prompt }
}

/// The `\d{6}_\d{2}_\d{2}` case name inside a DeepLesion file name (patient_study_series).
pub fn deeplesion_case(file_name: &str) -> Option<&str> {
    let bytes = file_name.as_bytes();
    let pattern = b"dddddd_dd_dd";
    (0..bytes.len().saturating_sub(pattern.len() - 1)).find_map(|start| {
        let candidate = &bytes[start..start + pattern.len()];
        let fits = candidate.iter().zip(pattern).all(|(&b, &p)| if p == b'd' { b.is_ascii_digit() } else { b == p });
        fits.then(|| &file_name[start..start + pattern.len()])
    })
}

/// Two comma-separated values of a DeepLesion cell ("81, 93").
fn pair<T: FromStr>(text: &str, what: &str) -> Result<[T; 2], String> {
    let values: Vec<T> = text.split(',').map(|x| x.trim().parse::<T>()).collect::<Result<_, _>>().map_err(|_| format!("{what} {text:?} is not two numbers"))?;
    <[T; 2]>::try_from(values).map_err(|_| format!("{what} {text:?} is not two numbers"))
}

fn deeplesion_entry(columns: &Columns, record: &csv::StringRecord, row: usize, base: &Path, images: &[String]) -> Entry {
    let file_name = columns.get(record, "file_name").unwrap_or("");
    let Some(case) = deeplesion_case(file_name) else {
        return Entry { row, image: ImageRef::Unnamed, prompt: Err(format!("File_name {file_name:?} holds no case name (dddddd_dd_dd)")) };
    };
    let range = match pair::<usize>(columns.get(record, "slice_range").unwrap_or(""), "Slice_range") {
        Ok(range) => range,
        Err(e) => return Entry { row, image: ImageRef::Unnamed, prompt: Err(e) },
    };
    let suffix = format!("{:03}-{:03}", range[0], range[1]);
    let matching: Vec<&String> = images.iter().filter(|n| n.contains(case) && n.contains(&suffix)).collect();
    let image = match matching.as_slice() {
        [name] => ImageRef::Path(base.join(name)),
        _ => ImageRef::Unresolved(format!("{case} {suffix}")),
    };
    let prompt = (|| -> Result<RowPrompt, String> {
        match matching.as_slice() {
            [] => return Err(format!("no image in {} has {case} and {suffix} in its name", base.display())),
            [_] => {}
            several => return Err(format!("several images in {} match {case} {suffix}: {}", base.display(), several.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))),
        }
        let key = columns.get(record, "key_slice_index").unwrap_or("");
        let key = key.parse::<usize>().map_err(|_| format!("Key_slice_index {key:?} is not a non-negative integer"))?;
        if key < range[0] || key > range[1] {
            return Err(format!("Key_slice_index {key} is outside the Slice_range {}..{}", range[0], range[1]));
        }
        let text = columns.get(record, "bounding_boxes").unwrap_or("");
        let coords: Vec<f64> = text.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| format!("Bounding_boxes {text:?} is not four numbers"))?;
        let [ymin, xmin, ymax, xmax] = <[f64; 4]>::try_from(coords).map_err(|_| format!("Bounding_boxes {text:?} is not four numbers"))?;
        // Python's int(float(c)) truncates toward zero; a negative corner is outside the slice.
        let corner = |c: f64| if c.is_finite() && c.trunc() >= 0.0 { Ok(c.trunc() as usize) } else { Err(format!("Bounding_boxes {text:?} reaches outside the slice")) };
        let bbox = [corner(xmin)?, corner(ymin)?, corner(xmax)?, corner(ymax)?];
        let [lo, hi] = pair::<f64>(columns.get(record, "dicom_windows").unwrap_or(""), "DICOM_windows")?;
        let window = Window::from_str(&format!("{lo},{hi}")).map_err(|e| format!("DICOM_windows {e}"))?;
        let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: key - range[0], bbox };
        Ok(RowPrompt { prompt, window: Some(window), label: 1, bounds: PassBounds::default() })
    })();
    Entry { row, image, prompt }
}

/// `--shard K/N`: the K-th (1-based) of N shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Whether the image at 0-based position `image_index` among the manifest's distinct
    /// images belongs to this shard.
    pub fn takes(self, image_index: usize) -> bool {
        image_index % self.count + 1 == self.index
    }

    /// The summary file this shard writes.
    pub fn summary_name(self) -> String {
        if self.count == 1 { "summary.csv".into() } else { format!("summary-{}-of-{}.csv", self.index, self.count) }
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s.split_once('/').and_then(|(k, n)| Some((k.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((index, count)) if (1..=count).contains(&index) => Ok(Shard { index, count }),
            _ => Err(format!("{s:?} is not K/N with 1 <= K <= N")),
        }
    }
}

/// The file name of an image's mask: its name without the image extension, plus
/// `_mask.nii.gz`.
pub fn mask_name(image: &Path) -> String {
    let name = image.file_name().map_or_else(|| "image".to_string(), |n| n.to_string_lossy().into_owned());
    let lower = name.to_ascii_lowercase();
    let stem = [".nii.gz", ".nii", ".mha", ".mhd", ".npz", ".dcm"]
        .iter()
        .find(|ext| lower.ends_with(*ext) && lower.len() > ext.len())
        .map_or(name.as_str(), |ext| &name[..name.len() - ext.len()]);
    format!("{stem}_mask.nii.gz")
}

/// One image and every row of the manifest that names it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageJob {
    /// 0-based position among the manifest's distinct images (what sharding uses).
    pub index: usize,
    pub image: ImageRef,
    /// The mask's file name in the output folder.
    pub output_name: String,
    /// The rows, in manifest order.
    pub entries: Vec<Entry>,
}

/// Rows of one image that share a preprocessing (axis and window), so one predictor with its
/// cached image features serves them all.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictorRun<'a> {
    pub axis: SliceAxis,
    pub window: Option<Window>,
    pub rows: Vec<(&'a Entry, RowPrompt)>,
}

impl ImageJob {
    /// The usable rows grouped by preprocessing, groups in order of first appearance.
    pub fn predictor_runs(&self) -> Vec<PredictorRun<'_>> {
        let same = |a: Option<Window>, b: Option<Window>| a.map(|w| (w.lo.to_bits(), w.hi.to_bits())) == b.map(|w| (w.lo.to_bits(), w.hi.to_bits()));
        let mut runs: Vec<PredictorRun> = Vec::new();
        for entry in &self.entries {
            let Ok(prompt) = entry.prompt else { continue };
            match runs.iter_mut().find(|r| r.axis == prompt.prompt.axis && same(r.window, prompt.window)) {
                Some(run) => run.rows.push((entry, prompt)),
                None => runs.push(PredictorRun { axis: prompt.prompt.axis, window: prompt.window, rows: vec![(entry, prompt)] }),
            }
        }
        runs
    }
}

/// A manifest's rows grouped by image, with the rows that name none.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub jobs: Vec<ImageJob>,
    /// Rows naming no image: shard 1 reports them.
    pub unnamed: Vec<Entry>,
}

impl Plan {
    /// Groups rows by image in order of first appearance. An image whose mask name is already
    /// taken by an earlier image (same file name in another folder) gets its rows refused.
    pub fn new(entries: Vec<Entry>) -> Plan {
        let mut jobs: Vec<ImageJob> = Vec::new();
        let mut unnamed = Vec::new();
        let mut by_image: HashMap<ImageRef, usize> = HashMap::new();
        for entry in entries {
            if entry.image == ImageRef::Unnamed {
                unnamed.push(entry);
                continue;
            }
            let index = *by_image.entry(entry.image.clone()).or_insert_with(|| {
                let output_name = match &entry.image {
                    ImageRef::Path(path) => mask_name(path),
                    other => format!("{}_mask.nii.gz", other.describe().replace(' ', "_")),
                };
                jobs.push(ImageJob { index: jobs.len(), image: entry.image.clone(), output_name, entries: Vec::new() });
                jobs.len() - 1
            });
            jobs[index].entries.push(entry);
        }
        let mut owners: HashMap<String, (String, usize)> = HashMap::new();
        for job in &mut jobs {
            let first_row = job.entries[0].row;
            match owners.get(&job.output_name) {
                Some((owner, row)) => {
                    let message = format!("its mask {} would overwrite that of {owner} (row {row}): rename one image", job.output_name);
                    for entry in &mut job.entries {
                        entry.prompt = Err(message.clone());
                    }
                }
                None => {
                    owners.insert(job.output_name.clone(), (job.image.describe(), first_row));
                }
            }
        }
        Plan { jobs, unnamed }
    }

    /// The images of one shard, and the unnamed rows it reports (all of them in shard 1).
    pub fn shard(&self, shard: Shard) -> (Vec<&ImageJob>, &[Entry]) {
        let jobs = self.jobs.iter().filter(|j| shard.takes(j.index)).collect();
        (jobs, if shard.index == 1 { &self.unnamed } else { &[] })
    }
}

/// Combines row masks (each the sorted foreground voxel indices of one row, in manifest order)
/// into one label map of `voxels` voxels. Nothing is ever erased: rows of the same label are
/// OR-ed, and a voxel already labelled by an earlier row keeps that label.
pub fn compose_labels(voxels: usize, rows: &[(u8, &[u32])]) -> Vec<u8> {
    let mut labels = vec![0u8; voxels];
    for (label, foreground) in rows {
        for &i in *foreground {
            let voxel = &mut labels[i as usize];
            if *voxel == 0 {
                *voxel = *label;
            }
        }
    }
    labels
}

/// One line of the summary CSV: a manifest row and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// The row's line in the manifest.
    pub row: usize,
    pub image: String,
    /// The mask file (in the output folder).
    pub output: String,
    pub label: Option<u8>,
    pub axis: String,
    pub key_slice: Option<usize>,
    #[serde(rename = "box")]
    pub bbox: String,
    /// "lo,hi", or "auto" (8-bit data as stored, else the image's min..max).
    pub window: String,
    /// Voxels of this row's own mask (before combining with the image's other rows).
    pub voxels: Option<usize>,
    pub volume_ml: Option<f64>,
    /// Preprocessing (when this row needed a new predictor) and propagation.
    pub seconds: Option<f64>,
    /// "segmented: forward to slice K (why), backward to slice K (why)", "failed: why", or
    /// "counted from an existing mask".
    pub status: String,
}

impl SummaryLine {
    /// The line of `entry` (of the image whose mask is `output`) with no result yet.
    pub fn describe(entry: &Entry, output: &str) -> SummaryLine {
        let prompt = entry.prompt.as_ref().ok();
        SummaryLine {
            row: entry.row,
            image: entry.image.describe(),
            output: output.to_string(),
            label: prompt.map(|p| p.label),
            axis: prompt.map_or(String::new(), |p| p.prompt.axis.name().to_string()),
            key_slice: prompt.map(|p| p.prompt.slice),
            bbox: prompt.map_or(String::new(), |p| p.prompt.bbox.map(|c| c.to_string()).join(",")),
            window: prompt.map_or(String::new(), |p| p.window.map_or_else(|| "auto".to_string(), |w| format!("{},{}", w.lo, w.hi))),
            voxels: None,
            volume_ml: None,
            seconds: None,
            status: match &entry.prompt {
                Ok(_) => String::new(),
                Err(e) => format!("failed: {e}"),
            },
        }
    }

    pub fn failed(&self) -> bool {
        self.status.starts_with("failed")
    }
}

/// Reads a summary CSV; a missing file is an empty summary.
pub fn read_summary(path: &Path) -> Result<Vec<SummaryLine>, SummaryError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let csv_error = |source| SummaryError::Csv { path: path.to_path_buf(), source };
    let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
    reader.deserialize().collect::<Result<Vec<SummaryLine>, _>>().map_err(csv_error)
}

/// Writes a summary CSV sorted by row, replacing `path` atomically.
pub fn write_summary(path: &Path, lines: &[SummaryLine]) -> Result<(), SummaryError> {
    let io_error = |source| SummaryError::Io { path: path.to_path_buf(), source };
    let mut sorted: Vec<&SummaryLine> = lines.iter().collect();
    sorted.sort_by_key(|l| l.row);
    let mut file = AtomicFile::create(path).map_err(io_error)?;
    {
        let mut writer = csv::Writer::from_writer(file.writer());
        for line in sorted {
            writer.serialize(line).map_err(|source| SummaryError::Csv { path: path.to_path_buf(), source })?;
        }
        writer.flush().map_err(io_error)?;
    }
    file.commit().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn our_manifest_parses_rows_and_reports_bad_ones_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write(
            dir.path(),
            "m.csv",
            "image,slice,box,window,label,axis\n\
             a.nii.gz,4,\"33,33,73,68\",,,\n\
             sub/b.nii,3,\"1, 2, 10, 20\",\"-160,240\",2,coronal\n\
             \n\
             a.nii.gz,x,\"1,2,3,4\",,,\n\
             a.nii.gz,1,\"1,2,3\",,,\n\
             b.nii.gz,1,\"1,2,3,4\",\"240,-160\",,\n\
             b.nii.gz,1,\"1,2,3,4\",,0,\n\
             ,1,\"1,2,3,4\",,,\n",
        );
        let m = Manifest::read(&manifest, None, SliceAxis::Axial).unwrap();
        assert_eq!(m.format, ManifestFormat::Rows);
        let rows: Vec<usize> = m.entries.iter().map(|e| e.row).collect();
        assert_eq!(rows, [2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(m.entries[0].image, ImageRef::Path(dir.path().join("a.nii.gz")));
        let first = m.entries[0].prompt.clone().unwrap();
        assert_eq!(first, RowPrompt { prompt: BoxPrompt { axis: SliceAxis::Axial, slice: 4, bbox: [33, 33, 73, 68] }, window: None, label: 1, bounds: PassBounds::default() });
        let second = m.entries[1].prompt.clone().unwrap();
        assert_eq!(m.entries[1].image, ImageRef::Path(dir.path().join("sub/b.nii")));
        assert_eq!(second, RowPrompt { prompt: BoxPrompt { axis: SliceAxis::Coronal, slice: 3, bbox: [1, 2, 10, 20] }, window: Some(Window::new(-160.0, 240.0)), label: 2, bounds: PassBounds::default() });
        let errors: Vec<String> = m.entries[2..].iter().map(|e| e.prompt.clone().unwrap_err()).collect();
        assert!(errors[0].contains("slice \"x\""), "{errors:?}");
        assert!(errors[1].contains("X0,Y0,X1,Y1"), "{errors:?}");
        assert!(errors[2].contains("window"), "{errors:?}");
        assert!(errors[3].contains("label \"0\""), "{errors:?}");
        assert_eq!(m.entries[6].image, ImageRef::Unnamed);

        // The optional range and stop_after_empty columns bound the passes.
        let bounded = write(
            dir.path(),
            "r.csv",
            "image,slice,box,range,stop_after_empty
             a.nii.gz,4,\"33,33,73,68\",\"2,6\",3
             a.nii.gz,4,\"33,33,73,68\",,
             a.nii.gz,4,\"33,33,73,68\",\"2\",
             a.nii.gz,4,\"33,33,73,68\",,-1
",
        );
        let m = Manifest::read(&bounded, None, SliceAxis::Axial).unwrap();
        let bounds: Vec<Result<PassBounds, String>> = m.entries.iter().map(|e| e.prompt.clone().map(|p| p.bounds)).collect();
        assert_eq!(bounds[0], Ok(PassBounds { range: Some([2, 6]), stop_after_empty: 3 }));
        assert_eq!(bounds[1], Ok(PassBounds::default()));
        assert!(bounds[2].as_ref().is_err_and(|e| e.contains("FIRST,LAST")), "{bounds:?}");
        assert!(bounds[3].as_ref().is_err_and(|e| e.contains("stop_after_empty \"-1\"")), "{bounds:?}");

        // Box columns instead of one quoted box; images found in --images-dir.
        let columns = write(dir.path(), "c.csv", "image,slice,x0,y0,x1,y1\na.nii.gz,2,5,6,7,8\n");
        let m = Manifest::read(&columns, Some(Path::new("/data")), SliceAxis::Sagittal).unwrap();
        assert_eq!(m.entries[0].image, ImageRef::Path("/data/a.nii.gz".into()));
        assert_eq!(m.entries[0].prompt.clone().unwrap().prompt, BoxPrompt { axis: SliceAxis::Sagittal, slice: 2, bbox: [5, 6, 7, 8] });

        let missing = write(dir.path(), "bad.csv", "image,slice\na.nii.gz,2\n");
        let err = Manifest::read(&missing, None, SliceAxis::Axial).unwrap_err();
        assert!(matches!(err, ManifestError::MissingColumn { missing: "x0", .. }), "{err}");
    }

    #[test]
    fn deeplesion_rows_resolve_image_key_slice_box_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        for name in ["CT_Lesion_000015_01_01_081-093_img.nii.gz", "CT_Lesion_000015_01_01_100-112_img.nii.gz", "._CT_Lesion_000016_01_01_010-020_img.nii.gz", "000016_01_01_010-020.txt"] {
            std::fs::write(images.join(name), b"").unwrap();
        }
        let manifest = write(
            dir.path(),
            "DeepLesion_Dataset_Info.csv",
            "File_name,Patient_index,Key_slice_index,Bounding_boxes,Slice_range,DICOM_windows\n\
             000015_01_01_085.png,15,85,\"226.9, 90.02, 241.25, 104.8\",\"81, 93\",\"-175, 275\"\n\
             000015_01_01_105.png,15,105,\"10, 20, 30, 40\",\"100, 112\",\"-1350, 150\"\n\
             000016_01_01_015.png,16,15,\"10, 20, 30, 40\",\"10, 20\",\"-175, 275\"\n\
             000015_01_01_085.png,15,95,\"1, 2, 3, 4\",\"81, 93\",\"-175, 275\"\n\
             000015_01_01_085.png,15,85,\"1, 2, 3, 4\",\"81, 93\",\"275, -175\"\n\
             no case,15,85,\"1, 2, 3, 4\",\"81, 93\",\"-175, 275\"\n",
        );
        let m = Manifest::read(&manifest, Some(&images), SliceAxis::Coronal).unwrap();
        assert_eq!(m.format, ManifestFormat::DeepLesion);
        let first = &m.entries[0];
        assert_eq!(first.row, 2);
        assert_eq!(first.image, ImageRef::Path(images.join("CT_Lesion_000015_01_01_081-093_img.nii.gz")));
        // ymin, xmin, ymax, xmax truncated and swapped to x0, y0, x1, y1; key 85 - 81 = 4.
        let want = RowPrompt { prompt: BoxPrompt { axis: SliceAxis::Axial, slice: 4, bbox: [90, 226, 104, 241] }, window: Some(Window::new(-175.0, 275.0)), label: 1, bounds: PassBounds::default() };
        assert_eq!(first.prompt, Ok(want));
        assert_eq!(m.entries[1].image, ImageRef::Path(images.join("CT_Lesion_000015_01_01_100-112_img.nii.gz")));
        assert_eq!(m.entries[1].prompt.clone().unwrap().prompt.slice, 5);
        // Only a "._" file and a .txt match case 16: unresolved, reported.
        assert_eq!(m.entries[2].image, ImageRef::Unresolved("000016_01_01 010-020".into()));
        assert!(m.entries[2].prompt.clone().unwrap_err().contains("no image"), "{:?}", m.entries[2]);
        assert!(m.entries[3].prompt.clone().unwrap_err().contains("outside the Slice_range"));
        assert!(m.entries[4].prompt.clone().unwrap_err().contains("DICOM_windows"));
        assert_eq!(m.entries[5].image, ImageRef::Unnamed);
        assert_eq!(deeplesion_case("000001_01_01_109.png"), Some("000001_01_01"));
        assert_eq!(deeplesion_case("CT_Lesion_000015_01_01_081-093_img.nii.gz"), Some("000015_01_01"));
        assert_eq!(deeplesion_case("00001_01_01"), None);
    }

    fn entry(row: usize, image: &str, label: u8, window: Option<Window>) -> Entry {
        let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: 1, bbox: [1, 1, 5, 5] };
        Entry { row, image: ImageRef::Path(image.into()), prompt: Ok(RowPrompt { prompt, window, label, bounds: PassBounds::default() }) }
    }

    #[test]
    fn plans_group_by_image_and_shards_split_by_image() {
        let entries = vec![
            entry(2, "/x/a.nii.gz", 1, None),
            entry(3, "/x/b.nii", 1, None),
            entry(4, "/x/a.nii.gz", 2, None),
            entry(5, "/x/c.mha", 1, None),
            entry(6, "/y/a.nii.gz", 1, None),
            Entry { row: 7, image: ImageRef::Unnamed, prompt: Err("no image named".into()) },
        ];
        let plan = Plan::new(entries);
        let names: Vec<&str> = plan.jobs.iter().map(|j| j.output_name.as_str()).collect();
        assert_eq!(names, ["a_mask.nii.gz", "b_mask.nii.gz", "c_mask.nii.gz", "a_mask.nii.gz"]);
        assert_eq!(plan.jobs[0].entries.iter().map(|e| e.row).collect::<Vec<_>>(), [2, 4]);
        let clash = plan.jobs[3].entries[0].prompt.clone().unwrap_err();
        assert!(clash.contains("/x/a.nii.gz (row 2)"), "{clash}");

        let shard = |s: &str| s.parse::<Shard>().unwrap();
        let (one, unnamed_one) = plan.shard(shard("1/2"));
        let (two, unnamed_two) = plan.shard(shard("2/2"));
        assert_eq!(one.iter().map(|j| j.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(two.iter().map(|j| j.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((unnamed_one.len(), unnamed_two.len()), (1, 0));
        assert_eq!(plan.shard(Shard::WHOLE).0.len(), 4);
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!((shard("2/3").summary_name(), Shard::WHOLE.summary_name()), ("summary-2-of-3.csv".into(), "summary.csv".into()));
        assert_eq!(mask_name(Path::new("/d/CT_Lesion_000015_01_01_081-093_img.nii.gz")), "CT_Lesion_000015_01_01_081-093_img_mask.nii.gz");
        assert_eq!(mask_name(Path::new("/d/series_07")), "series_07_mask.nii.gz");
    }

    #[test]
    fn rows_share_a_predictor_when_axis_and_window_agree() {
        let soft = Some(Window::new(-160.0, 240.0));
        let job = Plan::new(vec![
            entry(2, "a.nii", 1, soft),
            entry(3, "a.nii", 2, None),
            Entry { row: 4, image: ImageRef::Path("a.nii".into()), prompt: Err("bad".into()) },
            entry(5, "a.nii", 3, soft),
        ])
        .jobs
        .remove(0);
        let runs = job.predictor_runs();
        let rows: Vec<Vec<usize>> = runs.iter().map(|r| r.rows.iter().map(|(e, _)| e.row).collect()).collect();
        assert_eq!(rows, [vec![2, 5], vec![3]]);
        assert_eq!(runs[0].window, soft);
    }

    #[test]
    fn labels_combine_without_erasing() {
        let labels = compose_labels(6, &[(1, &[0, 1, 2]), (2, &[2, 3]), (1, &[3, 4])]);
        assert_eq!(labels, [1, 1, 1, 2, 1, 0]);
    }

    #[test]
    fn summaries_round_trip_sorted_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.csv");
        assert!(read_summary(&path).unwrap().is_empty());
        let mut done = SummaryLine::describe(&entry(5, "/x/a.nii.gz", 2, Some(Window::new(-160.0, 240.0))), "a_mask.nii.gz");
        done.voxels = Some(1234);
        done.volume_ml = Some(2.468);
        done.seconds = Some(1.5);
        done.status = "segmented".into();
        let failed = SummaryLine::describe(&Entry { row: 3, image: ImageRef::Unnamed, prompt: Err("no image named".into()) }, "");
        write_summary(&path, &[done.clone(), failed.clone()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("row,image,output,label,axis,key_slice,box,window,voxels,volume_ml,seconds,status\n3,"), "{text}");
        assert!(text.contains("\"1,1,5,5\",\"-160,240\",1234,2.468,1.5,segmented"), "{text}");
        assert_eq!(read_summary(&path).unwrap(), [failed.clone(), done]);
        assert!(failed.failed());
    }
}
