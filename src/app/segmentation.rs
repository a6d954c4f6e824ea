//! Segmentation in the viewer. MedSAM2 runs on a worker thread: the network and a
//! `VolumePredictor` over the open image live in a `Session` that is kept between runs, so the
//! slices are encoded once and refinements start at once. A run is driven by the prompt drawn on
//! a slice view (a box: MedSAM2's whole 3D pipeline; clicks or a corrected slice: re-propagation
//! from that slice both ways; a preview: the box, and the clicks refining it, on its slice
//! alone, whose encoded features stay cached so that each further click runs only the prompt
//! encoder and mask decoder, and Run continues from that very answer); every finished slice
//! streams back to the UI, which writes it into
//! the label map at once, and the whole run becomes one undo step. Runs are bounded by the
//! request's `PassBounds` (the viewer's default ends each direction three empty slices after
//! the object), and the key slice's answer is streamed before either direction starts.

use super::jobs::{BackgroundJob, JobSender, Progress};
use crate::segment::engine::{LoadedModel, ModelChoice};
use crate::segment::pipeline::{self, BoxPrompt, BoxRun, Click, PassBounds, PassReport};
use crate::segment::predictor::{PointsOrBox, SliceResult, VolumePredictor};
use crate::volume::{extract_slice, SliceAxis, Volume, Window};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The predictor's object id for the label being segmented (one object per run).
const OBJECT: u32 = 1;

/// Which slices a run may reach along its axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RangeChoice {
    /// Every slice (each direction still ends where the object ends, if set).
    #[default]
    WholeVolume,
    /// The key slice and this many slices on either side.
    AroundKey(usize),
    /// From the first to the last slice, inclusive.
    Slices([usize; 2]),
}

impl RangeChoice {
    /// The slices a run from `key` among `count` may reach; `None`: the whole volume.
    pub fn range(self, key: usize, count: usize) -> Result<Option<[usize; 2]>, String> {
        let last_slice = count.saturating_sub(1);
        match self {
            RangeChoice::WholeVolume => Ok(None),
            RangeChoice::AroundKey(n) => Ok(Some([key.saturating_sub(n), key.saturating_add(n).min(last_slice)])),
            RangeChoice::Slices([first, last]) => {
                let (first, last) = (first.min(last_slice), last.min(last_slice));
                if (first..=last).contains(&key) {
                    Ok(Some([first, last]))
                } else {
                    Err(format!(
                        "The key slice {} is outside the propagation range {}..{}: move the range marks or choose another range",
                        key + 1,
                        first + 1,
                        last + 1
                    ))
                }
            }
        }
    }
}

/// What the user asked the model for, in slice pixels (x = the slice's first in-plane axis).
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// A box (x0, y0, x1, y1), inclusive, and clicks refining its answer on its slice:
    /// MedSAM2's 3D pipeline (forward, backward, OR, largest connected component).
    Box { bbox: [usize; 4], clicks: Vec<Click> },
    /// The same prompt on its slice alone: what Run would start from.
    Preview { bbox: [usize; 4], clicks: Vec<Click> },
    /// Positive (1) and negative (0) clicks refining the label's `current` mask on the slice,
    /// then propagation both ways from it.
    Clicks { points: Vec<[f32; 2]>, labels: Vec<i64>, current: Vec<u8> },
    /// The label's corrected mask on the slice, propagated both ways from it.
    Mask(Vec<u8>),
}

impl Prompt {
    /// For the undo list.
    pub fn description(&self) -> &'static str {
        match self {
            Prompt::Box { .. } => "MedSAM2 box",
            Prompt::Preview { .. } => "MedSAM2 preview",
            Prompt::Clicks { .. } => "MedSAM2 clicks",
            Prompt::Mask(_) => "MedSAM2 from corrected slice",
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct Request {
    pub image: Arc<Volume>,
    /// Changes whenever another image is opened (the session's slices belong to one image).
    pub image_id: u64,
    pub axis: SliceAxis,
    pub slice: usize,
    /// The intensity window the model sees (the view's); `None` for 8-bit images, which the
    /// model takes as they are (like MedSAM2's script and the `segment` command).
    pub window: Option<Window>,
    pub prompt: Prompt,
    pub model: ModelChoice,
    /// How far the run may go from the prompted slice.
    pub bounds: PassBounds,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Message {
    Status(String),
    /// The object's whole mask on one slice (slice size, x fastest, non-zero = inside).
    Slice { index: usize, mask: Vec<u8> },
    /// The run ended after streaming `slices` slices; the image encoder has run
    /// `encoder_runs` times on this image so far.
    Done { slices: usize, seconds: f64, end: RunEnd, encoder_runs: usize },
    Failed(String),
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunEnd {
    /// Both directions finished: where each (forward, backward) stopped and why.
    Propagated([PassReport; 2]),
    /// The preview's slice is done.
    Previewed,
    /// Cancelled; the slices done are kept.
    Cancelled,
}

/// Which slices a predictor was made for.
#[derive(Clone, Debug, PartialEq)]
struct SlicesKey {
    image_id: u64,
    axis: SliceAxis,
    window: Option<(u64, u64)>,
}

/// The loaded network and the predictor over the current image.
struct Session {
    choice: ModelChoice,
    model: LoadedModel,
    predictor: Option<(SlicesKey, VolumePredictor)>,
}

/// The viewer's side: the session slot shared with the worker, and the running job.
#[derive(Default)]
pub struct Segmentation {
    session: Arc<Mutex<Option<Session>>>,
    pub job: Option<BackgroundJob<Message>>,
    /// Latest worker status ("Loading the model…").
    pub status: String,
    /// Image-encoder runs on the current image, as of the last finished run.
    pub encoder_runs: usize,
}

impl Segmentation {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Starts a run on the worker; the caller drains `job` each frame.
    pub fn start(&mut self, ctx: &egui::Context, request: Request) {
        if self.job.is_some() {
            return;
        }
        let session = Arc::clone(&self.session);
        self.status = "Starting…".into();
        self.job = Some(BackgroundJob::spawn(request.prompt.description(), Some(ctx.clone()), move |progress, tx| {
            let started = Instant::now();
            // The UI never takes this lock, so it never waits for the model.
            let mut slot = session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match run(&mut slot, &request, progress, tx) {
                Ok(RunOutcome { slices, end }) => {
                    let encoder_runs = slot.as_ref().and_then(|s| s.predictor.as_ref()).map_or(0, |(_, p)| p.encoder_runs());
                    tx.send(Message::Done { slices, seconds: started.elapsed().as_secs_f64(), end, encoder_runs });
                }
                Err(e) => {
                    tx.send(Message::Failed(e));
                }
            }
        }));
    }
}

/// How a run ended, and the slices it streamed.
struct RunOutcome {
    slices: usize,
    end: RunEnd,
}

/// Loads what the request needs into the session and runs the prompt.
fn run(slot: &mut Option<Session>, request: &Request, progress: &Arc<Progress>, tx: &JobSender<Message>) -> Result<RunOutcome, String> {
    if slot.as_ref().is_none_or(|s| s.choice != request.model) {
        *slot = None;
        tx.send(Message::Status("Loading MedSAM2…".into()));
        let model = LoadedModel::load(&request.model).map_err(|e| e.to_string())?;
        *slot = Some(Session { choice: request.model.clone(), model, predictor: None });
    }
    let session = slot.as_mut().expect("loaded above");
    let key = SlicesKey {
        image_id: request.image_id,
        axis: request.axis,
        window: request.window.map(|w| (w.lo.to_bits(), w.hi.to_bits())),
    };
    if session.predictor.as_ref().is_none_or(|(k, _)| *k != key) {
        session.predictor = None;
        tx.send(Message::Status("Preparing slices…".into()));
        let model = Arc::clone(&session.model.model);
        let predictor = pipeline::predictor_for(model, &request.image, request.axis, request.window, session.model.device.clone())
            .map_err(|e| e.to_string())?;
        session.predictor = Some((key, predictor));
    }
    let (_, predictor) = session.predictor.as_mut().expect("made above");
    tx.send(Message::Status("Segmenting…".into()));
    let cancel = progress.cancel_flag();
    let dims = request.image.geometry.dims;
    match &request.prompt {
        Prompt::Preview { bbox, clicks } => {
            let prompt = BoxPrompt { axis: request.axis, slice: request.slice, bbox: *bbox };
            pipeline::check_prompt(&prompt, dims).map_err(|e| e.to_string())?;
            let answer = pipeline::key_slice_answer(predictor, &prompt, clicks).map_err(|e| e.to_string())?;
            progress.set(1, 1);
            tx.send(Message::Slice { index: answer.index, mask: foreground(&answer) });
            Ok(RunOutcome { slices: 1, end: RunEnd::Previewed })
        }
        Prompt::Box { bbox, clicks } => {
            let prompt = BoxPrompt { axis: request.axis, slice: request.slice, bbox: *bbox };
            // The key slice's answer, then both passes (each visits the key slice).
            let total = request.bounds.slice_count(predictor.len()) + 2;
            let mut done = 0;
            let mut shown: HashMap<usize, Vec<u8>> = HashMap::new();
            let box_run = BoxRun { prompt, clicks: clicks.clone(), bounds: request.bounds };
            let outcome = pipeline::segment_box(predictor, dims, &box_run, false, cancel, |_, slice| {
                // Both passes report the key slice: show the OR of what they found.
                let found = foreground(slice);
                let mask = shown.entry(slice.index).or_insert_with(|| vec![0; found.len()]);
                mask.iter_mut().zip(&found).for_each(|(m, &f)| *m |= f);
                done += 1;
                progress.set(done, total);
                tx.send(Message::Slice { index: slice.index, mask: mask.clone() });
            });
            match outcome {
                Ok(result) => {
                    // The largest connected component: resend the slices it changed.
                    let mut mask = Vec::new();
                    for (&index, before) in &shown {
                        extract_slice(&result.mask, dims, request.axis, index, &mut mask);
                        if &mask != before {
                            tx.send(Message::Slice { index, mask: mask.clone() });
                        }
                    }
                    Ok(RunOutcome { slices: shown.len(), end: RunEnd::Propagated([result.forward, result.backward]) })
                }
                Err(pipeline::PipelineError::Cancelled) => Ok(RunOutcome { slices: shown.len(), end: RunEnd::Cancelled }),
                Err(e) => Err(e.to_string()),
            }
        }
        Prompt::Clicks { points, labels, current } => {
            predictor.reset();
            if current.iter().any(|&v| v != 0) {
                predictor.add_new_mask(request.slice, OBJECT, current).map_err(|e| e.to_string())?;
            }
            let clicks = PointsOrBox::clicks(points.clone(), labels.clone());
            predictor.add_new_points_or_box(request.slice, OBJECT, &clicks).map_err(|e| e.to_string())?;
            both_ways(predictor, request.slice, &request.bounds, progress, tx)
        }
        Prompt::Mask(mask) => {
            predictor.reset();
            predictor.add_new_mask(request.slice, OBJECT, mask).map_err(|e| e.to_string())?;
            both_ways(predictor, request.slice, &request.bounds, progress, tx)
        }
    }
}

/// The object's mask on a reported slice.
fn foreground(slice: &SliceResult) -> Vec<u8> {
    slice.objects.first().map_or_else(Vec::new, |o| o.logits.iter().map(|&l| u8::from(l > 0.0)).collect())
}

/// Propagates the prompted slice forward, then backward, within `bounds`, streaming every
/// slice; the slices replace what the label had there.
fn both_ways(
    predictor: &mut VolumePredictor,
    slice: usize,
    bounds: &PassBounds,
    progress: &Arc<Progress>,
    tx: &JobSender<Message>,
) -> Result<RunOutcome, String> {
    let count = predictor.len();
    bounds.check(slice, count, predictor.slices().axis()).map_err(|e| e.to_string())?;
    let total = bounds.slice_count(count) + 1;
    let mut done = 0;
    let mut passes = Vec::with_capacity(2);
    for reverse in [false, true] {
        let outcome = predictor
            .propagate(&bounds.walk(slice, count, reverse), progress.cancel_flag(), |result| {
                done += 1;
                progress.set(done, total);
                tx.send(Message::Slice { index: result.index, mask: foreground(&result) });
            })
            .map_err(|e| e.to_string())?;
        match PassReport::of(outcome) {
            Some(pass) => passes.push(pass),
            None => return Ok(RunOutcome { slices: done, end: RunEnd::Cancelled }),
        }
    }
    let passes = <[PassReport; 2]>::try_from(passes).map_err(|_| "a direction did not report".to_string())?;
    Ok(RunOutcome { slices: done, end: RunEnd::Propagated(passes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_choices_resolve_around_the_key_slice() {
        assert_eq!(RangeChoice::WholeVolume.range(4, 8), Ok(None));
        assert_eq!(RangeChoice::AroundKey(2).range(4, 8), Ok(Some([2, 6])));
        assert_eq!(RangeChoice::AroundKey(32).range(4, 8), Ok(Some([0, 7])));
        assert_eq!(RangeChoice::Slices([3, 20]).range(4, 8), Ok(Some([3, 7])));
        assert!(RangeChoice::Slices([5, 7]).range(4, 8).unwrap_err().contains("key slice 5 is outside"));
    }
}
