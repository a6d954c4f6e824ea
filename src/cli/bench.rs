//! `bench`: measured figures printed as JSON, for the performance claims in the README and the
//! comparisons under bench/ (load time and peak memory of a reader).

use crate::io::{self, OpenOptions, SeriesSelector};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time loading an image (any readable format) and report peak memory.
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Image file or DICOM folder.
    pub path: PathBuf,
    /// Series of a DICOM folder.
    #[arg(long)]
    pub series: Option<SeriesSelector>,
    /// Number of timed loads (after one untimed warm-up that fills the page cache).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Load(args) => load(args),
    }
}

fn load(args: LoadArgs) -> anyhow::Result<()> {
    let options = OpenOptions { series: args.series.clone(), ..Default::default() };
    let baseline = process_memory().rss;
    // Warm-up: fills the page cache so every timed run reads from memory, as the others do.
    let first = io::open(&args.path, &options)?;
    let decoded = first.data.as_bytes().len();
    let dims = first.geometry.dims;
    let format = first.meta.format.map(|f| f.name());
    drop(first);
    let mut seconds = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let volume = io::open(&args.path, &options)?;
        seconds.push(start.elapsed().as_secs_f64());
        drop(volume);
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let peak = process_memory().peak;
    println!(
        "{}",
        json!({
            "path": args.path,
            "format": format,
            "dims": dims,
            "decoded_bytes": decoded,
            "seconds": seconds,
            "median_seconds": sorted[sorted.len() / 2],
            "min_seconds": sorted[0],
            "baseline_rss_bytes": baseline,
            "peak_rss_bytes": peak,
            "peak_over_decoded": (peak.saturating_sub(baseline)) as f64 / decoded as f64,
        })
    );
    Ok(())
}

/// Resident and peak resident memory of this process in bytes (Linux /proc; 0 elsewhere).
pub struct ProcessMemory {
    pub rss: u64,
    pub peak: u64,
}

pub fn process_memory() -> ProcessMemory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    ProcessMemory { rss: field("VmRSS:"), peak: field("VmHWM:") }
}
