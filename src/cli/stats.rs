//! `stats`: measurements of every label of a mask over its image (volume, surface, box,
//! centroid, intensities, per-slice profile, RECIST diameters, agreement with a reference),
//! printed readable, as JSON or as CSV (one row per label; both written by `measure::export`).

use crate::io::{self, OpenOptions};
use crate::measure::{self, LabelMeasurements, MeasureOptions, MeasureReport};
use crate::volume::SliceAxis;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The image the mask was drawn on (any readable format).
    #[arg(long)]
    pub image: PathBuf,
    /// Label map (0 = background) with the image's dims and geometry.
    #[arg(long)]
    pub mask: PathBuf,
    /// A reference label map to compare every label with (Dice, IoU, HD95, ASSD).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV, one row per label.
    #[arg(long)]
    pub csv: bool,
    /// Axis of the per-slice area and perimeter profile.
    #[arg(long, value_enum, default_value_t = SliceAxis::Axial)]
    pub axis: SliceAxis,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let options = OpenOptions::default();
    let image = io::open(&args.image, &options)?;
    let mask = io::open(&args.mask, &options)?;
    let reference = args.reference.as_ref().map(|p| io::open(p, &options)).transpose()?;
    let loaded = start.elapsed().as_secs_f64();
    let report = measure::measure(&image, &mask, reference.as_ref(), &MeasureOptions { profile_axis: args.axis })
        .map_err(|e| anyhow::anyhow!("{} over {}: {e}", args.mask.display(), args.image.display()))?;
    let measured = start.elapsed().as_secs_f64() - loaded;
    if args.json {
        let mut value = measure::export::to_json(&report);
        value["timing_s"] = json!({"load": loaded, "measure": measured});
        println!("{}", serde_json::to_string(&value)?);
    } else if args.csv {
        print!("{}", measure::export::to_csv(&report, reference.is_some()));
    } else {
        print!("{}", readable(&report));
    }
    Ok(())
}

fn readable(report: &MeasureReport) -> String {
    let unit = report.intensity_unit.map(|u| format!(" {u}")).unwrap_or_default();
    let mut s = String::new();
    if report.labels.is_empty() {
        s += "no labels in the mask\n";
    }
    for m in &report.labels {
        s += &readable_label(m, &unit, report.diameter_axis);
    }
    s
}

fn readable_label(m: &LabelMeasurements, unit: &str, diameter_axis: SliceAxis) -> String {
    let mut s = format!("label {}\n", m.label);
    s += &format!("  voxels       {}\n", m.voxels);
    s += &format!("  volume       {:.3} mL\n", m.volume_ml);
    s += &format!("  surface      {:.1} mm² (voxel faces {:.1} mm²)\n", m.surface_area_mm2, m.voxel_face_area_mm2);
    let c = m.centroid_lps_mm;
    s += &format!("  centroid     ({:.2}, {:.2}, {:.2}) mm LPS\n", c[0], c[1], c[2]);
    let [lo, hi] = m.bbox_index;
    s += &format!("  box          i {}..{}  j {}..{}  k {}..{}\n", lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]);
    if let Some(i) = m.intensity {
        s += &format!("  intensity    mean {:.2} sd {:.2} min {} max {} median {}{unit}\n", i.mean, i.sd, i.min, i.max, i.median);
    }
    s += &format!(
        "  diameters    {:.1} x {:.1} mm ({} slice {})\n",
        m.longest_diameter_mm,
        m.perpendicular_diameter_mm,
        diameter_axis.name(),
        m.diameter_slice
    );
    if let Some(r) = m.reference {
        let mm = |v: Option<f64>| v.map(|x| format!("{x:.2} mm")).unwrap_or_else(|| "undefined".into());
        s += &format!("  reference    Dice {:.4} IoU {:.4} HD95 {} ASSD {}\n", r.dice, r.iou, mm(r.hd95_mm), mm(r.assd_mm));
    }
    s
}
