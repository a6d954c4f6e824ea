//! Resampling and world-to-voxel conversion against SimpleITK (2.5.7): the references in
//! tests/fixtures/resample/ come from `make_fixtures.py` there (sitk.Resample with an identity
//! transform, default value 0, the input's pixel type; TransformPhysicalPointToIndex).
//!
//! Geometry to 1e-4 mm; nearest exact; linear within 1 unit for integer types (ITK truncates the
//! interpolated value, so a value a rounding error below a whole number lands one lower) and
//! 1e-3 for f32; B-spline within 1 unit for integer types and 1e-3 for f32.

use medsam_viewer::io::{self, OpenOptions};
use medsam_viewer::volume::{
    Geometry, GeometryError, Interpolation, Volume, grid_for_spacing, resample,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resample");
const LESION_GT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/ct-lesion/CT_Lesion_000001_02_01_008-023_gt.nii.gz"
);
const BIN: &str = env!("CARGO_BIN_EXE_medsam-viewer");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn open(path: &Path) -> Volume {
    io::open(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn values(v: &Volume) -> Vec<f64> {
    (0..v.data.len()).map(|n| v.data.get_f64(n)).collect()
}

fn assert_same_grid(ours: &Geometry, reference: &Geometry, what: &str) {
    assert_eq!(ours.dims, reference.dims, "{what}: dims");
    for c in 0..3 {
        assert!(
            (ours.spacing[c] - reference.spacing[c]).abs() < 1e-4,
            "{what}: spacing {:?} vs {:?}",
            ours.spacing,
            reference.spacing
        );
        assert!(
            (ours.origin[c] - reference.origin[c]).abs() < 1e-4,
            "{what}: origin {:?} vs {:?}",
            ours.origin,
            reference.origin
        );
        for r in 0..3 {
            assert!(
                (ours.direction[r][c] - reference.direction[r][c]).abs() < 1e-6,
                "{what}: direction"
            );
        }
    }
}

/// Largest difference between two volumes' values, and how many voxels differ at all.
fn compare(ours: &Volume, reference: &Volume, what: &str) -> (f64, usize) {
    assert_same_grid(&ours.geometry, &reference.geometry, what);
    assert_eq!(
        ours.voxel_type(),
        reference.voxel_type(),
        "{what}: the stored type is kept"
    );
    let (a, b) = (values(ours), values(reference));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    (worst, differing)
}

fn check_spacing(
    input: &str,
    spacing: [f64; 3],
    interpolation: Interpolation,
    reference: &str,
    tolerance: f64,
) {
    let volume = open(&fixture(input));
    let grid = grid_for_spacing(&volume.geometry, spacing).unwrap();
    let ours = resample(&volume, &grid, interpolation).unwrap();
    let reference = open(&fixture(reference));
    let (worst, differing) = compare(
        &ours,
        &reference,
        reference.meta.description.as_deref().unwrap_or(input),
    );
    assert!(
        worst <= tolerance,
        "{input} {interpolation:?}: largest difference {worst} ({differing} voxels differ), allowed {tolerance}"
    );
}

#[test]
fn lesion_crop_to_1mm_matches_simpleitk() {
    // u8 CT crop whose direction swaps i and j and points k inferior.
    check_spacing(
        "lesion_img.mha",
        [1.0; 3],
        Interpolation::Nearest,
        "lesion_img_1mm_nearest.mha",
        0.0,
    );
    check_spacing(
        "lesion_img.mha",
        [1.0; 3],
        Interpolation::Linear,
        "lesion_img_1mm_linear.mha",
        1.0,
    );
    check_spacing(
        "lesion_img.mha",
        [1.0; 3],
        Interpolation::BSpline,
        "lesion_img_1mm_bspline.mha",
        1.0,
    );
    check_spacing(
        "lesion_gt.mha",
        [1.0; 3],
        Interpolation::Nearest,
        "lesion_gt_1mm_nearest.mha",
        0.0,
    );
}

#[test]
fn oblique_flipped_volume_matches_simpleitk() {
    let spacing = [1.3, 0.8, 1.7];
    check_spacing(
        "oblique_i16.mha",
        spacing,
        Interpolation::Nearest,
        "oblique_i16_nearest.mha",
        0.0,
    );
    check_spacing(
        "oblique_i16.mha",
        spacing,
        Interpolation::Linear,
        "oblique_i16_linear.mha",
        1.0,
    );
    check_spacing(
        "oblique_i16.mha",
        spacing,
        Interpolation::BSpline,
        "oblique_i16_bspline.mha",
        1.0,
    );
    check_spacing(
        "oblique_f32.mha",
        spacing,
        Interpolation::Nearest,
        "oblique_f32_nearest.mha",
        0.0,
    );
    check_spacing(
        "oblique_f32.mha",
        spacing,
        Interpolation::Linear,
        "oblique_f32_linear.mha",
        1e-3,
    );
    check_spacing(
        "oblique_f32.mha",
        spacing,
        Interpolation::BSpline,
        "oblique_f32_bspline.mha",
        1e-3,
    );
}

#[test]
fn labels_onto_another_oblique_grid_match_simpleitk() {
    let labels = open(&fixture("oblique_labels.mha"));
    let target = open(&fixture("target_grid.mha"));
    let ours = resample(&labels, &target.geometry, Interpolation::Nearest).unwrap();
    let reference = open(&fixture("oblique_labels_like_target.mha"));
    assert_eq!(compare(&ours, &reference, "labels like target"), (0.0, 0));
    assert!(
        values(&ours).iter().any(|&v| v == 3.0),
        "the grids overlap where the labels are"
    );
}

#[test]
fn mask_round_trip_through_1mm_keeps_its_voxels() {
    // The crop exactly as SimpleITK does it.
    // Nearest to a 1 mm grid and back onto the mask's own grid.
    let round_trip = |mask: &Volume| {
        let coarse = resample(mask, &grid_for_spacing(&mask.geometry, [1.0; 3]).unwrap(), Interpolation::Nearest).unwrap();
        resample(&coarse, &mask.geometry, Interpolation::Nearest).unwrap()
    };
    let gt = open(&fixture("lesion_gt.mha"));
    let back = round_trip(&gt);
    assert_eq!(
        compare(
            &back,
            &open(&fixture("lesion_gt_roundtrip.mha")),
            "round trip"
        ),
        (0.0, 0)
    );

    // The whole 512 x 512 x 16 mask (0.31 x 0.31 x 5 mm) -> 1 mm -> its own grid.
    let gt = open(Path::new(LESION_GT));
    let back = round_trip(&gt);
    let (a, b) = (values(&gt), values(&back));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    let both = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| **x > 0.0 && **y > 0.0)
        .count() as f64;
    let dice = 2.0 * both
        / (a.iter().filter(|x| **x > 0.0).count() + b.iter().filter(|x| **x > 0.0).count()) as f64;
    assert!(agree >= 0.99, "voxel agreement {agree}");
    // 0.31 mm in-plane voxels through 1 mm ones lose the lesion's outline a little.
    assert!(dice >= 0.95, "Dice {dice}");
}

#[test]
fn world_points_land_on_simpleitks_voxel() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("world_points.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for case in json["world_points"].as_array().unwrap() {
        let image = open(&fixture(case["image"].as_str().unwrap()));
        for point in case["points"].as_array().unwrap() {
            let lps: [f64; 3] = serde_json::from_value(point["lps"].clone()).unwrap();
            let index: [i64; 3] = serde_json::from_value(point["index"].clone()).unwrap();
            match image.geometry.world_to_index(lps) {
                Ok(ours) => {
                    assert!(
                        point["inside"].as_bool().unwrap(),
                        "{lps:?} should be outside"
                    );
                    assert_eq!(
                        ours.map(|x| x as i64),
                        index,
                        "{lps:?} on {}",
                        case["image"]
                    );
                }
                Err(GeometryError::PointOutside { index: ours, .. }) => {
                    assert!(
                        !point["inside"].as_bool().unwrap(),
                        "{lps:?} should be inside"
                    );
                    assert_eq!(ours, index, "{lps:?} on {}", case["image"]);
                }
                Err(e) => panic!("{e}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 120);
}

fn convert(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("convert")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn convert_resamples_and_writes_back_onto_the_original_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img_1mm.nii.gz");
    let input = fixture("lesion_img.mha");
    let run = convert(&[
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--spacing",
        "1,1,1",
        "--interpolation",
        "linear",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["interpolation"], "linear");
    let written = open(&out);
    let (worst, _) = compare(
        &written,
        &open(&fixture("lesion_img_1mm_linear.mha")),
        "convert --spacing",
    );
    assert!(worst <= 1.0);

    // A mask at 1 mm back onto the crop's grid: SimpleITK's round trip, as a label map.
    let mask_1mm = dir.path().join("gt_1mm.nii.gz");
    let back = dir.path().join("gt_back.nii");
    let gt = fixture("lesion_gt.mha");
    assert!(
        convert(&[
            gt.to_str().unwrap(),
            mask_1mm.to_str().unwrap(),
            "--spacing",
            "1,1,1",
            "--mask"
        ])
        .status
        .success()
    );
    let run = convert(&[
        mask_1mm.to_str().unwrap(),
        back.to_str().unwrap(),
        "--like",
        gt.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        compare(
            &open(&back),
            &open(&fixture("lesion_gt_roundtrip.mha")),
            "convert --like"
        ),
        (0.0, 0)
    );
    let header = std::fs::read(&back).unwrap();
    assert_eq!(
        i16::from_le_bytes([header[68], header[69]]),
        1002,
        "written with the label intent"
    );

    // Bad requests end with status 2 and say why.
    for (args, message) in [
        (
            vec!["--spacing", "1,1,1", "--mask", "--interpolation", "linear"],
            "nearest neighbour only",
        ),
        (vec!["--spacing", "1,0,1"], "greater than zero"),
        (
            vec!["--interpolation", "linear"],
            "need --spacing or --like",
        ),
        (vec!["--spacing", "0.0001,0.0001,0.0001"], "more than"),
    ] {
        let target = dir.path().join("bad.nii");
        let mut all = vec![gt.to_str().unwrap(), target.to_str().unwrap()];
        all.extend(args);
        let run = convert(&all);
        assert_eq!(run.status.code(), Some(2), "{all:?}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(message), "{all:?}: {stderr}");
        assert!(!target.exists());
    }
}
