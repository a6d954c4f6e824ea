//! Criterion benchmarks of the measurement hot paths on a 256 x 256 x 128 CT-like volume with
//! two organ-sized labels: the label pass, the intensity pass, the distance transform, and the
//! whole `measure` with and without a reference.

use criterion::{Criterion, criterion_group, criterion_main};
use medsam_viewer::measure::distance_transform::squared_distance_to;
use medsam_viewer::measure::{MeasureOptions, intensity, label_stats, measure, plane};
use medsam_viewer::volume::{Geometry, SliceAxis, Volume, VolumeMeta, VoxelBuffer};
use std::hint::black_box;

/// Image, label map and a reference (the labels shifted one voxel along x).
fn volumes() -> (Volume, Volume, Volume) {
    let g = Geometry::new([256, 256, 128], [1.4, 1.4, 2.5], [0.0; 3]);
    let [nx, ny, nz] = g.dims;
    let mut labels = vec![0u8; g.voxel_count()];
    let mut values = vec![-1000i16; g.voxel_count()];
    let ellipsoid = |p: [f64; 3], c: [f64; 3], r: [f64; 3]| (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum::<f64>() <= 1.0;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = [i as f64, j as f64, k as f64];
                let n = g.linear_index([i, j, k]);
                values[n] = (((i * 7 + j * 13 + k * 3) % 61) as i16) - 30;
                if ellipsoid(p, [100.0, 120.0, 60.0], [60.0, 45.0, 40.0]) {
                    labels[n] = 1;
                } else if ellipsoid(p, [190.0, 150.0, 70.0], [20.0, 22.0, 25.0]) {
                    labels[n] = 2;
                }
            }
        }
    }
    let mut shifted = vec![0u8; labels.len()];
    shifted[1..].copy_from_slice(&labels[..labels.len() - 1]);
    let vol = |data| Volume::new(g.clone(), 1, data, VolumeMeta::default()).unwrap();
    (vol(VoxelBuffer::I16(values)), vol(VoxelBuffer::U8(labels)), vol(VoxelBuffer::U8(shifted)))
}

fn benches(c: &mut Criterion) {
    let (image, labels, reference) = volumes();
    let dims = image.geometry.dims;
    let mask = labels.frame::<u8>(0).unwrap();
    let values = image.frame::<i16>(0).unwrap();
    let mut group = c.benchmark_group("measure_256x256x128");
    group.sample_size(10);
    let steps = plane::index_steps(&image.geometry);
    group.bench_function("label_pass", |b| b.iter(|| label_stats::accumulate(black_box(mask), dims, &steps, SliceAxis::Axial)));
    group.bench_function("intensity_pass", |b| b.iter(|| intensity::by_label(black_box(mask), values, dims[0] * dims[1])));
    let feature: Vec<bool> = mask.iter().map(|&l| l == 1).collect();
    group.bench_function("distance_transform", |b| b.iter(|| squared_distance_to(dims, image.geometry.spacing, black_box(&feature))));
    group.bench_function("measure", |b| b.iter(|| measure(&image, black_box(&labels), None, &MeasureOptions::default()).unwrap()));
    group.bench_function("measure_with_reference", |b| b.iter(|| measure(&image, black_box(&labels), Some(&reference), &MeasureOptions::default()).unwrap()));
    group.finish();
}

criterion_group!(measure_benches, benches);
criterion_main!(measure_benches);
