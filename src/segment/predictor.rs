//! `VolumePredictor`: SAM2's legacy video predictor (`sam2_video_predictor_legacy.py`, which
//! MedSAM2's `SAM2VideoPredictorNPZ` is) over the slices of a volume along any axis.
//!
//! Semantics kept from the reference, step for step:
//! * Prompts (a box, clicks, or a mask) on a slice that tracking has not reached make it an
//!   initial conditioning slice, segmented without memory. Clicks on an already tracked slice
//!   correct it: the slice's earlier logits (clamped to ±32) go to the decoder as the mask
//!   prompt, memory comes from the existing outputs, and the slice stays a non-conditioning
//!   slice (`add_all_frames_to_correct_as_cond` = false).
//! * Prompted outputs wait in per-object temporary stores; `propagate` first consolidates them
//!   across objects (objects without output on that slice get `NO_OBJ_SCORE` logits and the
//!   pointer of an empty mask) and encodes their memory from the binarized mask.
//! * Propagation walks from the start slice (default: the first conditioning slice) to the
//!   end, or to slice 0 in reverse, yielding the start slice first. Slices with consolidated
//!   prompts are reused; every other slice runs `track_step` with memory and is stored as a
//!   non-conditioning output. Several objects are one batch, as in the reference.
//! * Stored low-resolution logits have small background holes filled (`fill_hole_area`);
//!   reported logits are their bilinear resize to the slice size.
//!
//! Beyond the reference: a walk ([`Walk`]) can end after K consecutive slices on which no
//! object is present, and says where and why it ended ([`WalkEnd`]); the default walk is the
//! reference's. Every encoded slice's image features are cached (the reference keeps
//! only the latest), so that re-propagation after a correction costs only memory attention,
//! heads and memory encoder. The encoder is deterministic, so results do not change. The cache
//! is bounded by a byte budget (`DEFAULT_FEATURE_CACHE_BYTES`, 1 GiB: about 260 slices at
//! 512 px, 4 MiB each); past it the oldest entries are dropped and re-encoded when needed.
//!
//! Each finished slice is handed to a callback as it is done (for painting it at once), with
//! its position in the run for progress; a cancel flag is checked between slices.

use crate::model::memory_key_cache::MemoryKeyCache;
use crate::model::prompt_encoder::PointPrompt;
use crate::model::sam2::{
    resize_bilinear_antialiased, FrameFeatures, MemoryBank, Sam2Base, StoredFrame, TrackStepInput, NO_OBJ_SCORE,
};
use crate::segment::postprocess::{fill_small_holes, resize_bilinear, MaskShapeError};
use crate::segment::preprocess::{point_to_model, ModelSlices};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Default byte budget of the image-feature cache.
pub const DEFAULT_FEATURE_CACHE_BYTES: usize = 1 << 30;
/// Earlier logits fed back with correction clicks are clamped to ± this.
const PREV_LOGITS_CLAMP: f64 = 32.0;
/// Object score given to objects consolidated without output (sigmoid(10) ≈ 1).
const ABSENT_OBJECT_SCORE: f32 = 10.0;
/// Point labels of a box's two corners.
const BOX_CORNER_LABELS: [i64; 2] = [2, 3];

/// Why a predictor call failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    #[error("slice {index} does not exist: there are {count} slices along this axis")]
    NoSuchSlice { index: usize, count: usize },
    #[error("nothing to propagate: add a box, clicks or a mask on a slice first")]
    NoPrompts,
    #[error("object {0} cannot be added after propagation started (reset the predictor first)")]
    ObjectAfterTracking(u32),
    #[error("a prompt needs clicks or a box")]
    EmptyPrompt,
    #[error("{points} click positions but {labels} labels")]
    PointsWithoutLabels { points: usize, labels: usize },
    #[error("click label {0} is neither 0 (negative) nor 1 (positive)")]
    BadLabel(i64),
    #[error("a box replaces a slice's earlier clicks: it cannot be added with clear_old_points = false")]
    BoxKeepingOldPoints,
    #[error("the mask has {actual} pixels but the slice has {width} x {height}")]
    MaskSize { actual: usize, width: usize, height: usize },
    #[error("the volume has no slices")]
    EmptyVolume,
    #[error("the model's input size is {model} px but the slices were prepared at {slices} px")]
    ImageSize { model: usize, slices: usize },
    #[error("slice {0} was prompted but has no stored output")]
    MissingOutput(usize),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Shape(#[from] MaskShapeError),
}

/// A prompt of clicks and/or a box on one slice, in slice pixels (x to the right, y down).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointsOrBox {
    /// Click positions (x, y).
    pub points: Vec<[f32; 2]>,
    /// 1 positive, 0 negative, one per click.
    pub labels: Vec<i64>,
    /// Box (x0, y0, x1, y1); it comes before the clicks, as two corner points.
    pub bbox: Option<[f32; 4]>,
    /// Replace the slice's earlier clicks for this object (true) or add to them (false).
    pub clear_old_points: bool,
}

impl PointsOrBox {
    /// A box alone.
    pub fn bbox(bbox: [f32; 4]) -> Self {
        Self { bbox: Some(bbox), clear_old_points: true, ..Default::default() }
    }

    /// Clicks alone, replacing earlier clicks on the slice.
    pub fn clicks(points: Vec<[f32; 2]>, labels: Vec<i64>) -> Self {
        Self { points, labels, bbox: None, clear_old_points: true }
    }
}

/// One object's logits on one slice.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectLogits {
    pub object_id: u32,
    /// Slice-size logits (width x height, x fastest); > 0 is foreground.
    pub logits: Vec<f32>,
    /// Object score logit (<= 0: the object is judged absent and every logit is -1024).
    pub object_score: f32,
}

/// A finished slice, as reported while prompting and propagating.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceResult {
    /// Slice index along the predictor's axis.
    pub index: usize,
    /// How many slices of this run are done (this one included) and how many it has.
    pub done: usize,
    pub total: usize,
    /// Whether the network ran on this slice in this call (false: a stored output was reused).
    pub recomputed: bool,
    /// Every object, in the order they were added.
    pub objects: Vec<ObjectLogits>,
}

/// Which slices a propagation walks: from `start` (default: the first conditioning slice)
/// towards the last slice, or towards slice 0 when `reverse`, over at most `max_slices` further
/// slices (default: to the edge of the volume), and, when `stop_after_empty` is K > 0, no
/// further than K consecutive slices on which no object is present. The default walk is the
/// reference's `propagate_in_video`: forward to the end, whatever the slices hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub start: Option<usize>,
    pub max_slices: Option<usize>,
    pub reverse: bool,
    pub stop_after_empty: usize,
}

impl Walk {
    /// Forward from the first conditioning slice to the end of the volume.
    pub fn forward() -> Self {
        Self::default()
    }

    /// Backward from the first conditioning slice to slice 0.
    pub fn backward() -> Self {
        Self { reverse: true, ..Self::default() }
    }

    /// The same walk starting at slice `start`.
    pub fn from_slice(self, start: usize) -> Self {
        Self { start: Some(start), ..self }
    }
}

/// Where a finished propagation stopped, and why there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// It reached the volume's first (backward) or last (forward) slice.
    VolumeEdge,
    /// It walked the `max_slices` it was allowed.
    SliceLimit,
    /// The last `stop_after_empty` slices it tracked held no object.
    ObjectGone,
}

impl WalkEnd {
    /// For status lines and JSON summaries.
    pub fn describe(self) -> &'static str {
        match self {
            WalkEnd::VolumeEdge => "end of volume",
            WalkEnd::SliceLimit => "end of range",
            WalkEnd::ObjectGone => "object gone",
        }
    }
}

/// Whether no object is on a reported slice: each one's object score is <= 0 (the model judges
/// it absent) or none of its logits is above 0 (an empty mask after thresholding).
pub fn objects_absent(objects: &[ObjectLogits]) -> bool {
    objects.iter().all(|o| o.object_score <= 0.0 || o.logits.iter().all(|&l| l <= 0.0))
}

/// SAM2's `_apply_non_overlapping_constraints`: at each pixel, every object but the one with
/// the highest logit (the first of equals) has its logit lowered to at most -10.
pub fn apply_non_overlapping_constraints(objects: &mut [ObjectLogits]) {
    const SUPPRESSED: f32 = -10.0;
    if objects.len() < 2 {
        return;
    }
    let pixels = objects.iter().map(|o| o.logits.len()).min().unwrap_or(0);
    for p in 0..pixels {
        let mut best = 0;
        for (i, o) in objects.iter().enumerate().skip(1) {
            if o.logits[p] > objects[best].logits[p] {
                best = i;
            }
        }
        for (i, o) in objects.iter_mut().enumerate() {
            if i != best {
                o.logits[p] = o.logits[p].min(SUPPRESSED);
            }
        }
    }
}

/// How a propagation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// The walk is complete: `slices` processed, the last of them `last` (`None` when the walk
    /// had no slice, as backward from slice 0), stopped for `end`.
    Finished { slices: usize, last: Option<usize>, end: WalkEnd },
    /// The cancel flag was seen after `slices` slices; those outputs are kept, and the state
    /// is as if the run had been asked to stop there.
    Cancelled { slices: usize },
}

/// Stored outputs by slice index.
type FrameOutputs = BTreeMap<usize, StoredFrame>;

/// Prompts and temporary outputs of one object.
#[derive(Debug)]
struct ObjectState {
    id: u32,
    points: BTreeMap<usize, PointPrompt>,
    masks: BTreeMap<usize, Tensor>,
    temp_cond: BTreeMap<usize, StoredFrame>,
    temp_non_cond: BTreeMap<usize, StoredFrame>,
}

impl ObjectState {
    fn new(id: u32) -> Self {
        Self {
            id,
            points: BTreeMap::new(),
            masks: BTreeMap::new(),
            temp_cond: BTreeMap::new(),
            temp_non_cond: BTreeMap::new(),
        }
    }

    fn temp(&self, is_cond: bool) -> &BTreeMap<usize, StoredFrame> {
        if is_cond { &self.temp_cond } else { &self.temp_non_cond }
    }

    fn temp_mut(&mut self, is_cond: bool) -> &mut BTreeMap<usize, StoredFrame> {
        if is_cond { &mut self.temp_cond } else { &mut self.temp_non_cond }
    }
}

/// Image features of encoded slices, oldest dropped first past a byte budget. The position
/// encoding is the same for every slice and kept once.
#[derive(Debug)]
struct FeatureCache {
    entries: HashMap<usize, Arc<FrameFeatures>>,
    order: VecDeque<usize>,
    bytes: usize,
    budget: usize,
    shared_pos: Option<Tensor>,
    encoder_runs: usize,
}

impl FeatureCache {
    fn new(budget: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), bytes: 0, budget, shared_pos: None, encoder_runs: 0 }
    }

    fn entry_bytes(features: &FrameFeatures) -> usize {
        let pos = &features.vision_pos;
        features.size_in_bytes() - pos.elem_count() * pos.dtype().size_in_bytes()
    }

    fn get(&self, index: usize) -> Option<Arc<FrameFeatures>> {
        self.entries.get(&index).cloned()
    }

    fn contains(&self, index: usize) -> bool {
        self.entries.contains_key(&index)
    }

    fn insert(&mut self, index: usize, mut features: FrameFeatures) -> Arc<FrameFeatures> {
        match &self.shared_pos {
            Some(pos) => features.vision_pos = pos.clone(),
            None => self.shared_pos = Some(features.vision_pos.clone()),
        }
        let features = Arc::new(features);
        let size = Self::entry_bytes(&features);
        self.evict_to(self.budget.saturating_sub(size));
        if size <= self.budget {
            self.entries.insert(index, features.clone());
            self.order.push_back(index);
            self.bytes += size;
        }
        features
    }

    /// Drops the oldest entries until at most `bytes` are held.
    fn evict_to(&mut self, bytes: usize) {
        while self.bytes > bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(old) = self.entries.remove(&oldest) {
                self.bytes -= Self::entry_bytes(&old);
            }
        }
    }
}

/// SAM2's (legacy) video predictor over the slices of one volume.
#[derive(Debug)]
pub struct VolumePredictor {
    model: Arc<Sam2Base>,
    slices: Arc<ModelSlices>,
    device: Device,
    /// Shared with the predictors `fork` made.
    features: Arc<Mutex<FeatureCache>>,
    objects: Vec<ObjectState>,
    cond: BTreeMap<usize, StoredFrame>,
    non_cond: BTreeMap<usize, StoredFrame>,
    consolidated_cond: BTreeSet<usize>,
    consolidated_non_cond: BTreeSet<usize>,
    /// Slices tracked so far, with the direction they were tracked in (true = reverse).
    tracked: BTreeMap<usize, bool>,
    tracking_started: bool,
    /// The memories the last tracking step attended to, prepared for the next one.
    memory_cache: MemoryKeyCache,
}

impl VolumePredictor {
    /// A predictor over `slices` (prepared at the model's input size) running `model` on
    /// `device` (where the model's weights live).
    pub fn new(model: Arc<Sam2Base>, slices: Arc<ModelSlices>, device: Device) -> Result<Self, PredictorError> {
        let config = model.config();
        if slices.is_empty() {
            return Err(PredictorError::EmptyVolume);
        }
        if slices.image_size() != config.image_size {
            return Err(PredictorError::ImageSize { model: config.image_size, slices: slices.image_size() });
        }
        let features = Arc::new(Mutex::new(FeatureCache::new(DEFAULT_FEATURE_CACHE_BYTES)));
        Ok(Self::with_cache(model, slices, device, features))
    }

    fn with_cache(model: Arc<Sam2Base>, slices: Arc<ModelSlices>, device: Device, features: Arc<Mutex<FeatureCache>>) -> Self {
        Self {
            model,
            slices,
            device,
            features,
            objects: Vec::new(),
            cond: BTreeMap::new(),
            non_cond: BTreeMap::new(),
            consolidated_cond: BTreeSet::new(),
            consolidated_non_cond: BTreeSet::new(),
            tracked: BTreeMap::new(),
            tracking_started: false,
            memory_cache: MemoryKeyCache::new(),
        }
    }

    /// A predictor over the same slices that shares this one's feature cache and nothing else:
    /// no prompts, objects or outputs (as after `reset`). The two can run at the same time.
    pub fn fork(&self) -> Self {
        Self::with_cache(self.model.clone(), self.slices.clone(), self.device.clone(), Arc::clone(&self.features))
    }

    fn cache(&self) -> MutexGuard<'_, FeatureCache> {
        // A panic while holding the lock leaves a consistent cache: every update is one insert
        // or removal.
        self.features.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the feature cache's byte budget (dropping the oldest entries now if needed).
    pub fn set_feature_cache_budget(&mut self, bytes: usize) {
        let mut cache = self.cache();
        cache.budget = bytes;
        cache.evict_to(bytes);
    }

    pub fn model(&self) -> &Arc<Sam2Base> {
        &self.model
    }

    pub fn slices(&self) -> &ModelSlices {
        &self.slices
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// Always false: a predictor needs slices.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Object ids in the order they were added.
    pub fn object_ids(&self) -> Vec<u32> {
        self.objects.iter().map(|o| o.id).collect()
    }

    /// How many times the image encoder ran since the predictor was made.
    pub fn encoder_runs(&self) -> usize {
        self.cache().encoder_runs
    }

    /// Slices whose features are cached, and the bytes they take.
    pub fn cached_features(&self) -> (usize, usize) {
        let cache = self.cache();
        (cache.entries.len(), cache.bytes)
    }

    /// The stored output of slice `index` (all objects as the batch) and whether it is a
    /// conditioning slice; `None` before it was prompted and propagated, or tracked.
    pub fn stored_output(&self, index: usize) -> Option<(&StoredFrame, bool)> {
        self.cond.get(&index).map(|f| (f, true)).or_else(|| self.non_cond.get(&index).map(|f| (f, false)))
    }

    /// `reset_state`: forgets every prompt, output and object; cached features stay.
    pub fn reset(&mut self) {
        self.objects.clear();
        self.cond.clear();
        self.non_cond.clear();
        self.consolidated_cond.clear();
        self.consolidated_non_cond.clear();
        self.tracked.clear();
        self.tracking_started = false;
        self.memory_cache = MemoryKeyCache::new();
    }

    fn check_slice(&self, index: usize) -> Result<(), PredictorError> {
        let count = self.slices.len();
        if index >= count {
            return Err(PredictorError::NoSuchSlice { index, count });
        }
        Ok(())
    }

    fn object_index(&mut self, id: u32) -> Result<usize, PredictorError> {
        if let Some(i) = self.objects.iter().position(|o| o.id == id) {
            return Ok(i);
        }
        if self.tracking_started {
            return Err(PredictorError::ObjectAfterTracking(id));
        }
        self.objects.push(ObjectState::new(id));
        Ok(self.objects.len() - 1)
    }

    /// Image features of slice `index` for a batch of `batch` objects, from the cache or the
    /// encoder.
    fn slice_features(&mut self, index: usize, batch: usize) -> Result<FrameFeatures, PredictorError> {
        let cached = self.cache().get(index);
        let features = match cached {
            Some(f) => f,
            None => {
                let encoded = self.encode_slice(index)?;
                self.store_features(index, encoded)
            }
        };
        Ok(features.expand(batch)?)
    }

    /// Runs the image encoder on slice `index` (the caller caches the result).
    fn encode_slice(&self, index: usize) -> Result<FrameFeatures, PredictorError> {
        let s = self.slices.image_size();
        let input = self
            .slices
            .model_input(index)
            .ok_or(PredictorError::NoSuchSlice { index, count: self.slices.len() })?;
        let image = Tensor::from_vec(input, (1, 3, s, s), &self.device)?;
        let encoded = self.model.forward_image(&image)?;
        let uses_high_res = self.model.mask_decoder().uses_high_res_features();
        Ok(FrameFeatures::from_encoder(&encoded, uses_high_res)?)
    }

    fn store_features(&self, index: usize, features: FrameFeatures) -> Arc<FrameFeatures> {
        let mut cache = self.cache();
        cache.encoder_runs += 1;
        cache.insert(index, features)
    }

    /// Object `index`'s own slice of the stored outputs (`output_dict_per_obj`).
    fn object_outputs(&self, index: usize) -> Result<(FrameOutputs, FrameOutputs), PredictorError> {
        let slice = |map: &FrameOutputs| -> Result<FrameOutputs, PredictorError> {
            map.iter().map(|(&t, f)| Ok((t, f.object(index)?))).collect()
        };
        Ok((slice(&self.cond)?, slice(&self.non_cond)?))
    }

    /// `_run_single_frame_inference`: one tracking step, its memory in storage precision and
    /// its low-resolution logits with small holes filled.
    #[allow(clippy::too_many_arguments)]
    fn run_single_frame(
        &self,
        features: &FrameFeatures,
        bank: MemoryBank,
        index: usize,
        is_init_cond_frame: bool,
        points: Option<&PointPrompt>,
        mask_inputs: Option<&Tensor>,
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Option<&Tensor>,
    ) -> Result<StoredFrame, PredictorError> {
        let batch = features.vision_features.dim(0)?;
        let out = self.model.track_step(&TrackStepInput {
            frame_idx: index,
            is_init_cond_frame,
            features,
            points,
            mask_inputs,
            bank,
            memory_cache: &self.memory_cache,
            num_frames: self.slices.len(),
            track_in_reverse: reverse,
            run_mem_encoder,
            prev_sam_mask_logits,
        })?;
        let pred_masks = self.fill_holes(&out.pred_masks)?;
        let selected_mask_token = if out.selected_mask_token.is_empty() {
            vec![None; batch]
        } else {
            out.selected_mask_token.iter().map(|&t| Some(t)).collect()
        };
        Ok(StoredFrame {
            maskmem_features: out.maskmem_features,
            maskmem_pos_enc: out.maskmem_pos_enc,
            pred_masks,
            obj_ptr: out.obj_ptr,
            object_score_logits: out.object_score_logits,
            selected_mask_token,
        })
    }

    /// `fill_holes_in_mask_scores` on `[B, 1, L, L]` logits when `fill_hole_area` > 0.
    fn fill_holes(&self, masks: &Tensor) -> Result<Tensor, PredictorError> {
        let area = self.model.config().fill_hole_area;
        if area == 0 {
            return Ok(masks.clone());
        }
        let (b, _, h, w) = masks.dims4()?;
        let mut values: Vec<f32> = masks.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for plane in values.chunks_mut(h * w) {
            fill_small_holes(plane, (w, h), area)?;
        }
        Ok(Tensor::from_vec(values, (b, 1, h, w), masks.device())?)
    }

    /// Model-pixel point prompt of a slice-pixel prompt, appended to `old` when given.
    fn point_prompt(&self, prompt: &PointsOrBox, old: Option<&PointPrompt>) -> Result<PointPrompt, PredictorError> {
        let size = self.slices.slice_size();
        let s = self.slices.image_size();
        let mut coords = Vec::new();
        let mut labels = Vec::new();
        if let Some(b) = prompt.bbox {
            coords.push(point_to_model([b[0], b[1]], size, s));
            coords.push(point_to_model([b[2], b[3]], size, s));
            labels.extend(BOX_CORNER_LABELS);
        }
        coords.extend(prompt.points.iter().map(|&p| point_to_model(p, size, s)));
        labels.extend(&prompt.labels);
        let new = PointPrompt::from_points(&coords, &labels, &self.device)?;
        Ok(match old {
            Some(old) => PointPrompt {
                coords: Tensor::cat(&[&old.coords, &new.coords], 1)?,
                labels: Tensor::cat(&[&old.labels, &new.labels], 1)?,
            },
            None => new,
        })
    }

    /// `add_new_points_or_box`: clicks and/or a box for object `object_id` on slice `index`.
    /// Returns the slice's logits for every object.
    pub fn add_new_points_or_box(
        &mut self,
        index: usize,
        object_id: u32,
        prompt: &PointsOrBox,
    ) -> Result<SliceResult, PredictorError> {
        self.check_slice(index)?;
        if prompt.points.len() != prompt.labels.len() {
            return Err(PredictorError::PointsWithoutLabels { points: prompt.points.len(), labels: prompt.labels.len() });
        }
        if prompt.points.is_empty() && prompt.bbox.is_none() {
            return Err(PredictorError::EmptyPrompt);
        }
        if let Some(&bad) = prompt.labels.iter().find(|&&l| l != 0 && l != 1) {
            return Err(PredictorError::BadLabel(bad));
        }
        if prompt.bbox.is_some() && !prompt.clear_old_points {
            return Err(PredictorError::BoxKeepingOldPoints);
        }
        let obj = self.object_index(object_id)?;
        let old = if prompt.clear_old_points { None } else { self.objects[obj].points.get(&index) };
        let points = self.point_prompt(prompt, old)?;
        self.objects[obj].points.insert(index, points.clone());
        self.objects[obj].masks.remove(&index);
        self.run_prompted(index, obj, Some(&points), None)
    }

    /// `add_new_mask`: a mask (slice size, x fastest, non-zero = inside) for object
    /// `object_id` on slice `index`.
    pub fn add_new_mask(&mut self, index: usize, object_id: u32, mask: &[u8]) -> Result<SliceResult, PredictorError> {
        self.check_slice(index)?;
        let (width, height) = self.slices.slice_size();
        if mask.len() != width * height {
            return Err(PredictorError::MaskSize { actual: mask.len(), width, height });
        }
        let obj = self.object_index(object_id)?;
        let s = self.slices.image_size();
        let values: Vec<f32> = mask.iter().map(|&m| if m != 0 { 1.0 } else { 0.0 }).collect();
        let mut mask_input = Tensor::from_vec(values, (1, 1, height, width), &self.device)?;
        if (width, height) != (s, s) {
            mask_input = resize_bilinear_antialiased(&mask_input, (s, s))?.ge(0.5)?.to_dtype(DType::F32)?;
        }
        self.objects[obj].masks.insert(index, mask_input.clone());
        self.objects[obj].points.remove(&index);
        self.run_prompted(index, obj, None, Some(&mask_input))
    }

    /// The common tail of `add_new_points_or_box` and `add_new_mask`: run the slice for one
    /// object against its own memory and keep the result as a temporary output.
    fn run_prompted(
        &mut self,
        index: usize,
        obj: usize,
        points: Option<&PointPrompt>,
        mask: Option<&Tensor>,
    ) -> Result<SliceResult, PredictorError> {
        let is_init_cond_frame = !self.tracked.contains_key(&index);
        let reverse = self.tracked.get(&index).copied().unwrap_or(false);
        let is_cond = is_init_cond_frame || self.model.config().add_all_frames_to_correct_as_cond;
        let (cond, non_cond) = self.object_outputs(obj)?;
        let prev_sam_mask_logits = match points {
            Some(_) => self.objects[obj]
                .temp(is_cond)
                .get(&index)
                .or_else(|| cond.get(&index))
                .or_else(|| non_cond.get(&index))
                .map(|prev| prev.pred_masks.clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP))
                .transpose()?,
            None => None,
        };
        let features = self.slice_features(index, 1)?;
        let bank = MemoryBank { cond_frames: &cond, non_cond_frames: &non_cond };
        let out = self.run_single_frame(
            &features,
            bank,
            index,
            is_init_cond_frame,
            points,
            mask,
            reverse,
            false,
            prev_sam_mask_logits.as_ref(),
        )?;
        self.objects[obj].temp_mut(is_cond).insert(index, out);
        let logits = (0..self.objects.len())
            .map(|i| self.latest_object_output(i, index, is_cond))
            .collect::<Result<Vec<_>, _>>()?;
        let objects = self.objects_logits(logits.iter().map(|o| o.as_ref()))?;
        Ok(SliceResult { index, done: 1, total: 1, recomputed: true, objects })
    }

    /// Object `obj`'s most recent output on a slice: temporary, else stored.
    fn latest_object_output(&self, obj: usize, index: usize, is_cond: bool) -> Result<Option<StoredFrame>, PredictorError> {
        if let Some(out) = self.objects[obj].temp(is_cond).get(&index) {
            return Ok(Some(out.clone()));
        }
        match self.stored_output(index) {
            Some((frame, _)) => Ok(Some(frame.object(obj)?)),
            None => Ok(None),
        }
    }

    /// Slice-size logits of each object from its (batch-of-one) output, `NO_OBJ_SCORE` where
    /// an object has none; with `non_overlap_masks`, only the highest-scoring object keeps its
    /// logits at each pixel (`_get_orig_video_res_output`).
    fn objects_logits<'a>(&self, outputs: impl Iterator<Item = Option<&'a StoredFrame>>) -> Result<Vec<ObjectLogits>, PredictorError> {
        let mut objects = self.objects_logits_overlapping(outputs)?;
        if self.model.config().non_overlap_masks {
            apply_non_overlapping_constraints(&mut objects);
        }
        Ok(objects)
    }

    fn objects_logits_overlapping<'a>(&self, outputs: impl Iterator<Item = Option<&'a StoredFrame>>) -> Result<Vec<ObjectLogits>, PredictorError> {
        let (width, height) = self.slices.slice_size();
        outputs
            .zip(&self.objects)
            .map(|(out, obj)| {
                let Some(out) = out else {
                    return Ok(ObjectLogits {
                        object_id: obj.id,
                        logits: vec![NO_OBJ_SCORE; width * height],
                        object_score: ABSENT_OBJECT_SCORE,
                    });
                };
                let (_, _, h, w) = out.pred_masks.dims4()?;
                let low: Vec<f32> = out.pred_masks.flatten_all()?.to_vec1()?;
                let object_score = out.object_score_logits.flatten_all()?.to_vec1::<f32>()?[0];
                Ok(ObjectLogits { object_id: obj.id, logits: resize_bilinear(&low, (w, h), (width, height))?, object_score })
            })
            .collect()
    }

    /// The pointer of an empty mask on slice `index` (`_get_empty_mask_ptr`), `[1, C]`.
    fn empty_mask_ptr(&mut self, index: usize) -> Result<Tensor, PredictorError> {
        let s = self.slices.image_size();
        let empty = Tensor::zeros((1, 1, s, s), DType::F32, &self.device)?;
        let none = BTreeMap::new();
        let bank = MemoryBank { cond_frames: &none, non_cond_frames: &none };
        let features = self.slice_features(index, 1)?;
        let out = self.model.track_step(&TrackStepInput {
            frame_idx: index,
            is_init_cond_frame: true,
            features: &features,
            points: None,
            mask_inputs: Some(&empty),
            bank,
            memory_cache: &self.memory_cache,
            num_frames: self.slices.len(),
            track_in_reverse: false,
            run_mem_encoder: false,
            prev_sam_mask_logits: None,
        })?;
        Ok(out.obj_ptr)
    }

    /// `_consolidate_temp_output_across_obj` at low resolution, with the memory encoder run on
    /// the consolidated masks (as clicked slices: binarized).
    fn consolidate(&mut self, index: usize, is_cond: bool) -> Result<StoredFrame, PredictorError> {
        let batch = self.objects.len();
        let e4 = self.model.config().image_size / 4;
        let mut masks = Vec::with_capacity(batch);
        let mut ptrs = Vec::with_capacity(batch);
        let mut scores = Vec::with_capacity(batch);
        let mut tokens = Vec::with_capacity(batch);
        for obj in 0..batch {
            match self.latest_object_output(obj, index, is_cond)? {
                Some(out) => {
                    masks.push(out.pred_masks);
                    ptrs.push(out.obj_ptr);
                    scores.push(out.object_score_logits);
                    tokens.push(out.selected_mask_token.first().copied().flatten());
                }
                None => {
                    masks.push(Tensor::full(NO_OBJ_SCORE, (1, 1, e4, e4), &self.device)?);
                    ptrs.push(self.empty_mask_ptr(index)?);
                    scores.push(Tensor::full(ABSENT_OBJECT_SCORE, (1, 1), &self.device)?);
                    tokens.push(None);
                }
            }
        }
        let pred_masks = Tensor::cat(&masks, 0)?;
        let obj_ptr = Tensor::cat(&ptrs, 0)?;
        let object_score_logits = Tensor::cat(&scores, 0)?;
        let s = self.model.config().image_size;
        let high_res = pred_masks.upsample_bilinear2d(s, s, false)?;
        let features = self.slice_features(index, batch)?;
        let memory = self.model.encode_new_memory(&features.vision_features, &high_res, &object_score_logits, true)?;
        Ok(StoredFrame {
            maskmem_features: Some(crate::model::sam2::to_storage_precision(&memory.features)?),
            maskmem_pos_enc: Some(memory.pos_enc),
            pred_masks,
            obj_ptr,
            object_score_logits,
            selected_mask_token: tokens,
        })
    }

    /// Whether tracking slice `index` will run the image encoder: its features are not cached
    /// and no prompt already produced its output.
    fn needs_encoding(&self, index: usize) -> bool {
        !self.cache().contains(index)
            && !self.consolidated_cond.contains(&index)
            && !self.consolidated_non_cond.contains(&index)
    }

    /// `_clear_non_cond_mem_around_input`.
    fn clear_non_cond_memory_around(&mut self, index: usize) {
        let config = self.model.config();
        let reach = config.memory_temporal_stride_for_eval * config.num_maskmem;
        let range = index.saturating_sub(reach)..=index + reach;
        self.non_cond.retain(|t, _| !range.contains(t));
    }

    fn clears_non_cond_memory(&self) -> bool {
        let config = self.model.config();
        config.clear_non_cond_mem_around_input && (config.clear_non_cond_mem_for_multi_obj || self.objects.len() <= 1)
    }

    /// `propagate_in_video_preflight`: consolidates the temporary outputs into the memory bank.
    fn preflight(&mut self) -> Result<(), PredictorError> {
        self.tracking_started = true;
        for is_cond in [false, true] {
            let frames: BTreeSet<usize> = self.objects.iter().flat_map(|o| o.temp(is_cond).keys().copied()).collect();
            for &index in &frames {
                let out = self.consolidate(index, is_cond)?;
                if is_cond {
                    self.cond.insert(index, out);
                    self.consolidated_cond.insert(index);
                } else {
                    self.non_cond.insert(index, out);
                    self.consolidated_non_cond.insert(index);
                }
                if self.clears_non_cond_memory() {
                    self.clear_non_cond_memory_around(index);
                }
            }
            for obj in &mut self.objects {
                obj.temp_mut(is_cond).clear();
            }
        }
        let cond: Vec<usize> = self.cond.keys().copied().collect();
        for index in &cond {
            self.non_cond.remove(index);
        }
        for index in &self.consolidated_cond {
            self.consolidated_non_cond.remove(index);
        }
        Ok(())
    }

    /// `propagate_in_video`: tracks every object along `walk` (see [`Walk`]). Each slice is
    /// reported through `on_slice` when done; `cancel` is checked before each slice.
    pub fn propagate(
        &mut self,
        walk: &Walk,
        cancel: &AtomicBool,
        mut on_slice: impl FnMut(SliceResult),
    ) -> Result<Propagation, PredictorError> {
        let Walk { start, max_slices, reverse, stop_after_empty } = *walk;
        if let Some(start) = start {
            self.check_slice(start)?;
        }
        // Checked before the preflight, which would lock the object list (the reference
        // locks it and then fails).
        if self.cond.is_empty() && self.objects.iter().all(|o| o.temp_cond.is_empty()) {
            return Err(PredictorError::NoPrompts);
        }
        self.preflight()?;
        let Some(&first_cond) = self.cond.keys().next() else {
            return Err(PredictorError::NoPrompts);
        };
        let n = self.slices.len();
        let start = start.unwrap_or(first_cond);
        let max = max_slices.unwrap_or(n);
        let order: Vec<usize> = if reverse {
            let end = start.saturating_sub(max);
            if start > 0 { (end..=start).rev().collect() } else { Vec::new() }
        } else {
            let end = (start + max).min(n - 1);
            (start..=end).collect()
        };
        let batch = self.objects.len();
        let clear = self.clears_non_cond_memory();
        let total = order.len();
        // Consecutive slices, up to this one, on which no object is present.
        let mut empty_run = 0;
        for (done, &index) in order.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(Propagation::Cancelled { slices: done });
            }
            let recomputed = if self.consolidated_cond.contains(&index) {
                if clear {
                    self.clear_non_cond_memory_around(index);
                }
                false
            } else if self.consolidated_non_cond.contains(&index) {
                false
            } else {
                let features = self.slice_features(index, batch)?;
                // The next slice's image encoder runs alongside this slice's tracking step: it
                // does not depend on it, and it keeps both cores busy through the step's
                // serial stretches. Not when an empty slice here would end the walk: the
                // object is fading, and the next slice is likely never needed.
                let may_end_here = stop_after_empty > 0 && empty_run + 1 == stop_after_empty;
                let next = order
                    .get(done + 1)
                    .copied()
                    .filter(|&next| !may_end_here && self.needs_encoding(next));
                let bank = MemoryBank { cond_frames: &self.cond, non_cond_frames: &self.non_cond };
                let (out, encoded) = rayon::join(
                    || self.run_single_frame(&features, bank, index, false, None, None, reverse, true, None),
                    || next.map(|next| self.encode_slice(next).map(|f| (next, f))).transpose(),
                );
                if let Some((next, f)) = encoded? {
                    self.store_features(next, f);
                }
                self.non_cond.insert(index, out?);
                true
            };
            self.tracked.insert(index, reverse);
            let Some((frame, _)) = self.stored_output(index) else {
                return Err(PredictorError::MissingOutput(index));
            };
            let per_object = (0..batch).map(|i| frame.object(i)).collect::<Result<Vec<_>, _>>()?;
            let objects = self.objects_logits(per_object.iter().map(Some))?;
            empty_run = if objects_absent(&objects) { empty_run + 1 } else { 0 };
            on_slice(SliceResult { index, done: done + 1, total, recomputed, objects });
            if stop_after_empty > 0 && empty_run >= stop_after_empty {
                return Ok(Propagation::Finished { slices: done + 1, last: Some(index), end: WalkEnd::ObjectGone });
            }
        }
        let last = order.last().copied();
        let edge = if reverse { 0 } else { n - 1 };
        let end = if last.is_none_or(|l| l == edge) { WalkEnd::VolumeEdge } else { WalkEnd::SliceLimit };
        Ok(Propagation::Finished { slices: total, last, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_highest_object_keeps_its_logit() {
        let object = |id, logits: Vec<f32>| ObjectLogits { object_id: id, logits, object_score: 1.0 };
        let mut objects = vec![object(1, vec![3.0, -20.0, 2.0, 5.0]), object(2, vec![4.0, -30.0, 2.0, -12.0])];
        apply_non_overlapping_constraints(&mut objects);
        assert_eq!(objects[0].logits, [-10.0, -20.0, 2.0, 5.0]);
        assert_eq!(objects[1].logits, [4.0, -30.0, -10.0, -12.0]);
        let mut single = vec![object(1, vec![3.0])];
        apply_non_overlapping_constraints(&mut single);
        assert_eq!(single[0].logits, [3.0]);
    }

    #[test]
    fn predictor_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<VolumePredictor>();
    }
}
