//! Checks on a checkpoint file: its SHA-256 (what the hub announces as the ETag of an LFS file)
//! and a cheap format check that catches a wrong file before the model loader reads it — a
//! PyTorch checkpoint is a zip archive holding a `data.pkl` entry; a safetensors file starts with
//! the length of its JSON header.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Why a file is not a usable checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("it is empty")]
    Empty,
    #[error("it is an HTML or XML page (an error or login page saved in place of the file), not a checkpoint")]
    Html,
    #[error("it is not a PyTorch zip checkpoint (it starts with {0:?})")]
    NotZip(String),
    #[error("its zip directory cannot be read (truncated download?): {0}")]
    BadZip(#[from] zip::result::ZipError),
    #[error("it is a zip archive without the data.pkl entry every PyTorch checkpoint has")]
    NoPickle,
    #[error("it is not a safetensors file (its header length {0} does not fit the file)")]
    BadSafetensors(u64),
}

/// Lower-case hex SHA-256 of a file's content, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Checks that `path` looks like a checkpoint the model loader can read: a safetensors file
/// (by extension) or otherwise a PyTorch zip checkpoint. Reads the first bytes and, for zip, the
/// central directory — never the tensors.
pub fn check_checkpoint(path: &Path) -> Result<(), CheckpointError> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(512);
    (&mut file).take(512).read_to_end(&mut head)?;
    if head.is_empty() {
        return Err(CheckpointError::Empty);
    }
    if looks_like_html(&head) {
        return Err(CheckpointError::Html);
    }
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        return check_safetensors_header(&head, file.metadata()?.len());
    }
    if !head.starts_with(b"PK\x03\x04") {
        let shown: String = head.iter().take(16).map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        return Err(CheckpointError::NotZip(shown));
    }
    let archive = zip::ZipArchive::new(file)?;
    let has_pickle = archive.file_names_raw().any(|name| name == b"data.pkl" || name.ends_with(b"/data.pkl"));
    if has_pickle { Ok(()) } else { Err(CheckpointError::NoPickle) }
}

fn looks_like_html(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).trim_start_matches('\u{feff}').trim_start().to_ascii_lowercase();
    text.starts_with("<!doctype html") || text.starts_with("<html") || text.starts_with("<?xml") || text.starts_with("<head")
}

fn check_safetensors_header(head: &[u8], file_len: u64) -> Result<(), CheckpointError> {
    let Some(len_bytes) = head.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return Err(CheckpointError::BadSafetensors(0));
    };
    let header_len = u64::from_le_bytes(len_bytes);
    let fits = header_len.checked_add(8).is_some_and(|end| end <= file_len);
    if fits && head.get(8) == Some(&b'{') { Ok(()) } else { Err(CheckpointError::BadSafetensors(header_len)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MODEL_PT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/model.pt");
    const MODEL_SAFETENSORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/model.safetensors");

    fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn real_checkpoints_pass() {
        check_checkpoint(Path::new(MODEL_PT)).unwrap();
        check_checkpoint(Path::new(MODEL_SAFETENSORS)).unwrap();
    }

    #[test]
    fn html_page_is_named_as_such() {
        let (_dir, path) = temp_file("MedSAM2_latest.pt", b"\n  <!DOCTYPE html><html><body>Rate limited</body></html>");
        assert!(matches!(check_checkpoint(&path), Err(CheckpointError::Html)));
    }

    #[test]
    fn truncated_zip_and_other_files_fail() {
        let full = std::fs::read(MODEL_PT).unwrap();
        let (_dir, truncated) = temp_file("cut.pt", &full[..full.len() / 2]);
        assert!(matches!(check_checkpoint(&truncated), Err(CheckpointError::BadZip(_))));
        let (_dir2, empty) = temp_file("empty.pt", b"");
        assert!(matches!(check_checkpoint(&empty), Err(CheckpointError::Empty)));
        let (_dir3, json) = temp_file("x.pt", b"{\"error\": \"not found\"}");
        assert!(matches!(check_checkpoint(&json), Err(CheckpointError::NotZip(s)) if s.starts_with("{\"error")));
        let (_dir4, short) = temp_file("x.safetensors", &[200, 0, 0, 0, 0, 0, 0, 0, b'{']);
        assert!(matches!(check_checkpoint(&short), Err(CheckpointError::BadSafetensors(200))));
    }

    #[test]
    fn zip_without_pickle_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.pt");
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        writer.start_file("model/readme.txt", zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(b"not a checkpoint").unwrap();
        writer.finish().unwrap();
        assert!(matches!(check_checkpoint(&path), Err(CheckpointError::NoPickle)));
    }

    #[test]
    fn sha256_matches_known_digest() {
        let (_dir, path) = temp_file("abc", b"abc");
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
