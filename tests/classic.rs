//! Whole-path checks of the classical tools on phantoms built here: the lung mask on a
//! synthetic chest (body, two lungs with vessels, a table with a hollow, air around), region
//! growing and box threshold on simple shapes, and the `classic` command line.

use medsam_viewer::classic::lung_mask::{LungMaskOptions, lung_mask};
use medsam_viewer::classic::region_grow::region_grow;
use medsam_viewer::classic::threshold::{IndexBox, threshold_in_box};
use medsam_viewer::classic::{ClassicError, Connectivity, Range};
use medsam_viewer::io::{self, nifti};
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::process::Command;

/// A synthetic chest CT and what each voxel is.
struct Chest {
    image: Volume,
    /// Voxels of the right (x < 0) and left (x > 0) lung ellipsoids, vessels included.
    lungs: [Vec<bool>; 2],
    vessels: Vec<bool>,
    cavity: Vec<bool>,
}

/// 128 x 128 x 48 voxels of 2.5 x 2.5 x 5 mm centred on the world origin (LPS): air −1000 HU,
/// body ellipse 40 HU, two lung ellipsoids −800 HU centred at x = ±`lung_x` mm (cut by the top
/// slice), vessels (40 HU cylinders and balls) inside them, and a 300 HU table under the body
/// with a closed air hollow running its whole length.
fn chest(lung_x: f64) -> Chest {
    let dims = [128, 128, 48];
    let spacing = [2.5, 2.5, 5.0];
    let origin = [0, 1, 2].map(|a| -((dims[a] - 1) as f64) / 2.0 * spacing[a]);
    let g = Geometry::new(dims, spacing, origin);
    let n = g.voxel_count();
    let mut values = vec![-1000i16; n];
    let mut lungs = [vec![false; n], vec![false; n]];
    let mut vessels = vec![false; n];
    let mut cavity = vec![false; n];
    let sq = |x: f64| x * x;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let [x, y, z] = g.voxel_to_world([i as f64, j as f64, k as f64]);
                let p = g.linear_index([i, j, k]);
                if sq(x / 140.0) + sq(y / 100.0) <= 1.0 {
                    values[p] = 40;
                }
                if (108.0..=128.0).contains(&y) && x.abs() <= 150.0 {
                    values[p] = 300;
                    if (114.0..=120.0).contains(&y) && x.abs() <= 80.0 {
                        values[p] = -1000;
                        cavity[p] = true;
                    }
                }
                for (side, cx) in [-lung_x, lung_x].into_iter().enumerate() {
                    if sq((x - cx) / 45.0) + sq((y + 5.0) / 65.0) + sq((z - 40.0) / 110.0) > 1.0 {
                        continue;
                    }
                    lungs[side][p] = true;
                    values[p] = -800;
                    let cylinder = [(15.0, 20.0), (-15.0, -20.0), (0.0, 30.0)]
                        .iter()
                        .any(|(dx, dy)| sq(x - cx - dx) + sq(y + 5.0 - dy) <= 16.0 && (z - 40.0).abs() <= 50.0);
                    let ball = sq(x - cx * 55.0 / 60.0) + sq(y - 25.0) + sq(z) <= 25.0;
                    if cylinder || ball {
                        values[p] = 40;
                        vessels[p] = true;
                    }
                }
            }
        }
    }
    let meta = VolumeMeta { modality: Some("CT".into()), ..VolumeMeta::default() };
    Chest { image: Volume::new(g, 1, VoxelBuffer::I16(values), meta).unwrap(), lungs, vessels, cavity }
}

fn count(m: &[bool]) -> usize {
    m.iter().filter(|x| **x).count()
}

#[test]
fn lung_mask_finds_both_lungs_and_fills_the_vessels() {
    let c = chest(60.0);
    assert!(count(&c.vessels) > 500, "the phantom has vessels");
    let lungs = lung_mask(&c.image, &LungMaskOptions::default()).unwrap();
    assert_eq!(lungs.components.len(), 2);
    let voxel_ml = c.image.geometry.voxel_volume_mm3() / 1000.0;
    let truth: Vec<f64> = c.lungs.iter().map(|l| count(l) as f64 * voxel_ml).collect();
    for comp in &lungs.components {
        let ml = comp.voxels as f64 * voxel_ml;
        // Which lung: the side of its centroid.
        let x = c.image.geometry.voxel_to_world(comp.mean_index())[0];
        let expected = truth[(x > 0.0) as usize];
        assert!((ml - expected).abs() <= 0.02 * expected, "component of {ml} mL vs lung of {expected} mL");
    }
    // Every vessel is filled, the table's hollow and the air around are not in the mask; on this
    // clean phantom the mask is exactly the two lungs.
    let n = lungs.mask.len();
    assert!((0..n).all(|p| !c.vessels[p] || lungs.mask[p]), "vessels filled");
    assert!((0..n).all(|p| !c.cavity[p] || !lungs.mask[p]), "table hollow left out");
    assert!((0..n).all(|p| lungs.mask[p] == (c.lungs[0][p] || c.lungs[1][p])), "mask = lungs");
}

#[test]
fn touching_lungs_are_one_component_and_dilation_grows_in_mm() {
    let c = chest(40.0);
    let lungs = lung_mask(&c.image, &LungMaskOptions::default()).unwrap();
    assert_eq!(lungs.components.len(), 1, "lungs that touch are one component; the table hollow is dropped");
    let union = count(&c.lungs.iter().fold(vec![false; lungs.mask.len()], |acc, l| acc.iter().zip(l).map(|(a, b)| *a || *b).collect()));
    assert_eq!(lungs.components[0].voxels as usize, union);
    let dilated = lung_mask(&c.image, &LungMaskOptions { dilation_mm: 5.0, ..LungMaskOptions::default() }).unwrap();
    assert!((0..lungs.mask.len()).all(|p| !lungs.mask[p] || dilated.mask[p]));
    // Along the row through the right lung's lateral tip (x = −85 mm, y = −5 mm, z = 40 mm):
    // 2 voxels (5 mm) beyond the last lung voxel is in, 3 voxels (7.5 mm) is out.
    let g = &c.image.geometry;
    let [_, j, k] = g.world_to_voxel([-85.0, -5.0, 40.0]).map(|v| v.round() as usize);
    let first = (0..g.dims[0]).find(|&i| lungs.mask[g.linear_index([i, j, k])]).unwrap();
    assert!(dilated.mask[g.linear_index([first - 2, j, k])]);
    assert!(!dilated.mask[g.linear_index([first - 3, j, k])]);
    assert!(matches!(lung_mask(&c.image, &LungMaskOptions { dilation_mm: -1.0, ..LungMaskOptions::default() }), Err(ClassicError::BadDilation(_))));
}

#[test]
fn no_air_inside_is_an_error() {
    let g = Geometry::new([8, 8, 4], [1.0; 3], [0.0; 3]);
    let image = Volume::new(g, 1, VoxelBuffer::I16(vec![40; 256]), VolumeMeta::default()).unwrap();
    assert!(matches!(lung_mask(&image, &LungMaskOptions::default()), Err(ClassicError::NoAirInside { .. })));
}

/// 40 x 40 x 20 voxels at 0 HU with two 100 HU balls (radius 6) at (10, 10, 10) and
/// (29, 29, 10), and a chain of single voxels along the diagonal i = j between them, each
/// touching the next only by an edge.
fn two_balls() -> (Volume, Vec<bool>) {
    let g = Geometry::new([40, 40, 20], [0.5, 0.5, 1.0], [0.0; 3]);
    let mut values = vec![0i16; g.voxel_count()];
    let mut first = vec![false; g.voxel_count()];
    for k in 0..20 {
        for j in 0..40 {
            for i in 0..40 {
                let d = |c: f64| (i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - 10.0).powi(2);
                let p = g.linear_index([i, j, k]);
                if d(10.0) <= 36.0 {
                    values[p] = 100;
                    first[p] = true;
                }
                if d(29.0) <= 36.0 {
                    values[p] = 100;
                }
            }
        }
    }
    for d in 14..26 {
        values[g.linear_index([d, d, 10])] = 100;
    }
    (Volume::new(g, 1, VoxelBuffer::I16(values), VolumeMeta::default()).unwrap(), first)
}

#[test]
fn region_growing_follows_the_connectivity() {
    let (image, first) = two_balls();
    let range = Range::new(50.0, 150.0).unwrap();
    let six = region_grow(&image, [10, 10, 10], range, Connectivity::Six).unwrap();
    assert_eq!(six, first, "6-connected: the first ball only (the chain touches it by an edge)");
    let all = region_grow(&image, [10, 10, 10], range, Connectivity::TwentySix).unwrap();
    let bright = image.frame::<i16>(0).unwrap().iter().filter(|x| **x == 100).count();
    assert_eq!(count(&all), bright, "26-connected: both balls through the chain");
}

#[test]
fn box_threshold_keeps_the_range_inside_the_box() {
    let (image, _) = two_balls();
    let b = IndexBox { lo: [0, 0, 5], hi: [19, 19, 15] };
    let mask = threshold_in_box(&image, b, Range::new(50.0, 150.0).unwrap()).unwrap();
    let g = &image.geometry;
    let values = image.frame::<i16>(0).unwrap();
    for k in 0..20 {
        for j in 0..40 {
            for i in 0..40 {
                let p = g.linear_index([i, j, k]);
                assert_eq!(mask[p], b.contains([i, j, k]) && values[p] == 100, "({i},{j},{k})");
            }
        }
    }
    assert!(count(&mask) > 800);
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medsam-viewer")).args(args).output().unwrap()
}

#[test]
fn classic_commands_write_label_maps_with_the_image_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("chest.nii.gz");
    let c = chest(60.0);
    nifti::write(&image_path, &c.image, nifti::NiftiKind::Image).unwrap();
    let image = image_path.to_str().unwrap();
    let out = dir.path().join("lungs.nii.gz");
    let out_s = out.to_str().unwrap();
    let first = run(&["classic", "lung-mask", "--image", image, "--out", out_s, "--label", "3"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(summary["tool"], "lung-mask");
    assert_eq!(summary["components"].as_array().unwrap().len(), 2);
    let written = io::open(&out, &Default::default()).unwrap();
    let reread = io::open(&image_path, &Default::default()).unwrap();
    assert_eq!(written.geometry.dims, reread.geometry.dims);
    let (a, b) = (written.geometry.affine_lps(), reread.geometry.affine_lps());
    assert!((0..3).all(|r| (0..4).all(|k| (a[r][k] - b[r][k]).abs() < 1e-4)));
    let labels = written.frame::<u8>(0).unwrap();
    assert_eq!(labels.iter().filter(|x| **x == 3).count() as u64, summary["voxels"].as_u64().unwrap());
    assert!(labels.iter().all(|x| *x == 0 || *x == 3));
    // No silent overwrite.
    let again = run(&["classic", "lung-mask", "--image", image, "--out", out_s]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = run(&["classic", "threshold", "--image", image, "--out", out_s, "--force", "--box", "0,0,0,127,127,47", "--min", "-900", "--max", "-700"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    let lung_parenchyma = (0..c.vessels.len()).filter(|&p| (c.lungs[0][p] || c.lungs[1][p]) && !c.vessels[p]).count();
    assert_eq!(summary["voxels"].as_u64().unwrap() as usize, lung_parenchyma);
    let grown = dir.path().join("grown.nii");
    let g = run(&["classic", "region-grow", "--image", image, "--out", grown.to_str().unwrap(), "--seed", "64,64,24", "--min", "0", "--max", "100", "--connectivity", "26"]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(summary["connectivity"], 26);
    assert!(summary["voxels"].as_u64().unwrap() > 10_000, "the body grows from its centre");
    let bad = run(&["classic", "region-grow", "--image", image, "--out", grown.to_str().unwrap(), "--force", "--seed", "64,64,24", "--min", "0", "--max", "100", "--connectivity", "18"]);
    assert!(!bad.status.success());
}
