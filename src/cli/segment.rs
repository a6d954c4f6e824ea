//! `segment`: MedSAM2's box-to-3D-mask pipeline from the command line. Reads an image, finds
//! and strictly loads the checkpoint, runs the bidirectional propagation from a box on a key
//! slice, writes the mask as a NIfTI label map with the image's geometry, and prints a JSON
//! summary. By default the passes walk the whole volume, as the reference does, so that
//! scripts reproduce MedSAM2's masks exactly; `--range` and `--stop-after-empty` bound them.
//!
//! Prompts come in voxel indices (`--box` on `--slice`) or in patient coordinates
//! (`--box-world`, `--point-world`: LPS mm, or RAS mm with `--ras`), which go through the
//! image's geometry to the voxel SimpleITK's `TransformPhysicalPointToIndex` names. A world box
//! keeps its two corners' in-plane extent on the slice midway between theirs; a world point is a
//! positive click on the key slice, which it must lie on.

use crate::io::{self, nifti, OpenOptions, SeriesSelector};
use crate::segment::pipeline::{self, BoxPrompt, BoxRun, Click, PassBounds, PassLogits};
use crate::volume::{Geometry, SliceAxis, Window};
use crate::segment::engine::LoadedModel;
use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// Image file or DICOM folder.
    #[arg(long)]
    pub input: PathBuf,
    /// Series of a DICOM folder: its index in the listing or its SeriesInstanceUID.
    #[arg(long)]
    pub series: Option<SeriesSelector>,
    /// Box X0,Y0,X1,Y1 in pixels of the key slice, inclusive: (i, j) axial, (i, k) coronal,
    /// (j, k) sagittal.
    #[arg(long = "box", value_parser = pipeline::parse_box, requires = "slice", required_unless_present = "box_world")]
    pub bbox: Option<[usize; 4]>,
    /// Key slice index along the axis.
    #[arg(long, requires = "bbox")]
    pub slice: Option<usize>,
    /// Box by two opposite corners X0,Y0,Z0,X1,Y1,Z1 in patient mm (LPS; RAS with --ras): the
    /// voxels nearest to them bound the box, on the slice midway between the corners' slices.
    #[arg(long, value_parser = parse_world::<6>, allow_hyphen_values = true, conflicts_with_all = ["bbox", "slice"])]
    pub box_world: Option<[f64; 6]>,
    /// Positive click X,Y,Z in patient mm (LPS; RAS with --ras) refining the box's answer on the
    /// key slice, which the point's voxel must lie on; repeatable.
    #[arg(long, value_parser = parse_world::<3>, allow_hyphen_values = true)]
    pub point_world: Vec<[f64; 3]>,
    /// World prompts are RAS mm (NIfTI / nibabel): X and Y change sign to become LPS.
    #[arg(long)]
    pub ras: bool,
    /// Slices to propagate through.
    #[arg(long, value_enum, default_value_t = SliceAxis::Axial)]
    pub axis: SliceAxis,
    /// First and last slice FIRST,LAST (inclusive) the passes may reach [default: the whole
    /// volume].
    #[arg(long, value_parser = pipeline::parse_range)]
    pub range: Option<[usize; 2]>,
    /// End each pass after K consecutive slices without the object (object score <= 0 or an
    /// empty mask); 0 walks to the end of the range, as MedSAM2's script does.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub stop_after_empty: usize,
    /// Intensity window LO,HI (e.g. -160,240 for CT soft tissue). Default: 8-bit data as
    /// stored, other data over its own min..max.
    #[arg(long, value_parser = Window::from_str, allow_hyphen_values = true)]
    pub window: Option<Window>,
    /// Label value written into the mask (1..=255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub label: u8,
    /// Mask to write (.nii or .nii.gz).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write each pass's slice logits (safetensors: forward / backward [n, H, W] and the
    /// slice indices forward_slices / backward_slices).
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: super::model_args::ModelArgs,
}

pub fn segment(args: SegmentArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: the output must be a .nii or .nii.gz file", args.output.display());
    }
    for path in std::iter::once(&args.output).chain(args.logits_out.as_ref()) {
        if path.exists() && !args.force {
            anyhow::bail!("{}: already exists (pass --force to replace it)", path.display());
        }
    }
    let volume = io::open(&args.input, &OpenOptions { series: args.series.clone(), ..Default::default() })?;
    let dims = volume.geometry.dims;
    let (prompt, clicks) = prompts(&args, &volume.geometry).with_context(|| args.input.display().to_string())?;
    pipeline::check_prompt(&prompt, dims).with_context(|| args.input.display().to_string())?;
    let bounds = PassBounds { range: args.range, stop_after_empty: args.stop_after_empty };
    pipeline::check_bounds(&bounds, &prompt, dims).with_context(|| args.input.display().to_string())?;
    let read_seconds = start.elapsed().as_secs_f64();

    let model_start = Instant::now();
    let choice = args.engine.choice();
    let loaded = LoadedModel::load(&choice)?;
    let model_seconds = model_start.elapsed().as_secs_f64();

    let prepare_start = Instant::now();
    let mut predictor = pipeline::predictor_for(loaded.model, &volume, args.axis, args.window, loaded.device)?;
    let prepare_seconds = prepare_start.elapsed().as_secs_f64();

    let count = dims[args.axis.normal()];
    let [first, last] = bounds.slice_range(count);
    // The key slice's answer, then each pass's slices (both include the key slice); a pass that
    // stops early leaves the bar short of its end.
    let bar = ProgressBar::new((bounds.slice_count(count) + 2) as u64);
    bar.set_style(ProgressStyle::with_template("segmenting [{elapsed_precise}] [{wide_bar}] {pos}/{len} slices ({eta})")?);
    // Never set: on the command line Ctrl-C ends the process.
    let cancel = AtomicBool::new(false);
    let propagate_start = Instant::now();
    let run = BoxRun { prompt, clicks, bounds };
    let result = pipeline::segment_box(&mut predictor, dims, &run, args.logits_out.is_some(), &cancel, |_, _| bar.inc(1));
    bar.finish_and_clear();
    let result = result?;
    let propagate_seconds = propagate_start.elapsed().as_secs_f64();

    let write_start = Instant::now();
    let labels: Vec<u8> = result.mask.iter().map(|&m| m * args.label).collect();
    let mask = pipeline::label_map_on(&volume, labels);
    nifti::write(&args.output, &mask, nifti::NiftiKind::LabelMap)?;
    if let (Some(path), Some(logits)) = (&args.logits_out, &result.logits) {
        let (u, v) = args.axis.in_plane();
        write_logits(path, logits, (dims[u], dims[v]))?;
    }
    let write_seconds = write_start.elapsed().as_secs_f64();

    let volume_ml = result.voxels as f64 * volume.geometry.voxel_volume_mm3() / 1000.0;
    println!(
        "{}",
        json!({
            "output": args.output,
            "label": args.label,
            "voxels": result.voxels,
            "volume_ml": volume_ml,
            "components": result.components,
            "slices": count,
            "forward_slices": result.forward.slices,
            "backward_slices": result.backward.slices,
            "forward": result.forward.to_json(),
            "backward": result.backward.to_json(),
            "range": [first, last],
            "stop_after_empty": bounds.stop_after_empty,
            "axis": args.axis.name(),
            "key_slice": run.prompt.slice,
            "box": run.prompt.bbox,
            "clicks": run.clicks.iter().map(|c| c.point).collect::<Vec<_>>(),
            "window": args.window.map(|w| [w.lo, w.hi]),
            "checkpoint": loaded.checkpoint,
            "device": args.engine.device.name(),
            "seconds": start.elapsed().as_secs_f64(),
            "timings": {
                "read": read_seconds,
                "model": model_seconds,
                "preprocess": prepare_seconds,
                "propagation": propagate_seconds,
                "write": write_seconds,
            },
        })
    );
    Ok(())
}

/// Parses N comma-separated coordinates in mm.
fn parse_world<const N: usize>(text: &str) -> Result<[f64; N], String> {
    super::info::parse_finite(text).ok_or_else(|| format!("{text:?} is not {N} comma-separated coordinates in mm"))
}

/// The box on its key slice and the clicks on it, from voxel or world prompts.
fn prompts(args: &SegmentArgs, geometry: &Geometry) -> anyhow::Result<(BoxPrompt, Vec<Click>)> {
    let axis = args.axis;
    let (normal, (u, v)) = (axis.normal(), axis.in_plane());
    let flip = if args.ras { [-1.0, -1.0, 1.0] } else { [1.0; 3] };
    let frame = if args.ras { "RAS" } else { "LPS" };
    let voxel = |p: [f64; 3], what: &str| {
        geometry
            .world_to_index(std::array::from_fn(|c| p[c] * flip[c]))
            .with_context(|| format!("{what} {},{},{} ({frame} mm)", p[0], p[1], p[2]))
    };
    let prompt = match (args.box_world, args.bbox, args.slice) {
        (Some(b), _, _) => {
            let a = voxel([b[0], b[1], b[2]], "--box-world corner")?;
            let b = voxel([b[3], b[4], b[5]], "--box-world corner")?;
            let bbox = [a[u].min(b[u]), a[v].min(b[v]), a[u].max(b[u]), a[v].max(b[v])];
            BoxPrompt { axis, slice: (a[normal] + b[normal]) / 2, bbox }
        }
        (None, Some(bbox), Some(slice)) => BoxPrompt { axis, slice, bbox },
        _ => anyhow::bail!("a prompt needs --box with --slice, or --box-world"),
    };
    let mut clicks = Vec::new();
    for &p in &args.point_world {
        let index = voxel(p, "--point-world")?;
        if index[normal] != prompt.slice {
            anyhow::bail!(
                "--point-world {},{},{} falls on voxel {index:?}, {} slice {}, but the key slice is {}: a point refines the key slice's answer",
                p[0], p[1], p[2], axis.name(), index[normal], prompt.slice
            );
        }
        clicks.push(Click { point: [index[u] as f32, index[v] as f32], positive: true });
    }
    Ok((prompt, clicks))
}

/// Writes each pass's logits as `[n, height, width]` f32 tensors with their slice indices.
fn write_logits(path: &Path, logits: &PassLogits, (width, height): (usize, usize)) -> anyhow::Result<()> {
    let mut tensors = HashMap::new();
    for (name, pass) in [("forward", &logits.forward), ("backward", &logits.backward)] {
        let values: Vec<f32> = pass.iter().flat_map(|(_, l)| l.iter().copied()).collect();
        let indices: Vec<i64> = pass.iter().map(|(i, _)| *i as i64).collect();
        tensors.insert(name.to_string(), Tensor::from_vec(values, (pass.len(), height, width), &Device::Cpu)?);
        tensors.insert(format!("{name}_slices"), Tensor::from_vec(indices, pass.len(), &Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, path).with_context(|| path.display().to_string())?;
    Ok(())
}
