//! `bench`: measured figures printed as JSON, for the performance claims in the README and the
//! comparisons under bench/: load time and peak memory of a reader (`load`), and the MedSAM2
//! network on the full t512 architecture with seeded random weights (`model`: image encoder,
//! tracked slice, memory attention, whole bidirectional pipeline and re-propagation, peak
//! memory).

use crate::io::{self, OpenOptions, SeriesSelector};
use crate::model::checkpoint::{Checkpoint, RandomWeights};
use crate::model::config::Sam2Config;
use crate::model::sam2::Sam2Base;
use crate::segment::pipeline::{self, BoxPrompt, PassDirection};
use crate::segment::predictor::{PointsOrBox, VolumePredictor};
use crate::volume::{Geometry, SliceAxis, Volume, VolumeMeta, VoxelBuffer, Window};
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time loading an image (any readable format) and report peak memory.
    Load(LoadArgs),
    /// Time the MedSAM2 network (t512, seeded random weights) on a synthetic CT volume.
    Model(ModelArgs),
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Slices of the synthetic 512 x 512 volume.
    #[arg(long, default_value_t = 100)]
    pub slices: usize,
    /// Timed repetitions of the single-stage measurements (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Model configuration yaml (default: MedSAM2's sam2.1_hiera_t512.yaml).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Skip the whole-volume pipeline (stage timings only).
    #[arg(long)]
    pub stages_only: bool,
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
        BenchCommand::Model(args) => model(args),
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

/// Median of measured values (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Milliseconds of `repeat` timed runs of `work` after one warm-up.
fn time_ms(repeat: usize, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    work()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// A deterministic smooth tensor of the given shape, values in about [-1.5, 1.5]: stand-in
/// activations for timing the network's stages (here and in the criterion benches).
pub fn smooth_pattern(shape: &[usize], phase: f32, device: &Device) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|i| ((i as f32 * 0.013 + phase).sin() + (i as f32 * 0.0071).cos()) * 0.75).collect();
    Tensor::from_vec(values, shape, device)
}

/// A 512 x 512 x `slices` CT-like i16 volume: air with a body ellipse of soft tissue, a
/// brighter ellipsoidal lesion in the middle, and a deterministic texture.
fn synthetic_ct(size: usize, slices: usize) -> anyhow::Result<Volume> {
    let mut data = vec![0i16; size * size * slices];
    let c = size as f32 / 2.0;
    for (k, plane) in data.chunks_mut(size * size).enumerate() {
        let z = (k as f32 - slices as f32 / 2.0) / (slices as f32 / 4.0).max(1.0);
        for (j, row) in plane.chunks_mut(size).enumerate() {
            for (i, v) in row.iter_mut().enumerate() {
                let (x, y) = ((i as f32 - c) / c, (j as f32 - c) / c);
                let texture = ((i * 7 + j * 13 + k * 5) % 31) as i16 - 15;
                let body = x * x / 0.8 + y * y / 0.55 < 1.0;
                let lesion = (x * x + y * y) / 0.04 + z * z < 1.0;
                *v = match (body, lesion) {
                    (_, true) => 120 + texture,
                    (true, false) => 40 + texture,
                    (false, false) => -1000 + texture,
                };
            }
        }
    }
    let geometry = Geometry::new([size, size, slices], [0.8, 0.8, 2.5], [0.0, 0.0, 0.0]);
    Ok(Volume::new(geometry, 1, VoxelBuffer::I16(data), VolumeMeta::default())?)
}

fn model(args: ModelArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let config = match &args.model_config {
        Some(path) => Sam2Config::from_file(path)?,
        None => Sam2Config::default_t512(),
    };
    let m = &config.model;
    let weights = Checkpoint::random(RandomWeights::new(0));
    let model = Arc::new(Sam2Base::new(weights.var_builder(&device), &config)?);
    let s = m.image_size;
    let (hidden, mem_dim, e) = (m.hidden_dim(), m.mem_dim(), m.image_embedding_size());

    // Stages on their own.
    let image = Tensor::from_vec(
        (0..3 * s * s).map(|i| ((i as f32) * 0.0137).sin()).collect::<Vec<f32>>(),
        (1, 3, s, s),
        &device,
    )?;
    let encoder_ms = time_ms(args.repeat, || {
        model.forward_image(&image)?;
        Ok(())
    })?;
    let pattern = |shape: &[usize], phase: f32| smooth_pattern(shape, phase, &device);
    let pointer_tokens = m.max_obj_ptrs_in_encoder * (hidden / mem_dim);
    let memory_tokens = m.num_maskmem * e * e + pointer_tokens;
    let curr = pattern(&[1, e * e, hidden], 0.0)?;
    let curr_pos = pattern(&[1, e * e, hidden], 1.0)?;
    let memory = pattern(&[1, memory_tokens, mem_dim], 2.0)?;
    let memory_pos = pattern(&[1, memory_tokens, mem_dim], 3.0)?;
    let attention_ms = time_ms(args.repeat, || {
        model.memory_attention().forward(&curr, &curr_pos, &memory, &memory_pos, pointer_tokens)?;
        Ok(())
    })?;
    let mut report = json!({
        "config": args.model_config.as_ref().map_or("sam2.1_hiera_t512 (built in)".into(), |p| p.display().to_string()),
        "weights": weights.origin(),
        "threads": rayon::current_num_threads(),
        "image_size": s,
        "image_encoder_ms_per_slice": median(&encoder_ms),
        "image_encoder_ms": encoder_ms,
        "memory_attention_ms_full_bank": median(&attention_ms),
        "memory_tokens_full_bank": memory_tokens,
    });
    if args.stages_only {
        println!("{report}");
        return Ok(());
    }

    // The whole pipeline on a synthetic volume, then again on the same predictor (features
    // cached, as after a correction).
    let volume = synthetic_ct(s, args.slices)?;
    let volume_bytes = volume.data.as_bytes().len();
    let baseline = process_memory().rss;
    let key = args.slices / 2;
    let c = s / 2;
    let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: key, bbox: [c - 60, c - 60, c + 60, c + 60] };
    let cancel = AtomicBool::new(false);
    let window = Some(Window::new(-160.0, 240.0));
    let dims = volume.geometry.dims;
    // Per run: total seconds, slices reported, the longest wait for a pass's next slice, and
    // the mask voxels.
    let run = |predictor: &mut VolumePredictor| -> anyhow::Result<(f64, usize, f64, usize)> {
        let start = Instant::now();
        let mut last = [start; 2];
        let (mut reported, mut longest_ms) = (0, 0f64);
        let result = pipeline::segment_box(predictor, dims, &prompt, false, &cancel, |direction, _| {
            let now = Instant::now();
            let pass = &mut last[(direction == PassDirection::Backward) as usize];
            longest_ms = longest_ms.max((now - *pass).as_secs_f64() * 1000.0);
            *pass = now;
            reported += 1;
        })?;
        Ok((start.elapsed().as_secs_f64(), reported, longest_ms, result.voxels))
    };
    let start = Instant::now();
    let mut predictor = pipeline::predictor_for(model.clone(), &volume, SliceAxis::Axial, window, device.clone())?;
    let preprocess_seconds = start.elapsed().as_secs_f64();
    let (first_seconds, reported, longest_ms, voxels) = run(&mut predictor)?;
    let (second_seconds, _, _, _) = run(&mut predictor)?;
    let encoder_runs = predictor.encoder_runs();
    let feature_cache_bytes = predictor.cached_features().1;
    drop(predictor);

    // One tracking step on its own: a forward pass from the key slice on a fresh predictor,
    // timed slice by slice once the memory bank is full; then the same pass again with the
    // features cached.
    let full_bank = m.num_maskmem;
    let timed = 10;
    let mut predictor = pipeline::predictor_for(model.clone(), &volume, SliceAxis::Axial, window, device.clone())?;
    let mut forward_pass = || -> anyhow::Result<Vec<f64>> {
        predictor.reset();
        let bbox = prompt.bbox.map(|v| v as f32);
        predictor.add_new_points_or_box(key, 1, &PointsOrBox::bbox(bbox))?;
        let mut last = Instant::now();
        let mut times = Vec::new();
        predictor.propagate(Some(key), Some(full_bank + timed), false, &cancel, |slice| {
            let now = Instant::now();
            if slice.done > full_bank + 1 && slice.recomputed {
                times.push((now - last).as_secs_f64() * 1000.0);
            }
            last = now;
        })?;
        Ok(times)
    };
    let tracked = forward_pass()?;
    let tracked_cached = forward_pass()?;
    let peak = process_memory().peak;
    let pipeline_seconds = preprocess_seconds + first_seconds;
    report["volume"] = json!({ "dims": dims, "bytes": volume_bytes, "key_slice": key, "mask_voxels": voxels });
    report["tracked_slice_ms"] = json!(median(&tracked));
    report["tracked_slice_ms_cached_features"] = json!(median(&tracked_cached));
    report["pipeline_seconds"] = json!(pipeline_seconds);
    report["preprocess_seconds"] = json!(preprocess_seconds);
    report["pipeline_ms_per_slice"] = json!(first_seconds * 1000.0 / reported.max(1) as f64);
    report["pipeline_longest_slice_wait_ms"] = json!(longest_ms);
    report["repropagation_seconds"] = json!(second_seconds);
    report["repropagation_ratio"] = json!(second_seconds / pipeline_seconds);
    report["encoder_runs"] = json!(encoder_runs);
    report["feature_cache_bytes"] = json!(feature_cache_bytes);
    report["baseline_rss_bytes"] = json!(baseline);
    report["peak_rss_bytes"] = json!(peak);
    report["peak_over_baseline_bytes"] = json!(peak.saturating_sub(baseline));
    println!("{report}");
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
