//! Readers and writers for every format the viewer opens, behind one `open` entry point.
//!
//! Each format owns a module: `nifti` (.nii, .nii.gz, .hdr/.img; NIfTI-1 and -2, read and
//! write), `dicom` (folders, DICOMDIR, series selection), `metaimage` (.mhd/.raw, .mha) and
//! `npz` (MedSAM2's own arrays). Errors name the file and the problem; no reader allocates
//! more than the file on disk can back.

pub mod atomic;
pub mod dicom;
pub mod gzip;
pub mod label_descriptions;
pub mod limits;
pub mod metaimage;
pub mod nifti;
pub mod npz;

use crate::volume::{SourceFormat, Volume};
use std::path::{Path, PathBuf};

/// What went wrong while reading or writing a file, without the file name.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<std::io::Error> for FormatError {
    fn from(e: std::io::Error) -> Self {
        FormatError::Io(e)
    }
}

impl FormatError {
    pub fn malformed(msg: impl Into<String>) -> Self {
        FormatError::Malformed(msg.into())
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        FormatError::Unsupported(msg.into())
    }
    pub fn truncated(msg: impl Into<String>) -> Self {
        FormatError::Truncated(msg.into())
    }
}

/// A read or write error: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct IoError {
    pub path: PathBuf,
    pub error: FormatError,
}

impl IoError {
    pub fn new(path: impl Into<PathBuf>, error: impl Into<FormatError>) -> Self {
        IoError { path: path.into(), error: error.into() }
    }
}

/// Adds the file name to a format error.
pub trait WithPath<T> {
    fn at(self, path: &Path) -> Result<T, IoError>;
}

impl<T, E: Into<FormatError>> WithPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, IoError> {
        self.map_err(|e| IoError::new(path, e))
    }
}

/// Which series of a DICOM folder to open: its position in the listing or its UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeriesSelector {
    Index(usize),
    Uid(String),
}

impl std::str::FromStr for SeriesSelector {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(i) => SeriesSelector::Index(i),
            Err(_) => SeriesSelector::Uid(s.to_string()),
        })
    }
}

/// Where a reader reports how far it has got: (done, total) in reader-chosen units (bytes of
/// the file, or files of a series). Called from any thread.
#[derive(Clone)]
pub struct LoadProgress(std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>);

impl LoadProgress {
    pub fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        LoadProgress(std::sync::Arc::new(report))
    }

    pub fn report(&self, done: u64, total: u64) {
        (self.0)(done, total)
    }
}

impl std::fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgress")
    }
}

/// A reader that reports the bytes it has passed on, out of `total`, every 4 MiB.
pub struct CountingReader<R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    progress: Option<LoadProgress>,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, total: u64, progress: Option<LoadProgress>) -> Self {
        CountingReader { inner, done: 0, reported: 0, total, progress }
    }
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = &self.progress
            && (self.done - self.reported >= 4 << 20 || (n == 0 && self.done != self.reported))
        {
            self.reported = self.done;
            p.report(self.done.min(self.total), self.total);
        }
        Ok(n)
    }
}

/// Options of `open`.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The series to open from a DICOM folder with several; `None` = the only one, or an error
    /// listing them.
    pub series: Option<SeriesSelector>,
    /// Told how far the reading has got (for a progress bar).
    pub progress: Option<LoadProgress>,
}

/// Works out the format of `path` from its name and first bytes.
pub fn detect_format(path: &Path) -> Result<SourceFormat, IoError> {
    if path.is_dir() {
        return Ok(SourceFormat::Dicom);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let by_name = [
        (".nii.gz", SourceFormat::Nifti),
        (".nii", SourceFormat::Nifti),
        (".hdr", SourceFormat::Nifti),
        (".hdr.gz", SourceFormat::Nifti),
        (".img", SourceFormat::Nifti),
        (".mhd", SourceFormat::Metaimage),
        (".mha", SourceFormat::Metaimage),
        (".npz", SourceFormat::Npz),
        (".dcm", SourceFormat::Dicom),
    ];
    if let Some((_, f)) = by_name.iter().find(|(ext, _)| name.ends_with(ext)) {
        return Ok(*f);
    }
    if name == "dicomdir" || dicom::has_dicom_preamble(path) {
        return Ok(SourceFormat::Dicom);
    }
    if !path.exists() {
        return Err(IoError::new(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")));
    }
    Err(IoError::new(
        path,
        FormatError::unsupported("not a NIfTI, DICOM, MetaImage or .npz file (unknown extension and no DICOM preamble)"),
    ))
}

/// Opens any supported image: NIfTI, a DICOM file/folder/DICOMDIR, MetaImage or MedSAM2 .npz.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Volume, IoError> {
    match detect_format(path)? {
        SourceFormat::Nifti => nifti::read_with_progress(path, options.progress.clone()),
        SourceFormat::Metaimage => metaimage::read_with_progress(path, options.progress.clone()),
        SourceFormat::Npz => npz::read_image(path),
        SourceFormat::Dicom => dicom::open_with_progress(path, options.series.as_ref(), options.progress.clone()),
    }
}
