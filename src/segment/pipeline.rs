//! MedSAM2's one-call 3D segmentation (`medsam2_infer_3D_CT.py`): a box on a key slice,
//! propagation to the end of the volume, reset, the same box again, propagation back to the
//! start, then (logits > 0) of both passes OR-ed and reduced to the largest 26-connected
//! component, as a 0/1 mask in the image's voxel order (x fastest) whatever the slice axis.
//!
//! Box pixels are the slice's own coordinates, inclusive: (i, j) for axial, (i, k) coronal and
//! (j, k) sagittal slices; they reach the predictor as they are, as MedSAM2 passes its box.

use crate::model::sam2::Sam2Base;
use crate::segment::postprocess::{keep_largest_component, mark_foreground, MaskShapeError};
use crate::segment::predictor::{PointsOrBox, PredictorError, Propagation, SliceResult, VolumePredictor};
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

/// Which pass a reported slice belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassDirection {
    Forward,
    Backward,
}

/// Why the pipeline did not produce a mask.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("key slice {slice} is out of range: the volume has {count} {axis} slices (0..{count})", axis = axis.name())]
    KeySliceOutOfRange { slice: usize, count: usize, axis: SliceAxis },
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
    /// Slices visited by the forward and the backward pass.
    pub forward_slices: usize,
    pub backward_slices: usize,
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
    let values: Result<Vec<usize>, _> = text.split(',').map(|x| x.trim().parse::<usize>()).collect();
    match values {
        Ok(v) if v.len() == 4 => Ok([v[0], v[1], v[2], v[3]]),
        _ => Err(format!("{text:?} is not X0,Y0,X1,Y1 (four non-negative integers)")),
    }
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

/// Runs MedSAM2's box-to-mask pipeline on `predictor` (built over a volume of `dims` along
/// `prompt.axis`). The predictor is reset before and after. Every finished slice is reported
/// with its pass (the two passes' slices interleave); `cancel` is checked between slices.
///
/// MedSAM2 runs the passes one after the other with a reset between them: they share nothing
/// but the slice features. Here they run at the same time, on `predictor` and a fork of it
/// sharing its feature cache, so that each pass's serial stretches (small operations between
/// the large products) leave the cores to the other pass.
pub fn segment_box(
    predictor: &mut VolumePredictor,
    dims: [usize; 3],
    prompt: &BoxPrompt,
    keep_logits: bool,
    cancel: &AtomicBool,
    on_slice: impl FnMut(PassDirection, &SliceResult) + Send,
) -> Result<PipelineResult, PipelineError> {
    let axis = prompt.axis;
    let (u, v) = axis.in_plane();
    let slices = predictor.slices();
    if slices.axis() != axis || slices.len() != dims[axis.normal()] || slices.slice_size() != (dims[u], dims[v]) {
        let (width, height) = slices.slice_size();
        return Err(PipelineError::AxisMismatch { dims, axis: slices.axis(), count: slices.len(), width, height });
    }
    check_prompt(prompt, dims)?;
    let bbox = PointsOrBox::bbox(prompt.bbox.map(|c| c as f32));
    predictor.reset();
    // The first prompt encodes the key slice; the fork finds it cached.
    predictor.add_new_points_or_box(prompt.slice, PIPELINE_OBJECT, &bbox)?;
    let mut backward = predictor.fork();
    backward.add_new_points_or_box(prompt.slice, PIPELINE_OBJECT, &bbox)?;

    let sink = Mutex::new(PassSink {
        mask: vec![0u8; dims.iter().product()],
        logits: keep_logits.then(PassLogits::default),
        failure: None,
        on_slice,
    });
    let run = |predictor: &mut VolumePredictor, direction: PassDirection| {
        predictor.propagate(None, None, direction == PassDirection::Backward, cancel, |result| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).record(direction, &result, dims, axis)
        })
    };
    let (forward, backward) = rayon::join(
        || run(predictor, PassDirection::Forward),
        || run(&mut backward, PassDirection::Backward),
    );
    predictor.reset();
    let sink = sink.into_inner().unwrap_or_else(PoisonError::into_inner);
    let counts = match (forward?, backward?) {
        (Propagation::Finished { slices: f }, Propagation::Finished { slices: b }) => [f, b],
        _ => return Err(PipelineError::Cancelled),
    };
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
        forward_slices: counts[0],
        backward_slices: counts[1],
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
                PassDirection::Forward => &mut store.forward,
                PassDirection::Backward => &mut store.backward,
            };
            list.push((result.index, object.logits.clone()));
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
