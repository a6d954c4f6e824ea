//! Where a checkpoint is looked for, in order: a path the user gave; `weights/<file>` under the
//! current folder; `weights/<file>` under the executable's folder and up to three of its parents
//! (so `cargo run` from the repository finds the repository's weights/); the Hugging Face hub
//! cache (the standard `models--owner--name/snapshots/<commit>/<file>` layout, shared with
//! Python's `huggingface_hub`). `<file>` is the chosen variant's file (`MedSAM2_latest.pt` by
//! default). What is found gets the cheap format check; when nothing is found the error says where
//! to put the file, where to download it, and which command does it.

use super::{endpoint_from_env, hub_cache_from_env, check_checkpoint, CheckpointError, HubFile, ModelVariant};
use super::{DEFAULT_REPO, WEIGHTS_DIR};
use hf_hub::{Cache, Repo};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which kind of place the checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The path given by the user.
    Explicit,
    /// A `weights/` folder next to the current folder or the executable.
    WeightsFolder,
    /// The Hugging Face hub cache.
    HubCache,
}

/// A checkpoint that exists and passed the format check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Located {
    pub path: PathBuf,
    pub source: Source,
}

/// Everywhere [`locate_in`] looks, spelled out so that tests and callers can choose.
#[derive(Clone, Debug)]
pub struct SearchPlaces {
    /// Hand-placed checkpoint paths, in the order they are tried.
    pub weights_files: Vec<PathBuf>,
    /// Hub cache folder (the one holding `models--owner--name/`), if any.
    pub hub_cache: Option<PathBuf>,
    /// The repository and file looked for in the hub cache.
    pub hub_file: HubFile,
    /// Hub address used in the "not found" message.
    pub endpoint: String,
}

impl SearchPlaces {
    /// The places for this process: its current folder, its executable, the hub cache and the
    /// hub address from the environment (see [`super::hub_cache_from_env`]).
    pub fn from_env(hub_file: HubFile) -> Self {
        let cwd = std::env::current_dir().ok();
        let exe = std::env::current_exe().ok();
        let exe_dir = exe.as_deref().and_then(Path::parent);
        Self {
            weights_files: weights_files(cwd.as_deref(), exe_dir, &hub_file.file),
            hub_cache: hub_cache_from_env(),
            hub_file,
            endpoint: endpoint_from_env(),
        }
    }
}

/// `weights/<file>` under `cwd`, then under `exe_dir` and up to three of its parents, each once.
fn weights_files(cwd: Option<&Path>, exe_dir: Option<&Path>, file: &str) -> Vec<PathBuf> {
    let roots = cwd.into_iter().chain(exe_dir.into_iter().flat_map(|dir| dir.ancestors().take(4)));
    let mut files: Vec<PathBuf> = Vec::new();
    for root in roots {
        let candidate = root.join(WEIGHTS_DIR).join(file);
        if !files.contains(&candidate) {
            files.push(candidate);
        }
    }
    files
}

/// The places searched and the ways to get the file, for the message when nothing was found.
#[derive(Debug)]
pub struct NotFound {
    pub searched: Vec<PathBuf>,
    pub hub_cache: Option<PathBuf>,
    pub hub_file: HubFile,
    pub url: String,
}

impl NotFound {
    /// Where the message tells the user to put the file: the first `weights/` place searched.
    pub fn put_at(&self) -> PathBuf {
        self.searched.first().cloned().unwrap_or_else(|| Path::new(WEIGHTS_DIR).join(&self.hub_file.file))
    }

    /// The command line that downloads this file.
    pub fn command(&self) -> String {
        download_command(&self.hub_file)
    }
}

/// `medsam-viewer weights download` with the options that name `hub_file`: `--model` for a
/// published variant other than the default, `--file` for any other file.
fn download_command(hub_file: &HubFile) -> String {
    let mut command = String::from("medsam-viewer weights download");
    if hub_file.repo != DEFAULT_REPO {
        command.push_str(&format!(" --repo {}", hub_file.repo));
    }
    match ModelVariant::for_file(&hub_file.file) {
        Some(ModelVariant::Latest) => {}
        Some(variant) => command.push_str(&format!(" --model {variant}")),
        None => command.push_str(&format!(" --file {}", hub_file.file)),
    }
    command
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "MedSAM2 checkpoint {} not found. Looked for:", self.hub_file.file)?;
        for path in &self.searched {
            writeln!(f, "  {}", path.display())?;
        }
        let folder = Repo::model(self.hub_file.repo.clone()).folder_name();
        match &self.hub_cache {
            Some(cache) => writeln!(f, "  the Hugging Face cache {} ({folder})", cache.display())?,
            None => writeln!(f, "  (no Hugging Face cache: no home folder and neither HF_HOME nor HF_HUB_CACHE set)")?,
        }
        writeln!(f, "Get it with `{}` (it goes into the Hugging Face cache),", self.command())?;
        writeln!(f, "or download {}", self.url)?;
        write!(f, "and put it at {}", self.put_at().display())
    }
}

impl std::error::Error for NotFound {}

/// Why no usable checkpoint was located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("the checkpoint {0} does not exist or is not a file")]
    ExplicitMissing(PathBuf),
    #[error("{path} is not a usable MedSAM2 checkpoint: {reason}. Replace it, or run `{command}` for a verified copy")]
    Invalid { path: PathBuf, reason: CheckpointError, command: String },
    #[error(transparent)]
    NotFound(NotFound),
}

/// Locates a MedSAM2 checkpoint for this process: `explicit` if given, else `variant`'s file in
/// the places of [`SearchPlaces::from_env`].
pub fn locate(explicit: Option<&Path>, variant: ModelVariant) -> Result<Located, LocateError> {
    locate_in(explicit, &SearchPlaces::from_env(variant.hub_file()))
}

/// Locates a checkpoint: `explicit` if given (it must exist; there is no fallback), else the
/// first of `places.weights_files` that exists, else the hub cache. The file found must pass
/// [`check_checkpoint`]; a broken file is reported, not skipped, so the user learns of it.
pub fn locate_in(explicit: Option<&Path>, places: &SearchPlaces) -> Result<Located, LocateError> {
    if let Some(path) = explicit {
        if !path.is_file() {
            return Err(LocateError::ExplicitMissing(path.to_path_buf()));
        }
        return checked(path.to_path_buf(), Source::Explicit, places);
    }
    if let Some(path) = places.weights_files.iter().find(|p| p.is_file()) {
        return checked(path.clone(), Source::WeightsFolder, places);
    }
    let cached = places.hub_cache.as_ref().and_then(|cache| {
        Cache::new(cache.clone()).repo(Repo::model(places.hub_file.repo.clone())).get(&places.hub_file.file)
    });
    if let Some(path) = cached {
        return checked(path, Source::HubCache, places);
    }
    Err(LocateError::NotFound(NotFound {
        searched: places.weights_files.clone(),
        hub_cache: places.hub_cache.clone(),
        hub_file: places.hub_file.clone(),
        url: places.hub_file.url(&places.endpoint),
    }))
}

fn checked(path: PathBuf, source: Source, places: &SearchPlaces) -> Result<Located, LocateError> {
    match check_checkpoint(&path) {
        Ok(()) => Ok(Located { path, source }),
        Err(reason) => Err(LocateError::Invalid { path, reason, command: download_command(&places.hub_file) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_folders_are_cwd_then_executable_and_three_parents_without_repeats() {
        let files = weights_files(Some(Path::new("/repo")), Some(Path::new("/repo/target/debug")), "m.pt");
        let expected: Vec<PathBuf> = ["/repo/weights/m.pt", "/repo/target/debug/weights/m.pt", "/repo/target/weights/m.pt", "/weights/m.pt"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(files, expected);
        let deep = weights_files(None, Some(Path::new("/a/b/c/d/e")), "m.pt");
        assert_eq!(deep.len(), 4);
        assert_eq!(deep.last(), Some(&PathBuf::from("/a/b/weights/m.pt")));
    }

    #[test]
    fn explicit_path_must_exist_and_has_no_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let placed = dir.path().join("weights").join("m.pt");
        std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/model.pt"), &placed).unwrap();
        let places = SearchPlaces {
            weights_files: vec![placed.clone()],
            hub_cache: None,
            hub_file: HubFile::default(),
            endpoint: "http://mirror.local".into(),
        };
        let missing = dir.path().join("nope.pt");
        assert!(matches!(locate_in(Some(&missing), &places), Err(LocateError::ExplicitMissing(p)) if p == missing));
        assert!(matches!(locate_in(Some(dir.path()), &places), Err(LocateError::ExplicitMissing(_))));
        assert_eq!(locate_in(None, &places).unwrap(), Located { path: placed, source: Source::WeightsFolder });
    }

    #[test]
    fn broken_file_in_weights_folder_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.pt");
        let second = dir.path().join("b.pt");
        std::fs::write(&first, "<html><body>403 Forbidden</body></html>").unwrap();
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/model.pt"), &second).unwrap();
        let places = SearchPlaces {
            weights_files: vec![first.clone(), second],
            hub_cache: None,
            hub_file: ModelVariant::CtLesion.hub_file(),
            endpoint: "http://mirror.local".into(),
        };
        let error = locate_in(None, &places).unwrap_err();
        assert!(matches!(&error, LocateError::Invalid { path, reason: CheckpointError::Html, .. } if *path == first));
        assert!(error.to_string().contains("HTML or XML page"), "{error}");
        assert!(error.to_string().contains("run `medsam-viewer weights download --model MedSAM2_CTLesion` for"), "{error}");
    }

    #[test]
    fn download_command_names_a_variant_by_model_and_another_file_by_file() {
        let not_found = NotFound {
            searched: vec![],
            hub_cache: None,
            hub_file: ModelVariant::CtLesion.hub_file(),
            url: String::new(),
        };
        assert_eq!(not_found.command(), "medsam-viewer weights download --model MedSAM2_CTLesion");
        assert_eq!(not_found.put_at(), PathBuf::from("weights/MedSAM2_CTLesion.pt"));
        assert_eq!(download_command(&HubFile::default()), "medsam-viewer weights download");
        let other = HubFile { repo: "someone/sam2".into(), file: "sam2.1_hiera_tiny.pt".into() };
        assert_eq!(download_command(&other), "medsam-viewer weights download --repo someone/sam2 --file sam2.1_hiera_tiny.pt");
    }
}
