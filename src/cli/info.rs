//! `info` and `convert`: what an image file holds, and turning it into NIfTI, resampled to a
//! new spacing or onto another image's grid when asked.

use crate::io::{self, OpenOptions, SeriesSelector, nifti};
use crate::volume::{self, Interpolation, SourceFormat, Volume, VoxelType};
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Image file or DICOM folder.
    pub path: PathBuf,
    /// Series of a DICOM folder: its index in the listing or its SeriesInstanceUID.
    #[arg(long)]
    pub series: Option<SeriesSelector>,
    /// Voxel I,J,K (or I,J,K,T for 4D) whose value to print; repeatable.
    #[arg(long = "at", value_parser = parse_index)]
    pub at: Vec<Vec<usize>>,
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Image file or DICOM folder to read.
    pub input: PathBuf,
    /// NIfTI file to write (.nii or .nii.gz).
    pub output: PathBuf,
    /// Series of a DICOM folder: its index in the listing or its SeriesInstanceUID.
    #[arg(long)]
    pub series: Option<SeriesSelector>,
    /// Resample to this voxel spacing SX,SY,SZ in mm: origin and direction kept, size
    /// round(size * spacing / SX..) per axis, as SimpleITK's usual resampling recipe.
    #[arg(long, value_parser = parse_spacing, conflicts_with = "like")]
    pub spacing: Option<[f64; 3]>,
    /// Resample onto this image's grid (any geometry: a mask made on a resampled image goes
    /// back onto the original). A label map unless --interpolation says otherwise.
    #[arg(long)]
    pub like: Option<PathBuf>,
    /// How values between voxel centres are found [default: linear; nearest for --mask and
    /// --like]. Samples outside the input get 0, as SimpleITK's default.
    #[arg(long, value_enum)]
    pub interpolation: Option<Interpolation>,
    /// The input is a label map: nearest neighbour only (labels never mix), written with the
    /// NIfTI label intent.
    #[arg(long)]
    pub mask: bool,
    /// Replace OUTPUT if it already exists.
    #[arg(long)]
    pub force: bool,
}

/// Parses a spacing "SX,SY,SZ": three finite numbers greater than zero (mm).
fn parse_spacing(s: &str) -> Result<[f64; 3], String> {
    parse_finite(s)
        .filter(|v: &[f64; 3]| v.iter().all(|x| *x > 0.0))
        .ok_or_else(|| format!("{s:?} is not SX,SY,SZ (three spacings in mm, greater than zero)"))
}

/// Exactly N comma-separated finite numbers (spaces allowed).
pub(super) fn parse_finite<const N: usize>(s: &str) -> Option<[f64; N]> {
    let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>().ok().filter(|x| x.is_finite())).collect::<Option<_>>()?;
    v.try_into().ok()
}

fn parse_index(s: &str) -> Result<Vec<usize>, String> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|x| x.trim().parse::<usize>()).collect();
    match v {
        Ok(v) if v.len() == 3 || v.len() == 4 => Ok(v),
        _ => Err(format!("{s:?} is not I,J,K or I,J,K,T (non-negative integers)")),
    }
}

/// A value as JSON: an integer for integer voxel types, else a float.
fn value_json(v: f64, ty: VoxelType) -> Value {
    if ty.is_float() { json!(v) } else { json!(v as i64) }
}

pub fn info(args: InfoArgs) -> anyhow::Result<()> {
    let format = io::detect_format(&args.path)?;
    let series = if format == SourceFormat::Dicom && args.path.is_dir() || is_dicomdir(&args.path) {
        Some(io::dicom::list_series(&args.path)?)
    } else {
        None
    };
    // A folder with several series and no choice: describe the first one, list them all.
    let selector = args.series.clone().or_else(|| series.as_ref().filter(|s| s.len() > 1).map(|_| SeriesSelector::Index(0)));
    let volume = io::open(&args.path, &OpenOptions { series: selector, ..Default::default() })?;
    let report = describe(&volume, &args.at)?;
    let mut report = report;
    if let Some(series) = &series {
        report["series"] = serde_json::to_value(series)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", readable(&args.path, &volume, &report));
    }
    Ok(())
}

fn is_dicomdir(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

/// The `info` JSON object of a volume.
pub fn describe(volume: &Volume, at: &[Vec<usize>]) -> anyhow::Result<Value> {
    let g = &volume.geometry;
    let ty = volume.voxel_type();
    let (min, max) = volume.min_max().unwrap_or((f64::NAN, f64::NAN));
    let mut values = Vec::new();
    for idx in at {
        let t = idx.get(3).copied().unwrap_or(0);
        let v = volume
            .value_at([idx[0], idx[1], idx[2]], t)
            .with_context(|| format!("voxel {idx:?} is outside the image (dims {:?} x {} timepoints)", g.dims, volume.timepoints))?;
        values.push(value_json(v, ty));
    }
    let mut report = json!({
        "format": volume.meta.format.map(|f| f.name()),
        "dims": g.dims,
        "spacing": g.spacing,
        "origin": g.origin,
        "direction": g.direction_row_major(),
        "orientation": g.orientation_letters(),
        "datatype": ty.name(),
        "stored_datatype": volume.meta.stored_type.unwrap_or(ty).name(),
        "min": value_json(min, ty),
        "max": value_json(max, ty),
        "values": values,
    });
    if volume.timepoints > 1 {
        report["timepoints"] = json!(volume.timepoints);
    }
    if let Some(m) = &volume.meta.modality {
        report["modality"] = json!(m);
    }
    if let Some(d) = &volume.meta.description {
        report["description"] = json!(d);
    }
    if !volume.meta.warnings.is_empty() {
        report["warnings"] = json!(volume.meta.warnings);
    }
    Ok(report)
}

fn readable(path: &Path, volume: &Volume, report: &Value) -> String {
    let g = &volume.geometry;
    let mut s = format!("{}\n", path.display());
    s += &format!("  format      {}\n", report["format"].as_str().unwrap_or("?"));
    s += &format!("  dims        {} x {} x {}", g.dims[0], g.dims[1], g.dims[2]);
    if volume.timepoints > 1 {
        s += &format!(" x {} timepoints", volume.timepoints);
    }
    s += "\n";
    s += &format!("  spacing     {:.6} x {:.6} x {:.6} mm\n", g.spacing[0], g.spacing[1], g.spacing[2]);
    s += &format!("  origin      ({:.4}, {:.4}, {:.4}) mm LPS\n", g.origin[0], g.origin[1], g.origin[2]);
    let d = g.direction_row_major();
    s += &format!(
        "  direction   [{:.6} {:.6} {:.6}; {:.6} {:.6} {:.6}; {:.6} {:.6} {:.6}] ({})\n",
        d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8],
        g.orientation_letters()
    );
    s += &format!("  datatype    {} (stored {})\n", report["datatype"].as_str().unwrap_or("?"), report["stored_datatype"].as_str().unwrap_or("?"));
    let unit = if volume.is_ct() { " HU" } else { "" };
    s += &format!("  range       {} .. {}{unit}\n", report["min"], report["max"]);
    if let Some(m) = &volume.meta.modality {
        s += &format!("  modality    {m}\n");
    }
    if let Some(d) = &volume.meta.description {
        s += &format!("  description {d}\n");
    }
    for w in &volume.meta.warnings {
        s += &format!("  warning     {w}\n");
    }
    if let Some(values) = report["values"].as_array() {
        for v in values {
            s += &format!("  value       {v}\n");
        }
    }
    if let Some(series) = report.get("series").and_then(|s| s.as_array()) {
        s += "  series:\n";
        for (n, x) in series.iter().enumerate() {
            s += &format!(
                "    [{n}] {} {} {} slices  {}\n",
                x["modality"].as_str().unwrap_or(""),
                x["description"].as_str().unwrap_or(""),
                x["slices"],
                x["uid"].as_str().unwrap_or("")
            );
        }
    }
    s
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: the output must be a .nii or .nii.gz file", args.output.display());
    }
    if args.output.exists() && !args.force {
        anyhow::bail!("{}: already exists (pass --force to replace it)", args.output.display());
    }
    let resampling = args.spacing.is_some() || args.like.is_some();
    if !resampling && (args.interpolation.is_some() || args.mask) {
        anyhow::bail!("--interpolation and --mask need --spacing or --like (a grid to resample onto)");
    }
    let interpolation = match (args.interpolation, args.mask || args.like.is_some()) {
        (Some(i), _) => i,
        (None, true) => Interpolation::Nearest,
        (None, false) => Interpolation::Linear,
    };
    if args.mask && interpolation != Interpolation::Nearest {
        anyhow::bail!("a mask (--mask) is resampled with nearest neighbour only, not {}", interpolation.name());
    }
    let label_map = args.mask || (args.like.is_some() && interpolation == Interpolation::Nearest);
    let start = Instant::now();
    let mut volume = io::open(&args.input, &OpenOptions { series: args.series.clone(), ..Default::default() })?;
    for w in &volume.meta.warnings {
        eprintln!("warning: {w}");
    }
    let read_seconds = start.elapsed().as_secs_f64();
    let mut resample_start = Instant::now();
    if let Some(spacing) = args.spacing {
        let grid = volume::grid_for_spacing(&volume.geometry, spacing).with_context(|| args.input.display().to_string())?;
        volume = volume::resample(&volume, &grid, interpolation).with_context(|| args.input.display().to_string())?;
    }
    if let Some(like) = &args.like {
        let reference = io::open(like, &OpenOptions::default())?;
        resample_start = Instant::now();
        volume = volume::resample(&volume, &reference.geometry, interpolation).with_context(|| args.input.display().to_string())?;
        // The reference's own NIfTI qform/sform, so the output lines up with it exactly.
        volume.meta.nifti_transform = reference.meta.nifti_transform;
    }
    let resample_seconds = resample_start.elapsed().as_secs_f64();
    let kind = if label_map { nifti::NiftiKind::LabelMap } else { nifti::NiftiKind::Image };
    let write_start = Instant::now();
    nifti::write(&args.output, &volume, kind)?;
    let write_seconds = write_start.elapsed().as_secs_f64();
    let g = &volume.geometry;
    let mut summary = json!({"output": args.output, "dims": g.dims, "timepoints": volume.timepoints, "datatype": volume.voxel_type().name()});
    if resampling {
        summary["spacing"] = json!(g.spacing);
        summary["interpolation"] = json!(interpolation.name());
        summary["seconds"] = json!({"read": read_seconds, "resample": resample_seconds, "write": write_seconds});
    }
    println!("{summary}");
    Ok(())
}
