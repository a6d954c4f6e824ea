//! DICOM reader against what SimpleITK and pydicom report (tests/fixtures/data/dicom, README
//! there) and against the extra fixtures of tests/fixtures/dicom-extra (make_fixtures.py).

use medsam_viewer::io::SeriesSelector;
use medsam_viewer::io::dicom::{list_series, open};
use medsam_viewer::volume::{SourceFormat, SliceAxis, Volume, VoxelType};
use serde_json::Value;
use std::path::{Path, PathBuf};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data/dicom");
const EXTRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom-extra");

fn data(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

fn extra(name: &str) -> PathBuf {
    Path::new(EXTRA).join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Checks dims, spacing, origin and direction (1e-4) against SimpleITK-style keys.
fn assert_geometry(volume: &Volume, expected: &Value) {
    let g = &volume.geometry;
    let size: Vec<usize> = numbers(&expected["size_xyz"]).iter().map(|&x| x as usize).collect();
    assert_eq!(g.dims.to_vec(), size, "dims");
    for (name, got, want) in [
        ("spacing", g.spacing.to_vec(), numbers(&expected["spacing_xyz_mm"])),
        ("origin", g.origin.to_vec(), numbers(&expected["origin_lps_mm"])),
        ("direction", g.direction_row_major().to_vec(), numbers(&expected["direction_lps_row_major"])),
    ] {
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{name}: got {got:?}, expected {want:?}");
        }
    }
}

/// Checks every listed voxel value exactly, and min/max.
fn assert_values(volume: &Volume, expected: &Value) {
    for voxel in expected["voxels"].as_array().unwrap() {
        let ijk: Vec<usize> = numbers(&voxel["index_xyz"]).iter().map(|&x| x as usize).collect();
        let got = volume.value_at([ijk[0], ijk[1], ijk[2]], 0).unwrap();
        assert_eq!(got, voxel["value"].as_f64().unwrap(), "voxel {ijk:?} ({})", voxel["label"]);
    }
    let (min, max) = volume.min_max().unwrap();
    assert_eq!(min, expected["min"].as_f64().unwrap(), "min");
    assert_eq!(max, expected["max"].as_f64().unwrap(), "max");
}

fn slice_values(volume: &Volume, k: usize) -> Vec<f32> {
    let mut out = Vec::new();
    volume.slice_f32(SliceAxis::Axial, k, &mut out);
    out
}

fn error_of(result: Result<Volume, medsam_viewer::io::IoError>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got a volume of {:?}", v.geometry.dims),
        Err(e) => e.to_string(),
    }
}

/// A temporary copy of the ct-phantom folder, minus the files `skip` names.
fn phantom_copy(skip: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data("ct-phantom")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    dir
}

fn phantom_order() -> Vec<String> {
    json(&data("ct-phantom.expected.json"))["files_in_simpleitk_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ct_phantom_matches_simpleitk() {
    let expected = json(&data("ct-phantom.expected.json"));
    let volume = open(&data("ct-phantom"), None).unwrap();
    assert_geometry(&volume, &expected);
    assert_values(&volume, &expected);
    assert_eq!(volume.meta.format, Some(SourceFormat::Dicom));
    assert_eq!(volume.meta.modality.as_deref(), Some("CT"));
    assert_eq!(volume.meta.description.as_deref(), Some("CT phantom axial 2.5mm"));
    assert_eq!(volume.meta.stored_type, Some(VoxelType::U16));
    assert_eq!(volume.voxel_type(), VoxelType::I16, "CT in HU fits i16");
    assert!(volume.meta.warnings.is_empty(), "{:?}", volume.meta.warnings);
}

#[test]
fn ct_phantom_slices_are_in_simpleitk_file_order() {
    let volume = open(&data("ct-phantom"), None).unwrap();
    for (k, name) in phantom_order().iter().enumerate() {
        let single = open(&data("ct-phantom").join(name), None).unwrap();
        assert_eq!(single.geometry.dims, [64, 64, 1]);
        assert_eq!(slice_values(&single, 0), slice_values(&volume, k), "slice {k} should come from {name}");
        let z = volume.geometry.voxel_to_world([0.0, 0.0, k as f64])[2];
        assert!((single.geometry.origin[2] - z).abs() < 1e-6, "{name}");
    }
}

#[test]
fn mixed_folder_lists_both_series() {
    let expected = json(&data("mixed.expected.json"));
    let listing = list_series(&data("mixed")).unwrap();
    assert_eq!(listing.len(), 2);
    // SeriesNumber 3 (CT) comes before SeriesNumber 5 (MR).
    assert_eq!(listing[0].modality, "CT");
    assert_eq!(listing[1].modality, "MR");
    for series in expected["series"].as_array().unwrap() {
        let uid = series["series_instance_uid"].as_str().unwrap();
        let found = listing.iter().find(|s| s.uid == uid).unwrap();
        assert_eq!(found.modality, series["modality"].as_str().unwrap());
        assert_eq!(found.slices as u64, series["number_of_files"].as_u64().unwrap());
    }
    assert_eq!(listing[1].description, "MR phantom sagittal T2-like");
}

#[test]
fn mixed_series_open_by_index_and_by_uid() {
    let expected = json(&data("mixed.expected.json"));
    let listing = list_series(&data("mixed")).unwrap();
    for series in expected["series"].as_array().unwrap() {
        let uid = series["series_instance_uid"].as_str().unwrap().to_string();
        let index = listing.iter().position(|s| s.uid == uid).unwrap();
        let by_index = open(&data("mixed"), Some(&SeriesSelector::Index(index))).unwrap();
        let by_uid = open(&data("mixed"), Some(&SeriesSelector::Uid(uid.clone()))).unwrap();
        assert_eq!(by_index, by_uid);
        assert_geometry(&by_uid, series);
        assert_values(&by_uid, series);
        assert_eq!(by_uid.meta.modality.as_deref(), series["modality"].as_str());
        assert!(by_uid.meta.warnings.is_empty(), "{:?}", by_uid.meta.warnings);
    }
    let mr = open(&data("mixed"), Some(&SeriesSelector::Index(1))).unwrap();
    assert_eq!(mr.voxel_type(), VoxelType::U16, "MR with no rescale keeps its stored type");
}

#[test]
fn mixed_folder_without_a_choice_lists_the_series() {
    let message = error_of(open(&data("mixed"), None));
    assert!(message.contains("2 series") && message.contains("--series"), "{message}");
    for series in json(&data("mixed.expected.json"))["series"].as_array().unwrap() {
        assert!(message.contains(series["series_instance_uid"].as_str().unwrap()), "{message}");
    }
    assert!(message.contains("[0] CT") && message.contains("[1] MR") && message.contains("24 slices"), "{message}");
    let message = error_of(open(&data("mixed"), Some(&SeriesSelector::Index(2))));
    assert!(message.contains("no series 2"), "{message}");
    let message = error_of(open(&data("mixed"), Some(&SeriesSelector::Uid("1.2.3".into()))));
    assert!(message.contains("1.2.3") && message.contains("[1] MR"), "{message}");
}

#[test]
fn pydicom_samples_decode_like_pydicom() {
    let mut checked = 0;
    for entry in std::fs::read_dir(data("pydicom-samples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let expected = json(&path);
        let dcm = path.with_extension("");
        let name = dcm.file_name().unwrap().to_string_lossy().into_owned();
        if expected["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.80" {
            let message = error_of(open(&dcm, None));
            assert!(message.contains("JPEG-LS") && message.contains("1.2.840.10008.1.2.4.80"), "{message}");
            continue;
        }
        let volume = open(&dcm, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (rows, cols) = (expected["rows"].as_u64().unwrap() as usize, expected["cols"].as_u64().unwrap() as usize);
        assert_eq!(volume.geometry.dims, [cols, rows, 1], "{name}");
        for pixel in expected["pixels"].as_array().unwrap() {
            let (r, c) = (pixel["row"].as_u64().unwrap() as usize, pixel["col"].as_u64().unwrap() as usize);
            let got = volume.value_at([c, r, 0], 0).unwrap();
            assert_eq!(got, pixel["modality_lut_value"].as_f64().unwrap(), "{name} at row {r}, col {c}");
        }
        // min / max / sum of the decoded (stored) frame, through the modality LUT.
        let (slope, intercept) = (expected["rescale_slope"].as_f64().unwrap(), expected["rescale_intercept"].as_f64().unwrap());
        let (min, max) = volume.min_max().unwrap();
        assert_eq!(min, expected["decoded_min"].as_f64().unwrap() * slope + intercept, "{name} min");
        assert_eq!(max, expected["decoded_max"].as_f64().unwrap() * slope + intercept, "{name} max");
        let sum: f64 = (0..rows * cols).map(|i| volume.data.get_f64(i)).sum();
        let want = expected["decoded_sum"].as_f64().unwrap() * slope + (rows * cols) as f64 * intercept;
        assert_eq!(sum, want, "{name} sum");
        assert_eq!(volume.meta.modality.as_deref(), expected["modality"].as_str(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 8, "every decodable sample was checked");
}

#[test]
fn dicomdir_opens_the_files_it_references() {
    let expected = &json(&extra("expected.json"))["dicomdir/DICOMDIR"];
    let dicomdir = extra("dicomdir/DICOMDIR");
    let listing = list_series(&dicomdir).unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].uid, expected["series_instance_uid"].as_str().unwrap());
    assert_eq!(listing[0].slices, 4);
    let volume = open(&dicomdir, None).unwrap();
    let size = numbers(&expected["size_xyz"]);
    assert_eq!(volume.geometry.dims, [size[0] as usize, size[1] as usize, size[2] as usize]);
    for (a, b) in volume.geometry.origin.iter().zip(numbers(&expected["origin_lps_mm"])) {
        assert!((a - b).abs() < 1e-4);
    }
    assert!((volume.geometry.spacing[2] - 2.5).abs() < 1e-4);
    let phantom = open(&data("ct-phantom"), None).unwrap();
    let offset = expected["phantom_slice_offset"].as_u64().unwrap() as usize;
    for k in 0..4 {
        assert_eq!(slice_values(&volume, k), slice_values(&phantom, offset + k), "slice {k}");
    }
    // The folder holding the DICOMDIR reads the same (the DICOMDIR file itself is skipped).
    assert_eq!(open(&extra("dicomdir"), None).unwrap(), volume);
}

#[test]
fn dicomdir_names_are_matched_without_case_on_lower_case_copies() {
    fn copy_lower(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_lowercase();
            if path.is_dir() {
                copy_lower(&path, &to.join(name));
            } else {
                std::fs::copy(&path, to.join(name)).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_lower(&extra("dicomdir"), dir.path());
    let volume = open(&dir.path().join("dicomdir"), None).unwrap();
    assert_eq!(volume.geometry.dims, [64, 64, 4]);
    assert!(volume.meta.warnings.is_empty(), "{:?}", volume.meta.warnings);
}

#[test]
fn a_missing_slice_is_reported_and_the_regular_spacing_kept() {
    let order = phantom_order();
    let dir = phantom_copy(&[order[10].as_str()]);
    let volume = open(dir.path(), None).unwrap();
    let phantom = open(&data("ct-phantom"), None).unwrap();
    assert_eq!(volume.geometry.dims, [64, 64, 23]);
    assert!((volume.geometry.spacing[2] - 2.5).abs() < 1e-9);
    assert_eq!(volume.geometry.origin, phantom.geometry.origin);
    let warning = volume.meta.warnings.iter().find(|w| w.contains("spacing")).expect("a spacing warning");
    assert!(warning.contains("5.000 mm between slices 9 and 10") && warning.contains("missing"), "{warning}");
    assert_eq!(slice_values(&volume, 10), slice_values(&phantom, 11), "slices after the gap keep their data");
}

#[test]
fn copies_of_the_same_image_are_read_once() {
    let order = phantom_order();
    let dir = phantom_copy(&[]);
    std::fs::copy(data("ct-phantom").join(&order[3]), dir.path().join("copy-of-slice-3.dcm")).unwrap();
    assert_eq!(list_series(dir.path()).unwrap()[0].slices, 24);
    let volume = open(dir.path(), None).unwrap();
    assert_eq!(volume.geometry.dims, [64, 64, 24]);
    assert!(volume.meta.warnings.iter().any(|w| w.contains("same SOPInstanceUID")), "{:?}", volume.meta.warnings);
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data("ct-phantom").join(&phantom_order()[0])).unwrap();
    for keep in [bytes.len() - 100, bytes.len() / 2, 400, 140, 10, 0] {
        let path = dir.path().join(format!("cut-{keep}.dcm"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let message = error_of(open(&path, None));
        assert!(message.contains(&format!("cut-{keep}.dcm")), "{message}");
        if keep > 1000 {
            assert!(message.contains("truncated"), "{message}");
        }
    }
}

#[test]
fn a_truncated_file_in_a_folder_is_left_out_with_warnings() {
    let order = phantom_order();
    let dir = phantom_copy(&[]);
    let cut = dir.path().join(&order[5]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 2000]).unwrap();
    let volume = open(dir.path(), None).unwrap();
    assert_eq!(volume.geometry.dims[2], 23);
    let warnings = volume.meta.warnings.join("\n");
    assert!(warnings.contains("could not be read") && warnings.contains(&order[5]), "{warnings}");
    assert!(warnings.contains("between slices 4 and 5"), "{warnings}");
}

#[test]
fn a_folder_without_dicom_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/scan.nii"), [0u8; 400]).unwrap();
    let message = error_of(open(dir.path(), None));
    assert!(message.contains("no DICOM images") && message.contains("2 files looked at, 2 not DICOM"), "{message}");
    assert!(list_series(dir.path()).is_err());
    let empty = tempfile::tempdir().unwrap();
    assert!(error_of(open(empty.path(), None)).contains("no DICOM images"));
}

#[test]
fn enhanced_multiframe_frames_are_sorted_along_the_normal() {
    let expected = &json(&extra("expected.json"))["enhanced-ct.dcm"];
    let path = extra("enhanced-ct.dcm");
    assert_eq!(list_series(&path).unwrap()[0].slices, 5);
    let volume = open(&path, None).unwrap();
    assert_geometry(&volume, expected);
    assert_values(&volume, &serde_json::json!({
        "voxels": expected["voxels"].as_array().unwrap().iter()
            .map(|v| serde_json::json!({"index_xyz": v["index_xyz"], "value": v["value"], "label": ""}))
            .collect::<Vec<_>>(),
        "min": expected["min"], "max": expected["max"],
    }));
    assert_eq!(volume.voxel_type(), VoxelType::I16);
}

#[test]
fn multiframe_without_positions_is_an_error() {
    let message = error_of(open(&extra("multiframe-no-positions.dcm"), None));
    assert!(message.contains("3 frames without per-frame positions"), "{message}");
}

#[test]
fn bits_stored_below_bits_allocated_read_like_pydicom() {
    let expected = &json(&extra("expected.json"))["signed-12bit.dcm"];
    let volume = open(&extra("signed-12bit.dcm"), None).unwrap();
    let row: Vec<f64> = (0..8).map(|i| volume.value_at([i, 0, 0], 0).unwrap()).collect();
    assert_eq!(row, numbers(&expected["row0_values"]));
}

#[test]
fn monochrome1_is_kept_as_stored_and_noted() {
    let volume = open(&extra("monochrome1.dcm"), None).unwrap();
    assert_eq!(volume.min_max(), Some((0.0, 15.0)));
    assert!(volume.meta.warnings.iter().any(|w| w.contains("MONOCHROME1")), "{:?}", volume.meta.warnings);
}

#[test]
fn bad_pixel_data_is_an_error() {
    let message = error_of(open(&extra("no-pixel-data.dcm"), None));
    assert!(message.contains("no pixel data"), "{message}");
    let message = error_of(open(&extra("short-pixel-data.dcm"), None));
    assert!(message.contains("64 x 64 x 1") && message.contains("holds only 128"), "{message}");
    let message = error_of(open(&extra("absurd-size.dcm"), None));
    assert!(message.contains("absurd-size.dcm"), "{message}");
    let message = error_of(open(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")), None));
    assert!(message.contains("not a DICOM file"), "{message}");
}

#[test]
fn zero_pixel_spacing_and_imager_pixel_spacing_read_like_simpleitk() {
    let all = json(&extra("expected.json"));
    for name in ["pixel-spacing-zero.dcm", "cr-imager-spacing.dcm"] {
        let volume = open(&extra(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = numbers(&all[name]["sitk_spacing_xy"]);
        let spacing = volume.geometry.spacing;
        assert!((spacing[0] - expected[0]).abs() < 1e-9 && (spacing[1] - expected[1]).abs() < 1e-9, "{name}: {spacing:?}");
        let noted = volume.meta.warnings.iter().any(|w| w.contains("PixelSpacing is 0\\0"));
        assert_eq!(noted, name == "pixel-spacing-zero.dcm", "{name}: {:?}", volume.meta.warnings);
    }
}

#[test]
fn a_data_set_without_preamble_or_meta_group_reads_like_simpleitk() {
    let expected = &json(&extra("expected.json"))["bare-data-set.dcm"];
    let volume = open(&extra("bare-data-set.dcm"), None).unwrap();
    let size = numbers(&expected["sitk_size"]);
    assert_eq!(volume.geometry.dims, [size[0] as usize, size[1] as usize, size[2] as usize]);
    let spacing = numbers(&expected["sitk_spacing_xy"]);
    assert_eq!(volume.geometry.spacing[..2], spacing[..]);
    assert_eq!(volume.geometry.origin[..], numbers(&expected["sitk_origin"])[..]);
    let sum: f64 = (0..volume.data.len()).map(|i| volume.data.get_f64(i)).sum();
    assert_eq!(sum, expected["sitk_sum"].as_f64().unwrap());
}

#[test]
fn integer_strings_with_junk_read_their_leading_digits_with_a_warning() {
    let expected = &json(&extra("expected.json"))["junk-integer-string.dcm"];
    // SimpleITK reads NumberOfFrames "1A" as one frame; pydicom keeps the text "1A".
    assert_eq!(expected["sitk_number_of_frames_text"], "1A");
    let volume = open(&extra("junk-integer-string.dcm"), None).unwrap();
    let size = numbers(&expected["sitk_size"]);
    assert_eq!(volume.geometry.dims, [size[0] as usize, size[1] as usize, size[2] as usize]);
    let warned = |what: &str| volume.meta.warnings.iter().any(|w| w.contains(what));
    assert!(warned("(0028,0008) is \"1A\", not an integer string: read as 1"), "{:?}", volume.meta.warnings);
    assert!(warned("(0020,0013) is \"7B\", not an integer string: read as 7"), "{:?}", volume.meta.warnings);
}

#[test]
fn damaged_rle_segment_tables_are_errors_not_panics() {
    // pydicom 3.0.2 refuses both: "invalid number of segments (65535)" and "decoded RLE
    // segment data doesn't match the expected amount (8 vs. 64 bytes)".
    let message = error_of(open(&extra("rle-segment-count.dcm"), None));
    assert!(message.contains("declares 65535 segments (1 to 15 can exist)"), "{message}");
    let message = error_of(open(&extra("rle-short-segment.dcm"), None));
    assert!(message.contains("RLE segment 1 expands to 8 bytes, but Rows x Columns (8 x 8) need 64"), "{message}");
    // The sound RLE sample still decodes.
    assert!(open(&data("pydicom-samples/MR_small_RLE.dcm"), None).is_ok());
}

#[test]
fn a_huge_length_inside_a_deflated_data_set_is_refused_before_allocating() {
    let message = error_of(open(&extra("deflate-huge-length.dcm"), None));
    assert!(message.contains("inside the deflated data set") && message.contains("declares 3489660928 bytes"), "{message}");
}

#[test]
fn deflated_and_jpeg2000_samples_decode_like_pydicom() {
    let all = json(&extra("expected.json"));
    for name in ["image_dfl.dcm", "JPEG2000.dcm"] {
        let expected = &all[name];
        let volume = open(&extra(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let size = numbers(&expected["size_xyz"]);
        assert_eq!(volume.geometry.dims, [size[0] as usize, size[1] as usize, 1], "{name}");
        for pixel in expected["pixels"].as_array().unwrap() {
            let (r, c) = (pixel["row"].as_u64().unwrap() as usize, pixel["col"].as_u64().unwrap() as usize);
            assert_eq!(volume.value_at([c, r, 0], 0).unwrap(), pixel["value"].as_f64().unwrap(), "{name} row {r} col {c}");
        }
        let (min, max) = volume.min_max().unwrap();
        assert_eq!((min, max), (expected["min"].as_f64().unwrap(), expected["max"].as_f64().unwrap()), "{name}");
        let sum: f64 = (0..volume.data.len()).map(|i| volume.data.get_f64(i)).sum();
        assert_eq!(sum, expected["sum"].as_f64().unwrap(), "{name}");
    }
}

#[test]
fn jpeg_baseline_decodes_like_pydicom() {
    let expected = &json(&extra("expected.json"))["jpeg-baseline.dcm"];
    let volume = open(&extra("jpeg-baseline.dcm"), None).unwrap();
    assert_eq!(volume.geometry.dims, [56, 40, 1]);
    assert_eq!(volume.voxel_type(), VoxelType::U8);
    let row: Vec<f64> = (0..56).map(|i| volume.value_at([i, 0, 0], 0).unwrap()).collect();
    let want = numbers(&expected["row0_values"]);
    // A lossy codec: another IDCT may round a sample differently by one grey level.
    for (i, (a, b)) in row.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1.0, "column {i}: {a} vs pydicom {b}\n{row:?}\n{want:?}");
    }
    let sum: f64 = (0..volume.data.len()).map(|i| volume.data.get_f64(i)).sum();
    let want_sum = expected["sum"].as_f64().unwrap();
    assert!((sum - want_sum).abs() <= 0.01 * want_sum, "sum {sum} vs {want_sum}");
}

#[test]
fn twelve_bit_jpeg_extended_is_an_error_naming_the_transfer_syntax() {
    let message = error_of(open(&extra("JPGExtended.dcm"), None));
    assert!(message.contains("JPEG Extended") && message.contains("1.2.840.10008.1.2.4.51"), "{message}");
}

#[test]
fn jpeg_lossless_decodes_exactly() {
    let all = json(&extra("expected.json"));
    for name in ["jpeg-lossless-sv1.dcm", "jpeg-lossless-p14.dcm"] {
        let expected = &all[name];
        let volume = open(&extra(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(volume.geometry.dims, [56, 40, 1], "{name}");
        assert_eq!(volume.voxel_type(), VoxelType::I16, "{name}: CT in HU");
        let row: Vec<f64> = (0..56).map(|i| volume.value_at([i, 0, 0], 0).unwrap()).collect();
        assert_eq!(row, numbers(&expected["row0_hu"]), "{name}");
        let sum: f64 = (0..volume.data.len()).map(|i| volume.data.get_f64(i)).sum();
        assert_eq!(sum, expected["sum_hu"].as_f64().unwrap(), "{name}");
    }
}
