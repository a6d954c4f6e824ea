//! `classic`: the weight-free segmentation tools (threshold inside a box, region growing, lung
//! mask). Each writes a label map (.nii or .nii.gz) with the image's geometry, refuses to
//! replace an existing file without --force, and prints a JSON summary.

use crate::classic::components::Component;
use crate::classic::lung_mask::{LungMaskOptions, lung_mask};
use crate::classic::region_grow::region_grow;
use crate::classic::threshold::{IndexBox, threshold_in_box};
use crate::classic::{Connectivity, Range, label_map};
use crate::io::{self, OpenOptions, nifti};
use crate::volume::{Geometry, Volume};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ClassicCommand {
    /// Label the voxels inside a box whose value lies in a range.
    Threshold(ThresholdArgs),
    /// Label the voxels connected to a seed whose value lies in a range.
    RegionGrow(RegionGrowArgs),
    /// Label the lungs of a CT (threshold, outside air removed, largest components, holes filled).
    LungMask(LungMaskArgs),
}

/// Input, output and label shared by every tool.
#[derive(Args, Debug)]
pub struct ToolIo {
    /// The image to segment (any readable format).
    #[arg(long)]
    pub image: PathBuf,
    /// The label map to write (.nii or .nii.gz).
    #[arg(long)]
    pub out: PathBuf,
    /// Label value of the segmented voxels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub label: u8,
    /// Replace OUT if it already exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ThresholdArgs {
    #[command(flatten)]
    pub io: ToolIo,
    /// Inclusive voxel box I0,J0,K0,I1,J1,K1.
    #[arg(long = "box", value_parser = parse_box)]
    pub bounds: IndexBox,
    /// Lowest value kept (HU for CT).
    #[arg(long, allow_hyphen_values = true)]
    pub min: f64,
    /// Highest value kept.
    #[arg(long, allow_hyphen_values = true)]
    pub max: f64,
}

#[derive(Args, Debug)]
pub struct RegionGrowArgs {
    #[command(flatten)]
    pub io: ToolIo,
    /// Seed voxel I,J,K.
    #[arg(long, value_parser = parse_seed)]
    pub seed: [usize; 3],
    /// Lowest value of the region (HU for CT).
    #[arg(long, allow_hyphen_values = true)]
    pub min: f64,
    /// Highest value of the region.
    #[arg(long, allow_hyphen_values = true)]
    pub max: f64,
    /// Neighbours that touch: 6 (faces) or 26 (faces, edges, corners).
    #[arg(long, default_value_t = 6, value_parser = parse_connectivity)]
    pub connectivity: u32,
}

#[derive(Args, Debug)]
pub struct LungMaskArgs {
    #[command(flatten)]
    pub io: ToolIo,
    /// Voxels below this value (HU) are air.
    #[arg(long, default_value_t = -320.0, allow_hyphen_values = true)]
    pub threshold: f64,
    /// Keep the second largest air component inside the body when it holds at least this
    /// fraction of the largest.
    #[arg(long, default_value_t = 0.2)]
    pub second_ratio: f64,
    /// Dilate the mask by this radius in mm.
    #[arg(long, default_value_t = 0.0)]
    pub dilate_mm: f64,
}

fn parse_numbers(s: &str, n: usize, what: &str) -> Result<Vec<usize>, String> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|x| x.trim().parse::<usize>()).collect();
    match v {
        Ok(v) if v.len() == n => Ok(v),
        _ => Err(format!("{s:?} is not {what} ({n} non-negative integers separated by commas)")),
    }
}

fn parse_box(s: &str) -> Result<IndexBox, String> {
    let v = parse_numbers(s, 6, "I0,J0,K0,I1,J1,K1")?;
    Ok(IndexBox { lo: [v[0], v[1], v[2]], hi: [v[3], v[4], v[5]] })
}

fn parse_seed(s: &str) -> Result<[usize; 3], String> {
    let v = parse_numbers(s, 3, "I,J,K")?;
    Ok([v[0], v[1], v[2]])
}

fn parse_connectivity(s: &str) -> Result<u32, String> {
    s.parse::<u32>().ok().filter(|n| Connectivity::from_count(*n).is_some()).ok_or_else(|| format!("{s:?}: connectivity is 6 or 26"))
}

pub fn run(command: ClassicCommand) -> anyhow::Result<()> {
    match command {
        ClassicCommand::Threshold(args) => {
            let image = open_checked(&args.io)?;
            let range = Range::new(args.min, args.max)?;
            let mask = threshold_in_box(&image, args.bounds, range)?;
            let details = json!({"box": args.bounds, "range": range});
            finish("threshold", &args.io, &image.geometry, &mask, details)
        }
        ClassicCommand::RegionGrow(args) => {
            let image = open_checked(&args.io)?;
            let range = Range::new(args.min, args.max)?;
            let connectivity = Connectivity::from_count(args.connectivity).unwrap_or_default();
            let mask = region_grow(&image, args.seed, range, connectivity)?;
            let details = json!({"seed": args.seed, "range": range, "connectivity": connectivity.count()});
            finish("region-grow", &args.io, &image.geometry, &mask, details)
        }
        ClassicCommand::LungMask(args) => {
            let image = open_checked(&args.io)?;
            let options = LungMaskOptions { threshold_hu: args.threshold, second_component_ratio: args.second_ratio, dilation_mm: args.dilate_mm };
            let lungs = lung_mask(&image, &options)?;
            let details = json!({
                "threshold_hu": options.threshold_hu,
                "dilation_mm": options.dilation_mm,
                "components": components_json(&image.geometry, &lungs.components),
            });
            finish("lung-mask", &args.io, &image.geometry, &lungs.mask, details)
        }
    }
}

/// Checks the output path before any work, then opens the image.
fn open_checked(io_args: &ToolIo) -> anyhow::Result<Volume> {
    let name = io_args.out.to_string_lossy().to_ascii_lowercase();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: the output must be a .nii or .nii.gz file", io_args.out.display());
    }
    if io_args.out.exists() && !io_args.force {
        anyhow::bail!("{}: already exists (pass --force to replace it)", io_args.out.display());
    }
    Ok(io::open(&io_args.image, &OpenOptions::default())?)
}

fn components_json(g: &Geometry, found: &[Component]) -> Value {
    let ml = g.voxel_volume_mm3() / 1000.0;
    Value::Array(
        found
            .iter()
            .map(|c| json!({"voxels": c.voxels, "volume_ml": c.voxels as f64 * ml, "centroid_lps_mm": g.voxel_to_world(c.mean_index())}))
            .collect(),
    )
}

/// Writes the label map and prints the summary.
fn finish(tool: &str, io_args: &ToolIo, g: &Geometry, mask: &[bool], details: Value) -> anyhow::Result<()> {
    nifti::write(&io_args.out, &label_map(g, mask, io_args.label), nifti::NiftiKind::LabelMap)?;
    let voxels = mask.iter().filter(|m| **m).count();
    let mut summary = json!({
        "tool": tool,
        "output": io_args.out,
        "label": io_args.label,
        "voxels": voxels,
        "volume_ml": voxels as f64 * g.voxel_volume_mm3() / 1000.0,
    });
    if let (Some(s), Value::Object(extra)) = (summary.as_object_mut(), details) {
        s.extend(extra);
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
