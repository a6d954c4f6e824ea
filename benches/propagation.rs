//! One tracked slice of a propagation at MedSAM2 t512 sizes with seeded random weights, on the
//! CPU: `track_step` with a full memory bank (a conditioning slice and the 6 most recent
//! slices as spatial memories, 16 object pointers) on cached image features, i.e. memory
//! selection and attention, SAM heads and the memory encoder (what a re-propagation costs per
//! slice); and the same step with the image encoder (a first propagation). As in a
//! propagation, the previous step has prepared all spatial memories but the newest one.

use candle_core::{Device, Tensor};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use medsam_viewer::cli::bench::smooth_pattern;
use medsam_viewer::model::checkpoint::{Checkpoint, RandomWeights};
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::memory_key_cache::MemoryKeyCache;
use medsam_viewer::model::sam2::{FrameFeatures, MemoryBank, Sam2Base, StoredFrame, TrackStepInput, to_storage_precision};
use std::collections::BTreeMap;

fn pattern(shape: &[usize], phase: f32, device: &Device) -> Tensor {
    smooth_pattern(shape, phase, device).expect("pattern tensor")
}

fn tracked_slice(c: &mut Criterion) {
    let device = Device::Cpu;
    let config = Sam2Config::default_t512();
    let m = &config.model;
    let weights = Checkpoint::random(RandomWeights::new(0));
    let model = Sam2Base::new(weights.var_builder(&device), &config).expect("t512 model");
    let (hidden, mem_dim, e, s) = (m.hidden_dim(), m.mem_dim(), m.image_embedding_size(), m.image_size);

    // Slice 0 prompted, slices 1..=15 tracked: slice 16 sees 1 + 6 spatial memories and
    // 16 pointers.
    let entry = |phase: f32| StoredFrame {
        maskmem_features: Some(to_storage_precision(&pattern(&[1, mem_dim, e, e], phase, &device)).expect("bf16")),
        maskmem_pos_enc: Some(pattern(&[1, mem_dim, e, e], 0.5, &device)),
        pred_masks: pattern(&[1, 1, 4 * e, 4 * e], phase + 0.1, &device),
        obj_ptr: pattern(&[1, hidden], phase + 0.2, &device),
        object_score_logits: Tensor::ones((1, 1), candle_core::DType::F32, &device).expect("score"),
        selected_mask_token: vec![Some(1)],
    };
    let cond: BTreeMap<usize, StoredFrame> = [(0, entry(0.0))].into();
    let non_cond: BTreeMap<usize, StoredFrame> = (1..16).map(|t| (t, entry(t as f32))).collect();
    let features = FrameFeatures {
        vision_features: pattern(&[1, hidden, e, e], 4.0, &device),
        vision_pos: pattern(&[1, hidden, e, e], 5.0, &device),
        high_res: Some((pattern(&[1, hidden / 8, 4 * e, 4 * e], 6.0, &device), pattern(&[1, hidden / 4, 2 * e, 2 * e], 7.0, &device))),
    };
    let unprepared = MemoryKeyCache::new();
    let input = TrackStepInput {
        frame_idx: 16,
        is_init_cond_frame: false,
        features: &features,
        points: None,
        mask_inputs: None,
        bank: MemoryBank { cond_frames: &cond, non_cond_frames: &non_cond },
        memory_cache: &unprepared,
        num_frames: 100,
        track_in_reverse: false,
        run_mem_encoder: true,
        prev_sam_mask_logits: None,
    };
    let plan = model.select_memory(16, input.bank, 100, false);
    assert_eq!((plan.spatial.len(), plan.pointers.len()), (7, 16), "a full memory bank");
    let image = pattern(&[1, 3, s, s], 8.0, &device);

    // What slice 15's step leaves prepared: slice 0 and slices 9..=14.
    let after_previous_step = || {
        let cache = MemoryKeyCache::new();
        model
            .prepare_memory_conditioned_features(15, false, &features, input.bank, &cache, 100, false)
            .expect("previous step");
        cache
    };

    let mut group = c.benchmark_group("propagation");
    group.sample_size(10);
    group.bench_function("tracked_slice_t512_cached_features", |b| {
        b.iter_batched(
            after_previous_step,
            |cache| model.track_step(&TrackStepInput { memory_cache: &cache, ..input }).expect("track step"),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("tracked_slice_t512_with_encoder", |b| {
        b.iter_batched(
            after_previous_step,
            |cache| {
                let encoded = model.forward_image(&image).expect("image encoder");
                let features = FrameFeatures::from_encoder(&encoded, true).expect("features");
                model.track_step(&TrackStepInput { features: &features, memory_cache: &cache, ..input }).expect("track step")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, tracked_slice);
criterion_main!(benches);
