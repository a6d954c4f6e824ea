//! `medsam-viewer segment` end to end on the sam2-mini fixture volume (written as NIfTI): the
//! mask equals MedSAM2's `seg_lcc` in the image's voxel order, along the axial and the sagittal
//! axis; `--range` and `--stop-after-empty` bound the passes and say where they stopped; bad
//! input ends with exit status 2 and a one-line message.

use medsam_viewer::io::nifti;
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
const BIN: &str = env!("CARGO_BIN_EXE_medsam-viewer");
/// Fixture volume: D slices of H x W.
const D: usize = 8;
const H: usize = 96;
const W: usize = 112;
const SPACING: [f64; 3] = [0.8, 0.7, 2.5];

fn tensor_bytes(file: &str, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(format!("{FIXTURES}/{file}")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    tensors.tensor(name).unwrap().data().to_vec()
}

fn f32_values(file: &str, name: &str) -> Vec<f32> {
    tensor_bytes(file, name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Writes the fixture volume with its slices along `axis_normal` (2 = axial: dims W, H, D;
/// 0 = sagittal: dims D, W, H, pixel (x, y) of slice d at voxel (d, x, y)).
fn write_volume(dir: &Path, axis_normal: usize) -> PathBuf {
    let raw = tensor_bytes("00_input.safetensors", "volume_u8");
    let (dims, data) = match axis_normal {
        2 => ([W, H, D], raw),
        _ => {
            let dims = [D, W, H];
            let mut data = vec![0u8; raw.len()];
            for d in 0..D {
                for y in 0..H {
                    for x in 0..W {
                        data[d + D * (x + W * y)] = raw[x + W * (y + H * d)];
                    }
                }
            }
            (dims, data)
        }
    };
    let geometry = Geometry::new(dims, SPACING, [10.0, -20.0, 30.0]);
    let volume = Volume::new(geometry, 1, VoxelBuffer::U8(data), VolumeMeta::default()).unwrap();
    let path = dir.join(format!("volume-{axis_normal}.nii.gz"));
    nifti::write(&path, &volume, nifti::NiftiKind::Image).unwrap();
    path
}

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(["segment"])
        .args(args)
        .current_dir(cwd)
        .env("HF_HOME", cwd.join("hf-home"))
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap()
}

/// `args`, then the fixture model's arguments, then `extra`.
fn with_model(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(model_args());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs `segment` with `args`, which must succeed; its JSON summary.
fn segment_ok(args: &[String], cwd: &Path) -> serde_json::Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn model_args() -> Vec<String> {
    vec![
        "--checkpoint".into(),
        format!("{FIXTURES}/model.pt"),
        "--model-config".into(),
        format!("{FIXTURES}/config.yaml"),
    ]
}

/// The reference mask [D, H, W] and which voxels have a reference logit near zero in the pass
/// that decided them.
fn reference_mask() -> (Vec<u8>, Vec<bool>) {
    let seg = tensor_bytes("06_propagation.safetensors", "seg_lcc");
    let mut near_zero = vec![false; seg.len()];
    for prefix in ["fwd", "rev"] {
        let order = tensor_bytes("06_propagation.safetensors", &format!("{prefix}.frame_order"));
        let logits = f32_values("06_propagation.safetensors", &format!("{prefix}.video_res_logits"));
        for (row, frame) in order.chunks_exact(4).enumerate() {
            let d = i32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            for p in 0..H * W {
                if logits[row * H * W + p].abs() < 1e-3 {
                    near_zero[d * H * W + p] = true;
                }
            }
        }
    }
    (seg, near_zero)
}

fn segment_and_compare(axis: &str, axis_normal: usize, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_volume(dir.path(), axis_normal);
    let output = dir.path().join("mask.nii.gz");
    let logits = dir.path().join("logits.safetensors");
    let args = with_model(vec![
        "--input".to_string(),
        input.display().to_string(),
        "--box".into(),
        "33,33,73,68".into(),
        "--slice".into(),
        "4".into(),
        "--axis".into(),
        axis.into(),
        "--label".into(),
        "3".into(),
        "--output".into(),
        output.display().to_string(),
        "--logits-out".into(),
        logits.display().to_string(),
    ], extra);
    let summary = segment_ok(&args, dir.path());
    assert_eq!(summary["forward"], serde_json::json!({ "slices": 4, "last_slice": 7, "stopped": "end of volume" }));
    assert_eq!(summary["backward"], serde_json::json!({ "slices": 5, "last_slice": 0, "stopped": "end of volume" }));
    assert_eq!((summary["range"].clone(), summary["stop_after_empty"].clone()), (serde_json::json!([0, 7]), serde_json::json!(0)));

    let mask = nifti::read(&output).unwrap();
    let image = nifti::read(&input).unwrap();
    assert_eq!(mask.geometry, image.geometry, "the mask has the image's geometry");
    let VoxelBuffer::U8(voxels) = &mask.data else { panic!("a u8 label map") };
    let (reference, near_zero) = reference_mask();
    let mut exempt = 0;
    for d in 0..D {
        for y in 0..H {
            for x in 0..W {
                let r = d * H * W + y * W + x;
                let v = if axis_normal == 2 { r } else { d + D * (x + W * y) };
                let want = reference[r] * 3;
                if voxels[v] != want {
                    assert!(near_zero[r], "{axis}: voxel of slice {d} at ({x}, {y}) is {}, reference {want}", voxels[v]);
                    exempt += 1;
                }
            }
        }
    }
    let count = reference.iter().filter(|&&v| v != 0).count();
    assert_eq!(summary["voxels"].as_u64().unwrap() as usize, voxels.iter().filter(|&&v| v != 0).count());
    assert!(exempt <= 39 && (summary["voxels"].as_u64().unwrap() as i64 - count as i64).abs() <= exempt as i64);
    let ml = summary["volume_ml"].as_f64().unwrap();
    // The file stores the spacing as float32: the read-back geometry has the exact values.
    let voxel_ml = image.geometry.voxel_volume_mm3() / 1000.0;
    assert!((ml - summary["voxels"].as_f64().unwrap() * voxel_ml).abs() < 1e-9);
    assert_eq!(summary["forward_slices"], 4);
    assert_eq!(summary["backward_slices"], 5);

    let bytes = std::fs::read(&logits).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.tensor("forward").unwrap().shape(), &[4, H, W]);
    assert_eq!(tensors.tensor("backward").unwrap().shape(), &[5, H, W]);

    // The output exists now: refused without --force.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = run(&args, dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn axial_segmentation_writes_medsam2_mask() {
    segment_and_compare("axial", 2, &[]);
}

#[test]
fn sagittal_slices_go_back_into_voxel_order() {
    // The whole volume as an explicit range and no stop: still the reference's mask.
    segment_and_compare("sagittal", 0, &["--range", "0,7", "--stop-after-empty", "0"]);
}

/// Runs `segment` on the axial fixture volume with `extra` arguments; the summary and the
/// slices holding foreground.
fn bounded_run(extra: &[&str]) -> (serde_json::Value, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_volume(dir.path(), 2);
    let output = dir.path().join("mask.nii.gz");
    let mut args: Vec<String> = ["--box", "33,33,73,68", "--slice", "4", "--output"].map(String::from).to_vec();
    args.extend([output.display().to_string(), "--input".to_string(), input.display().to_string()]);
    let summary = segment_ok(&with_model(args, extra), dir.path());
    let VoxelBuffer::U8(voxels) = nifti::read(&output).unwrap().data else { panic!("a u8 label map") };
    let slices = (0..D).filter(|d| voxels[d * H * W..(d + 1) * H * W].iter().any(|&v| v != 0)).collect();
    (summary, slices)
}

#[test]
fn stop_after_empty_ends_the_backward_pass_at_the_washed_out_slice() {
    // Slice 2 is the one slice the model finds empty: one empty slice ends the backward pass
    // there, and slices 0 and 1 are never tracked.
    let (summary, slices) = bounded_run(&["--stop-after-empty", "1"]);
    assert_eq!(summary["backward"], serde_json::json!({ "slices": 3, "last_slice": 2, "stopped": "object gone" }));
    assert_eq!(summary["forward"], serde_json::json!({ "slices": 4, "last_slice": 7, "stopped": "end of volume" }));
    assert!(slices.iter().all(|&d| d >= 3), "foreground only on tracked, non-empty slices: {slices:?}");
}

#[test]
fn a_range_bounds_both_passes() {
    let (summary, slices) = bounded_run(&["--range", "3,6"]);
    assert_eq!(summary["forward"], serde_json::json!({ "slices": 3, "last_slice": 6, "stopped": "end of range" }));
    assert_eq!(summary["backward"], serde_json::json!({ "slices": 2, "last_slice": 3, "stopped": "end of range" }));
    assert!(!slices.is_empty() && slices.iter().all(|d| (3..=6).contains(d)), "{slices:?}");
}

#[test]
fn world_prompts_land_on_the_voxels_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_volume(dir.path(), 2);
    let geometry = nifti::read(&input).unwrap().geometry;
    let run_with = |name: &str, prompt: &[&str]| {
        let output = dir.path().join(name);
        let mut args: Vec<String> = prompt.iter().map(|s| s.to_string()).collect();
        args.extend(["--input".into(), input.display().to_string(), "--output".into(), output.display().to_string()]);
        let summary = segment_ok(&with_model(args, &[]), dir.path());
        (summary, nifti::read(&output).unwrap().data)
    };
    let (voxel_summary, voxel_mask) = run_with("voxel.nii.gz", &["--box", "33,33,73,68", "--slice", "4"]);

    // The box's corners in RAS mm, in the other order, off the voxel centres and on slices 6
    // and 3: the nearest voxels bound it, on slice (6 + 3) / 2 = 4.
    let a = geometry.voxel_to_world([73.3, 67.6, 5.8]);
    let b = geometry.voxel_to_world([32.8, 33.4, 3.4]);
    let ras = format!("{},{},{},{},{},{}", -a[0], -a[1], a[2], -b[0], -b[1], b[2]);
    let (summary, mask) = run_with("world.nii.gz", &["--box-world", &ras, "--ras"]);
    assert_eq!((summary["box"].clone(), summary["key_slice"].clone()), (voxel_summary["box"].clone(), voxel_summary["key_slice"].clone()));
    assert!(mask == voxel_mask, "the same prompt gives the same mask");

    // A point in LPS mm is a positive click on its voxel of the key slice.
    let lps = |p: [f64; 3]| format!("{},{},{}", p[0], p[1], p[2]);
    let point = lps(geometry.voxel_to_world([50.2, 44.7, 4.1]));
    let corners = format!("{},{}", lps(a), lps(b));
    let (summary, _) = run_with("point.nii.gz", &["--box-world", &corners, "--point-world", &point]);
    assert_eq!(summary["clicks"], serde_json::json!([[50.0, 45.0]]));
    assert_eq!(summary["box"], serde_json::json!([33, 33, 73, 68]));
}

/// Runs a bad case and returns its one-line message.
fn fails(extra: &[&str], with_model: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = write_volume(dir.path(), 2);
    let output = dir.path().join("mask.nii.gz");
    let mut args: Vec<String> = vec!["--input".into(), input.display().to_string(), "--output".into(), output.display().to_string()];
    let defaults = [("--box", "33,33,73,68"), ("--slice", "4")];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    if with_model {
        args.extend(model_args());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!output.exists(), "nothing written");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn one_line(message: &str) -> &str {
    assert_eq!(message.lines().count(), 1, "{message}");
    message
}

#[test]
fn bad_prompts_exit_2_with_one_line() {
    let m = fails(&["--box", "33,33,112,68"], true);
    assert!(one_line(&m).contains("outside the 112 x 96 axial slice"), "{m}");
    let m = fails(&["--box", "73,33,33,68"], true);
    assert!(one_line(&m).contains("is empty"), "{m}");
    let m = fails(&["--slice", "8"], true);
    assert!(one_line(&m).contains("key slice 8 is out of range"), "{m}");
    let m = fails(&["--range", "5,7"], true);
    assert!(one_line(&m).contains("key slice 4 is outside the slice range 5..=7"), "{m}");
    let m = fails(&["--range", "0,8"], true);
    assert!(one_line(&m).contains("slice range 0..=8"), "{m}");
    // Origin (10, -20, 30) mm, spacing (0.8, 0.7, 2.5): (0, 0, 0) LPS is voxel (-12.5, 28.6, -12).
    let m = fails(&["--point-world", "0,0,0"], true);
    assert!(one_line(&m).contains("--point-world 0,0,0 (LPS mm)") && m.contains("outside the image"), "{m}");
    // Voxel (50, 45, 6): not on key slice 4.
    let m = fails(&["--point-world", "50,11.5,45"], true);
    assert!(one_line(&m).contains("axial slice 6, but the key slice is 4"), "{m}");
    let m = fails(&["--box-world", "10,-20,30,20,-10,30"], true);
    assert!(m.contains("cannot be used with"), "{m}");
}

#[test]
fn bad_weights_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.pt");
    let full = std::fs::read(format!("{FIXTURES}/model.pt")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let config = format!("{FIXTURES}/config.yaml");
    let truncated_arg = truncated.display().to_string();
    let m = fails(&["--checkpoint", &truncated_arg, "--model-config", &config], false);
    assert!(one_line(&m).contains("truncated.pt"), "{m}");

    let t512 = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/sam2.1_hiera_t512.yaml");
    let mini = format!("{FIXTURES}/model.pt");
    let m = fails(&["--checkpoint", &mini, "--model-config", t512], false);
    assert!(one_line(&m).contains("does not fit the model configuration"), "{m}");
    assert!(m.contains("with another shape"), "{m}");

    // No checkpoint anywhere (empty working folder, empty Hugging Face home).
    let m = fails(&[], false);
    assert!(m.contains("not found") && m.contains("medsam-viewer weights download"), "{m}");
}
