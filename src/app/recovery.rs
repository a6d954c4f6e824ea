//! Autosave and crash recovery: the label map of a document with unsaved changes is written
//! every minute to a recovery file (beside a small JSON naming the image), and offered back when
//! that image is opened again after a crash. Saving or discarding removes it.

use super::document::Document;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const AUTOSAVE_EVERY: Duration = Duration::from_secs(60);

/// What a recovery file belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryInfo {
    pub image_path: PathBuf,
    pub series: Option<String>,
    pub mask_file: PathBuf,
    pub saved_at_unix: u64,
}

/// A file stem for an image path that stays the same across runs, platforms and compiler
/// versions: the first 16 hex digits of the SHA-256 of the canonical path.
fn stem_for(image: &Path) -> String {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes (or refreshes) the recovery copy of a document's label map.
pub fn write(dir: &Path, doc: &Document) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stem = stem_for(&doc.image_path);
    let mask_file = dir.join(format!("{stem}.nii.gz"));
    doc.write_recovery(&mask_file)?;
    let info = RecoveryInfo {
        image_path: std::fs::canonicalize(&doc.image_path).unwrap_or_else(|_| doc.image_path.clone()),
        series: doc.series.as_ref().map(|s| format!("{s:?}")),
        mask_file,
        saved_at_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    let mut f = crate::io::atomic::AtomicFile::create(&dir.join(format!("{stem}.json")))?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(&info)?.as_bytes())?;
    f.commit()?;
    Ok(())
}

/// The recovery file for an image, if a previous session left one.
pub fn find(dir: &Path, image: &Path) -> Option<RecoveryInfo> {
    let text = std::fs::read_to_string(dir.join(format!("{}.json", stem_for(image)))).ok()?;
    let info: RecoveryInfo = serde_json::from_str(&text).ok()?;
    info.mask_file.exists().then_some(info)
}

/// Every recovery file present (for the start screen).
pub fn list(dir: &Path) -> Vec<RecoveryInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_str::<RecoveryInfo>(&std::fs::read_to_string(e.path()).ok()?).ok())
        .filter(|i| i.mask_file.exists())
        .collect()
}

/// Removes the recovery file of an image (after a save or a deliberate discard).
pub fn remove(dir: &Path, image: &Path) {
    let stem = stem_for(image);
    let _ = std::fs::remove_file(dir.join(format!("{stem}.json")));
    let mask = dir.join(format!("{stem}.nii.gz"));
    let _ = std::fs::remove_file(crate::io::label_descriptions::path_beside(&mask));
    let _ = std::fs::remove_file(mask);
}

/// Decides when the next autosave is due.
#[derive(Debug)]
pub struct AutosaveClock {
    last: Instant,
}

impl Default for AutosaveClock {
    fn default() -> Self {
        AutosaveClock { last: Instant::now() }
    }
}

impl AutosaveClock {
    /// True (and restarts the clock) when an autosave is due.
    pub fn due(&mut self, every: Duration) -> bool {
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};

    #[test]
    fn write_find_remove() {
        let dir = tempfile::tempdir().unwrap();
        let image_path = dir.path().join("ct.nii");
        std::fs::write(&image_path, b"x").unwrap();
        let g = Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]);
        let image = Volume::new(g, 1, VoxelBuffer::I16(vec![0; 8]), VolumeMeta::default()).unwrap();
        let mut doc = Document::new(image, image_path.clone(), None);
        let e = doc.paint_edit([3], 1, "brush");
        doc.apply(e).unwrap();
        doc.label_table.get_mut(1).unwrap().name = "nodule".into();
        let rec = dir.path().join("rec");
        write(&rec, &doc).unwrap();
        let info = find(&rec, &image_path).expect("recovery found");
        assert_eq!(list(&rec).len(), 1);
        // The same image path always gives the same file (not a per-build hash).
        assert_eq!(info.mask_file.file_name().unwrap().len(), "0123456789abcdef.nii.gz".len());
        assert_eq!(stem_for(&image_path), stem_for(&image_path));
        let mut other = Document::new((*doc.image).clone(), image_path.clone(), None);
        other.open_mask(&info.mask_file).unwrap();
        assert_eq!(other.labels, doc.labels);
        assert_eq!(other.label_table.get(1).unwrap().name, "nodule", "label names are recovered too");
        remove(&rec, &image_path);
        assert!(find(&rec, &image_path).is_none());
        assert_eq!(std::fs::read_dir(&rec).unwrap().count(), 0, "every recovery file is gone");
    }
}
