//! Whole-path checks of the measurement module: analytic shapes against their formulas,
//! agreement metrics against hand-computed cases and a brute-force reference, the CT lesion
//! fixtures against what SimpleITK/numpy recorded, and the `stats` command line.

use medsam_viewer::io;
use medsam_viewer::measure::surface_distance::{Agreement, compare};
use medsam_viewer::measure::{MeasureError, MeasureOptions, measure};
use medsam_viewer::volume::{Geometry, SliceAxis, Volume, VolumeMeta, VoxelBuffer};
use std::path::{Path, PathBuf};

const PI: f64 = std::f64::consts::PI;

fn volume(g: &Geometry, data: VoxelBuffer) -> Volume {
    Volume::new(g.clone(), 1, data, VolumeMeta::default()).unwrap()
}

/// A label map with `label` wherever `inside(world position)` holds, and an image whose value
/// at each voxel is `value(i, j, k)`.
fn shape(g: &Geometry, label: u8, inside: impl Fn([f64; 3]) -> bool, value: impl Fn([usize; 3]) -> i16) -> (Volume, Volume) {
    let [nx, ny, nz] = g.dims;
    let mut labels = vec![0u8; g.voxel_count()];
    let mut values = vec![0i16; g.voxel_count()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let n = g.linear_index([i, j, k]);
                if inside(g.voxel_to_world([i as f64, j as f64, k as f64])) {
                    labels[n] = label;
                }
                values[n] = value([i, j, k]);
            }
        }
    }
    (volume(g, VoxelBuffer::I16(values)), volume(g, VoxelBuffer::U8(labels)))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[test]
fn sphere_matches_its_formulas() {
    let g = Geometry::new([36, 36, 36], [1.0; 3], [0.0; 3]);
    let c = [17.3, 16.8, 17.1];
    let r = 12.0;
    let (image, labels) = shape(&g, 1, |p| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() <= r * r, |ijk| ijk[0] as i16);
    let report = measure(&image, &labels, None, &MeasureOptions::default()).unwrap();
    assert_eq!(report.labels.len(), 1);
    let m = &report.labels[0];
    let volume_mm3 = 4.0 / 3.0 * PI * r.powi(3);
    assert!(close(m.volume_ml * 1000.0, volume_mm3, 0.01), "volume {} vs {volume_mm3}", m.volume_ml * 1000.0);
    for (got, want) in m.centroid_lps_mm.iter().zip(c) {
        assert!((got - want).abs() < 0.05, "centroid {:?}", m.centroid_lps_mm);
    }
    // Surface: Crofton within 2% of 4πr²; the voxel-face area overestimates by about 1.5x.
    let area = 4.0 * PI * r * r;
    assert!(close(m.surface_area_mm2, area, 0.02), "surface {} vs {area}", m.surface_area_mm2);
    assert!(m.voxel_face_area_mm2 > 1.4 * area && m.voxel_face_area_mm2 < 1.6 * area);
    // Bounding box: the extreme voxel along each axis is the first whose centre can be within
    // r of the centre, given the closest possible offsets along the two other axes.
    for a in 0..3 {
        let others: f64 = (0..3).filter(|&b| b != a).map(|b| (c[b] - c[b].round()).powi(2)).sum();
        let reach = (r * r - others).sqrt();
        assert_eq!(m.bbox_index[0][a], (c[a] - reach).ceil() as usize);
        assert_eq!(m.bbox_index[1][a], (c[a] + reach).floor() as usize);
        assert!((m.bbox_lps_mm[0][a] - m.bbox_index[0][a] as f64).abs() < 1e-9);
    }
    // Diameters on the largest axial slice, next to the centre: a circle of radius
    // sqrt(r² − dz²) there; edge-midpoint diameters are within a pixel of its diameter.
    let k = m.diameter_slice;
    assert!((k as f64 - c[2]).abs() < 1.5, "diameter slice {k}");
    let largest = m.slices.iter().map(|s| s.area_mm2).fold(0.0, f64::max);
    let on_k = m.slices.iter().find(|s| s.index == k).unwrap();
    assert_eq!(on_k.area_mm2, largest);
    let d = 2.0 * (r * r - (k as f64 - c[2]).powi(2)).sqrt();
    assert!((m.longest_diameter_mm - d).abs() < 1.0, "longest {} vs {d}", m.longest_diameter_mm);
    assert!((m.perpendicular_diameter_mm - d).abs() < 1.0, "perpendicular {} vs {d}", m.perpendicular_diameter_mm);
    // Per-slice perimeter and area there: Crofton on the 2D circle within 4%.
    assert!(close(on_k.perimeter_mm, PI * d, 0.04), "perimeter {} vs {}", on_k.perimeter_mm, PI * d);
    assert!(close(on_k.area_mm2, PI * d * d / 4.0, 0.03));
    // Intensity = i: the mean is the centroid's i.
    let i = m.intensity.unwrap();
    assert!((i.mean - m.centroid_lps_mm[0]).abs() < 1e-9);
    assert_eq!(i.min, m.bbox_index[0][0] as f64);
    assert_eq!(i.max, m.bbox_index[1][0] as f64);
}

#[test]
fn box_is_exact_where_a_box_allows() {
    let spacing = [0.8, 1.2, 2.5];
    let g = Geometry::new([30, 20, 12], spacing, [-10.0, 5.0, 40.0]);
    let (lo, hi) = ([4, 3, 2], [23, 14, 8]);
    let inside_index = |ijk: [usize; 3]| (0..3).all(|a| ijk[a] >= lo[a] && ijk[a] <= hi[a]);
    let [nx, ny, nz] = g.dims;
    let mut labels = vec![0u8; g.voxel_count()];
    let mut values = vec![0i16; g.voxel_count()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let n = g.linear_index([i, j, k]);
                if inside_index([i, j, k]) {
                    labels[n] = 3;
                    values[n] = if (i + j + k) % 2 == 0 { 10 } else { 30 };
                }
            }
        }
    }
    let labels = volume(&g, VoxelBuffer::U8(labels));
    let image = volume(&g, VoxelBuffer::I16(values));
    let m = measure(&image, &labels, None, &MeasureOptions { profile_axis: SliceAxis::Coronal }).unwrap().labels.remove(0);
    let n = [20.0, 12.0, 7.0];
    let side = [n[0] * spacing[0], n[1] * spacing[1], n[2] * spacing[2]];
    assert_eq!(m.label, 3);
    assert_eq!(m.voxels, 20 * 12 * 7);
    assert!(close(m.volume_ml, side[0] * side[1] * side[2] / 1000.0, 1e-12));
    assert_eq!(m.bbox_index, [lo, hi]);
    let near = |a: [f64; 3], b: [f64; 3]| (0..3).all(|c| (a[c] - b[c]).abs() < 1e-9);
    assert!(near(m.bbox_lps_mm[0], g.voxel_to_world([4.0, 3.0, 2.0])));
    assert!(near(m.bbox_lps_mm[1], g.voxel_to_world([23.0, 14.0, 8.0])));
    assert!(near(m.centroid_lps_mm, g.voxel_to_world([13.5, 8.5, 5.0])));
    let faces = 2.0 * (side[0] * side[1] + side[1] * side[2] + side[0] * side[2]);
    assert!(close(m.voxel_face_area_mm2, faces, 1e-12), "{} vs {faces}", m.voxel_face_area_mm2);
    // The 13-direction Crofton estimate is exact on average over orientations but not for
    // every plane: on this grid it measures x, y and z faces at 0.84, 0.91 and 0.87 of their
    // area (2 Σ w_d |u_d · n|), and it sees the box of voxel centres, one voxel smaller along
    // the diagonal directions.
    let ratio = m.surface_area_mm2 / faces;
    assert!(ratio > 0.80 && ratio < 0.90, "Crofton {} vs faces {faces}", m.surface_area_mm2);
    // Coronal profile: 12 slices (j = 3..=14) each of 20 x 7 pixels.
    assert_eq!(m.slices.len(), 12);
    assert_eq!(m.slices[0].index, 3);
    assert!(close(m.slices[0].area_mm2, side[0] * side[2], 1e-12));
    // Diameters on the largest axial slice: the rectangle's diagonal between edge midpoints.
    let long = ((20.0 * spacing[0]).powi(2) + (11.0 * spacing[1]).powi(2)).sqrt().max(((19.0 * spacing[0]).powi(2) + (12.0 * spacing[1]).powi(2)).sqrt());
    assert!((m.longest_diameter_mm - long).abs() < 1e-9, "{} vs {long}", m.longest_diameter_mm);
    assert_eq!(m.diameter_slice, 2, "all slices tie: the lowest index");
    let i = m.intensity.unwrap();
    assert_eq!((i.min, i.max, i.mean, i.median), (10.0, 30.0, 20.0, 20.0));
    // Sample SD of 1680 values, half 10 and half 30: sqrt(1680 · 100 / 1679).
    assert!((i.sd - (168_000.0f64 / 1679.0).sqrt()).abs() < 1e-9);
}

#[test]
fn ellipsoid_on_an_oblique_anisotropic_grid() {
    // Index axes rotated 30° about z; k runs toward inferior (det −1); spacing 0.7 x 0.9 x 2.5.
    let (c30, s30) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    let mut g = Geometry::new([110, 110, 40], [0.7, 0.9, 2.5], [0.0; 3]);
    g.direction = [[c30, -s30, 0.0], [s30, c30, 0.0], [0.0, 0.0, -1.0]];
    g.origin = [-5.0, -40.0, 60.0];
    // Centre on the centre of voxel k = 20 so the largest axial section is the full ellipse.
    let centre = g.voxel_to_world([55.3, 54.6, 20.0]);
    let axes = [24.0, 15.0, 30.0];
    let inside = |p: [f64; 3]| (0..3).map(|a| ((p[a] - centre[a]) / axes[a]).powi(2)).sum::<f64>() <= 1.0;
    let (image, labels) = shape(&g, 2, inside, |_| -50);
    let m = measure(&image, &labels, None, &MeasureOptions::default()).unwrap().labels.remove(0);
    let v = 4.0 / 3.0 * PI * axes[0] * axes[1] * axes[2];
    assert!(close(m.volume_ml * 1000.0, v, 0.015), "volume {} vs {v}", m.volume_ml * 1000.0);
    for a in 0..3 {
        assert!((m.centroid_lps_mm[a] - centre[a]).abs() < 0.15, "centroid {:?} vs {centre:?}", m.centroid_lps_mm);
        // The LPS box of the voxel centres lies inside the ellipsoid's extent, within a voxel.
        let (lo, hi) = (m.bbox_lps_mm[0][a], m.bbox_lps_mm[1][a]);
        assert!(lo >= centre[a] - axes[a] - 1e-9 && lo <= centre[a] - axes[a] + 2.5 + 1e-6, "{a}: {lo}");
        assert!(hi <= centre[a] + axes[a] + 1e-9 && hi >= centre[a] + axes[a] - 2.5 - 1e-6, "{a}: {hi}");
    }
    // Thomsen's approximation of the ellipsoid's area (within 1.1%).
    let p = 1.6075;
    let (a, b, c) = (axes[0], axes[1], axes[2]);
    let area = 4.0 * PI * (((a * b).powf(p) + (a * c).powf(p) + (b * c).powf(p)) / 3.0).powf(1.0 / p);
    assert!(close(m.surface_area_mm2, area, 0.04), "surface {} vs {area}", m.surface_area_mm2);
    // The largest axial section is within a slice of the centre (k = 20): an ellipse scaled by
    // sqrt(1 − (dz/c)²).
    let dz = (m.diameter_slice as f64 - 20.0) * 2.5;
    assert!(dz.abs() <= 2.5, "diameter slice {}", m.diameter_slice);
    let f = (1.0 - (dz / axes[2]).powi(2)).sqrt();
    assert!((m.longest_diameter_mm - 2.0 * axes[0] * f).abs() < 1.0, "longest {}", m.longest_diameter_mm);
    assert!((m.perpendicular_diameter_mm - 2.0 * axes[1] * f).abs() < 1.0, "perpendicular {}", m.perpendicular_diameter_mm);
    // The long axis lies along world x (the ellipse's major axis), in the slice's plane.
    let [p0, p1] = m.long_axis_lps_mm;
    let dir = [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]];
    assert!(dir[1].abs() / dir[0].abs() < 0.1 && dir[2].abs() < 1e-9, "long axis {dir:?}");
    assert_eq!(m.intensity.unwrap().sd, 0.0);
}

fn block(dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<bool> {
    let mut m = vec![false; dims.iter().product()];
    for k in lo[2]..=hi[2] {
        for j in lo[1]..=hi[1] {
            for i in lo[0]..=hi[0] {
                m[i + dims[0] * (j + dims[1] * k)] = true;
            }
        }
    }
    m
}

fn assert_agreement(r: Agreement, dice: f64, iou: f64, hd95: f64, assd: f64) {
    assert!((r.dice - dice).abs() < 1e-12, "dice {} vs {dice}", r.dice);
    assert!((r.iou - iou).abs() < 1e-12, "iou {} vs {iou}", r.iou);
    assert!((r.hd95_mm.unwrap() - hd95).abs() < 1e-9, "hd95 {:?} vs {hd95}", r.hd95_mm);
    assert!((r.assd_mm.unwrap() - assd).abs() < 1e-9, "assd {:?} vs {assd}", r.assd_mm);
}

#[test]
fn agreement_on_a_row_of_voxels_by_hand() {
    // 10x1x1: every voxel is a surface voxel. A = 0..=3, B = 2..=7.
    // d(A→B) = 2, 1, 0, 0; d(B→A) = 0, 0, 1, 2, 3, 4 (in voxels).
    // Pooled sorted: 0 0 0 0 1 1 2 2 3 4; rank 0.95·9 = 8.55 → 3 + 0.55 = 3.55; mean 13/10.
    let dims = [10, 1, 1];
    let a = block(dims, [0, 0, 0], [3, 0, 0]);
    let b = block(dims, [2, 0, 0], [7, 0, 0]);
    assert_agreement(compare(dims, [1.0; 3], &a, &b), 0.4, 0.25, 3.55, 1.3);
    assert_agreement(compare(dims, [0.5, 7.0, 9.0], &a, &b), 0.4, 0.25, 1.775, 0.65);
    // Symmetric.
    assert_agreement(compare(dims, [1.0; 3], &b, &a), 0.4, 0.25, 3.55, 1.3);
}

#[test]
fn agreement_of_boxes_shifted_by_one_voxel() {
    // 4x4x4 boxes, B one voxel further along `axis` (spacing s there, 1 elsewhere).
    // Each surface has 64 − 8 = 56 voxels. A's far-end face (16) is 1 step from B's face: s.
    // A's 4 face-interior voxels on the shared side are inside B, one step (1 mm) from B's side
    // faces (or s from B's end): min(s, 1). Likewise from B to A. All others lie on the other
    // surface: 0. Pooled: 32 × s, 8 × min(s, 1), 72 × 0.
    for (axis, s) in [(0, 2.0f64), (2, 3.0), (1, 0.5)] {
        let dims = [8, 8, 8];
        let mut spacing = [1.0; 3];
        spacing[axis] = s;
        let (mut lo, mut hi) = ([1, 1, 1], [4, 4, 4]);
        let a = block(dims, lo, hi);
        lo[axis] += 1;
        hi[axis] += 1;
        let b = block(dims, lo, hi);
        let m = s.min(1.0);
        let pooled_mean = (32.0 * s + 8.0 * m) / 112.0;
        // rank 0.95 · 111 = 105.45: both neighbours are among the 32 largest (= max(s, m)).
        let hd95 = s.max(m);
        assert_agreement(compare(dims, spacing, &a, &b), 0.75, 0.6, hd95, pooled_mean);
    }
    let dims = [6, 6, 6];
    let a = block(dims, [1, 1, 1], [4, 3, 2]);
    assert_agreement(compare(dims, [0.3, 0.7, 5.0], &a, &a), 1.0, 1.0, 0.0, 0.0);
}

#[test]
fn agreement_matches_brute_force_on_random_blobs() {
    let mut state = 0x1234_5678_9abc_def1_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dims = [14, 11, 9];
    let spacing = [0.6, 1.1, 2.3];
    let n = dims.iter().product::<usize>();
    let idx = |p: usize| [p % dims[0], (p / dims[0]) % dims[1], p / (dims[0] * dims[1])];
    for _ in 0..4 {
        // Blobs: unions of random balls, so surfaces have interiors.
        let mut blob = || {
            let balls: Vec<([f64; 3], f64)> = (0..3)
                .map(|_| ([(next() % 14) as f64, (next() % 11) as f64, (next() % 9) as f64], 1.5 + (next() % 30) as f64 / 10.0))
                .collect();
            (0..n)
                .map(|p| {
                    let q = idx(p);
                    balls.iter().any(|(c, r)| (0..3).map(|a| (q[a] as f64 - c[a]).powi(2)).sum::<f64>() <= r * r)
                })
                .collect::<Vec<bool>>()
        };
        let a = blob();
        let b = blob();
        let surface = |m: &[bool]| -> Vec<usize> {
            (0..n)
                .filter(|&p| {
                    let q = idx(p);
                    m[p] && (0..3).any(|ax| {
                        [-1isize, 1].iter().any(|&s| {
                            let x = q[ax] as isize + s;
                            if x < 0 || x >= dims[ax] as isize {
                                return true;
                            }
                            let mut r = q;
                            r[ax] = x as usize;
                            !m[r[0] + dims[0] * (r[1] + dims[1] * r[2])]
                        })
                    })
                })
                .collect()
        };
        let (sa, sb) = (surface(&a), surface(&b));
        let dist = |p: usize, q: usize| {
            let (x, y) = (idx(p), idx(q));
            (0..3).map(|ax| ((x[ax] as f64 - y[ax] as f64) * spacing[ax]).powi(2)).sum::<f64>().sqrt()
        };
        let mut pooled: Vec<f64> = sa.iter().map(|&p| sb.iter().map(|&q| dist(p, q)).fold(f64::INFINITY, f64::min)).collect();
        pooled.extend(sb.iter().map(|&p| sa.iter().map(|&q| dist(p, q)).fold(f64::INFINITY, f64::min)));
        pooled.sort_by(f64::total_cmp);
        let rank = 0.95 * (pooled.len() - 1) as f64;
        let (lo, frac) = (rank.floor() as usize, rank.fract());
        let hd95 = pooled[lo] + frac * (pooled[(lo + 1).min(pooled.len() - 1)] - pooled[lo]);
        let assd = pooled.iter().sum::<f64>() / pooled.len() as f64;
        let both = (0..n).filter(|&p| a[p] && b[p]).count() as f64;
        let (na, nb) = (a.iter().filter(|x| **x).count() as f64, b.iter().filter(|x| **x).count() as f64);
        assert_agreement(compare(dims, spacing, &a, &b), 2.0 * both / (na + nb), both / (na + nb - both), hd95, assd);
    }
}

#[test]
fn reference_is_compared_label_by_label() {
    let g = Geometry::new([12, 10, 8], [1.0, 1.0, 2.0], [0.0; 3]);
    let to_labels = |parts: &[(u8, Vec<bool>)]| {
        let mut v = vec![0u8; g.voxel_count()];
        for (label, m) in parts {
            for (x, &on) in v.iter_mut().zip(m) {
                if on {
                    *x = *label;
                }
            }
        }
        volume(&g, VoxelBuffer::U8(v))
    };
    let mask = to_labels(&[(1, block(g.dims, [1, 1, 1], [4, 4, 4])), (2, block(g.dims, [7, 2, 2], [10, 5, 5]))]);
    // The reference has label 1 shifted by one voxel along x, and no label 2.
    let reference = to_labels(&[(1, block(g.dims, [2, 1, 1], [5, 4, 4]))]);
    let image = volume(&g, VoxelBuffer::I16(vec![0; g.voxel_count()]));
    let report = measure(&image, &mask, Some(&reference), &MeasureOptions::default()).unwrap();
    let r1 = report.labels[0].reference.unwrap();
    assert_agreement(r1, 0.75, 0.6, 1.0, 40.0 / 112.0);
    let r2 = report.labels[1].reference.unwrap();
    assert_eq!((r2.dice, r2.hd95_mm), (0.0, None));
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data/ct-lesion"))
}

fn lesion_cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(String::from))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    names
}

fn open(path: &Path) -> Volume {
    io::open(path, &Default::default()).unwrap()
}

#[test]
fn ct_lesions_match_their_recorded_figures() {
    for name in lesion_cases() {
        let dir = fixture_dir();
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let image = open(&dir.join(format!("{name}_img.nii.gz")));
        let gt = open(&dir.join(format!("{name}_gt.nii.gz")));
        let report = measure(&image, &gt, Some(&gt), &MeasureOptions::default()).unwrap();
        assert_eq!(report.labels.len(), 1, "{name}");
        let m = &report.labels[0];
        assert_eq!(m.voxels, expected["gt_voxel_count"].as_u64().unwrap(), "{name}");
        assert!(close(m.volume_ml, expected["gt_volume_ml"].as_f64().unwrap(), 1e-6), "{name}: {}", m.volume_ml);
        let b: Vec<usize> = expected["gt_bbox_3d_xyzxyz_inclusive"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(m.bbox_index, [[b[0], b[1], b[2]], [b[3], b[4], b[5]]], "{name}");
        // k runs toward inferior here: the axial slices are k, and the diameters use them.
        assert_eq!(report.diameter_axis, SliceAxis::Axial);
        assert_eq!(m.diameter_slice as u64, expected["key_slice_z"].as_u64().unwrap(), "{name}");
        let pixel = image.geometry.spacing[0] * image.geometry.spacing[1];
        let areas: Vec<u64> = expected["gt_area_per_slice_voxels"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        let nonzero: Vec<(usize, u64)> = areas.iter().copied().enumerate().filter(|(_, a)| *a > 0).collect();
        assert_eq!(m.slices.len(), nonzero.len(), "{name}");
        for (s, (k, count)) in m.slices.iter().zip(nonzero) {
            assert_eq!(s.index, k);
            assert!(close(s.area_mm2, count as f64 * pixel, 1e-12), "{name} slice {k}");
            assert!(s.perimeter_mm > 0.0);
        }
        // Mean intensity against a direct sum over the mask.
        let (img, lab) = (image.frame::<u8>(0).unwrap(), gt.frame::<u8>(0).unwrap());
        let values: Vec<f64> = img.iter().zip(lab).filter(|(_, l)| **l == 1).map(|(v, _)| *v as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((m.intensity.unwrap().mean - mean).abs() < 1e-9);
        // The centroid is the LPS position of the mean index.
        let mut sum = [0.0; 3];
        for (n, _) in lab.iter().enumerate().filter(|(_, l)| **l == 1) {
            let ijk = [n % 512, (n / 512) % 512, n / (512 * 512)];
            for a in 0..3 {
                sum[a] += ijk[a] as f64;
            }
        }
        let centroid = image.geometry.voxel_to_world(sum.map(|s| s / values.len() as f64));
        for (got, want) in m.centroid_lps_mm.iter().zip(centroid) {
            assert!((got - want).abs() < 1e-9);
        }
        // A lesion is a few cm across; its long axis is no shorter than its short one.
        assert!(m.longest_diameter_mm >= m.perpendicular_diameter_mm && m.longest_diameter_mm > 5.0 && m.longest_diameter_mm < 200.0);
        assert_agreement(m.reference.unwrap(), 1.0, 1.0, 0.0, 0.0);
    }
}

#[test]
fn mismatched_grids_and_non_label_values_are_refused() {
    let g = Geometry::new([4, 4, 4], [1.0; 3], [0.0; 3]);
    let image = volume(&g, VoxelBuffer::I16(vec![0; 64]));
    let other = Geometry::new([4, 4, 5], [1.0; 3], [0.0; 3]);
    let labels = volume(&other, VoxelBuffer::U8(vec![1; 80]));
    assert!(matches!(measure(&image, &labels, None, &MeasureOptions::default()), Err(MeasureError::DimsMismatch { .. })));
    let mut shifted = g.clone();
    shifted.origin[1] = 0.001;
    let labels = volume(&shifted, VoxelBuffer::U8(vec![1; 64]));
    let err = measure(&image, &labels, None, &MeasureOptions::default()).unwrap_err();
    assert!(matches!(err, MeasureError::GeometryMismatch { .. }), "{err}");
    let mut close_enough = g.clone();
    close_enough.origin[1] = 0.00005;
    let labels = volume(&close_enough, VoxelBuffer::U16(vec![300; 64]));
    assert!(matches!(measure(&image, &labels, None, &MeasureOptions::default()), Err(MeasureError::NotALabelMap { value, .. }) if value == 300.0));
    let labels = volume(&close_enough, VoxelBuffer::F32(vec![2.0; 64]));
    let report = measure(&image, &labels, None, &MeasureOptions::default()).unwrap();
    assert_eq!(report.labels[0].label, 2);
    let reference = volume(&g, VoxelBuffer::F32(vec![0.5; 64]));
    assert!(matches!(measure(&image, &labels, Some(&reference), &MeasureOptions::default()), Err(MeasureError::NotALabelMap { what: "reference", .. })));
}

#[test]
fn stats_command_prints_json_and_csv() {
    let dir = fixture_dir();
    let name = &lesion_cases()[1];
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medsam-viewer"))
            .arg("stats")
            .arg("--image")
            .arg(dir.join(format!("{name}_img.nii.gz")))
            .arg("--mask")
            .arg(dir.join(format!("{name}_gt.nii.gz")))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let reference = dir.join(format!("{name}_gt.nii.gz"));
    let json: serde_json::Value = serde_json::from_str(&run(&["--json", "--reference", reference.to_str().unwrap()])).unwrap();
    let label = &json["labels"][0];
    for key in [
        "label",
        "voxels",
        "volume_ml",
        "surface_area_mm2",
        "bbox_index",
        "bbox_lps_mm",
        "centroid_lps_mm",
        "intensity",
        "longest_diameter_mm",
        "perpendicular_diameter_mm",
        "diameter_slice",
        "slices",
        "reference",
    ] {
        assert!(!label[key].is_null(), "missing {key}");
    }
    for key in ["mean", "sd", "min", "max", "median"] {
        assert!(label["intensity"][key].is_number(), "missing intensity.{key}");
    }
    for key in ["dice", "iou", "hd95_mm", "assd_mm"] {
        assert!(label["reference"][key].is_number(), "missing reference.{key}");
    }
    assert!(label["slices"][0]["area_mm2"].is_number() && label["slices"][0]["perimeter_mm"].is_number());
    assert_eq!(json["axis"], "axial");
    let csv = run(&["--csv", "--axis", "sagittal"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    assert!(lines[1].starts_with("1,"));
    assert!(run(&[]).contains("label 1"));
    // A mask on another grid is refused with a clear message.
    let other = dir.join(format!("{}_gt.nii.gz", lesion_cases()[0]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medsam-viewer"))
        .args(["stats", "--image"])
        .arg(dir.join(format!("{name}_img.nii.gz")))
        .arg("--mask")
        .arg(other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must match"), "{}", String::from_utf8_lossy(&out.stderr));
}
