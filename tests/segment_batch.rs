//! `segment-batch` end to end with the sam2-mini checkpoint: a manifest over small volumes made
//! from the parity fixture's input, the masks against PyTorch's final mask, the summary, resume
//! after an interrupted run, two shards against one unsharded run, a DeepLesion-style CSV, bad
//! rows reported by their row number, and two lesions of one image both kept by the cleanup.

use medsam_viewer::io::nifti;
use medsam_viewer::segment::batch::{read_summary, SummaryLine};
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::path::Path;
use std::process::Command;

const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

/// The fixture's `volume_u8` ([8, 96, 112], the volume of the reference run) as a NIfTI
/// volume: as stored, or as i16 "HU" (value - 1024).
fn mini_volume(path: &Path, hounsfield: bool) {
    let input = candle_core::safetensors::load(format!("{MINI}/00_input.safetensors"), &candle_core::Device::Cpu).unwrap();
    let volume_u8 = input["volume_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let data = if hounsfield { VoxelBuffer::I16(volume_u8.iter().map(|&v| v as i16 - 1024).collect()) } else { VoxelBuffer::U8(volume_u8) };
    let g = Geometry::new([112, 96, 8], [0.8, 0.8, 2.5], [10.0, -20.0, 30.0]);
    let volume = Volume::new(g, 1, data, VolumeMeta::default()).unwrap();
    nifti::write(path, &volume, nifti::NiftiKind::Image).unwrap();
}

struct Outcome {
    code: Option<i32>,
    json: serde_json::Value,
    stderr: String,
}

fn segment_batch(manifest: &Path, output: &Path, extra: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_medsam-viewer"))
        .arg("segment-batch")
        .arg("--manifest")
        .arg(manifest)
        .arg("--output-dir")
        .arg(output)
        .args(["--checkpoint", &format!("{MINI}/model.pt"), "--model-config", &format!("{MINI}/config.yaml")])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {stderr}"));
    Outcome { code: out.status.code(), json, stderr }
}

fn labels(path: &Path) -> Vec<u8> {
    match nifti::read(path).unwrap_or_else(|e| panic!("{e}")).data {
        VoxelBuffer::U8(v) => v,
        other => panic!("{} is {:?}, not u8", path.display(), other.voxel_type()),
    }
}

fn rows(json: &serde_json::Value) -> Vec<u64> {
    json["failed_rows"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn without_seconds(mut lines: Vec<SummaryLine>) -> Vec<SummaryLine> {
    lines.iter_mut().for_each(|l| l.seconds = None);
    lines.sort_by_key(|l| l.row);
    lines
}

fn count(mask: &[u8], label: u8) -> usize {
    mask.iter().filter(|&&v| v == label).count()
}

#[test]
fn manifest_runs_resume_and_shards_agree() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    mini_volume(&images.join("a.nii.gz"), false);
    mini_volume(&images.join("b.nii.gz"), false);
    mini_volume(&images.join("c.nii.gz"), true);
    let manifest = images.join("manifest.csv");
    std::fs::write(
        &manifest,
        "image,slice,box,window,label\n\
         a.nii.gz,4,\"33,33,73,68\",,\n\
         b.nii.gz,4,\"33,33,73,68\",,1\n\
         b.nii.gz,2,\"75,10,105,40\",,2\n\
         missing.nii.gz,4,\"33,33,73,68\",,\n\
         c.nii.gz,4,\"33,33,73,68\",\"-1008,-769\",\n\
         c.nii.gz,4,\"33,33,120,68\",,\n\
         c.nii.gz,4,\"33,33,73,68\",\"5,1\",\n",
    )
    .unwrap();
    let whole = dir.path().join("whole");
    let first = segment_batch(&manifest, &whole, &[]);

    // Bad rows are reported by row number, the others finish, and the status is 2.
    assert_eq!(first.code, Some(2), "{}", first.stderr);
    assert_eq!(rows(&first.json), [5, 7, 8], "{}", first.stderr);
    for row in ["row 5: failed: cannot read the image", "row 7: failed: the box [33, 33, 120, 68] reaches outside", "row 8: failed: window"] {
        assert!(first.stderr.contains(row), "{row:?} not in {}", first.stderr);
    }

    // The reference volume's row equals PyTorch's final mask (seg_lcc, [D, H, W] = x fastest)
    // apart from pixels whose reference logit is within 1e-3 of 0.
    let reference = candle_core::safetensors::load(format!("{MINI}/06_propagation.safetensors"), &candle_core::Device::Cpu).unwrap();
    let want = reference["seg_lcc"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let a = labels(&whole.join("a_mask.nii.gz"));
    let differing = a.iter().zip(&want).filter(|(x, y)| x != y).count();
    assert!(count(&want, 1) > 1000 && differing <= 39, "{differing} voxels differ from seg_lcc");
    // The mask keeps the image's geometry.
    let geometry = nifti::read(&whole.join("a_mask.nii.gz")).unwrap().geometry;
    assert_eq!(geometry, nifti::read(&images.join("a.nii.gz")).unwrap().geometry);

    // Two rows of one image: two labels, the first exactly the same prompt's mask on a.
    let b = labels(&whole.join("b_mask.nii.gz"));
    assert!(b.iter().all(|&v| v <= 2));
    assert!(b.iter().zip(&a).all(|(&x, &y)| (x == 1) == (y == 1)), "label 1 of b differs from a's mask");
    let summary = read_summary(&whole.join("summary.csv")).unwrap();
    assert_eq!(summary.iter().map(|l| l.row).collect::<Vec<_>>(), [2, 3, 4, 5, 6, 7, 8]);
    let line = |row: usize| summary.iter().find(|l| l.row == row).unwrap().clone();
    assert!(count(&b, 2) > 0 && count(&b, 2) <= line(4).voxels.unwrap(), "label 2: {} voxels, row 4 {:?}", count(&b, 2), line(4));
    assert_eq!(line(2).voxels, Some(count(&a, 1)));
    let ml = count(&a, 1) as f64 * geometry.voxel_volume_mm3() / 1000.0;
    assert!((ml - count(&a, 1) as f64 * 1.6e-3).abs() < 1e-4, "{ml}");
    assert!((line(2).volume_ml.unwrap() - ml).abs() < 1e-9, "{:?}", line(2));
    assert_eq!((line(2).key_slice, line(2).bbox.as_str(), line(2).window.as_str(), line(2).status.as_str()), (Some(4), "33,33,73,68", "auto", "segmented: forward to slice 7 (end of volume), backward to slice 0 (end of volume)"));
    assert_eq!(line(6).window, "-1008,-769");
    let c = labels(&whole.join("c_mask.nii.gz"));
    assert_eq!(line(6).voxels, Some(count(&c, 1)));
    assert!(line(6).seconds.unwrap() > 0.0);
    assert!(!whole.join("missing_mask.nii.gz").exists());

    // Resume after an interrupted run: only the image whose mask is gone (and the one that
    // never got a mask) are processed again; the others keep their summary lines.
    std::fs::remove_file(whole.join("a_mask.nii.gz")).unwrap();
    let resumed = segment_batch(&manifest, &whole, &[]);
    assert_eq!(resumed.code, Some(2));
    assert_eq!((resumed.json["processed_images"].as_u64(), resumed.json["skipped_images"].as_u64()), (Some(2), Some(2)), "{}", resumed.stderr);
    assert!(resumed.stderr.contains("b.nii.gz: skipped, b_mask.nii.gz exists"), "{}", resumed.stderr);
    assert_eq!(labels(&whole.join("a_mask.nii.gz")), a);
    let after = read_summary(&whole.join("summary.csv")).unwrap();
    for row in [3, 4, 6, 7, 8] {
        assert_eq!(after.iter().find(|l| l.row == row), Some(&line(row)), "row {row} was not kept as it was");
    }
    assert_eq!(without_seconds(after), without_seconds(summary.clone()));

    // Two shards together: exactly the masks of the unsharded run, and every summary line.
    let sharded = dir.path().join("sharded");
    let one = segment_batch(&manifest, &sharded, &["--shard", "1/2"]);
    let two = segment_batch(&manifest, &sharded, &["--shard", "2/2"]);
    assert_eq!((rows(&one.json), rows(&two.json)), (vec![5], vec![7, 8]));
    assert_eq!((one.json["images"].as_u64(), two.json["images"].as_u64()), (Some(2), Some(2)));
    for name in ["a_mask.nii.gz", "b_mask.nii.gz", "c_mask.nii.gz"] {
        assert_eq!(labels(&sharded.join(name)), labels(&whole.join(name)), "{name}");
    }
    let mut union = read_summary(&sharded.join("summary-1-of-2.csv")).unwrap();
    union.extend(read_summary(&sharded.join("summary-2-of-2.csv")).unwrap());
    assert_eq!(without_seconds(union), without_seconds(summary));
    assert!(!sharded.join("summary.csv").exists());
}

#[test]
fn deeplesion_csv_resolves_image_key_slice_and_box() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let image = images.join("CT_Lesion_000015_01_01_081-088_img.nii.gz");
    mini_volume(&image, true);
    mini_volume(&images.join("CT_Lesion_000016_01_01_081-088_img.nii.gz"), true);
    // Key slice 85 of 81..88 is slice 4; the box is ymin, xmin, ymax, xmax in floats.
    let deeplesion = dir.path().join("DeepLesion_Dataset_Info.csv");
    std::fs::write(
        &deeplesion,
        "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Bounding_boxes,Slice_range,DICOM_windows\n\
         000015_01_01_085.png,15,1,1,85,\"33.7, 33.2, 68.9, 73.4\",\"81, 88\",\"-1024, -769\"\n\
         000017_01_01_085.png,17,1,1,85,\"33.7, 33.2, 68.9, 73.4\",\"81, 88\",\"-1024, -769\"\n",
    )
    .unwrap();
    let output = dir.path().join("deeplesion");
    let run = segment_batch(&deeplesion, &output, &["--images-dir", images.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.json["format"], "deeplesion");
    assert_eq!(rows(&run.json), [3]);
    assert!(run.stderr.contains("row 3: failed: no image in"), "{}", run.stderr);

    // The same prompt through our manifest format gives the same mask.
    let ours = dir.path().join("ours.csv");
    std::fs::write(&ours, format!("image,slice,box,window\n{},4,\"33,33,73,68\",\"-1024,-769\"\n", image.display())).unwrap();
    let direct = dir.path().join("direct");
    let check = segment_batch(&ours, &direct, &[]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    let name = "CT_Lesion_000015_01_01_081-088_img_mask.nii.gz";
    let mask = labels(&output.join(name));
    assert!(count(&mask, 1) > 1000, "{} voxels", count(&mask, 1));
    assert_eq!(mask, labels(&direct.join(name)));
    let summary: Vec<SummaryLine> = read_summary(&output.join("summary.csv")).unwrap();
    assert_eq!((summary[0].key_slice, summary[0].bbox.as_str(), summary[0].window.as_str()), (Some(4), "33,33,73,68", "-1024,-769"));
}

#[test]
fn two_lesions_of_one_image_both_survive_the_cleanup() {
    // Two objects of one label in one image, kept apart by their slice ranges (slices 0..=2 and
    // 5..=7, nothing on 3 and 4), so the union of their masks is two separate components.
    let dir = tempfile::tempdir().unwrap();
    mini_volume(&dir.path().join("two.nii.gz"), false);
    let rows = ["two.nii.gz,1,\"33,33,73,68\",1,\"0,2\"", "two.nii.gz,6,\"33,33,73,68\",1,\"5,7\""];
    let mask_of = |name: &str, rows: &[&str]| {
        let manifest = dir.path().join(format!("{name}.csv"));
        std::fs::write(&manifest, format!("image,slice,box,label,range\n{}\n", rows.join("\n"))).unwrap();
        let out = dir.path().join(name);
        let outcome = segment_batch(&manifest, &out, &[]);
        assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
        labels(&out.join("two_mask.nii.gz"))
    };
    let first = mask_of("first", &rows[..1]);
    let second = mask_of("second", &rows[1..]);
    let both = mask_of("both", &rows);
    assert!(count(&first, 1) > 0 && count(&second, 1) > 0);
    let union: Vec<u8> = first.iter().zip(&second).map(|(a, b)| a | b).collect();
    assert_eq!(both, union, "each row keeps its own largest component, then the rows are OR-ed");
    // Cleaning up the union as one mask (as MedSAM2's script does over all lesions) would have
    // deleted one of them.
    let mut cleaned = union.clone();
    let kept = medsam_viewer::segment::postprocess::keep_largest_component(&mut cleaned, [112, 96, 8]).unwrap();
    assert!(kept.components >= 2 && kept.voxels < count(&union, 1), "{} components", kept.components);
}
