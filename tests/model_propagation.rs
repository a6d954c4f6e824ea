//! Parity of the volume predictor with PyTorch SAM2's legacy video predictor (MedSAM2's
//! `SAM2VideoPredictorNPZ`) on tests/fixtures/sam2-mini: scenario g (box on slice 4, forward
//! pass, reset, backward pass, OR, largest component) and scenario h (correction clicks on a
//! tracked slice, then re-propagation). Also: cached image features change nothing, and the
//! `.pt` and `.safetensors` copies of the weights give identical results.

use candle_core::{DType, Device, Tensor};
use medsam_viewer::model::checkpoint::Checkpoint;
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::sam2::Sam2Base;
use medsam_viewer::segment::postprocess::{keep_largest_component, mark_foreground};
use medsam_viewer::segment::predictor::{objects_absent, PointsOrBox, Propagation, SliceResult, VolumePredictor, Walk, WalkEnd};
use medsam_viewer::segment::preprocess::{ModelSlices, SliceRequest};
use medsam_viewer::volume::{Geometry, SliceAxis, Volume, VolumeMeta, VoxelBuffer};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
const LOGIT_TOL: f32 = 1e-3;
const KEY_SLICE: usize = 4;
const BOX: [f32; 4] = [33.0, 33.0, 73.0, 68.0];
const OBJECT: u32 = 1;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(format!("{FIXTURES}/{name}.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    tensors.get(name).unwrap_or_else(|| panic!("missing reference tensor {name}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn model(file: &str) -> Arc<Sam2Base> {
    let config = Sam2Config::from_file(format!("{FIXTURES}/config.yaml")).unwrap();
    let checkpoint = Checkpoint::open(format!("{FIXTURES}/{file}")).unwrap();
    let model = Sam2Base::new(checkpoint.var_builder(&Device::Cpu), &config).unwrap();
    checkpoint.finish().unwrap();
    Arc::new(model)
}

/// The fixture volume ([D, H, W] u8, slice-major) as an x-fastest volume of dims (W, H, D).
fn volume() -> Volume {
    let input = fixture("00_input");
    let raw = get(&input, "volume_u8");
    let dims = raw.dims().to_vec();
    let data: Vec<u8> = raw.flatten_all().unwrap().to_vec1().unwrap();
    let geometry = Geometry::new([dims[2], dims[1], dims[0]], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
    Volume::new(geometry, 1, VoxelBuffer::U8(data), VolumeMeta::default()).unwrap()
}

fn predictor(file: &str) -> VolumePredictor {
    let m = model(file);
    let request = SliceRequest { axis: SliceAxis::Axial, window: None, timepoint: 0, image_size: m.config().image_size };
    let slices = Arc::new(ModelSlices::prepare(&volume(), &request).unwrap());
    VolumePredictor::new(m, slices, Device::Cpu).unwrap()
}

/// One propagation's reports plus each slice's stored output, in yield order.
struct Pass {
    results: Vec<SliceResult>,
    low_res: Vec<Vec<f32>>,
    scores: Vec<f32>,
    tokens: Vec<Option<usize>>,
    memories: Vec<Vec<f32>>,
    obj_ptrs: Vec<Vec<f32>>,
}

fn propagate(p: &mut VolumePredictor, reverse: bool) -> Pass {
    let mut results = Vec::new();
    let walk = if reverse { Walk::backward() } else { Walk::forward() };
    let outcome = p.propagate(&walk, &AtomicBool::new(false), |r| results.push(r)).unwrap();
    let last = results.last().map(|r| r.index);
    assert_eq!(outcome, Propagation::Finished { slices: results.len(), last, end: WalkEnd::VolumeEdge });
    let mut pass = Pass { results, low_res: vec![], scores: vec![], tokens: vec![], memories: vec![], obj_ptrs: vec![] };
    for r in &pass.results {
        let (frame, _) = p.stored_output(r.index).unwrap();
        pass.low_res.push(f32s(&frame.pred_masks));
        pass.scores.push(f32s(&frame.object_score_logits)[0]);
        pass.tokens.push(frame.selected_mask_token[0]);
        pass.memories.push(f32s(frame.maskmem_features.as_ref().unwrap()));
        pass.obj_ptrs.push(f32s(&frame.obj_ptr));
    }
    pass
}

fn box_prompt(p: &mut VolumePredictor) -> SliceResult {
    p.add_new_points_or_box(KEY_SLICE, OBJECT, &PointsOrBox::bbox(BOX)).unwrap()
}

fn max_abs(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

/// bf16-stored memories: equal, or one bf16 step apart where the f32 inputs straddle a
/// rounding boundary.
fn assert_bf16_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let mut differing = 0;
    for (g, w) in got.iter().zip(want) {
        if g != w {
            differing += 1;
            assert!((g - w).abs() <= w.abs().max(f32::MIN_POSITIVE) / 128.0, "{what}: {g} vs {w}");
        }
    }
    assert!(differing * 100 <= want.len(), "{what}: {differing} values differ");
}

/// Checks a pass against the fixture's `{prefix}.*` tensors.
fn assert_pass_matches(prefix: &str, pass: &Pass, reference: &HashMap<String, Tensor>) {
    let r = |name: &str| get(reference, &format!("{prefix}.{name}"));
    let order: Vec<i64> = pass.results.iter().map(|s| s.index as i64).collect();
    assert_eq!(order, i64s(r("frame_order")), "{prefix} order");
    let recomputed: Vec<i64> = pass.results.iter().map(|s| s.recomputed as i64).collect();
    assert_eq!(recomputed, i64s(r("recomputed")), "{prefix} recomputed");
    let n = order.len();
    let rows = |name: &str| -> Vec<Vec<f32>> {
        let t = r(name);
        (0..n).map(|i| f32s(&t.narrow(0, i, 1).unwrap())).collect()
    };
    let (low, video, mem, ptr) = (rows("low_res_logits"), rows("video_res_logits"), rows("maskmem_features"), rows("obj_ptr"));
    let scores = f32s(r("object_score_logits"));
    let tokens = i64s(r("selected_mask_token"));
    for i in 0..n {
        let slice = pass.results[i].index;
        let what = format!("{prefix} slice {slice}");
        let e = max_abs(&pass.low_res[i], &low[i]);
        assert!(e <= LOGIT_TOL, "{what} low-res logits: {e}");
        let e = max_abs(&pass.results[i].objects[0].logits, &video[i]);
        assert!(e <= LOGIT_TOL, "{what} video-res logits: {e}");
        assert!((pass.scores[i] - scores[i]).abs() <= LOGIT_TOL, "{what} object score {} vs {}", pass.scores[i], scores[i]);
        assert!((pass.results[i].objects[0].object_score - scores[i]).abs() <= LOGIT_TOL);
        assert_eq!(pass.tokens[i].map(|t| t as i64), Some(tokens[i]), "{what} selected token");
        let e = max_abs(&pass.obj_ptrs[i], &ptr[i]);
        assert!(e <= 1e-4, "{what} object pointer: {e}");
        assert_bf16_close(&format!("{what} memory"), &pass.memories[i], &mem[i]);
        println!("{what}: ok");
    }
}

/// Binary volume (x fastest) from the passes' video-resolution logits.
fn or_mask(passes: &[&Pass], dims: [usize; 3]) -> Vec<u8> {
    let mut mask = vec![0u8; dims.iter().product()];
    for pass in passes {
        for r in &pass.results {
            mark_foreground(&mut mask, dims, SliceAxis::Axial, r.index, &r.objects[0].logits).unwrap();
        }
    }
    mask
}

/// Asserts `got` equals the fixture mask `want` except where every pass's reference logit is
/// within the tolerance of zero.
fn assert_mask_matches(what: &str, got: &[u8], want: &[u8], near_zero: &[bool]) {
    let mut exempt = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g != w {
            assert!(near_zero[i], "{what}: voxel {i} is {g}, reference {w}");
            exempt += 1;
        }
    }
    println!("{what}: identical apart from {exempt} near-zero voxels");
}

#[test]
fn scenario_g_bidirectional_propagation_matches_reference() {
    let reference = fixture("06_propagation");
    let mut p = predictor("model.safetensors");
    let key = box_prompt(&mut p);
    assert_eq!(key.index, KEY_SLICE);
    let forward = propagate(&mut p, false);
    assert_pass_matches("fwd", &forward, &reference);
    p.reset();
    assert!(p.object_ids().is_empty());
    box_prompt(&mut p);
    let backward = propagate(&mut p, true);
    assert_pass_matches("rev", &backward, &reference);
    assert_eq!(p.encoder_runs(), 8, "every slice encoded once: the cache served the rest");

    let dims = [112, 96, 8];
    let seg_or: Vec<u8> = get(&reference, "seg_or").flatten_all().unwrap().to_vec1().unwrap();
    let seg_lcc: Vec<u8> = get(&reference, "seg_lcc").flatten_all().unwrap().to_vec1().unwrap();
    let mut near_zero = vec![false; seg_or.len()];
    for (prefix, pass) in [("fwd", &forward), ("rev", &backward)] {
        let video = get(&reference, &format!("{prefix}.video_res_logits"));
        for (i, r) in pass.results.iter().enumerate() {
            let plane = f32s(&video.narrow(0, i, 1).unwrap());
            for (j, v) in plane.iter().enumerate() {
                if v.abs() < LOGIT_TOL {
                    near_zero[r.index * plane.len() + j] = true;
                }
            }
        }
    }
    let mut mask = or_mask(&[&forward, &backward], dims);
    assert_mask_matches("seg_or", &mask, &seg_or, &near_zero);
    let kept = keep_largest_component(&mut mask, dims).unwrap();
    assert_eq!(kept.voxels, seg_lcc.iter().filter(|&&v| v != 0).count());
    assert_mask_matches("seg_lcc", &mask, &seg_lcc, &near_zero);
}

#[test]
fn scenario_h_correction_clicks_and_repropagation_match_reference() {
    let g = fixture("06_propagation");
    let r = fixture("07_refine");
    let input = fixture("00_input");
    let mut p = predictor("model.safetensors");
    box_prompt(&mut p);
    let pass1 = propagate(&mut p, false);
    assert_pass_matches("fwd", &pass1, &g);

    let click_slice = i64s(get(&r, "click_slice"))[0] as usize;
    let xy = f32s(get(&input, "click_points_xy"));
    let labels = i64s(get(&input, "click_labels"));
    let clicks = PointsOrBox::clicks(vec![[xy[0], xy[1]], [xy[2], xy[3]]], labels);
    let clicked = p.add_new_points_or_box(click_slice, OBJECT, &clicks).unwrap();
    let e = max_abs(&clicked.objects[0].logits, &f32s(get(&r, "click.video_res_logits")));
    assert!(e <= LOGIT_TOL, "click video-res logits: {e}");
    let score = f32s(get(&r, "click.object_score_logits"))[0];
    assert!((clicked.objects[0].object_score - score).abs() <= LOGIT_TOL);

    let pass2 = propagate(&mut p, false);
    assert_pass_matches("pass2", &pass2, &r);
    let (frame, is_cond) = p.stored_output(click_slice).unwrap();
    assert!(!is_cond, "a corrected tracked slice stays a non-conditioning slice");
    let e = max_abs(&f32s(&frame.pred_masks), &f32s(get(&r, "click.pred_masks")));
    assert!(e <= LOGIT_TOL, "click pred_masks: {e}");
    assert_bf16_close(
        "click memory (binarized mask)",
        &f32s(frame.maskmem_features.as_ref().unwrap()),
        &f32s(get(&r, "click.maskmem_features_stored")),
    );
}

fn assert_same_pass(a: &Pass, b: &Pass) {
    assert_eq!(a.results, b.results);
    assert_eq!(a.low_res, b.low_res);
    assert_eq!(a.memories, b.memories);
    assert_eq!(a.obj_ptrs, b.obj_ptrs);
    assert_eq!(a.scores, b.scores);
}

#[test]
fn cached_features_give_bit_identical_repropagation() {
    let mut cached = predictor("model.safetensors");
    box_prompt(&mut cached);
    let first = propagate(&mut cached, false);
    let runs = cached.encoder_runs();
    cached.reset();
    box_prompt(&mut cached);
    let second = propagate(&mut cached, false);
    assert_eq!(cached.encoder_runs(), runs, "the second pass re-encoded nothing");
    assert_same_pass(&first, &second);

    // Without a cache every use re-encodes (as the reference does): the same bits.
    let mut uncached = predictor("model.safetensors");
    uncached.set_feature_cache_budget(0);
    box_prompt(&mut uncached);
    let fresh = propagate(&mut uncached, false);
    assert!(uncached.encoder_runs() > runs);
    assert_eq!(uncached.cached_features(), (0, 0));
    assert_same_pass(&first, &fresh);
}

#[test]
fn pt_and_safetensors_weights_give_identical_propagation() {
    let mut a = predictor("model.safetensors");
    let mut b = predictor("model.pt");
    assert_eq!(box_prompt(&mut a), box_prompt(&mut b));
    assert_same_pass(&propagate(&mut a, true), &propagate(&mut b, true));
}

#[test]
fn cancelled_propagation_keeps_a_consistent_state() {
    let mut p = predictor("model.safetensors");
    box_prompt(&mut p);
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let outcome = p
        .propagate(&Walk::forward(), &cancel, |r| {
            seen.push(r.index);
            if r.done == 2 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .unwrap();
    assert_eq!(outcome, Propagation::Cancelled { slices: 2 });
    assert_eq!(seen, vec![4, 5]);
    assert!(p.stored_output(5).is_some() && p.stored_output(6).is_none());
    // Resuming finishes the run with the same results as an uninterrupted one.
    let resumed = propagate(&mut p, false);
    let mut fresh = predictor("model.safetensors");
    box_prompt(&mut fresh);
    let full = propagate(&mut fresh, false);
    assert_eq!(resumed.results.iter().map(|r| r.index).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    assert_eq!(resumed.low_res, full.low_res);
    assert_eq!(resumed.results[2..], full.results[2..]);
}

/// A bounded walk: each reported slice and how it ended.
fn walk(p: &mut VolumePredictor, walk: &Walk) -> (Vec<SliceResult>, Propagation) {
    let mut seen = Vec::new();
    let outcome = p.propagate(walk, &AtomicBool::new(false), |r| seen.push(r)).unwrap();
    (seen, outcome)
}

#[test]
fn walks_end_where_the_object_ends_or_at_their_limit() {
    // The reference's backward pass: slice 2 (washed out) is the one judged to hold no object.
    let mut full = predictor("model.safetensors");
    box_prompt(&mut full);
    let (reference, outcome) = walk(&mut full, &Walk::backward());
    assert_eq!(outcome, Propagation::Finished { slices: 5, last: Some(0), end: WalkEnd::VolumeEdge });
    let absent: Vec<usize> = reference.iter().filter(|r| objects_absent(&r.objects)).map(|r| r.index).collect();
    assert_eq!(absent, [2], "only the washed-out slice holds no object");

    // Stopping after one empty slice ends the backward walk on slice 2, with the same results
    // up to there (and the slices beyond it never tracked).
    let mut bounded = predictor("model.safetensors");
    box_prompt(&mut bounded);
    let (seen, outcome) = walk(&mut bounded, &Walk { stop_after_empty: 1, ..Walk::backward() });
    assert_eq!(outcome, Propagation::Finished { slices: 3, last: Some(2), end: WalkEnd::ObjectGone });
    assert_eq!(seen, reference[..3]);
    assert!(bounded.stored_output(1).is_none() && bounded.stored_output(0).is_none());
    // Two empty slices in a row never occur, so K = 2 walks to the edge like K = 0.
    let mut two = predictor("model.safetensors");
    box_prompt(&mut two);
    let (seen, outcome) = walk(&mut two, &Walk { stop_after_empty: 2, ..Walk::backward() });
    assert_eq!((seen, outcome), (reference.clone(), Propagation::Finished { slices: 5, last: Some(0), end: WalkEnd::VolumeEdge }));

    // A slice limit ends the forward walk early, a limit past the edge at the edge.
    let mut limited = predictor("model.safetensors");
    box_prompt(&mut limited);
    let (seen, outcome) = walk(&mut limited, &Walk { max_slices: Some(2), ..Walk::forward() });
    assert_eq!(seen.iter().map(|s| s.index).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(outcome, Propagation::Finished { slices: 3, last: Some(6), end: WalkEnd::SliceLimit });
    let (_, outcome) = walk(&mut limited, &Walk { max_slices: Some(9), ..Walk::forward() });
    assert_eq!(outcome, Propagation::Finished { slices: 4, last: Some(7), end: WalkEnd::VolumeEdge });
}

#[test]
fn prompts_are_checked() {
    let mut p = predictor("model.safetensors");
    assert!(p.propagate(&Walk::forward(), &AtomicBool::new(false), |_| {}).is_err(), "no prompt yet");
    assert!(p.add_new_points_or_box(8, OBJECT, &PointsOrBox::bbox(BOX)).is_err(), "slice out of range");
    assert!(p.add_new_points_or_box(0, OBJECT, &PointsOrBox::default()).is_err(), "empty prompt");
    assert!(p.add_new_points_or_box(0, OBJECT, &PointsOrBox::clicks(vec![[1.0, 2.0]], vec![])).is_err());
    assert!(p.add_new_points_or_box(0, OBJECT, &PointsOrBox::clicks(vec![[1.0, 2.0]], vec![5])).is_err());
    assert!(p.add_new_mask(0, OBJECT, &[1, 0, 1]).is_err(), "mask of the wrong size");
    box_prompt(&mut p);
    propagate(&mut p, false);
    assert!(p.add_new_points_or_box(2, 7, &PointsOrBox::bbox(BOX)).is_err(), "new object after tracking");
}

#[test]
fn mask_prompt_is_taken_as_the_slice_output_and_propagates() {
    let mut p = predictor("model.safetensors");
    let (w, h) = (112usize, 96usize);
    let inside = |x: usize, y: usize| (30..80).contains(&x) && (30..70).contains(&y);
    let mask: Vec<u8> = (0..w * h).map(|i| inside(i % w, i / w) as u8).collect();
    let result = p.add_new_mask(KEY_SLICE, OBJECT, &mask).unwrap();
    let object = &result.objects[0];
    assert_eq!(object.object_score, 10.0, "a non-empty mask prompt means the object is present");
    assert!(object.logits[50 * w + 55] > 9.0 && object.logits[5 * w + 5] < -9.0);
    let pass = propagate(&mut p, false);
    assert_eq!(pass.results.iter().map(|r| r.index).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    assert_eq!(pass.tokens[0], None, "no decoder token for a mask taken as output");
    let (_, is_cond) = p.stored_output(KEY_SLICE).unwrap();
    assert!(is_cond);
}

#[test]
fn two_objects_are_tracked_as_one_batch() {
    let mut single = predictor("model.safetensors");
    box_prompt(&mut single);
    let alone = propagate(&mut single, false);
    let mut both = predictor("model.safetensors");
    box_prompt(&mut both);
    both.add_new_points_or_box(KEY_SLICE, 2, &PointsOrBox::bbox([10.0, 10.0, 40.0, 30.0])).unwrap();
    let pass = propagate(&mut both, false);
    assert_eq!(both.object_ids(), vec![1, 2]);
    for (a, b) in alone.results.iter().zip(&pass.results) {
        assert_eq!(b.objects.len(), 2);
        let e = max_abs(&a.objects[0].logits, &b.objects[0].logits);
        assert!(e <= 1e-4, "object 1 does not depend on object 2 (slice {}: {e})", a.index);
    }
}
