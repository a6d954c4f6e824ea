//! `LoadedModel`: a MedSAM2 network ready to run — its configuration (an official yaml, or the
//! built-in MedSAM2 `sam2.1_hiera_t512`), the checkpoint (a file given, or the chosen published
//! variant found by the weights search) loaded strictly, and the device. One loader serves the command line and the viewer.

use crate::model::checkpoint::{Checkpoint, CheckpointError, MismatchReport};
use crate::model::config::{ConfigError, PredictorBuilder, Sam2Config};
use crate::model::sam2::Sam2Base;
use crate::weights::{self, LocateError, ModelVariant};
use candle_core::Device;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// NVIDIA GPU (a build with `--features cuda`).
    Cuda,
    /// Apple GPU (a build with `--features metal`).
    Metal,
}

impl DeviceChoice {
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Metal => "metal",
        }
    }

    /// Devices this build can use (`cuda` and `metal` are cargo features).
    pub fn available() -> Vec<DeviceChoice> {
        let mut devices = vec![DeviceChoice::Cpu];
        if cfg!(feature = "cuda") {
            devices.push(DeviceChoice::Cuda);
        }
        if cfg!(feature = "metal") {
            devices.push(DeviceChoice::Metal);
        }
        devices
    }

    /// The candle device (the first GPU for cuda/metal).
    pub fn device(self) -> Result<Device, EngineError> {
        let unavailable = |reason: String| EngineError::Device { device: self.name(), reason };
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if cfg!(feature = "cuda") => Device::new_cuda(0).map_err(|e| unavailable(e.to_string())),
            DeviceChoice::Metal if cfg!(feature = "metal") => Device::new_metal(0).map_err(|e| unavailable(e.to_string())),
            _ => Err(unavailable(format!("this build has no {} support (rebuild with `--features {}`)", self.name(), self.name()))),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "metal" => Ok(DeviceChoice::Metal),
            other => Err(format!("unknown device {other:?}: use cpu, cuda or metal")),
        }
    }
}

/// Which model to load: `None` paths mean the defaults (the weights search for `variant`'s file,
/// the built-in t512 yaml).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelChoice {
    /// A checkpoint file; when given, `variant` is not searched for.
    pub checkpoint: Option<PathBuf>,
    /// The published checkpoint searched for when `checkpoint` is `None`.
    pub variant: ModelVariant,
    pub config: Option<PathBuf>,
    pub device: DeviceChoice,
}

/// Why the model could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Weights(#[from] LocateError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint's tensors do not fit the configuration (a summary; the lists can run to
    /// hundreds of names).
    #[error("checkpoint {origin} does not fit the model configuration {config} (wrong architecture?): {summary}")]
    Mismatch { origin: String, config: String, summary: String },
    #[error("device {device}: {reason}")]
    Device { device: &'static str, reason: String },
    #[error("building the model from {path}: {source}")]
    Build { path: PathBuf, source: candle_core::Error },
}

/// A network with its weights on its device.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub model: Arc<Sam2Base>,
    pub config: Sam2Config,
    pub device: Device,
    /// The checkpoint file the weights came from.
    pub checkpoint: PathBuf,
}

impl LoadedModel {
    /// Locates the checkpoint (`choice.checkpoint`, else `choice.variant`'s file in weights/ or the
    /// hub cache), reads the configuration, and builds the network, checking that
    /// every tensor of the file is used and every tensor the network needs is there.
    pub fn load(choice: &ModelChoice) -> Result<Self, EngineError> {
        Self::load_for(choice, PredictorBuilder::Npz)
    }

    /// `load` with `builder`'s overrides on the configuration (the video script's builder for
    /// clips).
    pub fn load_for(choice: &ModelChoice, builder: PredictorBuilder) -> Result<Self, EngineError> {
        let config = match &choice.config {
            Some(path) => Sam2Config::from_file_for(path, builder)?,
            None => Sam2Config::default_t512_for(builder),
        };
        let device = choice.device.device()?;
        let located = weights::locate(choice.checkpoint.as_deref(), choice.variant)?;
        let checkpoint = Checkpoint::open(&located.path)?;
        let built = Sam2Base::new(checkpoint.var_builder(&device), &config);
        // A checkpoint of another architecture usually also fails to build: the key report
        // says why, so it comes first.
        checkpoint.finish().map_err(|e| match e {
            CheckpointError::Mismatch { origin, report } => EngineError::Mismatch {
                origin,
                config: choice.config.as_ref().map_or_else(|| "sam2.1_hiera_t512 (built in)".to_string(), |p| p.display().to_string()),
                summary: summarise(&report),
            },
            other => EngineError::Checkpoint(other),
        })?;
        let model = built.map_err(|source| EngineError::Build { path: located.path.clone(), source })?;
        Ok(LoadedModel { model: Arc::new(model), config, device, checkpoint: located.path })
    }
}

/// "N tensors: a missing (x, y, z, ...); b unexpected (...); c with another shape (...)".
fn summarise(report: &MismatchReport) -> String {
    let head = |names: &[String]| -> String {
        let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        let more = if names.len() > 3 { ", ..." } else { "" };
        format!("{}{more}", shown.join(", "))
    };
    let misshaped: Vec<String> = report.misshaped.iter().map(|m| m.name.clone()).collect();
    let mut parts = Vec::new();
    for (what, names) in [("missing", &report.missing), ("unexpected", &report.unexpected), ("with another shape", &misshaped)] {
        if !names.is_empty() {
            parts.push(format!("{} {what} ({})", names.len(), head(names)));
        }
    }
    format!("{} tensors {}", report.missing.len() + report.unexpected.len() + misshaped.len(), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

    #[test]
    fn loads_the_seeded_checkpoint_strictly() {
        let choice = ModelChoice {
            checkpoint: Some(format!("{FIXTURES}/model.pt").into()),
            config: Some(format!("{FIXTURES}/config.yaml").into()),
            ..ModelChoice::default()
        };
        let loaded = LoadedModel::load(&choice).unwrap();
        assert_eq!(loaded.config.model.image_size, 128);
        // The mini weights do not fit the built-in t512 architecture: a mismatch, not a panic.
        let wrong = ModelChoice { config: None, ..choice };
        let err = LoadedModel::load(&wrong).unwrap_err().to_string();
        assert!(err.contains("does not fit the model configuration") && err.contains("with another shape"), "{err}");
    }

    #[test]
    fn devices_parse_and_unbuilt_ones_explain_the_feature() {
        assert_eq!("CPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert!("tpu".parse::<DeviceChoice>().is_err());
        if !cfg!(feature = "cuda") {
            let err = DeviceChoice::Cuda.device().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
