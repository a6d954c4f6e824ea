//! `bench`: measured figures printed as JSON, for the performance claims in the README and the
//! comparisons under bench/: load time and peak memory of a reader (`load`), and the MedSAM2
//! network on the full t512 architecture with seeded random weights (`model`: image encoder,
//! tracked slice, memory attention, whole bidirectional pipeline and re-propagation, peak
//! memory), and what a user of the viewer waits for (`interactive`: box -> preview, click ->
//! refined mask, Run -> first slice, box -> done with propagation that ends with the object),
//! and video tracking (`video`: frames per second and peak memory on a synthetic RGB clip).

use crate::io::{self, OpenOptions, SeriesSelector};
use crate::model::checkpoint::{Checkpoint, RandomWeights};
use crate::model::config::{PredictorBuilder, Sam2Config};
use crate::model::sam2::Sam2Base;
use crate::segment::pipeline::{self, BoxPrompt, BoxRun, Click, PassBounds, PassDirection, INTERACTIVE_STOP_AFTER_EMPTY};
use crate::segment::predictor::{PointsOrBox, VolumePredictor, Walk};
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
    /// Time the interactive path (preview, click, Run with auto-ending propagation) on a
    /// synthetic CT whose slices outside a lesion band are washed out.
    Interactive(InteractiveArgs),
    /// Time video tracking (MedSAM2's video script: a mask on frame 0, forward propagation)
    /// on a synthetic RGB clip with a moving, pulsing object.
    Video(VideoArgs),
}

#[derive(Args, Debug)]
pub struct VideoArgs {
    /// Frames of the clip.
    #[arg(long, default_value_t = 30)]
    pub frames: usize,
    /// Width and height of the frames in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Model configuration yaml (default: MedSAM2's sam2.1_hiera_t512.yaml).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Also write the clip here as JPEG frames (00000.jpg, ...) with the prompt mask as
    /// prompt_mask.png, for bench/pytorch_model_bench.py --video.
    #[arg(long)]
    pub write_frames: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InteractiveArgs {
    /// Slices of the synthetic 512 x 512 volume.
    #[arg(long, default_value_t = 300)]
    pub slices: usize,
    /// Slices of the lesion band around the middle slice (the others are washed out).
    #[arg(long, default_value_t = 20)]
    pub lesion_slices: usize,
    /// Consecutive empty slices that end a direction (the viewer's default).
    #[arg(long, default_value_t = INTERACTIVE_STOP_AFTER_EMPTY)]
    pub stop_after_empty: usize,
    /// Model configuration yaml (default: MedSAM2's sam2.1_hiera_t512.yaml).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Also write the synthetic volume here (.nii.gz), for bench/pytorch_model_bench.py.
    #[arg(long)]
    pub write_volume: Option<PathBuf>,
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
        BenchCommand::Interactive(args) => interactive(args),
        BenchCommand::Video(args) => video(args),
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

/// The network of `config` (default t512) as `builder` builds it, with seeded random weights,
/// and the weights' origin.
fn seeded_model(config: &Option<PathBuf>, builder: PredictorBuilder, device: &Device) -> anyhow::Result<(Sam2Config, Arc<Sam2Base>, String)> {
    let config = match config {
        Some(path) => Sam2Config::from_file_for(path, builder)?,
        None => Sam2Config::default_t512_for(builder),
    };
    let weights = Checkpoint::random(RandomWeights::new(0));
    let model = Arc::new(Sam2Base::new(weights.var_builder(device), &config)?);
    Ok((config, model, weights.origin()))
}

/// The box the benches prompt with: 120 px around the middle of the slice.
fn centre_box(size: usize) -> [usize; 4] {
    let c = size / 2;
    [c - 60, c - 60, c + 60, c + 60]
}

/// `synthetic_ct` with every slice outside `band` washed out the way the parity fixtures make
/// a slice without the object: grey g (the slice as the model sees it through `window`) becomes
/// 170 + 0.33 g, a pale low-contrast image.
fn washed_out_ct(size: usize, slices: usize, band: std::ops::Range<usize>, window: Window) -> anyhow::Result<Volume> {
    let mut volume = synthetic_ct(size, slices)?;
    let VoxelBuffer::I16(data) = &mut volume.data else { unreachable!("synthetic_ct is i16") };
    let (lo, hi) = (window.lo as f32, window.hi as f32);
    for (k, plane) in data.chunks_mut(size * size).enumerate() {
        if band.contains(&k) {
            continue;
        }
        for v in plane {
            let grey = ((*v as f32).clamp(lo, hi) - lo) / (hi - lo) * 255.0;
            *v = (lo + (170.0 + 0.33 * grey) / 255.0 * (hi - lo)).round() as i16;
        }
    }
    Ok(volume)
}

fn interactive(args: InteractiveArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let (config, model, weights) = seeded_model(&args.model_config, PredictorBuilder::Npz, &device)?;
    let s = config.model.image_size;
    let slices = args.slices.max(1);
    let lesion = args.lesion_slices.clamp(1, slices);
    let key = slices / 2;
    let band_start = key.saturating_sub(lesion / 2).min(slices - lesion);
    let band = band_start..band_start + lesion;
    let window = Window::new(-160.0, 240.0);
    let volume = washed_out_ct(s, slices, band.clone(), window)?;
    if let Some(path) = &args.write_volume {
        crate::io::nifti::write(path, &volume, crate::io::nifti::NiftiKind::Image)?;
    }
    let dims = volume.geometry.dims;
    let cancel = AtomicBool::new(false);
    let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: key, bbox: centre_box(s) };
    let c = s as f32 / 2.0;
    let click = Click { point: [c, c], positive: true };
    let bounds = PassBounds { range: None, stop_after_empty: args.stop_after_empty };
    let baseline = process_memory().rss;

    // One image-encoder pass, the yardstick of the goals.
    let image = Tensor::from_vec((0..3 * s * s).map(|i| ((i as f32) * 0.0137).sin()).collect::<Vec<f32>>(), (1, 3, s, s), &device)?;
    let encoder_ms = median(&time_ms(3, || {
        model.forward_image(&image)?;
        Ok(())
    })?);

    let start = Instant::now();
    let mut predictor = pipeline::predictor_for(model.clone(), &volume, SliceAxis::Axial, Some(window), device.clone())?;
    let prepare_seconds = start.elapsed().as_secs_f64();

    // Run with nothing previewed: the key slice's answer is the first slice shown.
    let start = Instant::now();
    let mut first_slice_ms = None;
    let mut shown = Vec::new();
    let run = BoxRun { prompt, clicks: Vec::new(), bounds };
    let result = pipeline::segment_box(&mut predictor, dims, &run, false, &cancel, |direction, slice| {
        first_slice_ms.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1000.0);
        if direction != PassDirection::KeySlice {
            shown.push((slice.index, slice.objects[0].object_score));
        }
    })?;
    let done_seconds = start.elapsed().as_secs_f64();
    let slices_encoded = predictor.encoder_runs();
    drop(predictor);

    // The interactive path on a fresh predictor: box released -> preview, a click -> refined
    // answer (the slice is not encoded again), Run from that answer.
    let mut predictor = pipeline::predictor_for(model.clone(), &volume, SliceAxis::Axial, Some(window), device.clone())?;
    let start = Instant::now();
    pipeline::key_slice_answer(&mut predictor, &prompt, &[])?;
    let preview_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    pipeline::key_slice_answer(&mut predictor, &prompt, &[click])?;
    let click_ms = start.elapsed().as_secs_f64() * 1000.0;
    let encoded_by_preview = predictor.encoder_runs();
    let start = Instant::now();
    let refined = BoxRun { prompt, clicks: vec![click], bounds };
    let after_preview = pipeline::segment_box(&mut predictor, dims, &refined, false, &cancel, |_, _| {})?;
    let run_after_preview_seconds = start.elapsed().as_secs_f64();
    let peak = process_memory().peak;

    let scores: Vec<serde_json::Value> = shown.iter().map(|(index, score)| json!([index, score])).collect();
    println!(
        "{}",
        json!({
            "weights": weights,
            "threads": rayon::current_num_threads(),
            "volume": { "dims": dims, "key_slice": key, "lesion_band": [band.start, band.end - 1] },
            "encoder_ms": encoder_ms,
            "preview_ms": preview_ms,
            "preview_over_encoder": preview_ms / encoder_ms,
            "click_ms": click_ms,
            "first_slice_ms": first_slice_ms,
            "first_slice_over_encoder": first_slice_ms.map(|ms| ms / encoder_ms),
            "done_seconds": done_seconds,
            "prepare_seconds": prepare_seconds,
            "slices_encoded": slices_encoded,
            "slices_tracked": { "forward": result.forward.slices, "backward": result.backward.slices },
            "forward": result.forward.to_json(),
            "backward": result.backward.to_json(),
            "stop_after_empty": args.stop_after_empty,
            "mask_voxels": result.voxels,
            "after_preview": {
                "slices_encoded_by_preview_and_click": encoded_by_preview,
                "run_seconds": run_after_preview_seconds,
                "forward": after_preview.forward.to_json(),
                "backward": after_preview.backward.to_json(),
            },
            "object_scores": scores,
            "baseline_rss_bytes": baseline,
            "peak_rss_bytes": peak,
        })
    );
    Ok(())
}

/// A `size` x `size` RGB clip of `frames` frames: a warm gradient with a bright ellipse that
/// drifts and pulses like a heart chamber, and the ellipse's mask on frame 0.
fn synthetic_clip(frames: usize, size: usize) -> anyhow::Result<(crate::video::Clip, Vec<u8>)> {
    let c = size as f32 / 2.0;
    let inside = |t: usize, x: usize, y: usize| {
        let phase = t as f32 * 0.4;
        let (cx, cy) = (c + 0.1 * c * phase.sin(), c + 0.05 * c * phase.cos());
        let (rx, ry) = (0.25 * c * (1.0 + 0.2 * phase.sin()), 0.35 * c);
        ((x as f32 - cx) / rx).powi(2) + ((y as f32 - cy) / ry).powi(2) < 1.0
    };
    let mut pixels = Vec::with_capacity(frames * size * size * 3);
    for t in 0..frames {
        for y in 0..size {
            for x in 0..size {
                let texture = ((x * 7 + y * 13 + t * 5) % 23) as u8;
                let rgb = if inside(t, x, y) { [200, 190 + texture / 2, 180] } else { [40 + (y * 80 / size) as u8 + texture, 30 + texture, 60] };
                pixels.extend_from_slice(&rgb);
            }
        }
    }
    let names = (0..frames).map(|t| format!("{t:05}")).collect();
    let clip = crate::video::Clip::new(size, size, pixels, names, Some(25.0)).ok_or_else(|| anyhow::anyhow!("clip sizes"))?;
    let mask = (0..size * size).map(|n| u8::from(inside(0, n % size, n / size))).collect();
    Ok((clip, mask))
}

fn video(args: VideoArgs) -> anyhow::Result<()> {
    use crate::segment::preprocess::ModelSlices;
    use crate::segment::video_pipeline::{self, FramePrompt, Prompt, Tracking, VideoRun};
    let device = Device::Cpu;
    let builder = PredictorBuilder::Video { apply_postprocessing: false, non_overlap_masks: true };
    let (config, model, weights) = seeded_model(&args.model_config, builder, &device)?;
    let (clip, mask) = synthetic_clip(args.frames.max(1), args.size.max(8))?;
    if let Some(dir) = &args.write_frames {
        std::fs::create_dir_all(dir)?;
        for (t, name) in clip.names().iter().enumerate() {
            let frame = clip.frame(t).expect("in range").to_vec();
            image::RgbImage::from_raw(clip.width() as u32, clip.height() as u32, frame)
                .expect("frame size")
                .save(dir.join(format!("{name}.jpg")))?;
        }
        image::GrayImage::from_raw(clip.width() as u32, clip.height() as u32, mask.iter().map(|&m| m * 255).collect())
            .expect("mask size")
            .save(dir.join("prompt_mask.png"))?;
    }
    let baseline = process_memory().rss;
    let start = Instant::now();
    let slices = ModelSlices::from_clip(&clip, config.model.image_size);
    let frames = clip.len();
    drop(clip);
    let mut predictor = VolumePredictor::new(model, Arc::new(slices), device)?;
    let prepare_seconds = start.elapsed().as_secs_f64();
    let run = VideoRun {
        prompts: vec![FramePrompt { frame: 0, object: 1, prompt: Prompt::Mask(mask) }],
        tracking: Tracking::Together,
        score_thresh: 0.0,
        both_directions: false,
    };
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let mut arrivals = Vec::with_capacity(frames);
    let mut mask_pixels = 0usize;
    video_pipeline::track(
        &mut predictor,
        &run,
        &cancel,
        |masks| {
            arrivals.push(start.elapsed().as_secs_f64());
            mask_pixels += masks.objects.iter().map(|o| o.mask.iter().filter(|&&m| m != 0).count()).sum::<usize>();
        },
        |_, _| {},
    )?;
    let track_seconds = start.elapsed().as_secs_f64();
    let gaps: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let peak = process_memory().peak;
    println!(
        "{}",
        json!({
            "weights": weights,
            "threads": rayon::current_num_threads(),
            "frames": frames,
            "size": args.size,
            "prepare_seconds": prepare_seconds,
            "tracking_seconds": track_seconds,
            "frames_per_second": frames as f64 / track_seconds,
            "first_frame_seconds": arrivals.first(),
            "median_frame_seconds": (!gaps.is_empty()).then(|| median(&gaps)),
            "mask_pixels": mask_pixels,
            "baseline_rss_bytes": baseline,
            "peak_rss_bytes": peak,
        })
    );
    Ok(())
}

fn model(args: ModelArgs) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let (config, model, weights) = seeded_model(&args.model_config, PredictorBuilder::Npz, &device)?;
    let m = &config.model;
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
        "weights": weights,
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
    let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: key, bbox: centre_box(s) };
    let cancel = AtomicBool::new(false);
    let window = Some(Window::new(-160.0, 240.0));
    let dims = volume.geometry.dims;
    // Per run: total seconds, slices reported, the longest wait for a pass's next slice, and
    // the mask voxels.
    let run = |predictor: &mut VolumePredictor| -> anyhow::Result<(f64, usize, f64, usize)> {
        let start = Instant::now();
        let mut last = [start; 2];
        let (mut reported, mut longest_ms) = (0, 0f64);
        let result = pipeline::segment_box(predictor, dims, &BoxRun::reference(prompt), false, &cancel, |direction, _| {
            if direction == PassDirection::KeySlice {
                return;
            }
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
        let walk = Walk { max_slices: Some(full_bank + timed), ..Walk::forward().from_slice(key) };
        predictor.propagate(&walk, &cancel, |slice| {
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
