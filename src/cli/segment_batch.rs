//! `segment-batch`: MedSAM2's box-to-3D-mask pipeline over every row of a manifest, one label
//! map per image, a summary CSV, a progress bar with ETA, resume by skipping images whose mask
//! exists, and `--shard K/N` for job arrays. What to do (manifest, plan, shards, summaries) is
//! `segment::batch`; this file reads the images, runs the model and writes the results.

use crate::io::{self, nifti, OpenOptions};
use crate::segment::batch::{compose_labels, read_summary, write_summary, ImageJob, ImageRef, Manifest, ManifestFormat, Plan, Shard, SummaryLine};
use crate::segment::engine::{LoadedModel, ModelChoice};
use crate::segment::pipeline;
use crate::volume::{SliceAxis, VoxelBuffer};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SegmentBatchArgs {
    /// CSV with a header: image, slice, box ("X0,Y0,X1,Y1", or columns x0,y0,x1,y1), and
    /// optional window ("LO,HI"; empty = 8-bit data as stored, else the image's min..max),
    /// label (1..255, default 1) and axis. Or the DeepLesion CSV of MedSAM2's CT-lesion script.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Folder for the masks (`<image>_mask.nii.gz`) and the summary CSV.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Do only shard K of N (1-based): the i-th distinct image of the manifest goes to shard
    /// (i mod N) + 1. The summary is then summary-K-of-N.csv.
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Folder relative image paths start from (default: the manifest's folder); for a
    /// DeepLesion CSV, the folder whose files hold the case name and slice range.
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
    /// Slice axis of rows whose manifest has no axis column.
    #[arg(long, value_enum, default_value_t = SliceAxis::Axial)]
    pub axis: SliceAxis,
    #[command(flatten)]
    pub engine: super::model_args::ModelArgs,
}

/// Progress of the run: a bar with ETA on a terminal, one line per image otherwise.
struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    fn new(images: usize) -> anyhow::Result<Self> {
        let terminal = std::io::stderr().is_terminal();
        let target = if terminal { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(images as u64), target);
        bar.set_style(ProgressStyle::with_template("[{elapsed_precise}] [{wide_bar}] {pos}/{len} images (ETA {eta}) {msg}")?);
        Ok(Progress { bar, lines: !terminal })
    }

    fn say(&self, line: &str) {
        if self.lines {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

pub fn segment_batch(args: SegmentBatchArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let manifest = Manifest::read(&args.manifest, args.images_dir.as_deref(), args.axis)?;
    let format = manifest.format;
    let plan = Plan::new(manifest.entries);
    let (jobs, unnamed) = plan.shard(args.shard);
    std::fs::create_dir_all(&args.output_dir).map_err(|e| anyhow::anyhow!("{}: {e}", args.output_dir.display()))?;
    let summary_path = args.output_dir.join(args.shard.summary_name());
    let earlier = read_summary(&summary_path)?;

    let mut lines: Vec<SummaryLine> = unnamed.iter().map(|e| SummaryLine::describe(e, "")).collect();
    let (finished, todo): (Vec<&ImageJob>, Vec<&ImageJob>) = jobs.into_iter().partition(|j| args.output_dir.join(&j.output_name).exists());
    let progress = Progress::new(todo.len())?;
    for job in &finished {
        lines.extend(kept_lines(job, &args.output_dir.join(&job.output_name), &earlier));
        progress.say(&format!("{}: skipped, {} exists", job.image.describe(), job.output_name));
    }
    write_summary(&summary_path, &lines)?;

    let choice = args.engine.choice();
    let mut model = None;
    for (n, job) in todo.iter().enumerate() {
        let image_start = Instant::now();
        progress.bar.set_message(job.image.describe());
        let output = args.output_dir.join(&job.output_name);
        let job_lines = segment_image(job, &output, &mut model, &choice, &progress.bar)?;
        let segmented = job_lines.iter().filter(|l| l.status == "segmented").count();
        let voxels: usize = job_lines.iter().filter_map(|l| l.voxels).sum();
        lines.extend(job_lines);
        write_summary(&summary_path, &lines)?;
        progress.bar.inc(1);
        let written = if output.exists() { format!("wrote {}", job.output_name) } else { "no mask written".to_string() };
        progress.say(&format!(
            "[{}/{}] {}: {segmented} of {} rows segmented ({voxels} voxels), {written}, {:.1} s",
            n + 1,
            todo.len(),
            job.image.describe(),
            job.entries.len(),
            image_start.elapsed().as_secs_f64()
        ));
    }
    progress.bar.finish_and_clear();

    let failed: Vec<&SummaryLine> = lines.iter().filter(|l| l.failed()).collect();
    for line in &failed {
        eprintln!("row {}: {} ({})", line.row, line.status, if line.image.is_empty() { "no image" } else { &line.image });
    }
    println!(
        "{}",
        json!({
            "manifest": args.manifest,
            "format": match format { ManifestFormat::Rows => "rows", ManifestFormat::DeepLesion => "deeplesion" },
            "shard": format!("{}/{}", args.shard.index, args.shard.count),
            "images": finished.len() + todo.len(),
            "processed_images": todo.len(),
            "skipped_images": finished.len(),
            "rows": lines.len(),
            "failed_rows": failed.iter().map(|l| l.row).collect::<Vec<_>>(),
            "summary": summary_path,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    if !failed.is_empty() {
        anyhow::bail!("{} of {} rows failed (listed above and in {})", failed.len(), lines.len(), summary_path.display());
    }
    Ok(())
}

/// Summary lines of an image whose mask already exists: those of the earlier run when the
/// summary has them, else counted from the mask (every voxel of the row's label).
fn kept_lines(job: &ImageJob, output: &Path, earlier: &[SummaryLine]) -> Vec<SummaryLine> {
    let image = job.image.describe();
    let mut mask = None;
    job.entries
        .iter()
        .map(|entry| {
            if let Some(line) = earlier.iter().find(|l| l.row == entry.row && l.image == image) {
                return line.clone();
            }
            let mut line = SummaryLine::describe(entry, &job.output_name);
            let Ok(prompt) = entry.prompt else { return line };
            match mask.get_or_insert_with(|| nifti::read(output)) {
                Ok(volume) => {
                    let voxels = match &volume.data {
                        VoxelBuffer::U8(labels) => labels.iter().filter(|&&l| l == prompt.label).count(),
                        _ => 0,
                    };
                    line.voxels = Some(voxels);
                    line.volume_ml = Some(voxels as f64 * volume.geometry.voxel_volume_mm3() / 1000.0);
                    line.status = "counted from the existing mask (every voxel of the label)".into();
                }
                Err(e) => line.status = format!("failed: the existing mask cannot be read: {e}"),
            }
            line
        })
        .collect()
}

/// Segments every usable row of one image with one model and writes the combined mask.
/// Problems of a row or of the image become failed summary lines; only a model that cannot
/// be loaded or a mask that cannot be written stop the run.
fn segment_image(job: &ImageJob, output: &Path, model: &mut Option<LoadedModel>, choice: &ModelChoice, bar: &ProgressBar) -> anyhow::Result<Vec<SummaryLine>> {
    let mut lines: Vec<SummaryLine> = job.entries.iter().map(|e| SummaryLine::describe(e, &job.output_name)).collect();
    let runs = job.predictor_runs();
    let ImageRef::Path(path) = &job.image else { return Ok(lines) };
    if runs.is_empty() {
        return Ok(lines);
    }
    let fail = |lines: &mut Vec<SummaryLine>, row: usize, why: String| {
        if let Some(line) = lines.iter_mut().find(|l| l.row == row) {
            line.status = format!("failed: {why}");
        }
    };
    let volume = match io::open(path, &OpenOptions::default()) {
        Ok(volume) => volume,
        Err(e) => {
            for run in &runs {
                for (entry, _) in &run.rows {
                    fail(&mut lines, entry.row, format!("cannot read the image: {e}"));
                }
            }
            return Ok(lines);
        }
    };
    let loaded = match model {
        Some(loaded) => loaded,
        None => model.insert(LoadedModel::load(choice)?),
    };
    let dims = volume.geometry.dims;
    let voxel_ml = volume.geometry.voxel_volume_mm3() / 1000.0;
    // Never set: on the command line Ctrl-C ends the process, and finished masks stay.
    let cancel = AtomicBool::new(false);
    let mut foregrounds: Vec<(usize, u8, Vec<u32>)> = Vec::new();
    for run in &runs {
        let mut predictor = None;
        for (entry, prompt) in &run.rows {
            let checked = pipeline::check_prompt(&prompt.prompt, dims).and_then(|()| pipeline::check_bounds(&prompt.bounds, &prompt.prompt, dims));
            if let Err(e) = checked {
                fail(&mut lines, entry.row, e.to_string());
                continue;
            }
            let row_start = Instant::now();
            let predictor = match &mut predictor {
                Some(predictor) => predictor,
                None => match pipeline::predictor_for(loaded.model.clone(), &volume, run.axis, run.window, loaded.device.clone()) {
                    Ok(built) => predictor.insert(built),
                    Err(e) => {
                        fail(&mut lines, entry.row, e.to_string());
                        continue;
                    }
                },
            };
            let mut slices = 0;
            let box_run = pipeline::BoxRun { prompt: prompt.prompt, clicks: Vec::new(), bounds: prompt.bounds };
            let result = pipeline::segment_box(predictor, dims, &box_run, false, &cancel, |_, _| {
                slices += 1;
                bar.set_message(format!("{} row {}: {slices} slices", job.image.describe(), entry.row));
            });
            match result {
                Ok(result) => {
                    if let Some(line) = lines.iter_mut().find(|l| l.row == entry.row) {
                        line.voxels = Some(result.voxels);
                        line.volume_ml = Some(result.voxels as f64 * voxel_ml);
                        line.seconds = Some(row_start.elapsed().as_secs_f64());
                        line.status = format!("segmented: forward {}, backward {}", result.forward.describe(), result.backward.describe());
                    }
                    let foreground = result.mask.iter().enumerate().filter(|(_, m)| **m != 0).map(|(i, _)| i as u32).collect();
                    foregrounds.push((entry.row, prompt.label, foreground));
                }
                Err(e) => fail(&mut lines, entry.row, e.to_string()),
            }
        }
    }
    if !foregrounds.is_empty() {
        foregrounds.sort_by_key(|(row, _, _)| *row);
        let rows: Vec<(u8, &[u32])> = foregrounds.iter().map(|(_, label, voxels)| (*label, voxels.as_slice())).collect();
        let labels = compose_labels(volume.geometry.voxel_count(), &rows);
        nifti::write(output, &pipeline::label_map_on(&volume, labels), nifti::NiftiKind::LabelMap)?;
    }
    Ok(lines)
}
