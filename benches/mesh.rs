//! Criterion benchmarks of the mesh hot paths: marching cubes of a label (a bumpy ball in a
//! mostly empty CT-sized slab, and the same ball filling its grid), Taubin smoothing, quadric
//! decimation and the metrics (watertightness sort included).

use criterion::{Criterion, criterion_group, criterion_main};
use medsam_viewer::mesh::{self, MeshMetrics};
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::hint::black_box;

/// A bumpy ball of radius about `r` voxels centred in a `dims` grid, 0.78 x 0.78 x 1.25 mm.
fn bumpy_ball(dims: [usize; 3], r: f64) -> Volume {
    let [nx, ny, nz] = dims;
    let c = dims.map(|d| d as f64 / 2.0);
    let mut data = vec![0u8; nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let d = [i as f64 - c[0], j as f64 - c[1], k as f64 - c[2]];
                let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                let bump = 1.0 + 0.06 * (d[1].atan2(d[0]) * 4.0).cos() * (d[2] / len.max(1e-9) * 5.0).sin();
                data[i + nx * (j + ny * k)] = (len <= r * bump) as u8;
            }
        }
    }
    let g = Geometry::new(dims, [0.78, 0.78, 1.25], [0.0; 3]);
    Volume::new(g, 1, VoxelBuffer::U8(data), VolumeMeta::default()).expect("valid volume")
}

fn benches(c: &mut Criterion) {
    let sparse = bumpy_ball([512, 512, 120], 50.0);
    c.bench_function("marching_cubes_ball_r50_in_512x512x120", |b| {
        b.iter(|| mesh::label_surface(black_box(&sparse), 1).expect("label 1"))
    });
    let dense = bumpy_ball([128, 128, 128], 60.0);
    c.bench_function("marching_cubes_ball_r60_in_128cube", |b| b.iter(|| mesh::label_surface(black_box(&dense), 1).expect("label 1")));
    let surface = mesh::label_surface(&dense, 1).expect("label 1");
    c.bench_function("taubin_10_iterations", |b| {
        b.iter(|| {
            let mut m = surface.clone();
            mesh::taubin_smooth(&mut m, 10, mesh::TAUBIN_LAMBDA, mesh::TAUBIN_MU);
            m
        })
    });
    c.bench_function("metrics", |b| b.iter(|| MeshMetrics::of(black_box(&surface))));
    let mut group = c.benchmark_group("slow");
    group.sample_size(10);
    group.bench_function("decimate_to_10_percent", |b| {
        b.iter(|| mesh::decimate(black_box(&surface), surface.triangle_count() / 10).expect("closed"))
    });
    group.finish();
}

criterion_group!(mesh_benches, benches);
criterion_main!(mesh_benches);
