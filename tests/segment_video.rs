//! `medsam-viewer segment-video` end to end on the synthetic clip of tests/fixtures/video
//! against the official legacy SAM2 video predictor driven as MedSAM2's video script drives it
//! (make_fixtures.py): first-frame masks of two objects, --use-all-masks with --palette,
//! --track-later with an object appearing on frame 3, --per-object-png, and a box plus a click
//! on frame 3. Masks must equal the reference's except at the pixels the fixtures mark exempt
//! (a reference logit within 1e-3 of the threshold, or, under the non-overlap rule, the two
//! highest objects within 1e-3 of each other where the winner can be foreground).
//!
//! Also: the JPEG frames decode (zune-jpeg) within a small bound of Pillow's (libjpeg-turbo)
//! decoding; a lossless video file of the frames through ffmpeg gives the same masks, and an
//! H.264 MP4 the frames, order and rate ffmpeg itself reports; bad input ends with a message
//! naming the fix.

use medsam_viewer::video::annotation;
use medsam_viewer::video::{self, ClipOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/video");
const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
const BIN: &str = env!("CARGO_BIN_EXE_medsam-viewer");

fn run(args: &[String], path_env: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("segment-video")
        .args(args)
        .args([
            "--checkpoint",
            &format!("{MINI}/model.pt"),
            "--model-config",
            &format!("{MINI}/config.yaml"),
        ])
        .current_dir(FIXTURES);
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

fn scenario_args(name: &str) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/meta.json")).unwrap())
            .unwrap();
    meta["scenarios"][name]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// Expected PNGs of a scenario relative to its folder (exempt maps excluded), sorted.
fn expected_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "exempt" {
                    stack.push(path);
                }
            } else {
                files.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// Compares every output PNG with the reference's; returns (compared pixels, differing
/// exempt pixels).
fn compare(scenario: &str, out: &Path) -> (usize, usize) {
    let expected_dir = Path::new(FIXTURES).join("expected").join(scenario);
    let files = expected_files(&expected_dir);
    assert_eq!(
        expected_files(out),
        files,
        "{scenario}: the set of files written"
    );
    let (mut compared, mut exempt_differ) = (0, 0);
    for file in &files {
        let want = annotation::read(&expected_dir.join(file)).unwrap();
        let got = annotation::read(&out.join(file)).unwrap();
        assert_eq!(
            (got.width, got.height),
            (want.width, want.height),
            "{scenario}/{}",
            file.display()
        );
        assert_eq!(
            got.palette,
            want.palette,
            "{scenario}/{}: palette",
            file.display()
        );
        let exempt =
            annotation::read(&expected_dir.join("exempt").join(file.file_name().unwrap())).unwrap();
        let mut bad = Vec::new();
        for (i, ((&g, &w), &e)) in got
            .labels
            .iter()
            .zip(&want.labels)
            .zip(&exempt.labels)
            .enumerate()
        {
            if g != w {
                if e != 0 {
                    exempt_differ += 1;
                } else {
                    bad.push((i % got.width, i / got.width, g, w));
                }
            }
        }
        compared += got.labels.len();
        assert!(
            bad.is_empty(),
            "{scenario}/{}: {} pixels differ (x, y, ours, reference): {:?}",
            file.display(),
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
    (compared, exempt_differ)
}

fn check_scenario(name: &str, frames: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "--frames".to_string(),
        frames.to_string(),
        "--output-dir".into(),
        out.display().to_string(),
    ];
    args.extend(scenario_args(name));
    let output = run(&args, None);
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["frames"], 8);
    let (compared, exempt_differ) = compare(name, &out);
    eprintln!("{name}: {compared} pixels compared, {exempt_differ} exempt pixels differ");
}

#[test]
fn first_frame_masks_of_two_objects_match_the_reference() {
    check_scenario("first", "frames_png");
}

#[test]
fn all_masks_with_the_input_palette_match_the_reference() {
    check_scenario("all", "frames_png");
}

#[test]
fn objects_appearing_later_tracked_one_by_one_match_the_reference() {
    check_scenario("later", "frames_png");
}

#[test]
fn prompts_on_a_later_frame_tracked_both_ways_match_the_reference() {
    check_scenario("both", "frames_png");
}

#[test]
fn objects_appearing_later_tracked_both_ways_match_the_reference() {
    check_scenario("both_later", "frames_png");
}

#[test]
fn a_2d_plus_time_nifti_gives_the_masks_of_the_same_frames_as_pngs() {
    use medsam_viewer::io::nifti;
    use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
    // The fixture clip in grey (its green channel), once as a folder of grey PNG frames (the
    // reader the parity tests cover) and once as a 2D+t NIfTI, as CAMUS ships echo sequences.
    let dir = tempfile::tempdir().unwrap();
    let pngs = dir.path().join("grey");
    std::fs::create_dir(&pngs).unwrap();
    let clip = video::open(Path::new(&format!("{FIXTURES}/frames_png")), &ClipOptions::default()).unwrap();
    let (w, h) = (clip.width(), clip.height());
    let mut voxels = Vec::new();
    for k in 0..clip.len() {
        let grey: Vec<u8> = clip.frame(k).unwrap().chunks(3).map(|p| p[1]).collect();
        image::GrayImage::from_raw(w as u32, h as u32, grey.clone()).unwrap().save(pngs.join(format!("{k:05}.png"))).unwrap();
        voxels.extend(grey);
    }
    let volume = Volume::new(Geometry::new([w, h, clip.len()], [0.3, 0.3, 1.0], [0.0; 3]), 1, VoxelBuffer::U8(voxels), VolumeMeta::default()).unwrap();
    let series = dir.path().join("sequence.nii.gz");
    nifti::write(&series, &volume, nifti::NiftiKind::Image).unwrap();
    let outputs: Vec<Vec<Vec<u8>>> = [pngs, series]
        .iter()
        .map(|frames| {
            let out = dir.path().join(format!("out-{}", frames.file_name().unwrap().to_string_lossy()));
            let mut args = vec!["--frames".to_string(), frames.display().to_string(), "--output-dir".into(), out.display().to_string()];
            args.extend(scenario_args("first"));
            let output = run(&args, None);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            (0..8).map(|k| std::fs::read(out.join(format!("{k:05}.png"))).unwrap()).collect()
        })
        .collect();
    assert_eq!(outputs[0], outputs[1], "the same masks, frame by frame");
    assert!(outputs[0].iter().any(|png| image::load_from_memory(png).unwrap().to_luma8().pixels().any(|p| p.0[0] != 0)));
}

#[test]
fn per_object_pngs_match_the_reference() {
    check_scenario("per_object", "frames_png");
}

#[test]
fn a_box_and_a_click_on_a_later_frame_match_the_reference() {
    check_scenario("box", "frames_png");
}

#[test]
fn jpeg_frames_decode_close_to_pillow() {
    let jpeg = video::open(
        &Path::new(FIXTURES).join("frames_jpg"),
        &ClipOptions::default(),
    )
    .unwrap();
    let pillow = video::open(
        &Path::new(FIXTURES).join("frames_png"),
        &ClipOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (jpeg.len(), jpeg.width(), jpeg.height()),
        (pillow.len(), pillow.width(), pillow.height())
    );
    assert_eq!(jpeg.names(), pillow.names());
    let (mut worst, mut differ, mut total) = (0u8, 0usize, 0usize);
    for f in 0..jpeg.len() {
        for (&a, &b) in jpeg.frame(f).unwrap().iter().zip(pillow.frame(f).unwrap()) {
            worst = worst.max(a.abs_diff(b));
            differ += usize::from(a != b);
            total += 1;
        }
    }
    eprintln!("JPEG (zune-jpeg) vs Pillow: max |diff| {worst}, {differ} of {total} samples differ");
    assert!(worst <= JPEG_MAX_DIFF, "max |diff| {worst}");
}

/// The largest difference measured between zune-jpeg's and Pillow's (libjpeg-turbo) decoding
/// of the fixture frames (4:2:0 JPEG, quality 90): 4 levels, on 49,659 of 199,680 samples
/// (25 %). Run on the JPEG frames instead of Pillow's decoding, the `first` scenario's masks
/// differ from the reference on 469 of 66,560 pixels (172 outside the exempt ones) and the
/// `per_object` ones on 361 of 133,120 (332): the parity runs therefore use the PNG frames.
const JPEG_MAX_DIFF: u8 = 4;

/// Whether ffmpeg is on PATH. CI installs it (.ci/run), so there its absence fails the test
/// instead of skipping it.
fn ffmpeg_installed() -> bool {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    assert!(found || std::env::var_os("CI").is_none(), "CI must have ffmpeg (.ci/run installs it)");
    if !found {
        eprintln!("ffmpeg is not installed: skipped");
    }
    found
}

/// The fixture's PNG frames encoded by ffmpeg into `movie` at `rate` frames per second with
/// the given output options; returns `movie`.
fn encode_fixture_frames(movie: &Path, rate: &str, options: &[&str]) -> PathBuf {
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-framerate", rate, "-i", &format!("{FIXTURES}/frames_png/%05d.png")])
        .args(options)
        .arg(movie)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    movie.to_path_buf()
}

#[test]
fn a_lossless_video_file_through_ffmpeg_gives_the_same_masks() {
    if !ffmpeg_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let movie = encode_fixture_frames(&dir.path().join("clip.mov"), "5", &["-c:v", "png"]);
    let clip = video::open(&movie, &ClipOptions::default()).unwrap();
    let frames = video::open(
        &Path::new(FIXTURES).join("frames_png"),
        &ClipOptions::default(),
    )
    .unwrap();
    assert_eq!(clip.names(), frames.names());
    assert_eq!(clip.frame_rate(), Some(5.0));
    for f in 0..clip.len() {
        assert_eq!(clip.frame(f), frames.frame(f), "frame {f}");
    }
    let too_small = video::open(
        &movie,
        &ClipOptions {
            max_bytes: 3 * 104 * 80 * 3,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(too_small.contains("limit"), "{too_small}");
    check_scenario("first", &movie.display().to_string());
}

#[test]
fn an_h264_mp4_decodes_to_what_ffmpeg_itself_gives() {
    if !ffmpeg_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let movie = encode_fixture_frames(&dir.path().join("clip.mp4"), "12.5", &["-pix_fmt", "yuv420p"]);
    let clip = video::open(&movie, &ClipOptions::default()).unwrap();
    assert_eq!(
        (clip.len(), clip.width(), clip.height(), clip.frame_rate()),
        (8, 104, 80, Some(12.5))
    );
    assert_eq!(clip.names()[7], "00007");
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&movie)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(raw.status.success());
    let ours: Vec<u8> = (0..clip.len())
        .flat_map(|f| clip.frame(f).unwrap().to_vec())
        .collect();
    assert_eq!(ours.len(), raw.stdout.len());
    assert!(
        ours == raw.stdout,
        "frames differ from ffmpeg's own rgb24 output"
    );
}

#[test]
fn bad_input_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "--frames".to_string(),
            "frames_png".into(),
            "--output-dir".into(),
            out.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // An object first masked on frame 3 without --track-later.
    let o = run(&base(&["--masks", "masks/later", "--use-all-masks"]), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("object 3") && err.contains("--track-later"),
        "{err}"
    );
    // A box on a frame the clip does not have.
    let o = run(&base(&["--box", "8:1,1,5,5"]), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("8 frames"), "{err}");
    // Existing outputs are kept without --force.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("00004.png"), b"keep").unwrap();
    let o = run(&base(&["--masks", "masks/first"]), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("00004.png") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("00004.png")).unwrap(), b"keep");
    // A video file without ffmpeg on PATH.
    let movie = dir.path().join("clip.mp4");
    std::fs::write(&movie, b"not really").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let mut args = base(&["--masks", "masks/first"]);
    args[1] = movie.display().to_string();
    let o = run(&args, Some(&empty.path().display().to_string()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ffprobe") && err.contains("apt-get install ffmpeg"),
        "{err}"
    );
}
