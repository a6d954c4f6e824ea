//! Throughput of the per-frame SAM2 heads at MedSAM2 t512 sizes (C=256, M=64, 32x32 grid),
//! with seeded random weights, on the CPU: memory attention over a full memory bank (7 spatial
//! memories of 1024 tokens plus 16 object pointers of 4 tokens each), the memory encoder on a
//! 512x512 mask, and the SAM heads (prompt encoder + mask decoder + object pointer) of a tracked
//! frame.

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use medsam_viewer::cli::bench::smooth_pattern;
use medsam_viewer::model::checkpoint::{Checkpoint, RandomWeights};
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::sam2::Sam2Base;

fn pattern(shape: &[usize], phase: f32, device: &Device) -> Tensor {
    smooth_pattern(shape, phase, device).expect("pattern tensor")
}

fn t512_heads(c: &mut Criterion) {
    let device = Device::Cpu;
    let config = Sam2Config::default_t512();
    let m = &config.model;
    let weights = Checkpoint::random(RandomWeights::new(0));
    let model = Sam2Base::new(weights.var_builder(&device), &config).expect("t512 model");
    let (hidden, mem_dim, e) = (m.hidden_dim(), m.mem_dim(), m.image_embedding_size());
    let tokens = e * e;
    let memory_tokens = (m.num_maskmem * tokens) + m.max_obj_ptrs_in_encoder * (hidden / mem_dim);
    let pointer_tokens = m.max_obj_ptrs_in_encoder * (hidden / mem_dim);

    let curr = pattern(&[1, tokens, hidden], 0.0, &device);
    let curr_pos = pattern(&[1, tokens, hidden], 1.0, &device);
    let memory = pattern(&[1, memory_tokens, mem_dim], 2.0, &device);
    let memory_pos = pattern(&[1, memory_tokens, mem_dim], 3.0, &device);
    let pix_feat = pattern(&[1, hidden, e, e], 4.0, &device);
    let s0 = pattern(&[1, hidden / 8, 4 * e, 4 * e], 5.0, &device);
    let s1 = pattern(&[1, hidden / 4, 2 * e, 2 * e], 6.0, &device);
    let mask = pattern(&[1, 1, m.image_size, m.image_size], 7.0, &device).affine(8.0, 0.0).expect("mask");
    let score = Tensor::ones((1, 1), DType::F32, &device).expect("score");

    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    group.bench_function("memory_attention_t512_full_bank", |b| {
        b.iter(|| {
            model
                .memory_attention()
                .forward(&curr, &curr_pos, &memory, &memory_pos, pointer_tokens)
                .expect("memory attention")
        })
    });
    group.bench_function("memory_encoder_t512", |b| {
        b.iter(|| model.encode_new_memory(&pix_feat, &mask, &score, false).expect("memory encoder"))
    });
    group.bench_function("sam_heads_t512_tracking", |b| {
        b.iter(|| {
            model
                .forward_sam_heads(&pix_feat, None, None, Some((&s0, &s1)), true)
                .expect("SAM heads")
        })
    });
    group.finish();
}

criterion_group!(benches, t512_heads);
criterion_main!(benches);
