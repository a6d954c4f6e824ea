//! `ModelArgs`: the flags every command that runs MedSAM2 takes to choose its network — the
//! checkpoint file or published variant, the model configuration and the device — flattened
//! into each command's arguments so that they read and behave the same everywhere.

use crate::segment::engine::{DeviceChoice, ModelChoice};
use crate::weights::ModelVariant;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Checkpoint (.pt or .safetensors). Default: weights/ or the Hugging Face cache.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Published MedSAM2 checkpoint searched for when --checkpoint is not given.
    #[arg(long, default_value_t, conflicts_with = "checkpoint")]
    pub model: ModelVariant,
    /// Model configuration yaml. Default: MedSAM2's sam2.1_hiera_t512.yaml.
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

impl ModelArgs {
    /// The network these flags choose.
    pub fn choice(&self) -> ModelChoice {
        ModelChoice { checkpoint: self.checkpoint.clone(), variant: self.model, config: self.model_config.clone(), device: self.device }
    }
}
