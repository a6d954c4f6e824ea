//! Segmentation in the viewer. MedSAM2 runs on a worker thread: the network and a
//! `VolumePredictor` over the open image live in a `Session` that is kept between runs, so the
//! slices are encoded once and refinements start at once. A run is driven by the prompt drawn on
//! a slice view (a box: MedSAM2's whole 3D pipeline; clicks or a corrected slice: re-propagation
//! from that slice both ways); every finished slice streams back to the UI, which writes it into
//! the label map at once, and the whole run becomes one undo step.

use super::jobs::{BackgroundJob, JobSender, Progress};
use crate::segment::engine::{LoadedModel, ModelChoice};
use crate::segment::pipeline::{self, BoxPrompt};
use crate::segment::predictor::{PointsOrBox, Propagation, SliceResult, VolumePredictor};
use crate::volume::{extract_slice, SliceAxis, Volume, Window};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The predictor's object id for the label being segmented (one object per run).
const OBJECT: u32 = 1;

/// What the user asked the model for, in slice pixels (x = the slice's first in-plane axis).
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// A box (x0, y0, x1, y1), inclusive: MedSAM2's 3D pipeline (forward, backward, OR, largest
    /// connected component).
    Box([usize; 4]),
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
            Prompt::Box(_) => "MedSAM2 box",
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
}

/// What the worker reports.
#[derive(Debug)]
pub enum Message {
    Status(String),
    /// The object's whole mask on one slice (slice size, x fastest, non-zero = inside).
    Slice { index: usize, mask: Vec<u8> },
    Done { slices: usize, seconds: f64, cancelled: bool },
    Failed(String),
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
                Ok(outcome) => {
                    let (slices, cancelled) = match outcome {
                        Propagation::Finished { slices } => (slices, false),
                        Propagation::Cancelled { slices } => (slices, true),
                    };
                    tx.send(Message::Done { slices, seconds: started.elapsed().as_secs_f64(), cancelled });
                }
                Err(e) => {
                    tx.send(Message::Failed(e));
                }
            }
        }));
    }
}

/// Loads what the request needs into the session and runs the prompt.
fn run(slot: &mut Option<Session>, request: &Request, progress: &Arc<Progress>, tx: &JobSender<Message>) -> Result<Propagation, String> {
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
        Prompt::Box(bbox) => {
            let prompt = BoxPrompt { axis: request.axis, slice: request.slice, bbox: *bbox };
            let count = dims[request.axis.normal()];
            // Both passes visit the key slice: forward count + backward count.
            let total = count + 1;
            let mut done = 0;
            let mut shown: HashMap<usize, Vec<u8>> = HashMap::new();
            let outcome = pipeline::segment_box(predictor, dims, &prompt, false, cancel, |_, slice| {
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
                    Ok(Propagation::Finished { slices: result.forward_slices + result.backward_slices })
                }
                Err(pipeline::PipelineError::Cancelled) => Ok(Propagation::Cancelled { slices: done }),
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
            both_ways(predictor, request.slice, progress, tx)
        }
        Prompt::Mask(mask) => {
            predictor.reset();
            predictor.add_new_mask(request.slice, OBJECT, mask).map_err(|e| e.to_string())?;
            both_ways(predictor, request.slice, progress, tx)
        }
    }
}

/// The object's mask on a reported slice.
fn foreground(slice: &SliceResult) -> Vec<u8> {
    slice.objects.first().map_or_else(Vec::new, |o| o.logits.iter().map(|&l| u8::from(l > 0.0)).collect())
}

/// Propagates the prompted slice forward to the end, then backward to the start, streaming
/// every slice; the slices replace what the label had there.
fn both_ways(predictor: &mut VolumePredictor, slice: usize, progress: &Arc<Progress>, tx: &JobSender<Message>) -> Result<Propagation, String> {
    let total = predictor.len() + 1;
    let mut done = 0;
    for reverse in [false, true] {
        let outcome = predictor
            .propagate(Some(slice), None, reverse, progress.cancel_flag(), |result| {
                done += 1;
                progress.set(done, total);
                tx.send(Message::Slice { index: result.index, mask: foreground(&result) });
            })
            .map_err(|e| e.to_string())?;
        if let Propagation::Cancelled { .. } = outcome {
            return Ok(Propagation::Cancelled { slices: done });
        }
    }
    Ok(Propagation::Finished { slices: done })
}
