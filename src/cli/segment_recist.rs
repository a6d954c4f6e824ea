//! `segment-recist`: MedSAM2's RECIST-to-3D script (`medsam2_infer_CT_lesion_npz_recist.py`)
//! from the command line. For each MedSAM2 .npz (`imgs` 0..255, `recist`, `spacing`) of a
//! folder, or one file: every label's line prompts its key slice (box or points, see
//! `segment::recist`), the answer is fed back as a mask and propagated both ways
//! (`segment::recist_pipeline`), and the label map is written as `segs` in an .npz of the same
//! name (with `spacing`), optionally as NIfTI too, with a CSV of seconds per case. A case that
//! fails is reported and the others go on; the command then exits with status 2.

use crate::io::npz::{self, NpyData, NpyEntry};
use crate::io::{FormatError, nifti};
use crate::segment::engine::LoadedModel;
use crate::segment::numpy_rng::NumpyRandom;
use crate::segment::pipeline;
use crate::segment::recist::{self, PointSampling, RecistLine};
use crate::segment::recist_pipeline::{self, LesionPrompt};
use crate::volume::{SliceAxis, Volume, VoxelBuffer};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SegmentRecistArgs {
    /// A MedSAM2 .npz (`imgs`, `recist`, `spacing`) or a folder of them (its *.npz files, in
    /// name order).
    pub input: PathBuf,
    /// Folder for `<case>.npz` (`segs`, `spacing`), `inference_time.csv` and, with --nifti,
    /// `segs_nifti/<case>_segs.nii.gz`.
    #[arg(short, long)]
    pub output_dir: PathBuf,
    /// Prompt the key slice with the square box around the line (else with points).
    #[arg(long)]
    pub propagate_with_box: bool,
    /// Which points prompt the key slice when not --propagate-with-box.
    #[arg(long, value_enum, default_value_t = PointSampling::FromRecistN)]
    pub sample_points: PointSampling,
    /// Pixels added on each side of the box (also the box of --sample-points from-box).
    #[arg(long, default_value_t = 0)]
    pub shift: usize,
    /// Seed of numpy's legacy generator for from-recist-n; 2024 and the same cases in the same
    /// order pick the points MedSAM2's script picks (one stream over the whole run).
    #[arg(long, default_value_t = 2024)]
    pub seed: u32,
    /// Also write each label map as NIfTI (the image's spacing, origin and direction).
    #[arg(long)]
    pub nifti: bool,
    /// Segment cases whose output exists (default: skip them).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: super::model_args::ModelArgs,
}

/// One line of the CSV and of the JSON summary.
struct CaseReport {
    name: String,
    seconds: Option<f64>,
    status: String,
    lesions: Vec<Value>,
}

pub fn segment_recist(args: SegmentRecistArgs) -> anyhow::Result<()> {
    let cases = list_cases(&args.input)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("{}", args.output_dir.display()))?;
    let same_folder = |case: &Path| -> bool {
        let folder = case.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        matches!((folder.map(std::fs::canonicalize), std::fs::canonicalize(&args.output_dir)), (Some(Ok(a)), Ok(b)) if a == b)
    };
    if cases.iter().any(|c| same_folder(c)) {
        bail!(
            "the output folder {} holds the input cases; the outputs would replace them",
            args.output_dir.display()
        );
    }
    let output_of = |case: &Path| {
        args.output_dir
            .join(case.file_name().expect("listed files have names"))
    };
    let todo: Vec<&PathBuf> = cases
        .iter()
        .filter(|c| args.force || !output_of(c).exists())
        .collect();
    let loaded = if todo.is_empty() {
        None
    } else {
        let choice = args.engine.choice();
        Some(LoadedModel::load(&choice)?)
    };
    let mut rng = NumpyRandom::seed(args.seed);
    let mut reports = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let output = output_of(case);
        let report = match &loaded {
            Some(loaded) if todo.contains(&case) => {
                let start = Instant::now();
                match segment_case(case, &output, loaded, &args, &mut rng) {
                    Ok(lesions) => {
                        let seconds = start.elapsed().as_secs_f64();
                        eprintln!(
                            "{name}: {} lesion(s) segmented in {seconds:.2} s",
                            lesions.len()
                        );
                        CaseReport {
                            name,
                            seconds: Some(seconds),
                            status: "segmented".into(),
                            lesions,
                        }
                    }
                    Err(e) => {
                        eprintln!("{name}: failed: {e:#}");
                        CaseReport {
                            name,
                            seconds: None,
                            status: format!("failed: {e:#}"),
                            lesions: Vec::new(),
                        }
                    }
                }
            }
            _ => {
                eprintln!(
                    "{name}: skipped, {} exists (--force to redo it)",
                    output.display()
                );
                CaseReport {
                    name,
                    seconds: None,
                    status: "skipped: the output exists".into(),
                    lesions: Vec::new(),
                }
            }
        };
        reports.push(report);
    }
    let csv = args.output_dir.join("inference_time.csv");
    write_times(&csv, &reports)?;
    let failed: Vec<&CaseReport> = reports
        .iter()
        .filter(|r| r.status.starts_with("failed"))
        .collect();
    println!(
        "{}",
        json!({
            "cases": reports.iter().map(|r| json!({"image": r.name, "seconds": r.seconds, "status": r.status, "lesions": r.lesions})).collect::<Vec<_>>(),
            "prompt": if args.propagate_with_box { "box".to_string() } else { args.sample_points.name() },
            "shift": args.shift,
            "seed": args.seed,
            "times": csv,
        })
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} cases failed: {}",
            failed.len(),
            reports.len(),
            failed
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The .npz files to segment: the file given, or a folder's *.npz in name order.
fn list_cases(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !input.is_dir() {
        if !input.is_file() {
            bail!("{}: no such file or folder", input.display());
        }
        return Ok(vec![input.to_path_buf()]);
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("{}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "npz"))
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!("{}: no .npz files", input.display());
    }
    Ok(cases)
}

/// Segments every lesion of one case and writes its outputs; returns each lesion's prompt.
fn segment_case(
    case: &Path,
    output: &Path,
    loaded: &LoadedModel,
    args: &SegmentRecistArgs,
    rng: &mut NumpyRandom,
) -> anyhow::Result<Vec<Value>> {
    let volume =
        eight_bit(npz::read_image(case)?).with_context(|| format!("{}: `imgs`", case.display()))?;
    let lines = read_lines(case, volume.geometry.dims)?;
    let dims = volume.geometry.dims;
    let mut predictor = pipeline::predictor_for(
        loaded.model.clone(),
        &volume,
        SliceAxis::Axial,
        None,
        loaded.device.clone(),
    )?;
    // Never set: on the command line Ctrl-C ends the process, and finished cases stay.
    let cancel = AtomicBool::new(false);
    let mut lesions = Vec::new();
    let mut described = Vec::new();
    for line in &lines {
        let (prompt, shown) = lesion_prompt(line, args, dims, rng)?;
        let mask = recist_pipeline::segment_lesion(
            &mut predictor,
            dims,
            line.slice,
            &prompt,
            &cancel,
            |_| {},
        )
        .with_context(|| format!("label {}", line.label))?;
        let voxels = mask.iter().filter(|&&m| m != 0).count();
        described.push(
            json!({"label": line.label, "slice": line.slice, "voxels": voxels, "prompt": shown}),
        );
        lesions.push((line.label, mask));
    }
    let labels = recist_pipeline::label_volume(volume.geometry.voxel_count(), &lesions);
    let shape = [dims[2], dims[1], dims[0]];
    let spacing = volume.geometry.spacing;
    npz::write(
        output,
        &[
            NpyEntry {
                name: "segs",
                shape: &shape,
                data: NpyData::U8(&labels),
            },
            NpyEntry {
                name: "spacing",
                shape: &[3],
                data: NpyData::F64(&spacing),
            },
        ],
    )?;
    if args.nifti {
        let folder = args.output_dir.join("segs_nifti");
        std::fs::create_dir_all(&folder).with_context(|| format!("{}", folder.display()))?;
        let stem = case.file_stem().unwrap_or_default().to_string_lossy();
        nifti::write(
            &folder.join(format!("{stem}_segs.nii.gz")),
            &pipeline::label_map_on(&volume, labels),
            nifti::NiftiKind::LabelMap,
        )?;
    }
    Ok(described)
}

/// The script's image: values 0..255 taken as 8-bit grey levels (`astype(np.uint8)`).
fn eight_bit(mut volume: Volume) -> anyhow::Result<Volume> {
    if matches!(volume.data, VoxelBuffer::U8(_)) {
        return Ok(volume);
    }
    let data = &volume.data;
    let mut grey = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let v = data.get_f64(i);
        if !(0.0..256.0).contains(&v) {
            bail!("holds {v}; MedSAM2's RECIST script needs values in [0, 255]");
        }
        grey.push(v as u8);
    }
    volume.data = VoxelBuffer::U8(grey);
    Ok(volume)
}

/// The `recist` array's lines, checked against the image's dims [x, y, z].
fn read_lines(case: &Path, dims: [usize; 3]) -> anyhow::Result<Vec<RecistLine>> {
    let array = npz::read_array(case, "recist")?.ok_or_else(|| anyhow!("{}: no `recist` array in the .npz (a RECIST case needs `imgs`, `recist` and `spacing`)", case.display()))?;
    let image_shape = [dims[2], dims[1], dims[0]];
    let &[z, y, x] = array.shape.as_slice() else {
        bail!(
            "{}: `recist` has shape {:?}; a (Z, Y, X) volume like `imgs` {image_shape:?} is needed",
            case.display(),
            array.shape
        );
    };
    let values = (0..array.data.len()).map(|i| array.data.get_f64(i));
    let lines =
        recist::lines_of(values, [x, y, z]).map_err(|e| anyhow!("{}: {e}", case.display()))?;
    if [z, y, x] != image_shape {
        let outside: Vec<String> = lines
            .iter()
            .filter(|l| {
                l.slice >= dims[2] || l.pixels.iter().any(|p| p[0] >= dims[0] || p[1] >= dims[1])
            })
            .map(|l| format!("label {} (slice {})", l.label, l.slice))
            .collect();
        let detail = if outside.is_empty() {
            String::new()
        } else {
            format!(
                "; the line of {} lies outside the image",
                outside.join(", ")
            )
        };
        return Err(anyhow!(FormatError::Invalid(format!(
            "`recist` has shape {:?} but `imgs` has {image_shape:?}{detail}",
            [z, y, x]
        ))))
        .with_context(|| format!("{}", case.display()));
    }
    Ok(lines)
}

/// The key slice's prompt for a line and its JSON description.
fn lesion_prompt(
    line: &RecistLine,
    args: &SegmentRecistArgs,
    dims: [usize; 3],
    rng: &mut NumpyRandom,
) -> anyhow::Result<(LesionPrompt, Value)> {
    let (width, height) = (dims[0], dims[1]);
    if args.propagate_with_box {
        let bbox = line.square_box(args.shift, width, height);
        return Ok((LesionPrompt::Box(bbox), json!({"box": bbox})));
    }
    let points = line.points(args.sample_points, args.shift, width, height, rng)?;
    let shown = json!({"points": points});
    Ok((LesionPrompt::Points(points), shown))
}

/// `inference_time.csv`: the script's image and duration columns, and what became of the case.
fn write_times(path: &Path, reports: &[CaseReport]) -> anyhow::Result<()> {
    let mut file = crate::io::atomic::AtomicFile::create(path)
        .with_context(|| format!("{}", path.display()))?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["image", "duration", "status"])?;
    for r in reports {
        csv.write_record([
            r.name.clone(),
            r.seconds.map(|s| format!("{s:.3}")).unwrap_or_default(),
            r.status.clone(),
        ])?;
    }
    file.write_all(&csv.into_inner().map_err(|e| anyhow!("{e}"))?)?;
    file.commit().with_context(|| format!("{}", path.display()))
}
