//! `mesh`: the surface of a label (or of every label) of a mask, or of an image at a threshold,
//! optionally smoothed and decimated, written as STL/OBJ/PLY, with its metrics as JSON.

use crate::io::{self, OpenOptions, SeriesSelector};
use crate::mesh::{self, Mesh, MeshFormat, MeshMetrics};
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct MeshArgs {
    /// Label map or image (NIfTI, DICOM file or folder, MetaImage, .npz).
    #[arg(long)]
    pub input: PathBuf,
    /// Mesh only the voxels of this label. Without --label or --threshold every label gets its
    /// own mesh (files OUT-label-N.ext when there are several).
    #[arg(long, conflicts_with = "threshold", allow_hyphen_values = true)]
    pub label: Option<i64>,
    /// Mesh the image's iso-surface at this value; voxels at or above it are inside
    /// (e.g. 400 for bone in CT, in HU).
    #[arg(long, allow_hyphen_values = true)]
    pub threshold: Option<f64>,
    /// Mesh file to write: .stl (binary), .obj or .ply (binary); LPS millimetres.
    #[arg(long)]
    pub output: PathBuf,
    /// Taubin smoothing iterations (lambda 0.5, mu -0.53); 0 = none.
    #[arg(long, default_value_t = 0)]
    pub smooth: usize,
    /// Decimate each mesh to at most this many triangles (quadric edge collapse).
    #[arg(long)]
    pub decimate: Option<usize>,
    /// Series of a DICOM folder: its index in the listing or its SeriesInstanceUID.
    #[arg(long)]
    pub series: Option<SeriesSelector>,
    /// Replace output files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// What is meshed: one label, every label, or an iso-surface.
enum Selection {
    Label(i64),
    Threshold(f64),
    AllLabels(Vec<i64>),
}

pub fn mesh(args: MeshArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    if MeshFormat::from_path(&args.output).is_none() {
        anyhow::bail!("{}: the output must be a .stl, .obj or .ply file", args.output.display());
    }
    let volume = io::open(&args.input, &OpenOptions { series: args.series.clone(), ..Default::default() })?;
    let read_seconds = start.elapsed().as_secs_f64();
    let selection = match (args.label, args.threshold) {
        (Some(label), _) => Selection::Label(label),
        (None, Some(t)) => Selection::Threshold(t),
        (None, None) => Selection::AllLabels(mesh::labels_present(&volume).with_context(|| args.input.display().to_string())?),
    };
    let outputs: Vec<PathBuf> = match &selection {
        Selection::AllLabels(labels) if labels.len() > 1 => labels.iter().map(|&l| label_output(&args.output, l)).collect(),
        _ => vec![args.output.clone()],
    };
    if !args.force {
        if let Some(existing) = outputs.iter().find(|p| p.exists()) {
            anyhow::bail!("{}: already exists (pass --force to replace it)", existing.display());
        }
    }

    let mesh_start = Instant::now();
    let context = || args.input.display().to_string();
    let meshes: Vec<(Value, Mesh)> = match &selection {
        Selection::Label(label) => vec![(json!({ "label": label }), mesh::label_surface(&volume, *label).with_context(context)?)],
        Selection::Threshold(t) => vec![(json!({ "threshold": t }), mesh::iso_surface(&volume, *t).with_context(context)?)],
        Selection::AllLabels(labels) if labels.is_empty() => anyhow::bail!("{}: {}", context(), mesh::MeshError::NoLabels),
        Selection::AllLabels(_) => {
            mesh::label_surfaces(&volume).with_context(context)?.into_iter().map(|(l, m)| (json!({ "label": l }), m)).collect()
        }
    };
    let mut finished = Vec::with_capacity(meshes.len());
    for (mut report, mut m) in meshes {
        if args.smooth > 0 {
            mesh::taubin_smooth(&mut m, args.smooth, mesh::TAUBIN_LAMBDA, mesh::TAUBIN_MU);
        }
        if let Some(budget) = args.decimate {
            m = mesh::decimate(&m, budget)?;
            report["decimation_budget_met"] = json!(m.triangle_count() <= budget);
        }
        finished.push((report, m));
    }
    let mesh_seconds = mesh_start.elapsed().as_secs_f64();
    let metrics_start = Instant::now();
    let metrics: Vec<MeshMetrics> = finished.iter().map(|(_, m)| MeshMetrics::of(m)).collect();
    let metrics_seconds = metrics_start.elapsed().as_secs_f64();

    let write_start = Instant::now();
    for ((_, m), path) in finished.iter().zip(&outputs) {
        mesh::write_mesh(path, m)?;
    }
    let write_seconds = write_start.elapsed().as_secs_f64();

    let mut entries = Vec::new();
    for (((mut report, _), m), path) in finished.into_iter().zip(&metrics).zip(&outputs) {
        report["output"] = json!(path);
        merge(&mut report, metrics_json(m));
        entries.push(report);
    }
    let total = MeshMetrics {
        vertices: metrics.iter().map(|m| m.vertices).sum(),
        triangles: metrics.iter().map(|m| m.triangles).sum(),
        surface_area_mm2: metrics.iter().map(|m| m.surface_area_mm2).sum(),
        enclosed_volume_ml: metrics.iter().map(|m| m.enclosed_volume_ml).sum(),
        watertight: metrics.iter().all(|m| m.watertight),
    };
    let mut report = json!({ "input": args.input });
    merge(&mut report, metrics_json(&total));
    merge(
        &mut report,
        json!({
            "meshes": entries,
            "seconds": start.elapsed().as_secs_f64(),
            "read_seconds": read_seconds,
            "mesh_seconds": mesh_seconds,
            "metrics_seconds": metrics_seconds,
            "write_seconds": write_seconds,
        }),
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn metrics_json(m: &MeshMetrics) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// OUT.ext -> OUT-label-N.ext, for one file per label.
fn label_output(output: &Path, label: i64) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = output.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    output.with_file_name(format!("{stem}-label-{label}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_label_names_keep_folder_and_extension() {
        assert_eq!(label_output(Path::new("/tmp/a/organs.stl"), 3), PathBuf::from("/tmp/a/organs-label-3.stl"));
        assert_eq!(label_output(Path::new("m.ply"), 12), PathBuf::from("m-label-12.ply"));
    }
}
