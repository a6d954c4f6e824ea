//! MedSAM2's one-call 3D segmentation (`medsam2_infer_3D_CT.py`): a box on a key slice,
//! propagation to the end of the volume, reset, the same box again, propagation back to the
//! start, then (logits > 0) of both passes OR-ed and reduced to the largest 26-connected
//! component, as a 0/1 mask in the image's voxel order (x fastest) whatever the slice axis.
//!
//! Box pixels are the slice's own coordinates, inclusive: (i, j) for axial, (i, k) coronal and
//! (j, k) sagittal slices; they reach the predictor as they are, as MedSAM2 passes its box.
//!
//! Beyond the reference, the passes can be bounded ([`PassBounds`]): to a slice range, and to
//! end after K consecutive slices without the object, so that the work grows with the lesion
//! rather than with the volume. The default bounds are the reference's (whole volume, no stop),
//! and the key slice's answer to the prompt is reported before either pass starts.

use crate::model::sam2::Sam2Base;
use crate::segment::postprocess::{keep_largest_component, mark_foreground, MaskShapeError};
use crate::segment::predictor::{PointsOrBox, PredictorError, Propagation, SliceResult, VolumePredictor, Walk, WalkEnd};
use crate::segment::preprocess::{ModelSlices, PreprocessError, SliceRequest};
use crate::volume::{SliceAxis, Volume, VolumeMeta, VoxelBuffer, Window};
use candle_core::Device;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

/// The object id the pipeline segments.
const PIPELINE_OBJECT: u32 = 1;

/// The prompt: a box on one slice along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxPrompt {
    pub axis: SliceAxis,
    /// Key slice index along `axis`.
    pub slice: usize,
    /// (x0, y0, x1, y1) in slice pixels, inclusive.
    pub bbox: [usize; 4],
}

/// A click refining the box's answer on the key slice, in slice pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Click {
    pub point: [f32; 2],
    /// Inside the object (true) or not.
    pub positive: bool,
}

/// One run of the pipeline: the box, the clicks that refined its answer on the key slice (in
/// the order they were made), and how far the passes go.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxRun {
    pub prompt: BoxPrompt,
    pub clicks: Vec<Click>,
    pub bounds: PassBounds,
}

impl BoxRun {
    /// MedSAM2's run: the box alone, the whole volume.
    pub fn reference(prompt: BoxPrompt) -> Self {
        Self { prompt, clicks: Vec::new(), bounds: PassBounds::default() }
    }
}

/// Which part of the run a reported slice comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassDirection {
    /// The key slice's answer to the prompt, reported before either pass starts (the passes
    /// report the same slice again, with the same logits).
    KeySlice,
    Forward,
    Backward,
}

/// The interactive default for ending a pass: this many consecutive slices without the object.
/// (The command line's default is 0, the reference's whole volume.)
pub const INTERACTIVE_STOP_AFTER_EMPTY: usize = 3;

/// How far the two passes may go. The default is the reference's: the whole volume, no stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassBounds {
    /// First and last slice (inclusive) the passes may reach; `None`: the whole volume.
    pub range: Option<[usize; 2]>,
    /// Each pass ends after this many consecutive slices without the object (0: never).
    pub stop_after_empty: usize,
}

impl PassBounds {
    /// Checks the bounds for passes from slice `key` among `count` slices along `axis`: the
    /// range lies in the volume and holds the key slice.
    pub fn check(&self, key: usize, count: usize, axis: SliceAxis) -> Result<(), PipelineError> {
        let Some([first, last]) = self.range else { return Ok(()) };
        if first > last || last >= count {
            return Err(PipelineError::BadRange { first, last, count, axis });
        }
        if !(first..=last).contains(&key) {
            return Err(PipelineError::KeySliceOutsideRange { slice: key, first, last });
        }
        Ok(())
    }

    /// The first and last slice of a volume of `count` slices that the passes may reach.
    pub fn slice_range(&self, count: usize) -> [usize; 2] {
        self.range.unwrap_or([0, count.saturating_sub(1)])
    }

    /// How many slices of a volume of `count` slices the passes may reach.
    pub fn slice_count(&self, count: usize) -> usize {
        let [first, last] = self.slice_range(count);
        (last + 1).saturating_sub(first)
    }

    /// The walk of one pass from slice `key` (inside the range) over `count` slices.
    pub fn walk(&self, key: usize, count: usize, reverse: bool) -> Walk {
        let [first, last] = self.slice_range(count);
        Walk {
            start: Some(key),
            max_slices: Some(if reverse { key.saturating_sub(first) } else { last.saturating_sub(key) }),
            reverse,
            stop_after_empty: self.stop_after_empty,
        }
    }
}

/// Where one pass stopped and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassReport {
    /// Slices the pass visited, the key slice included.
    pub slices: usize,
    /// The last slice it visited (`None`: it had none, as backward from slice 0).
    pub last: Option<usize>,
    pub end: WalkEnd,
}

impl PassReport {
    /// The report of a finished propagation; `None` when it was cancelled.
    pub fn of(outcome: Propagation) -> Option<Self> {
        match outcome {
            Propagation::Finished { slices, last, end } => Some(PassReport { slices, last, end }),
            Propagation::Cancelled { .. } => None,
        }
    }

    /// `{"slices": n, "last_slice": k, "stopped": "object gone"}` for JSON summaries.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "slices": self.slices, "last_slice": self.last, "stopped": self.end.describe() })
    }

    /// "to slice 37 (object gone)" for status lines.
    pub fn describe(&self) -> String {
        match self.last {
            Some(last) => format!("to slice {last} ({})", self.end.describe()),
            None => format!("no slice ({})", self.end.describe()),
        }
    }
}

/// Why the pipeline did not produce a mask.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("key slice {slice} is out of range: the volume has {count} {axis} slices (0..{count})", axis = axis.name())]
    KeySliceOutOfRange { slice: usize, count: usize, axis: SliceAxis },
    #[error("the slice range {first}..={last} is not FIRST <= LAST within the {count} {axis} slices (0..{count})", axis = axis.name())]
    BadRange { first: usize, last: usize, count: usize, axis: SliceAxis },
    #[error("the key slice {slice} is outside the slice range {first}..={last}")]
    KeySliceOutsideRange { slice: usize, first: usize, last: usize },
    #[error("the box {bbox:?} is empty: it needs X0 < X1 and Y0 < Y1")]
    EmptyBox { bbox: [usize; 4] },
    #[error("the box {bbox:?} reaches outside the {width} x {height} {axis} slice (pixels 0..{width}, 0..{height})", axis = axis.name())]
    BoxOutside { bbox: [usize; 4], width: usize, height: usize, axis: SliceAxis },
    #[error("the predictor holds {count} {axis} slices of {width} x {height}, which is not a volume of dims {dims:?}", axis = axis.name())]
    AxisMismatch { dims: [usize; 3], axis: SliceAxis, count: usize, width: usize, height: usize },
    #[error("segmentation cancelled")]
    Cancelled,
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Predictor(#[from] PredictorError),
    #[error(transparent)]
    Shape(#[from] MaskShapeError),
}

/// Slice-size logits of each slice a pass visited, in visiting order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassLogits {
    pub forward: Vec<(usize, Vec<f32>)>,
    pub backward: Vec<(usize, Vec<f32>)>,
}

/// The pipeline's mask and what it took.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineResult {
    /// 0/1 per voxel, x fastest, `dims`.
    pub mask: Vec<u8>,
    pub dims: [usize; 3],
    /// Foreground voxels kept.
    pub voxels: usize,
    /// 26-connected components before keeping the largest.
    pub components: usize,
    /// Where the forward and the backward pass stopped.
    pub forward: PassReport,
    pub backward: PassReport,
    /// Each pass's logits, when asked for.
    pub logits: Option<PassLogits>,
}

/// A label map of `labels` (one u8 per voxel, x fastest) on `image`'s grid: same geometry, and
/// the image's NIfTI qform/sform so that a NIfTI writer puts them back exactly.
pub fn label_map_on(image: &Volume, labels: Vec<u8>) -> Volume {
    Volume {
        geometry: image.geometry.clone(),
        timepoints: 1,
        data: VoxelBuffer::U8(labels),
        meta: VolumeMeta { nifti_transform: image.meta.nifti_transform.clone(), ..Default::default() },
    }
}

/// Parses a box "X0,Y0,X1,Y1": four non-negative integers (spaces allowed).
pub fn parse_box(text: &str) -> Result<[usize; 4], String> {
    parse_indices(text).ok_or_else(|| format!("{text:?} is not X0,Y0,X1,Y1 (four non-negative integers)"))
}

/// Parses a slice range "FIRST,LAST": two non-negative integers (spaces allowed).
pub fn parse_range(text: &str) -> Result<[usize; 2], String> {
    parse_indices(text).ok_or_else(|| format!("{text:?} is not FIRST,LAST (two non-negative slice indices)"))
}

/// Exactly N comma-separated non-negative integers.
fn parse_indices<const N: usize>(text: &str) -> Option<[usize; N]> {
    let values: Vec<usize> = text.split(',').map(|x| x.trim().parse::<usize>()).collect::<Result<_, _>>().ok()?;
    values.try_into().ok()
}

/// Checks bounds against a prompt on a volume of `dims`: the range lies in the volume and holds
/// the key slice.
pub fn check_bounds(bounds: &PassBounds, prompt: &BoxPrompt, dims: [usize; 3]) -> Result<(), PipelineError> {
    bounds.check(prompt.slice, dims[prompt.axis.normal()], prompt.axis)
}

/// Checks a box prompt against the slices of a volume of `dims`.
pub fn check_prompt(prompt: &BoxPrompt, dims: [usize; 3]) -> Result<(), PipelineError> {
    let axis = prompt.axis;
    let count = dims[axis.normal()];
    if prompt.slice >= count {
        return Err(PipelineError::KeySliceOutOfRange { slice: prompt.slice, count, axis });
    }
    let (u, v) = axis.in_plane();
    let (width, height) = (dims[u], dims[v]);
    let [x0, y0, x1, y1] = prompt.bbox;
    if x1 >= width || y1 >= height || x0 >= width || y0 >= height {
        return Err(PipelineError::BoxOutside { bbox: prompt.bbox, width, height, axis });
    }
    if x0 >= x1 || y0 >= y1 {
        return Err(PipelineError::EmptyBox { bbox: prompt.bbox });
    }
    Ok(())
}

/// A predictor over `volume`'s slices along `axis`, windowed to `window` (see
/// `GreyLevels::for_data` for `None`), for `model` on `device`.
pub fn predictor_for(
    model: Arc<Sam2Base>,
    volume: &Volume,
    axis: SliceAxis,
    window: Option<Window>,
    device: Device,
) -> Result<VolumePredictor, PipelineError> {
    let request = SliceRequest { axis, window, timepoint: 0, image_size: model.config().image_size };
    let slices = Arc::new(ModelSlices::prepare(volume, &request)?);
    Ok(VolumePredictor::new(model, slices, device)?)
}

/// The key slice's answer to a box and the clicks after it, on a reset `predictor`: the box
/// (the slice is encoded unless its features are cached), then each click in turn added to the
/// slice's earlier ones, each of which runs only the prompt encoder and mask decoder. The
/// viewer's preview is this call; `segment_box` starts with it, so Run continues from exactly
/// the previewed answer.
pub fn key_slice_answer(predictor: &mut VolumePredictor, prompt: &BoxPrompt, clicks: &[Click]) -> Result<SliceResult, PipelineError> {
    predictor.reset();
    let mut answer = predictor.add_new_points_or_box(prompt.slice, PIPELINE_OBJECT, &PointsOrBox::bbox(prompt.bbox.map(|c| c as f32)))?;
    for click in clicks {
        let refine = PointsOrBox { clear_old_points: false, ..PointsOrBox::clicks(vec![click.point], vec![i64::from(click.positive)]) };
        answer = predictor.add_new_points_or_box(prompt.slice, PIPELINE_OBJECT, &refine)?;
    }
    Ok(answer)
}

/// Runs MedSAM2's box-to-mask pipeline on `predictor` (built over a volume of `dims` along
/// the prompt's axis), each pass within the run's bounds. The predictor is reset before and
/// after. The key slice's answer is reported first, then every finished slice with its pass
/// (the two passes' slices interleave); `cancel` is checked between slices.
///
/// MedSAM2 runs the passes one after the other with a reset between them: they share nothing
/// but the slice features. Here they run at the same time, on `predictor` and a fork of it
/// sharing its feature cache, so that each pass's serial stretches (small operations between
/// the large products) leave the cores to the other pass.
pub fn segment_box(
    predictor: &mut VolumePredictor,
    dims: [usize; 3],
    run: &BoxRun,
    keep_logits: bool,
    cancel: &AtomicBool,
    on_slice: impl FnMut(PassDirection, &SliceResult) + Send,
) -> Result<PipelineResult, PipelineError> {
    let BoxRun { prompt, clicks, bounds } = run;
    let axis = prompt.axis;
    let (u, v) = axis.in_plane();
    let slices = predictor.slices();
    if slices.axis() != axis || slices.len() != dims[axis.normal()] || slices.slice_size() != (dims[u], dims[v]) {
        let (width, height) = slices.slice_size();
        return Err(PipelineError::AxisMismatch { dims, axis: slices.axis(), count: slices.len(), width, height });
    }
    check_prompt(prompt, dims)?;
    check_bounds(bounds, prompt, dims)?;
    let mut sink = PassSink {
        mask: vec![0u8; dims.iter().product()],
        logits: keep_logits.then(PassLogits::default),
        failure: None,
        on_slice,
    };
    // The key slice's answer is shown at once; the fork finds the slice's features cached.
    let key = key_slice_answer(predictor, prompt, clicks)?;
    sink.record(PassDirection::KeySlice, &key, dims, axis);
    let mut backward = predictor.fork();
    key_slice_answer(&mut backward, prompt, clicks)?;

    let sink = Mutex::new(sink);
    let count = dims[axis.normal()];
    let run = |predictor: &mut VolumePredictor, direction: PassDirection| {
        let walk = bounds.walk(prompt.slice, count, direction == PassDirection::Backward);
        predictor.propagate(&walk, cancel, |result| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).record(direction, &result, dims, axis)
        })
    };
    let (forward, backward) = rayon::join(
        || run(predictor, PassDirection::Forward),
        || run(&mut backward, PassDirection::Backward),
    );
    predictor.reset();
    let sink = sink.into_inner().unwrap_or_else(PoisonError::into_inner);
    let report = |outcome| PassReport::of(outcome).ok_or(PipelineError::Cancelled);
    let (forward, backward) = (report(forward?)?, report(backward?)?);
    if let Some(e) = sink.failure {
        return Err(e.into());
    }
    let mut mask = sink.mask;
    let kept = keep_largest_component(&mut mask, dims)?;
    Ok(PipelineResult {
        mask,
        dims,
        voxels: kept.voxels,
        components: kept.components,
        forward,
        backward,
        logits: sink.logits,
    })
}

/// What the two passes of `segment_box` write to, one slice at a time.
struct PassSink<F> {
    /// The OR of both passes' foreground.
    mask: Vec<u8>,
    logits: Option<PassLogits>,
    /// The first slice whose logits did not fit the volume.
    failure: Option<MaskShapeError>,
    on_slice: F,
}

impl<F: FnMut(PassDirection, &SliceResult)> PassSink<F> {
    fn record(&mut self, direction: PassDirection, result: &SliceResult, dims: [usize; 3], axis: SliceAxis) {
        let object = &result.objects[0];
        if let Err(e) = mark_foreground(&mut self.mask, dims, axis, result.index, &object.logits) {
            self.failure.get_or_insert(e);
        }
        if let Some(store) = self.logits.as_mut() {
            let list = match direction {
                PassDirection::KeySlice => None,
                PassDirection::Forward => Some(&mut store.forward),
                PassDirection::Backward => Some(&mut store.backward),
            };
            if let Some(list) = list {
                list.push((result.index, object.logits.clone()));
            }
        }
        (self.on_slice)(direction, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_parse_from_four_integers() {
        assert_eq!(parse_box("33,33,73,68"), Ok([33, 33, 73, 68]));
        assert_eq!(parse_box(" 1, 2 ,3,4"), Ok([1, 2, 3, 4]));
        for bad in ["1,2,3", "1,2,3,4,5", "-1,2,3,4", "1.5,2,3,4", ""] {
            assert!(parse_box(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_parse_and_must_hold_the_key_slice() {
        assert_eq!(parse_range("2, 6"), Ok([2, 6]));
        for bad in ["2", "2,3,4", "-1,3", "a,b", ""] {
            assert!(parse_range(bad).is_err(), "{bad:?}");
        }
        let dims = [112, 96, 8];
        let prompt = BoxPrompt { axis: SliceAxis::Axial, slice: 4, bbox: [33, 33, 73, 68] };
        let bounds = |range| PassBounds { range, stop_after_empty: 0 };
        assert!(check_bounds(&bounds(None), &prompt, dims).is_ok());
        assert!(check_bounds(&bounds(Some([0, 7])), &prompt, dims).is_ok());
        assert!(check_bounds(&bounds(Some([4, 4])), &prompt, dims).is_ok());
        assert!(matches!(check_bounds(&bounds(Some([0, 8])), &prompt, dims), Err(PipelineError::BadRange { count: 8, .. })));
        assert!(matches!(check_bounds(&bounds(Some([5, 3])), &prompt, dims), Err(PipelineError::BadRange { .. })));
        assert!(matches!(check_bounds(&bounds(Some([5, 7])), &prompt, dims), Err(PipelineError::KeySliceOutsideRange { slice: 4, .. })));
    }

    #[test]
    fn box_prompts_are_checked_per_axis() {
        let dims = [112, 96, 8];
        let axial = |slice, bbox| BoxPrompt { axis: SliceAxis::Axial, slice, bbox };
        assert!(check_prompt(&axial(4, [33, 33, 73, 68]), dims).is_ok());
        assert!(check_prompt(&axial(0, [0, 0, 111, 95]), dims).is_ok());
        assert!(matches!(check_prompt(&axial(8, [33, 33, 73, 68]), dims), Err(PipelineError::KeySliceOutOfRange { count: 8, .. })));
        assert!(matches!(check_prompt(&axial(4, [33, 33, 112, 68]), dims), Err(PipelineError::BoxOutside { width: 112, .. })));
        assert!(matches!(check_prompt(&axial(4, [33, 33, 73, 96]), dims), Err(PipelineError::BoxOutside { height: 96, .. })));
        assert!(matches!(check_prompt(&axial(4, [73, 33, 33, 68]), dims), Err(PipelineError::EmptyBox { .. })));
        assert!(matches!(check_prompt(&axial(4, [33, 33, 73, 33]), dims), Err(PipelineError::EmptyBox { .. })));
        // Sagittal slices are (j, k) images: 96 wide, 8 high, 112 of them.
        let sagittal = BoxPrompt { axis: SliceAxis::Sagittal, slice: 111, bbox: [1, 1, 95, 7] };
        assert!(check_prompt(&sagittal, dims).is_ok());
        assert!(check_prompt(&BoxPrompt { bbox: [1, 1, 95, 8], ..sagittal }, dims).is_err());
        let coronal = BoxPrompt { axis: SliceAxis::Coronal, slice: 96, bbox: [1, 1, 5, 5] };
        assert!(matches!(check_prompt(&coronal, dims), Err(PipelineError::KeySliceOutOfRange { count: 96, .. })));
    }
}
