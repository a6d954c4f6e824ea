//! `medsam-viewer segment-recist` against MedSAM2's RECIST-to-3D script: the fixtures of
//! tests/fixtures/recist (made by its make_fixtures.py with the official `sam2` package on the
//! seeded mini checkpoint) give, for the box mode and each point mode, the `segs` the script
//! writes for a synthetic two-lesion case, the prompts it used, and the voxels whose outcome a
//! 1e-3 change of a logit could flip; numpy reads the written .npz back. Broken cases fail
//! alone, with exit status 2.

use medsam_viewer::io::nifti;
use medsam_viewer::io::npz;
use medsam_viewer::volume::VoxelBuffer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recist");
const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
const BIN: &str = env!("CARGO_BIN_EXE_medsam-viewer");

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/meta.json")).unwrap())
        .unwrap()
}

/// A folder holding copies of the named fixture cases.
fn input_folder(dir: &Path, cases: &[&str]) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for case in cases {
        std::fs::copy(format!("{FIXTURES}/{case}"), input.join(case)).unwrap();
    }
    input
}

fn run(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("segment-recist")
        .arg(input)
        .arg("-o")
        .arg(output);
    command.args([
        "--checkpoint",
        &format!("{MINI}/model.pt"),
        "--model-config",
        &format!("{MINI}/config.yaml"),
    ]);
    command.args(extra).output().unwrap()
}

fn u8_array(path: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let array = npz::read_array(path, name)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: no {name}", path.display()));
    match array.data {
        VoxelBuffer::U8(v) => (array.shape, v),
        other => panic!("{name} is {:?}", other.voxel_type()),
    }
}

fn summary(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn every_prompt_mode_matches_medsam2s_recist_script() {
    let meta = meta();
    let shift = meta["shift"].as_u64().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let input = input_folder(dir.path(), &["lesions.npz"]);
    for (mode, scenario) in meta["scenarios"].as_object().unwrap() {
        let out = dir.path().join(mode);
        let mut args: Vec<&str> = scenario["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        args.extend(["--shift", &shift, "--nifti"]);
        let output = run(&input, &out, &args);
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        // The prompts are the script's: boxes, grid points, numpy's seeded choice of line pixels.
        let case = &summary(&output)["cases"][0];
        assert_eq!(case["status"], "segmented");
        for lesion in case["lesions"].as_array().unwrap() {
            let expected = &scenario["prompts"][lesion["label"].to_string()];
            assert_eq!(lesion["slice"], expected["slice"], "{mode}");
            let key = if mode == "box" { "box" } else { "points" };
            let as_f64 = |v: &Value| -> Vec<f64> {
                let mut flat = Vec::new();
                let mut stack = vec![v];
                while let Some(v) = stack.pop() {
                    match v {
                        Value::Array(items) => stack.extend(items.iter().rev()),
                        other => flat.push(other.as_f64().unwrap()),
                    }
                }
                flat
            };
            assert_eq!(
                as_f64(&lesion["prompt"][key]),
                as_f64(&expected[key]),
                "{mode} label {}",
                lesion["label"]
            );
        }

        let expected = Path::new(FIXTURES).join(format!("expected_{mode}.npz"));
        let (shape, reference) = u8_array(&expected, "segs");
        let (_, exempt) = u8_array(&expected, "exempt");
        let written = out.join("lesions.npz");
        let (our_shape, ours) = u8_array(&written, "segs");
        assert_eq!(our_shape, shape, "{mode}");
        let differ: Vec<usize> = (0..ours.len())
            .filter(|&i| ours[i] != reference[i])
            .collect();
        let outside: Vec<&usize> = differ.iter().filter(|&&i| exempt[i] == 0).collect();
        eprintln!(
            "{mode}: {} voxels differ, {} outside the {} exempt",
            differ.len(),
            outside.len(),
            exempt.iter().filter(|&&e| e != 0).count()
        );
        assert!(
            outside.is_empty(),
            "{mode}: voxels {outside:?} differ from the reference"
        );
        for label in [1u8, 2] {
            let voxels = ours.iter().filter(|&&v| v == label).count();
            assert!(voxels > 0, "{mode}: label {label} is empty");
        }
        if mode == "box" {
            numpy_reads_back(&written, &ours, &shape);
        }
        let spacing = npz::read_array(&written, "spacing").unwrap().unwrap();
        assert_eq!(spacing.data, VoxelBuffer::F64(vec![0.8, 0.7, 2.5]));

        // The NIfTI holds the same labels on the image's grid.
        let volume = nifti::read(&out.join("segs_nifti/lesions_segs.nii.gz")).unwrap();
        assert_eq!(volume.geometry.dims, [shape[2], shape[1], shape[0]]);
        assert_eq!(
            volume.geometry.spacing,
            [0.8f32, 0.7, 2.5].map(f64::from),
            "NIfTI pixdim is float32"
        );
        assert_eq!(volume.data, VoxelBuffer::U8(ours));

        let times = std::fs::read_to_string(out.join("inference_time.csv")).unwrap();
        let lines: Vec<&str> = times.lines().collect();
        assert_eq!(lines[0], "image,duration,status");
        assert!(
            lines[1].starts_with("lesions.npz,") && lines[1].ends_with(",segmented"),
            "{times}"
        );
    }
}

/// numpy (`np.load`) reads the written .npz as `segs` uint8 of `shape` holding `segs`, and
/// `spacing` float64.
fn numpy_reads_back(npz_path: &Path, segs: &[u8], shape: &[usize]) {
    let raw = npz_path.with_extension("raw");
    std::fs::write(&raw, segs).unwrap();
    let script = "import sys, numpy as np\n\
        d = np.load(sys.argv[1])\n\
        s = d['segs']\n\
        assert s.dtype == np.uint8 and list(s.shape) == [int(v) for v in sys.argv[3].split(',')], (s.dtype, s.shape)\n\
        assert np.array_equal(s, np.fromfile(sys.argv[2], np.uint8).reshape(s.shape))\n\
        assert d['spacing'].dtype == np.float64 and d['spacing'].tolist() == [0.8, 0.7, 2.5]\n\
        print('numpy reads', sorted(d.files))\n";
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(npz_path)
        .arg(&raw)
        .arg(dims.join(","))
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("numpy reads ['segs', 'spacing']"),
        "numpy readback (needs numpy):\n{text}"
    );
}

#[test]
fn broken_cases_fail_alone_and_outputs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = input_folder(
        dir.path(),
        &["bad_no_recist.npz", "bad_outside.npz", "lesions.npz"],
    );
    let out = dir.path().join("out");
    let output = run(&input, &out, &["--sample-points", "from_recist_center"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad_no_recist.npz: no `recist` array in the .npz"),
        "{stderr}"
    );
    assert!(stderr.contains("`recist` has shape [6, 16, 16] but `imgs` has [4, 16, 16]; the line of label 2 (slice 5) lies outside the image"), "{stderr}");
    assert!(
        stderr.contains("2 of 3 cases failed: bad_no_recist.npz, bad_outside.npz"),
        "{stderr}"
    );
    assert!(!out.join("bad_no_recist.npz").exists() && !out.join("bad_outside.npz").exists());
    let written = out.join("lesions.npz");
    let (_, first) = u8_array(&written, "segs");
    let statuses: Vec<String> = summary(&output)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_string())
        .collect();
    assert!(
        statuses[0].starts_with("failed: ")
            && statuses[1].starts_with("failed: ")
            && statuses[2] == "segmented",
        "{statuses:?}"
    );

    // A second run keeps the finished case; --force redoes it.
    std::fs::write(&written, b"kept").unwrap();
    let again = run(&input, &out, &["--sample-points", "from_recist_center"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("lesions.npz: skipped"));
    assert_eq!(std::fs::read(&written).unwrap(), b"kept");
    let forced = run(
        &input.join("lesions.npz"),
        &out,
        &["--sample-points", "from_recist_center", "--force"],
    );
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(u8_array(&written, "segs").1, first);

    // The outputs may not replace the inputs.
    let same = run(&input, &input, &[]);
    assert_eq!(same.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&same.stderr).contains("holds the input cases"));
}
