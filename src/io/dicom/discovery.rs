//! Finding the files of a DICOM input and reading their headers: one file, every file under a
//! folder (recursively), or the files a DICOMDIR references. Headers are read in parallel.

use super::header::{HeaderError, Instance, read_header};
use crate::io::{FormatError, IoError};
use dicom::dictionary_std::{tags, uids};
use dicom::object::InMemDicomObject;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What a look at the input found.
#[derive(Default)]
pub struct Scan {
    /// Every DICOM file whose header could be read (images or not), in path order.
    pub instances: Vec<Instance>,
    /// DICOM files (or files a DICOMDIR names) that could not be read, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files that are not DICOM at all.
    pub not_dicom: usize,
    /// Whether the input was a folder or a DICOMDIR (rather than one image file).
    pub many: bool,
}

/// Reads the headers of the files of `path` (a file, a folder or a DICOMDIR).
pub fn scan(path: &Path) -> Result<Scan, IoError> {
    if path.is_dir() {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        files_under(path, &mut files, &mut skipped);
        files.sort();
        let mut scan = read_headers(&files);
        scan.skipped.extend(skipped);
        return Ok(scan);
    }
    let header = read_header(path).map_err(|e| IoError::new(path, FormatError::from(e)))?;
    if is_dicomdir(&header.object) {
        let (files, missing) = dicomdir_files(path, &header.object);
        let mut scan = read_headers(&files);
        scan.skipped.extend(missing);
        return Ok(scan);
    }
    let instance = Instance::from_header(path, header).map_err(|e| IoError::new(path, e))?;
    Ok(Scan { instances: vec![instance], ..Scan::default() })
}

/// Reads the headers of `files` in parallel.
fn read_headers(files: &[PathBuf]) -> Scan {
    let results: Vec<(PathBuf, Result<Instance, HeaderError>)> = files.par_iter().map(|p| (p.clone(), Instance::read(p))).collect();
    let mut scan = Scan { many: true, ..Scan::default() };
    for (path, result) in results {
        match result {
            Ok(instance) => scan.instances.push(instance),
            Err(HeaderError::NotDicom) => scan.not_dicom += 1,
            Err(HeaderError::Format(e)) => scan.skipped.push((path, e.to_string())),
        }
    }
    scan
}

fn is_dicomdir_name(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

/// Every file under `dir`, recursively (DICOMDIR files excepted: their images are in the
/// folder too). Folders that cannot be listed go to `skipped`. Links to folders are not
/// followed, so a link loop cannot trap the walk.
fn files_under(dir: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            skipped.push((dir.to_path_buf(), format!("cannot list the folder: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&path, files, skipped),
            Ok(t) if (t.is_file() || (t.is_symlink() && path.is_file())) && !is_dicomdir_name(&path) => files.push(path),
            _ => {}
        }
    }
}

fn is_dicomdir(object: &dicom::object::DefaultDicomObject) -> bool {
    object.meta().media_storage_sop_class_uid().trim_end_matches('\0') == uids::MEDIA_STORAGE_DIRECTORY_STORAGE
        || object.get(tags::DIRECTORY_RECORD_SEQUENCE).is_some()
}

/// The files the records of a DICOMDIR reference (ReferencedFileID, relative to its folder),
/// and the references that name no file.
fn dicomdir_files(dicomdir: &Path, object: &InMemDicomObject) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let root = dicomdir.parent().unwrap_or(Path::new("."));
    let records = object.get(tags::DIRECTORY_RECORD_SEQUENCE).and_then(|e| e.items()).unwrap_or(&[]);
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for record in records {
        let Some(id) = record.get(tags::REFERENCED_FILE_ID).and_then(|e| e.to_multi_str().ok()) else { continue };
        let parts: Vec<String> = id
            .iter()
            .flat_map(|p| p.split('\\'))
            .map(|p| p.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            continue;
        }
        match resolve_file_id(root, &parts) {
            Some(path) => files.push(path),
            None => missing.push((root.join(parts.join("/")), "named by the DICOMDIR but not found".to_string())),
        }
    }
    files.sort();
    files.dedup();
    (files, missing)
}

/// Finds the file a DICOMDIR names with `parts`, ignoring case when the exact name does not
/// exist (media written in upper case are often copied to lower-case file systems).
fn resolve_file_id(root: &Path, parts: &[String]) -> Option<PathBuf> {
    let exact = parts.iter().fold(root.to_path_buf(), |p, part| p.join(part));
    if exact.is_file() {
        return Some(exact);
    }
    let mut current = root.to_path_buf();
    for part in parts {
        let next = current.join(part);
        current = if next.exists() {
            next
        } else {
            std::fs::read_dir(&current)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.eq_ignore_ascii_case(part.as_str())))?
        };
    }
    current.is_file().then_some(current)
}

/// One line describing why a scan found no image, for error messages.
pub fn describe_empty(scan: &Scan) -> String {
    let non_images = scan.instances.len();
    let mut text = format!(
        "no DICOM images found: {} files looked at, {} not DICOM, {} DICOM without image pixels, {} unreadable",
        scan.instances.len() + scan.not_dicom + scan.skipped.len(),
        scan.not_dicom,
        non_images,
        scan.skipped.len()
    );
    if let Some((path, why)) = scan.skipped.first() {
        text += &format!(" (first: {}: {why})", path.display());
    }
    text
}
