//! `stats`: measurements of every label of a mask over its image (volume, surface, box,
//! centroid, intensities, per-slice profile, RECIST diameters, agreement with a reference),
//! printed readable, as JSON or as CSV (one row per label).

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
        let mut value = serde_json::to_value(&report)?;
        value["timing_s"] = json!({"load": loaded, "measure": measured});
        println!("{}", serde_json::to_string(&value)?);
    } else if args.csv {
        print!("{}", csv(&report, reference.is_some()));
    } else {
        print!("{}", readable(&report));
    }
    Ok(())
}

/// Formats an optional number for CSV: empty when absent.
fn cell(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

const CSV_COLUMNS: &str = "label,voxels,volume_ml,surface_area_mm2,voxel_face_area_mm2,\
bbox_i0,bbox_j0,bbox_k0,bbox_i1,bbox_j1,bbox_k1,\
bbox_lps_min_x,bbox_lps_min_y,bbox_lps_min_z,bbox_lps_max_x,bbox_lps_max_y,bbox_lps_max_z,\
centroid_x,centroid_y,centroid_z,mean,sd,min,max,median,\
longest_diameter_mm,perpendicular_diameter_mm,diameter_slice";

fn csv(report: &MeasureReport, with_reference: bool) -> String {
    let mut out = String::from(CSV_COLUMNS);
    if with_reference {
        out += ",dice,iou,hd95_mm,assd_mm";
    }
    out += "\n";
    for m in &report.labels {
        let mut row: Vec<String> = vec![m.label.to_string(), m.voxels.to_string(), m.volume_ml.to_string(), m.surface_area_mm2.to_string(), m.voxel_face_area_mm2.to_string()];
        row.extend(m.bbox_index.iter().flatten().map(|x| x.to_string()));
        row.extend(m.bbox_lps_mm.iter().flatten().map(|x| x.to_string()));
        row.extend(m.centroid_lps_mm.iter().map(|x| x.to_string()));
        let i = m.intensity;
        row.extend([i.map(|s| s.mean), i.map(|s| s.sd), i.map(|s| s.min), i.map(|s| s.max), i.map(|s| s.median)].map(cell));
        row.extend([m.longest_diameter_mm.to_string(), m.perpendicular_diameter_mm.to_string(), m.diameter_slice.to_string()]);
        if with_reference {
            let r = m.reference;
            row.extend([r.map(|r| r.dice), r.map(|r| r.iou), r.and_then(|r| r.hd95_mm), r.and_then(|r| r.assd_mm)].map(cell));
        }
        out += &row.join(",");
        out += "\n";
    }
    out
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
