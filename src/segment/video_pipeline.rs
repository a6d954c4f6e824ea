//! MedSAM2's video script (`medsam2_infer_video.py`) for one clip, on a predictor over the
//! clip's frames: prompts (masks, boxes, clicks) for several objects, forward propagation, and
//! per-frame object masks (logit > score threshold).
//!
//! * [`Tracking::Together`] is the script's `vos_inference`: every prompt goes into one
//!   predictor, propagation starts at the first prompted frame, and a frame's objects are one
//!   batch. Only frames from the first prompted frame on get masks, as there.
//! * [`Tracking::SeparatePerObject`] is `vos_separate_inference_per_object` (the script's
//!   `--track_object_appearing_later_in_video`): each object is tracked alone from its own
//!   first prompt (reset, its prompts, forward propagation); then, frame by frame, objects
//!   without output there score -1024, and with `non_overlap_masks` only the highest-scoring
//!   object keeps each pixel. Every frame gets masks.
//!
//! With `non_overlap_masks` (the predictor's configuration) the together run's outputs already
//! have the constraint applied by the predictor.
//! Beyond the reference: boxes and clicks (the Gradio app's prompts) on any frame, next to or
//! instead of masks. Prompts are added in the order given; the clicks and box of one object on
//! one frame go in together (box first), as one `add_new_points_or_box`. And `both_directions`:
//! after the forward propagation, the same state propagates backward from the first prompted
//! frame to frame 0 (SAM2's `propagate_in_video(reverse=True)`), so frames before the prompts
//! get masks too (the script and the app track forward only).

use crate::model::sam2::NO_OBJ_SCORE;
use crate::segment::predictor::{
    ObjectLogits, PointsOrBox, PredictorError, Propagation, SliceResult, VolumePredictor, Walk,
    apply_non_overlapping_constraints,
};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

/// A prompt for one object on one frame, in frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Frame-size mask (rows top to bottom, non-zero = inside).
    Mask(Vec<u8>),
    /// (x0, y0, x1, y1).
    Box([f32; 4]),
    /// A click at (x, y), inside the object or not.
    Point { xy: [f32; 2], positive: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct FramePrompt {
    pub frame: usize,
    pub object: u8,
    pub prompt: Prompt,
}

/// How objects are tracked (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    Together,
    SeparatePerObject,
}

/// One run over a clip.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoRun {
    pub prompts: Vec<FramePrompt>,
    pub tracking: Tracking,
    /// A pixel belongs to an object where its logit is above this (the script's 0.0).
    pub score_thresh: f32,
    /// Also track backward from the first prompted frame (see the module documentation).
    pub both_directions: bool,
}

/// One object's mask on a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectMask {
    pub object: u8,
    /// 1 inside, 0 outside, frame size.
    pub mask: Vec<u8>,
}

/// The masks of every object on one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameMasks {
    pub frame: usize,
    /// In ascending object id order.
    pub objects: Vec<ObjectMask>,
}

impl FrameMasks {
    /// One label map (`put_per_obj_mask`): each pixel the id of an object covering it, the
    /// smallest id where masks overlap, 0 where none does.
    pub fn labels(&self) -> Vec<u8> {
        let pixels = self.objects.first().map_or(0, |o| o.mask.len());
        let mut labels = vec![0u8; pixels];
        for object in self.objects.iter().rev() {
            for (l, &m) in labels.iter_mut().zip(&object.mask) {
                if m != 0 {
                    *l = object.object;
                }
            }
        }
        labels
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum VideoRunError {
    #[error("no prompts: give masks, a box or clicks on a frame")]
    NoPrompts,
    #[error("frame {frame}: object {object} has two boxes on this frame")]
    TwoBoxes { frame: usize, object: u8 },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Predictor(#[from] PredictorError),
}

/// Runs `run` on `predictor` (over the clip's frames, freshly made or reset). Each frame's
/// masks go to `on_frame` with how many propagation steps are done of how many (a separate run
/// reports all frames at the end, after every object's propagation).
pub fn track(
    predictor: &mut VolumePredictor,
    run: &VideoRun,
    cancel: &AtomicBool,
    mut on_frame: impl FnMut(FrameMasks),
    mut on_step: impl FnMut(usize, usize),
) -> Result<(), VideoRunError> {
    if run.prompts.is_empty() {
        return Err(VideoRunError::NoPrompts);
    }
    let objects = object_ids(&run.prompts);
    match run.tracking {
        Tracking::Together => {
            predictor.reset();
            add_prompts(predictor, &run.prompts)?;
            let first = run.prompts.iter().map(|p| p.frame).min().unwrap_or(0);
            let mut report = |slice: SliceResult| {
                let mut objects: Vec<ObjectMask> = slice
                    .objects
                    .iter()
                    .map(|o| ObjectMask { object: o.object_id as u8, mask: threshold(&o.logits, run.score_thresh) })
                    .collect();
                objects.sort_by_key(|o| o.object);
                on_frame(FrameMasks { frame: slice.index, objects });
            };
            // Forward, then (when asked) backward over the frames before the first prompt.
            let backward_steps = if run.both_directions { first } else { 0 };
            let mut forward_total = 0;
            let outcome = predictor.propagate(&Walk::forward(), cancel, |slice| {
                forward_total = slice.total;
                on_step(slice.done, slice.total + backward_steps);
                report(slice);
            })?;
            if matches!(outcome, Propagation::Cancelled { .. }) {
                return Err(VideoRunError::Cancelled);
            }
            if backward_steps > 0 {
                let outcome = predictor.propagate(&Walk::backward(), cancel, |slice| {
                    // The walk starts on the first prompted frame, reported going forward.
                    if slice.index < first {
                        on_step(forward_total + slice.done - 1, forward_total + backward_steps);
                        report(slice);
                    }
                })?;
                if matches!(outcome, Propagation::Cancelled { .. }) {
                    return Err(VideoRunError::Cancelled);
                }
            }
        }
        Tracking::SeparatePerObject => {
            let frames = predictor.len();
            let pixels = predictor.slices().slice_size().0 * predictor.slices().slice_size().1;
            // Each object's logits on the frames its propagation reached.
            let mut scores: Vec<BTreeMap<usize, Vec<f32>>> = Vec::with_capacity(objects.len());
            let starts: Vec<usize> = objects
                .iter()
                .map(|&id| {
                    run.prompts
                        .iter()
                        .filter(|p| p.object == id)
                        .map(|p| p.frame)
                        .min()
                        .unwrap_or(0)
                })
                .collect();
            let walked = |start: usize| if run.both_directions { frames } else { frames - start.min(frames) };
            let total: usize = starts.iter().map(|&s| walked(s)).sum();
            let mut done = 0;
            for (&id, &start) in objects.iter().zip(&starts) {
                predictor.reset();
                let own: Vec<FramePrompt> = run
                    .prompts
                    .iter()
                    .filter(|p| p.object == id)
                    .cloned()
                    .collect();
                add_prompts(predictor, &own)?;
                let mut logits = BTreeMap::new();
                let walks = if run.both_directions { vec![Walk::forward(), Walk::backward()] } else { vec![Walk::forward()] };
                for walk in walks {
                    let outcome = predictor.propagate(&walk, cancel, |slice| {
                        // A backward walk starts on the object's first prompted frame, which
                        // the forward one reported.
                        if walk.reverse && slice.index == start {
                            return;
                        }
                        done += 1;
                        on_step(done, total);
                        if let Some(o) = slice.objects.into_iter().next() {
                            logits.insert(slice.index, o.logits);
                        }
                    })?;
                    if matches!(outcome, Propagation::Cancelled { .. }) {
                        return Err(VideoRunError::Cancelled);
                    }
                }
                scores.push(logits);
            }
            let non_overlap = predictor.model().config().non_overlap_masks;
            for frame in 0..frames {
                let mut merged: Vec<ObjectLogits> = objects
                    .iter()
                    .zip(&mut scores)
                    .map(|(&id, per_frame)| ObjectLogits {
                        object_id: id as u32,
                        logits: per_frame
                            .remove(&frame)
                            .unwrap_or_else(|| vec![NO_OBJ_SCORE; pixels]),
                        object_score: 0.0,
                    })
                    .collect();
                if non_overlap {
                    apply_non_overlapping_constraints(&mut merged);
                }
                let objects = merged
                    .iter()
                    .map(|o| ObjectMask {
                        object: o.object_id as u8,
                        mask: threshold(&o.logits, run.score_thresh),
                    })
                    .collect();
                on_frame(FrameMasks { frame, objects });
            }
        }
    }
    Ok(())
}

/// Object ids of the prompts, ascending, each once.
pub fn object_ids(prompts: &[FramePrompt]) -> Vec<u8> {
    let mut ids: Vec<u8> = prompts.iter().map(|p| p.object).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn threshold(logits: &[f32], thresh: f32) -> Vec<u8> {
    logits.iter().map(|&l| u8::from(l > thresh)).collect()
}

/// Adds masks in the order given, then, per (frame, object) in order of first mention, its box
/// and clicks as one prompt.
fn add_prompts(
    predictor: &mut VolumePredictor,
    prompts: &[FramePrompt],
) -> Result<(), VideoRunError> {
    let mut groups: Vec<((usize, u8), PointsOrBox)> = Vec::new();
    for p in prompts {
        match &p.prompt {
            Prompt::Mask(mask) => {
                predictor.add_new_mask(p.frame, p.object as u32, mask)?;
            }
            Prompt::Box(_) | Prompt::Point { .. } => {
                let key = (p.frame, p.object);
                let index = match groups.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        groups.push((
                            key,
                            PointsOrBox {
                                clear_old_points: true,
                                ..Default::default()
                            },
                        ));
                        groups.len() - 1
                    }
                };
                let group = &mut groups[index].1;
                match &p.prompt {
                    Prompt::Box(_) if group.bbox.is_some() => {
                        return Err(VideoRunError::TwoBoxes {
                            frame: p.frame,
                            object: p.object,
                        });
                    }
                    Prompt::Box(b) => group.bbox = Some(*b),
                    Prompt::Point { xy, positive } => {
                        group.points.push(*xy);
                        group.labels.push(i64::from(*positive));
                    }
                    Prompt::Mask(_) => {}
                }
            }
        }
    }
    for ((frame, object), prompt) in groups {
        predictor.add_new_points_or_box(frame, object as u32, &prompt)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_put_the_smallest_id_on_top() {
        let frame = FrameMasks {
            frame: 0,
            objects: vec![
                ObjectMask {
                    object: 1,
                    mask: vec![1, 1, 0, 0],
                },
                ObjectMask {
                    object: 4,
                    mask: vec![0, 1, 1, 0],
                },
            ],
        };
        assert_eq!(frame.labels(), [1, 1, 4, 0]);
    }

    #[test]
    fn object_ids_are_sorted_once() {
        let p = |object| FramePrompt {
            frame: 0,
            object,
            prompt: Prompt::Box([0.0; 4]),
        };
        assert_eq!(object_ids(&[p(3), p(1), p(3)]), [1, 3]);
    }
}
