//! `Settings`: what the viewer remembers between runs (recent files, model variant, checkpoint
//! and device, brush), stored as JSON in the user's config folder, and the folders it uses for
//! recovery files and the bundled sample.

use crate::weights::ModelVariant;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MAX_RECENT: usize = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub recent: Vec<PathBuf>,
    /// Checkpoint chosen in the model panel (None = the default search for `model_variant`).
    pub checkpoint: Option<PathBuf>,
    /// Published MedSAM2 checkpoint searched for and downloaded when `checkpoint` is None.
    pub model_variant: ModelVariant,
    /// Model configuration yaml chosen in the model panel (None = the built-in MedSAM2 t512).
    pub model_config: Option<PathBuf>,
    /// "cpu", "cuda" or "metal".
    pub device: Option<String>,
    /// A run ends each direction after this many consecutive slices without the object
    /// (0: to the end of the volume); `None`: the viewer's default.
    pub stop_after_empty: Option<usize>,
    /// Whether drawing a box (or a click refining it) segments its slice at once; `None`: on.
    pub auto_preview: Option<bool>,
}

impl Settings {
    /// Whether a drawn box is previewed on its slice at once.
    pub fn auto_preview(&self) -> bool {
        self.auto_preview.unwrap_or(true)
    }

    /// The number of empty slices that ends a run's direction.
    pub fn stop_after_empty(&self) -> usize {
        self.stop_after_empty.unwrap_or(crate::segment::pipeline::INTERACTIVE_STOP_AFTER_EMPTY)
    }

    /// Loads the settings file; a missing or unreadable file gives the defaults.
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()
    }

    /// Saves atomically (temp file + rename); errors are returned for the status line.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = crate::io::atomic::AtomicFile::create(path)?;
        std::io::Write::write_all(&mut file, serde_json::to_string_pretty(self).unwrap_or_default().as_bytes())?;
        file.commit()
    }

    /// Puts `path` first in the recent list.
    pub fn add_recent(&mut self, path: &Path) {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.recent.retain(|p| p != &path);
        self.recent.insert(0, path);
        self.recent.truncate(MAX_RECENT);
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| home().join(fallback))
}

/// The files and folders the viewer keeps between runs.
#[derive(Clone, Debug, PartialEq)]
pub struct AppPaths {
    /// Settings JSON ($XDG_CONFIG_HOME/medsam-viewer/settings.json).
    pub settings: PathBuf,
    /// Autosaved recovery files ($XDG_STATE_HOME/medsam-viewer/recovery).
    pub recovery: PathBuf,
    /// Files the viewer unpacks, e.g. the bundled sample ($XDG_CACHE_HOME/medsam-viewer).
    pub cache: PathBuf,
}

impl AppPaths {
    /// The user's standard folders.
    pub fn for_user() -> Self {
        AppPaths {
            settings: xdg("XDG_CONFIG_HOME", ".config").join("medsam-viewer").join("settings.json"),
            recovery: xdg("XDG_STATE_HOME", ".local/state").join("medsam-viewer").join("recovery"),
            cache: xdg("XDG_CACHE_HOME", ".cache").join("medsam-viewer"),
        }
    }

    /// Everything under one folder (tests, portable installs).
    pub fn under(root: &Path) -> Self {
        AppPaths { settings: root.join("settings.json"), recovery: root.join("recovery"), cache: root.join("cache") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_list_is_unique_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::default();
        for n in 0..12 {
            s.add_recent(&dir.path().join(format!("{n}.nii")));
        }
        s.add_recent(&dir.path().join("5.nii"));
        s.model_variant = ModelVariant::UsHeart;
        assert_eq!(s.recent.len(), MAX_RECENT);
        assert!(s.recent[0].ends_with("5.nii"));
        let path = dir.path().join("conf/settings.json");
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path), s);
        assert_eq!(Settings::load(&dir.path().join("missing.json")), Settings::default());
    }

    #[test]
    fn model_variant_is_stored_by_name_and_defaults_to_latest() {
        let s = Settings { model_variant: ModelVariant::CtLesion, ..Settings::default() };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"model_variant\":\"MedSAM2_CTLesion\""), "{json}");
        let older: Settings = serde_json::from_str(r#"{"device": "cpu"}"#).unwrap();
        assert_eq!(older.model_variant, ModelVariant::Latest);
    }
}
