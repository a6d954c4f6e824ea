//! The MedSAM2 checkpoints: which ones are published ([`ModelVariant`]), where one is looked for
//! on this machine ([`locate`]), how it is fetched from the Hugging Face hub into the standard hub
//! cache ([`download`]), and the cheap checks that tell a real PyTorch checkpoint from a truncated
//! download or a saved error page ([`check_checkpoint`]).
//!
//! The weights are not shipped with the program: they come from the public hub repository
//! `wanglab/MedSAM2`, by default the file `MedSAM2_latest.pt`. weights/README.md describes the
//! manual route.
//! This module also owns the environment conventions shared by both halves: `HF_ENDPOINT` for
//! mirrors, and the cache folder resolved the way Python's `huggingface_hub` resolves it, so a
//! file fetched by either tool is found by the other.

mod download;
mod integrity;
mod locate;
mod variant;

pub use download::{download, DownloadError, DownloadOptions, Downloaded};
pub use integrity::{check_checkpoint, sha256_file, CheckpointError};
pub use locate::{locate, locate_in, LocateError, Located, NotFound, SearchPlaces, Source};
pub use variant::{ModelVariant, UnknownModelVariant, LICENCE};

use std::path::PathBuf;

/// Hub repository that publishes the MedSAM2 checkpoints.
pub const DEFAULT_REPO: &str = "wanglab/MedSAM2";
/// The public hub; `HF_ENDPOINT` replaces it (mirrors, air-gapped sites).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Folder name searched for a hand-placed checkpoint.
pub const WEIGHTS_DIR: &str = "weights";

/// One file of one model repository on the hub (revision `main`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`, e.g. `wanglab/MedSAM2`.
    pub repo: String,
    /// File name inside the repository, e.g. `MedSAM2_latest.pt`.
    pub file: String,
}

/// The default checkpoint, [`ModelVariant::Latest`].
impl Default for HubFile {
    fn default() -> Self {
        ModelVariant::default().hub_file()
    }
}

impl HubFile {
    /// The address the hub serves the file at: `{endpoint}/{repo}/resolve/main/{file}`.
    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{}/resolve/main/{}", endpoint.trim_end_matches('/'), self.repo, self.file)
    }
}

/// The hub address: `HF_ENDPOINT` when set, else the public hub.
pub fn endpoint_from_env() -> String {
    env_value("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
}

/// The hub cache folder (the one holding `models--owner--name/`), resolved from the environment
/// like Python's `huggingface_hub`: `HF_HUB_CACHE`, the older `HUGGINGFACE_HUB_CACHE`,
/// `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`, then `~/.cache/huggingface/hub`.
/// `None` only when none is set and there is no home folder.
///
/// hf-hub's own `Cache::from_env` reads only `HF_HOME` and panics without a home folder, hence
/// this resolution here.
pub fn hub_cache_from_env() -> Option<PathBuf> {
    hub_cache_dir(env_value, std::env::home_dir())
}

fn hub_cache_dir(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Some(PathBuf::from(dir));
    }
    let hf_home = match var("HF_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| home.map(|h| h.join(".cache")))?;
            cache.join("huggingface")
        }
    };
    Some(hf_home.join("hub"))
}

/// An environment variable's value; unset and empty read the same, as in `huggingface_hub`.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)], home: Option<&str>) -> Option<PathBuf> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        hub_cache_dir(|name| map.get(name).cloned(), home.map(PathBuf::from))
    }

    #[test]
    fn cache_folder_follows_huggingface_hub_precedence() {
        let all = [
            ("HF_HUB_CACHE", "/a"),
            ("HUGGINGFACE_HUB_CACHE", "/b"),
            ("HF_HOME", "/c"),
            ("XDG_CACHE_HOME", "/d"),
        ];
        assert_eq!(resolve(&all, Some("/home/u")), Some(PathBuf::from("/a")));
        assert_eq!(resolve(&all[1..], Some("/home/u")), Some(PathBuf::from("/b")));
        assert_eq!(resolve(&all[2..], Some("/home/u")), Some(PathBuf::from("/c/hub")));
        assert_eq!(resolve(&all[3..], Some("/home/u")), Some(PathBuf::from("/d/huggingface/hub")));
        assert_eq!(resolve(&[], Some("/home/u")), Some(PathBuf::from("/home/u/.cache/huggingface/hub")));
        assert_eq!(resolve(&[], None), None);
    }

    #[test]
    fn url_is_the_resolve_address() {
        let file = HubFile::default();
        assert_eq!(
            file.url("https://huggingface.co/"),
            "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"
        );
        assert_eq!(file.url(DEFAULT_ENDPOINT), file.url("https://huggingface.co"));
    }
}
