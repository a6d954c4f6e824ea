//! MedSAM2's RECIST-to-3D run for one lesion (`medsam2_infer_CT_lesion_npz_recist.py`): the
//! key slice prompted with the line's box or points, that answer (logits > 0) given back as a
//! mask prompt on the same slice, propagation from it to the end of the volume, a reset, the
//! same mask prompt again and propagation back to the start. The lesion's voxels are those any
//! of these slices' logits put above 0; unlike the 3D CT script there is no largest-component
//! step. [`label_volume`] lays the lesions into one label map, later labels over earlier ones.
//!
//! The reference runs the two passes one after the other; here they run at the same time on
//! the predictor and a fork of it (they share nothing but the slice features, as in
//! `pipeline::segment_box`).

use crate::segment::pipeline::PipelineError;
use crate::segment::postprocess::mark_foreground;
use crate::segment::predictor::{
    PointsOrBox, PredictorError, Propagation, SliceResult, VolumePredictor, Walk,
};
use crate::volume::SliceAxis;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

/// The object id of the lesion being segmented (the script's obj_id=1).
const LESION_OBJECT: u32 = 1;

/// The key slice's prompt, in slice pixels.
#[derive(Clone, Debug, PartialEq)]
pub enum LesionPrompt {
    /// (x0, y0, x1, y1), inclusive.
    Box([usize; 4]),
    /// Positive clicks (x, y).
    Points(Vec<[f32; 2]>),
}

/// Segments one lesion on a predictor over the axial slices of a volume of `dims`: a 0/1 mask
/// per voxel (x fastest). `on_slice` hears of each finished slice.
pub fn segment_lesion(
    predictor: &mut VolumePredictor,
    dims: [usize; 3],
    slice: usize,
    prompt: &LesionPrompt,
    cancel: &AtomicBool,
    on_slice: impl FnMut(&SliceResult) + Send,
) -> Result<Vec<u8>, PipelineError> {
    let axis = SliceAxis::Axial;
    if slice >= dims[2] {
        return Err(PipelineError::KeySliceOutOfRange {
            slice,
            count: dims[2],
            axis,
        });
    }
    predictor.reset();
    let request = match prompt {
        LesionPrompt::Box(bbox) => PointsOrBox::bbox(bbox.map(|c| c as f32)),
        LesionPrompt::Points(points) => PointsOrBox::clicks(points.clone(), vec![1; points.len()]),
    };
    let answer = predictor.add_new_points_or_box(slice, LESION_OBJECT, &request)?;
    let mask_prompt: Vec<u8> = answer.objects[0]
        .logits
        .iter()
        .map(|&l| u8::from(l > 0.0))
        .collect();
    let key = predictor.add_new_mask(slice, LESION_OBJECT, &mask_prompt)?;

    let mut mask = vec![0u8; dims.iter().product()];
    mark_foreground(&mut mask, dims, axis, key.index, &key.objects[0].logits)?;
    let mut backward = predictor.fork();
    backward.reset();
    backward.add_new_mask(slice, LESION_OBJECT, &mask_prompt)?;

    let sink = Mutex::new((mask, None, on_slice));
    let run =
        |predictor: &mut VolumePredictor, reverse: bool| -> Result<Propagation, PredictorError> {
            let walk = Walk {
                start: Some(slice),
                reverse,
                ..Walk::default()
            };
            predictor.propagate(&walk, cancel, |result| {
                let mut guard = sink.lock().unwrap_or_else(PoisonError::into_inner);
                let (mask, failure, on_slice) = &mut *guard;
                if let Err(e) =
                    mark_foreground(mask, dims, axis, result.index, &result.objects[0].logits)
                {
                    failure.get_or_insert(e);
                }
                on_slice(&result);
            })
        };
    let (forward, reverse) = rayon::join(|| run(predictor, false), || run(&mut backward, true));
    predictor.reset();
    for outcome in [forward?, reverse?] {
        if let Propagation::Cancelled { .. } = outcome {
            return Err(PipelineError::Cancelled);
        }
    }
    let (mask, failure, _) = sink.into_inner().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(mask)
}

/// Lays lesion masks (0/1 per voxel) into a label map, in the order given: where two
/// overlap, the later label wins, as the script's successive assignments do.
pub fn label_volume(voxels: usize, lesions: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut labels = vec![0u8; voxels];
    for (label, mask) in lesions {
        for (out, &m) in labels.iter_mut().zip(mask) {
            if m != 0 {
                *out = *label;
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_labels_cover_earlier_ones() {
        let lesions = [(1u8, vec![1, 1, 0, 0]), (4u8, vec![0, 1, 1, 0])];
        assert_eq!(label_volume(4, &lesions), [1, 4, 4, 0]);
    }
}
