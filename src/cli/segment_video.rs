//! `segment-video`: MedSAM2's video script (`medsam2_infer_video.py`) for one clip from the
//! command line. Reads the clip (a folder of JPEG/PNG frames, or a video file through ffmpeg),
//! the DAVIS-style prompt masks as the script selects them, and boxes or clicks given on the
//! command line; loads the model as the script's `build_sam2_video_predictor` builds it
//! (post-processing off unless asked, `non_overlap_masks` unless per-object PNGs); tracks;
//! writes one PNG per frame (atomically, never over existing files without --force) and
//! prints a JSON summary. Progress goes to stderr.

use crate::model::config::PredictorBuilder;
use crate::segment::engine::LoadedModel;
use crate::segment::predictor::VolumePredictor;
use crate::segment::preprocess::ModelSlices;
use crate::segment::video_pipeline::{self, FrameMasks, FramePrompt, Prompt, Tracking, VideoRun};
use crate::video::annotation::{self, Annotation};
use crate::video::{self, ClipOptions};
use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SegmentVideoArgs {
    /// The clip: a folder of frames named by frame number (00000.jpg, 00001.png, ...), or a
    /// video file (.mp4, .avi, .mov, ...; needs ffmpeg), whose frames are named 00000, 00001, ...
    #[arg(long)]
    pub frames: PathBuf,
    /// Prompt masks: DIR/<frame>.png whose pixel values are object ids (DAVIS palette PNGs),
    /// or with --per-object-png DIR/<id:03d>/<frame>.png (non-zero = inside). Without
    /// --use-all-masks only frame 0's masks are used (it must have one).
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Folder for the output masks: <frame>.png per frame (with --per-object-png,
    /// <id:03d>/<frame>.png per object).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Use every mask file of --masks as a prompt, not only frame 0's.
    #[arg(long)]
    pub use_all_masks: bool,
    /// Masks are one PNG per object and frame, in and out; objects may overlap.
    #[arg(long)]
    pub per_object_png: bool,
    /// Track each object alone from its first mask, then merge (objects that appear after the
    /// first frame; MedSAM2's --track_object_appearing_later_in_video). Output PNGs carry a
    /// palette, as there.
    #[arg(long)]
    pub track_later: bool,
    /// Write indexed PNGs with the prompt masks' palette (else the DAVIS 2017 palette) instead
    /// of grey ids.
    #[arg(long)]
    pub palette: bool,
    /// A pixel is in an object where its logit is above this.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub score_thresh: f32,
    /// SAM2's post-processing: dynamic multimask fallback, binarized click masks in memory,
    /// hole filling (fill_hole_area 8).
    #[arg(long)]
    pub apply_postprocessing: bool,
    /// Also track backward from the first prompted frame to the first frame (the script and
    /// MedSAM2's app track forward only).
    #[arg(long)]
    pub both_directions: bool,
    /// A box on frame F (0-based, in frame order) for object ID (default 1):
    /// F:X0,Y0,X1,Y1[:ID] in frame pixels. Repeatable.
    #[arg(long = "box", value_parser = parse_box_prompt)]
    pub boxes: Vec<FramePrompt>,
    /// A click on frame F for object ID (default 1): F:X,Y:+ (inside) or F:X,Y:- (outside),
    /// optionally :ID. Repeatable; a frame's clicks and box for one object go in together.
    #[arg(long = "point", value_parser = parse_point_prompt, allow_hyphen_values = true)]
    pub points: Vec<FramePrompt>,
    /// Refuse clips whose decoded frames would take more than this many MiB.
    #[arg(long, default_value_t = video::DEFAULT_MAX_CLIP_BYTES >> 20)]
    pub max_clip_mib: u64,
    /// Replace existing output PNGs.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: super::model_args::ModelArgs,
}

pub fn segment_video(args: SegmentVideoArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    if args.masks.is_none() && args.boxes.is_empty() && args.points.is_empty() {
        bail!("no prompts: give --masks DIR, --box or --point");
    }
    let clip = video::open(
        &args.frames,
        &ClipOptions {
            max_bytes: args.max_clip_mib.saturating_mul(1 << 20),
        },
    )?;
    let names = clip.names().to_vec();
    let (width, height) = (clip.width(), clip.height());
    let tracking = if args.track_later {
        Tracking::SeparatePerObject
    } else {
        Tracking::Together
    };

    let (mut prompts, input_palette) = match &args.masks {
        Some(dir) => mask_prompts(dir, &names, (width, height), &args, tracking)?,
        None => (Vec::new(), None),
    };
    for p in args.boxes.iter().chain(&args.points) {
        if p.frame >= names.len() {
            bail!(
                "--box/--point on frame {}: the clip has {} frames (0..={})",
                p.frame,
                names.len(),
                names.len() - 1
            );
        }
        prompts.push(p.clone());
    }
    let objects = video_pipeline::object_ids(&prompts);
    if objects.is_empty() {
        bail!("no objects to track: the prompt masks are empty");
    }
    let outputs = output_paths(&args.output_dir, &names, &objects, args.per_object_png);
    if !args.force
        && let Some(existing) = outputs.iter().find(|p| p.exists())
    {
        bail!(
            "{}: already exists (pass --force to replace the output masks)",
            existing.display()
        );
    }
    let read_seconds = start.elapsed().as_secs_f64();

    let model_start = Instant::now();
    let choice = args.engine.choice();
    let builder = PredictorBuilder::Video {
        apply_postprocessing: args.apply_postprocessing,
        non_overlap_masks: !args.per_object_png,
    };
    let loaded = LoadedModel::load_for(&choice, builder)?;
    let model_seconds = model_start.elapsed().as_secs_f64();

    let prepare_start = Instant::now();
    let slices = ModelSlices::from_clip(&clip, loaded.config.model.image_size);
    let frame_rate = clip.frame_rate();
    drop(clip);
    let mut predictor = VolumePredictor::new(loaded.model, Arc::new(slices), loaded.device)?;
    let prepare_seconds = prepare_start.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| args.output_dir.display().to_string())?;
    if args.per_object_png {
        for id in &objects {
            let dir = args.output_dir.join(format!("{id:03}"));
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        }
    }
    let palette = (args.palette || args.track_later)
        .then(|| input_palette.unwrap_or_else(annotation::davis_palette));
    let bar = ProgressBar::new(names.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "tracking [{elapsed_precise}] [{wide_bar}] {pos}/{len} frames ({eta})",
    )?);
    let cancel = AtomicBool::new(false);
    let track_start = Instant::now();
    let run = VideoRun {
        prompts,
        tracking,
        score_thresh: args.score_thresh,
        both_directions: args.both_directions,
    };
    let mut written = 0usize;
    let mut write_error = None;
    let result = video_pipeline::track(
        &mut predictor,
        &run,
        &cancel,
        |frame| {
            if write_error.is_none() {
                match write_frame(
                    &args.output_dir,
                    &names[frame.frame],
                    &frame,
                    (width, height),
                    args.per_object_png,
                    palette.as_deref(),
                ) {
                    Ok(n) => written += n,
                    Err(e) => write_error = Some(e),
                }
            }
        },
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    result?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let track_seconds = track_start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "output_dir": args.output_dir,
            "frames": names.len(),
            "width": width,
            "height": height,
            "frame_rate": frame_rate,
            "objects": objects,
            "files_written": written,
            "tracking": (if args.track_later { "separate per object" } else { "together" }),
            "both_directions": args.both_directions,
            "non_overlap_masks": !args.per_object_png,
            "apply_postprocessing": args.apply_postprocessing,
            "checkpoint": loaded.checkpoint,
            "device": args.engine.device.name(),
            "seconds": start.elapsed().as_secs_f64(),
            "timings": { "read": read_seconds, "model": model_seconds, "preprocess": prepare_seconds, "tracking": track_seconds },
        })
    );
    Ok(())
}

/// Every file the run may write.
fn output_paths(dir: &Path, names: &[String], objects: &[u8], per_object: bool) -> Vec<PathBuf> {
    if per_object {
        objects
            .iter()
            .flat_map(|id| {
                names
                    .iter()
                    .map(move |n| dir.join(format!("{id:03}")).join(format!("{n}.png")))
            })
            .collect()
    } else {
        names.iter().map(|n| dir.join(format!("{n}.png"))).collect()
    }
}

/// Writes one frame's masks; returns the number of files written.
fn write_frame(
    dir: &Path,
    name: &str,
    frame: &FrameMasks,
    (width, height): (usize, usize),
    per_object: bool,
    palette: Option<&[u8]>,
) -> anyhow::Result<usize> {
    if per_object {
        for object in &frame.objects {
            let path = dir
                .join(format!("{:03}", object.object))
                .join(format!("{name}.png"));
            annotation::write(&path, width, height, &object.mask, palette)?;
        }
        Ok(frame.objects.len())
    } else {
        annotation::write(
            &dir.join(format!("{name}.png")),
            width,
            height,
            &frame.labels(),
            palette,
        )?;
        Ok(1)
    }
}

/// Object folders of a per-object mask directory: (id, folder), ascending ids.
fn object_dirs(dir: &Path) -> anyhow::Result<Vec<(u8, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry.with_context(|| dir.display().to_string())?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let id = name.parse::<u16>().ok().filter(|id| (1..=255).contains(id));
        match id {
            Some(id) => found.push((id as u8, path)),
            None => bail!(
                "{}: per-object mask folders must be object ids 001..255",
                path.display()
            ),
        }
    }
    found.sort();
    Ok(found)
}

/// One frame's prompt masks, (object id, 0/1 mask) in ascending ids, and the palette of the
/// last mask file read.
type ObjectMasks = (Vec<(u8, Vec<u8>)>, Option<Vec<u8>>);

/// One frame's prompt masks per object (and the palette of the last file read), as the
/// script's `load_masks_from_dir`; `None` when the frame has no mask file and `allow_missing`.
fn frame_masks(
    dir: &Path,
    name: &str,
    size: (usize, usize),
    per_object: bool,
    allow_missing: bool,
) -> anyhow::Result<Option<ObjectMasks>> {
    let load = |path: &Path| -> anyhow::Result<Annotation> {
        let a = annotation::read(path)?;
        if (a.width, a.height) != size {
            bail!(
                "{}: the mask is {} x {} but the frames are {} x {}",
                path.display(),
                a.width,
                a.height,
                size.0,
                size.1
            );
        }
        Ok(a)
    };
    let missing = |path: &Path| {
        anyhow::anyhow!(
            "{}: no prompt mask for this frame (pass --track-later when objects first appear after frame 0)",
            path.display()
        )
    };
    if !per_object {
        let path = dir.join(format!("{name}.png"));
        if !path.exists() {
            return if allow_missing {
                Ok(None)
            } else {
                Err(missing(&path))
            };
        }
        let a = load(&path)?;
        let masks = a
            .object_ids()
            .into_iter()
            .map(|id| (id, a.labels.iter().map(|&l| u8::from(l == id)).collect()))
            .collect();
        return Ok(Some((masks, a.palette)));
    }
    let mut masks = Vec::new();
    let mut palette = None;
    for (id, folder) in object_dirs(dir)? {
        let path = folder.join(format!("{name}.png"));
        if !path.exists() {
            if allow_missing {
                continue;
            }
            return Err(missing(&path));
        }
        let a = load(&path)?;
        palette = a.palette;
        masks.push((id, a.labels.iter().map(|&l| u8::from(l != 0)).collect()));
    }
    Ok(Some((masks, palette)))
}

/// The prompt masks the script would add, and the palette of the last mask file it read.
fn mask_prompts(
    dir: &Path,
    names: &[String],
    size: (usize, usize),
    args: &SegmentVideoArgs,
    tracking: Tracking,
) -> anyhow::Result<(Vec<FramePrompt>, Option<Vec<u8>>)> {
    let per_object = args.per_object_png;
    let mut prompts = Vec::new();
    let mut palette = None;
    match tracking {
        Tracking::Together => {
            let frames: Vec<usize> = if !args.use_all_masks {
                vec![0]
            } else {
                let has_mask = |name: &String| -> anyhow::Result<bool> {
                    Ok(if per_object {
                        object_dirs(dir)?
                            .iter()
                            .any(|(_, f)| f.join(format!("{name}.png")).exists())
                    } else {
                        dir.join(format!("{name}.png")).exists()
                    })
                };
                let mut frames = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    if has_mask(name)? {
                        frames.push(i);
                    }
                }
                if frames.is_empty() {
                    bail!(
                        "{}: no mask named like a frame ({}.png, ...)",
                        dir.display(),
                        names[0]
                    );
                }
                frames
            };
            let mut first_objects: Option<Vec<u8>> = None;
            for frame in frames {
                let (masks, p) = frame_masks(dir, &names[frame], size, per_object, false)?
                    .expect("required masks are present");
                palette = p;
                let known =
                    first_objects.get_or_insert_with(|| masks.iter().map(|(id, _)| *id).collect());
                for (id, mask) in masks {
                    if !known.contains(&id) {
                        bail!(
                            "object {id} first appears in the masks of frame {frame} ({}), not in the first prompt frame: pass --track-later to track objects that appear later",
                            names[frame]
                        );
                    }
                    prompts.push(FramePrompt {
                        frame,
                        object: id,
                        prompt: Prompt::Mask(mask),
                    });
                }
            }
        }
        Tracking::SeparatePerObject => {
            for (frame, name) in names.iter().enumerate() {
                let Some((masks, p)) = frame_masks(dir, name, size, per_object, true)? else {
                    continue;
                };
                palette = p;
                for (id, mask) in masks {
                    let seen = prompts.iter().any(|q: &FramePrompt| q.object == id);
                    if !mask.iter().any(|&m| m != 0) || (seen && !args.use_all_masks) {
                        continue;
                    }
                    prompts.push(FramePrompt {
                        frame,
                        object: id,
                        prompt: Prompt::Mask(mask),
                    });
                }
            }
        }
    }
    Ok((prompts, palette))
}

/// Splits "F:REST[:ID]" into the frame, the middle parts and the object id (default 1).
fn split_prompt<'a>(
    text: &'a str,
    middle: usize,
    what: &str,
) -> Result<(usize, Vec<&'a str>, u8), String> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    if parts.len() != 1 + middle && parts.len() != 2 + middle {
        return Err(format!("{text:?} is not {what}"));
    }
    let frame = parts[0]
        .parse()
        .map_err(|_| format!("{text:?}: the frame {:?} is not a frame index", parts[0]))?;
    let id = match parts.get(1 + middle) {
        Some(id) => id
            .parse::<u8>()
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| format!("{text:?}: the object id must be 1..=255"))?,
        None => 1,
    };
    Ok((frame, parts[1..=middle].to_vec(), id))
}

fn coordinates<const N: usize>(text: &str, whole: &str) -> Result<[f32; N], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{whole:?}: {text:?} is not {N} non-negative numbers"))?;
    values
        .try_into()
        .map_err(|_| format!("{whole:?}: {text:?} is not {N} comma-separated numbers"))
}

/// Parses `F:X0,Y0,X1,Y1[:ID]`.
pub fn parse_box_prompt(text: &str) -> Result<FramePrompt, String> {
    let (frame, parts, object) = split_prompt(text, 1, "F:X0,Y0,X1,Y1[:ID]")?;
    let b: [f32; 4] = coordinates(parts[0], text)?;
    if b[2] < b[0] || b[3] < b[1] {
        return Err(format!(
            "{text:?}: the box's second corner must be right of and below the first"
        ));
    }
    Ok(FramePrompt {
        frame,
        object,
        prompt: Prompt::Box(b),
    })
}

/// Parses `F:X,Y:+|-[:ID]`.
pub fn parse_point_prompt(text: &str) -> Result<FramePrompt, String> {
    let (frame, parts, object) = split_prompt(text, 2, "F:X,Y:+|-[:ID]")?;
    let xy: [f32; 2] = coordinates(parts[0], text)?;
    let positive = match parts[1] {
        "+" => true,
        "-" => false,
        other => {
            return Err(format!(
                "{text:?}: {other:?} is neither + (inside) nor - (outside)"
            ));
        }
    };
    Ok(FramePrompt {
        frame,
        object,
        prompt: Prompt::Point { xy, positive },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_and_point_prompts_parse() {
        assert_eq!(
            parse_box_prompt("4:10,12.5,40,50:2").unwrap(),
            FramePrompt {
                frame: 4,
                object: 2,
                prompt: Prompt::Box([10.0, 12.5, 40.0, 50.0])
            }
        );
        assert_eq!(parse_box_prompt("0:1,2,3,4").unwrap().object, 1);
        assert!(parse_box_prompt("0:1,2,3").is_err());
        assert!(
            parse_box_prompt("0:5,5,3,3")
                .unwrap_err()
                .contains("second corner")
        );
        assert!(
            parse_box_prompt("0:1,2,3,4:0")
                .unwrap_err()
                .contains("1..=255")
        );
        assert_eq!(
            parse_point_prompt("3:20,30:-:7").unwrap(),
            FramePrompt {
                frame: 3,
                object: 7,
                prompt: Prompt::Point {
                    xy: [20.0, 30.0],
                    positive: false
                }
            }
        );
        assert!(
            parse_point_prompt("3:20,30:x")
                .unwrap_err()
                .contains("neither")
        );
        assert!(parse_point_prompt("a:20,30:+").is_err());
    }
}
