//! `weights`: download a MedSAM2 checkpoint (`--model NAME`, or any `--file`) from the Hugging
//! Face hub (with a progress bar) and tell where it is found. Both print JSON on stdout; failures
//! exit with status 2.
//!
//! Ctrl-C during `download` ends the process at once: every byte already received is in the
//! cache's `.part` file (written unbuffered as it arrives), and the next `download` resumes it.

use crate::weights::{self, DownloadOptions, HubFile, ModelVariant, SearchPlaces, DEFAULT_REPO};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Download the checkpoint into the Hugging Face cache (resumes a partial download).
    #[command(after_help = format!("Licence of the published MedSAM2 weights: {}", weights::LICENCE))]
    Download(DownloadArgs),
    /// Print where the checkpoint is found, or where to put it.
    Locate(LocateArgs),
}

#[derive(Args, Debug)]
pub struct HubFileArgs {
    /// Hugging Face model repository.
    #[arg(long, default_value = DEFAULT_REPO)]
    pub repo: String,
    /// Published MedSAM2 checkpoint (its file `<NAME>.pt`); case, the MedSAM2_ prefix and .pt may
    /// be left out.
    #[arg(long, default_value_t, conflicts_with = "file")]
    pub model: ModelVariant,
    /// Any other file in the repository, instead of --model.
    #[arg(long)]
    pub file: Option<String>,
}

impl From<HubFileArgs> for HubFile {
    fn from(args: HubFileArgs) -> Self {
        HubFile { repo: args.repo, file: args.file.unwrap_or_else(|| args.model.file_name()) }
    }
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub hub_file: HubFileArgs,
    /// Hub address, e.g. a mirror [default: $HF_ENDPOINT, else https://huggingface.co].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Retries after a dropped connection or a server error, each resuming the partial file.
    #[arg(long, default_value_t = 3)]
    pub retries: usize,
}

#[derive(Args, Debug)]
pub struct LocateArgs {
    #[command(flatten)]
    pub hub_file: HubFileArgs,
    /// Use this checkpoint file instead of searching.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

pub fn run(command: WeightsCommand) -> anyhow::Result<()> {
    match command {
        WeightsCommand::Download(args) => download(args),
        WeightsCommand::Locate(args) => locate(args),
    }
}

fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let options = DownloadOptions {
        hub_file: args.hub_file.into(),
        endpoint: args.endpoint,
        cache_dir: None,
        retries: args.retries,
    };
    if let Some(variant) = published_variant(&options.hub_file) {
        eprintln!("{}: licence {}", options.hub_file.file, variant.licence());
    }
    let bar = ProgressBar::new(0).with_message(options.hub_file.file.clone());
    bar.set_style(ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    )?);
    // Never set: on the command line Ctrl-C ends the process (see the module documentation).
    let cancel = AtomicBool::new(false);
    let result = weights::download(
        &options,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
        &cancel,
    );
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&result?)?);
    Ok(())
}

/// The published variant `hub_file` is, when it is one of `wanglab/MedSAM2`'s checkpoints.
fn published_variant(hub_file: &HubFile) -> Option<ModelVariant> {
    (hub_file.repo == DEFAULT_REPO).then(|| ModelVariant::for_file(&hub_file.file)).flatten()
}

fn locate(args: LocateArgs) -> anyhow::Result<()> {
    let places = SearchPlaces::from_env(args.hub_file.into());
    let located = weights::locate_in(args.checkpoint.as_deref(), &places)?;
    println!("{}", serde_json::to_string_pretty(&located)?);
    Ok(())
}
