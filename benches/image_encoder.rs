//! Image-encoder throughput: the MedSAM2 t512 encoder (Hiera-tiny + FPN) on one 512x512 slice,
//! with seeded random weights, on the CPU.

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use medsam_viewer::model::checkpoint::{Checkpoint, RandomWeights};
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::image_encoder::ImageEncoder;

fn t512_slice(c: &mut Criterion) {
    let device = Device::Cpu;
    let config = Sam2Config::default_t512();
    let weights = Checkpoint::random(RandomWeights::new(0));
    let encoder = ImageEncoder::new(
        weights.var_builder(&device).pp("image_encoder"),
        &config.model.image_encoder,
    )
    .expect("t512 image encoder");
    let side = config.model.image_size;
    // A smooth synthetic slice in the normalised intensity range.
    let pixels: Vec<f32> = (0..3 * side * side)
        .map(|i| {
            let (y, x) = ((i / side) % side, i % side);
            ((x as f32 * 0.05).sin() + (y as f32 * 0.03).cos()) * 1.2
        })
        .collect();
    let image = Tensor::from_vec(pixels, (1, 3, side, side), &device).expect("input slice");
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    group.bench_function("image_encoder_t512", |b| {
        b.iter(|| encoder.forward(&image).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, t512_slice);
criterion_main!(benches);
