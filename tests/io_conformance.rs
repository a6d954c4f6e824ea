//! Reader conformance: every NIfTI, MetaImage, .npz and CT-lesion file in tests/fixtures/data
//! against what nibabel and SimpleITK report (the JSON files beside them), the malformed files,
//! and round trips image -> NIfTI -> image.

use medsam_viewer::io::{self, OpenOptions, nifti};
use medsam_viewer::volume::{Geometry, Volume, VoxelType};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn data(rel: &str) -> PathBuf {
    fixtures().join("data").join(rel)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn open(path: &Path) -> Volume {
    io::open(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Geometry to 1e-4 mm (affine entries) and the direction to 1e-5.
fn assert_affine(g: &Geometry, affine_lps: &Value, what: &str) {
    let m = g.affine_lps();
    for (r, row) in affine_lps.as_array().unwrap().iter().take(3).enumerate() {
        for (c, x) in f64s(row).iter().enumerate() {
            assert!((m[r][c] - x).abs() < 1e-4, "{what}: affine[{r}][{c}] = {} expected {x}", m[r][c]);
        }
    }
}

fn assert_sitk_geometry(g: &Geometry, j: &Value, what: &str) {
    let size = j.get("size_xyz").or(j.get("shape_xyz")).unwrap();
    assert_eq!(g.dims.to_vec(), usizes(size), "{what}: dims");
    for (a, b) in g.spacing.iter().zip(f64s(&j["spacing_xyz_mm"])) {
        assert!((a - b).abs() < 1e-4, "{what}: spacing {:?}", g.spacing);
    }
    for (a, b) in g.origin.iter().zip(f64s(&j["origin_lps_mm"])) {
        assert!((a - b).abs() < 1e-4, "{what}: origin {:?}", g.origin);
    }
    for (a, b) in g.direction_row_major().iter().zip(f64s(&j["direction_lps_row_major"])) {
        assert!((a - b).abs() < 1e-5, "{what}: direction {:?}", g.direction_row_major());
    }
}

/// nibabel's dtype names to ours.
fn voxel_type(name: &str) -> VoxelType {
    match name {
        "uint8" => VoxelType::U8,
        "int8" => VoxelType::I8,
        "uint16" => VoxelType::U16,
        "int16" => VoxelType::I16,
        "uint32" => VoxelType::U32,
        "int32" => VoxelType::I32,
        "float32" => VoxelType::F32,
        "float64" => VoxelType::F64,
        other => panic!("unknown dtype {other}"),
    }
}

fn assert_value(actual: f64, expected: f64, ty: VoxelType, what: &str) {
    if ty == VoxelType::F64 {
        assert!((actual - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{what}: {actual} vs {expected}");
    } else {
        assert_eq!(actual, expected, "{what}");
    }
}

#[test]
fn nifti_files_match_nibabel() {
    let index = json(&data("nifti/index.json"));
    let mut checked = 0;
    for entry in index.as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let j = json(&data(&format!("nifti/{file}.json")));
        let v = open(&data(&format!("nifti/{file}")));
        let dims = usizes(&j["dims"]);
        assert_eq!(v.geometry.dims.to_vec(), dims[..3].to_vec(), "{file}: dims");
        assert_eq!(v.timepoints, dims.get(3).copied().unwrap_or(1), "{file}: timepoints");
        assert_affine(&v.geometry, &j["affine_lps_mm"], file);
        assert_eq!(v.meta.stored_type, Some(voxel_type(j["datatype"].as_str().unwrap())), "{file}: stored type");
        let ty = v.voxel_type();
        for vox in j["voxels"].as_array().unwrap() {
            let idx = usizes(&vox["index"]);
            let t = idx.get(3).copied().unwrap_or(0);
            let got = v.value_at([idx[0], idx[1], idx[2]], t).unwrap();
            assert_value(got, vox["value"].as_f64().unwrap(), ty, &format!("{file} {idx:?}"));
            // The world position of the voxel, RAS in the JSON.
            let w = v.geometry.voxel_to_world([idx[0] as f64, idx[1] as f64, idx[2] as f64]);
            let ras = f64s(&vox["world_ras_mm"]);
            assert!((w[0] + ras[0]).abs() < 1e-4 && (w[1] + ras[1]).abs() < 1e-4 && (w[2] - ras[2]).abs() < 1e-4, "{file}: world of {idx:?}");
        }
        let (min, max) = v.min_max().unwrap();
        assert_value(min, j["min"].as_f64().unwrap(), ty, &format!("{file} min"));
        assert_value(max, j["max"].as_f64().unwrap(), ty, &format!("{file} max"));
        checked += 1;
    }
    assert_eq!(checked, 16, "every NIfTI conformance file is listed in index.json");
}

#[test]
fn scaled_nifti_keeps_an_integer_type() {
    let v = open(&data("nifti/scaled_int16_slope2_inter-1024.nii"));
    assert_eq!(v.voxel_type(), VoxelType::I16, "2*raw-1024 fits int16 exactly");
}

#[test]
fn malformed_nifti_files_are_errors_naming_the_problem() {
    for (file, words) in [
        ("truncated.nii.gz", "truncated"),
        ("huge_dims.nii", "truncated"),
        ("bad_sizeof_hdr.nii", "sizeof_hdr"),
    ] {
        let path = data(&format!("nifti/bad/{file}"));
        let e = io::open(&path, &OpenOptions::default()).unwrap_err().to_string();
        assert!(e.contains(file) && e.contains(words), "{file}: {e}");
    }
}

#[test]
fn metaimage_files_match_simpleitk() {
    let ct = json(&data("mhd/ct_phantom.json"));
    for file in ["ct_phantom.mhd", "ct_phantom.mha", "ct_phantom_zlib.mha"] {
        let v = open(&data(&format!("mhd/{file}")));
        assert_sitk_geometry(&v.geometry, &ct, file);
        assert_eq!(v.voxel_type(), VoxelType::I16, "{file}");
        for vox in ct["voxels"].as_array().unwrap() {
            let i = usizes(&vox["index_xyz"]);
            assert_eq!(v.value_at([i[0], i[1], i[2]], 0).unwrap(), vox["value"].as_f64().unwrap(), "{file} {i:?}");
            let w = v.geometry.voxel_to_world([i[0] as f64, i[1] as f64, i[2] as f64]);
            for (a, b) in w.iter().zip(f64s(&vox["world_lps_mm"])) {
                assert!((a - b).abs() < 1e-4, "{file}: world of {i:?}");
            }
        }
        assert_eq!(v.min_max().unwrap(), (ct["min"].as_f64().unwrap(), ct["max"].as_f64().unwrap()), "{file}");
    }
    let mask = open(&data("mhd/ct_phantom_lesion_mask.mha"));
    let lesion = &ct["lesion_mask"];
    let count = mask.frame::<u8>(0).unwrap().iter().filter(|&&x| x > 0).count();
    assert_eq!(count as u64, lesion["voxel_count"].as_u64().unwrap());
    let ml = count as f64 * mask.geometry.voxel_volume_mm3() / 1000.0;
    assert!((ml - lesion["volume_ml"].as_f64().unwrap()).abs() < 1e-9);

    let mr = json(&data("mhd/mr_sagittal.json"));
    let v = open(&data("mhd/mr_sagittal.mha"));
    assert_sitk_geometry(&v.geometry, &mr, "mr_sagittal.mha");
    assert_eq!(v.voxel_type(), VoxelType::U16);
    for vox in mr["voxels"].as_array().unwrap() {
        let i = usizes(&vox["index_xyz"]);
        assert_eq!(v.value_at([i[0], i[1], i[2]], 0).unwrap(), vox["value"].as_f64().unwrap());
    }
}

/// The tight inclusive box (x0, y0, x1, y1) of the nonzero voxels of slice k.
fn slice_box(mask: &Volume, k: usize) -> [usize; 4] {
    let [nx, ny, _] = mask.geometry.dims;
    let m = mask.frame::<u8>(0).unwrap();
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for j in 0..ny {
        for i in 0..nx {
            if m[i + nx * (j + ny * k)] > 0 {
                b = [b[0].min(i), b[1].min(j), b[2].max(i), b[3].max(j)];
            }
        }
    }
    b
}

fn check_lesion_case(j: &Value, image: &Volume, gt: &Volume, case: &str) {
    assert_sitk_geometry(&image.geometry, j, case);
    assert_sitk_geometry(&gt.geometry, j, case);
    assert_eq!(image.voxel_type(), VoxelType::U8);
    for (vol, key) in [(image, "image_voxels"), (gt, "gt_voxels")] {
        for vox in j[key].as_array().unwrap() {
            let i = usizes(&vox["index_xyz"]);
            assert_eq!(vol.value_at([i[0], i[1], i[2]], 0).unwrap(), vox["value"].as_f64().unwrap(), "{case} {key} {i:?}");
            let w = vol.geometry.voxel_to_world([i[0] as f64, i[1] as f64, i[2] as f64]);
            for (a, b) in w.iter().zip(f64s(&vox["world_lps_mm"])) {
                assert!((a - b).abs() < 1e-4, "{case}: world of {i:?}");
            }
        }
    }
    let m = gt.frame::<u8>(0).unwrap();
    let count = m.iter().filter(|&&x| x > 0).count();
    assert_eq!(count as u64, j["gt_voxel_count"].as_u64().unwrap(), "{case}");
    let ml = count as f64 * gt.geometry.voxel_volume_mm3() / 1000.0;
    assert!((ml - j["gt_volume_ml"].as_f64().unwrap()).abs() < 1e-9, "{case}: {ml} mL");
    let plane = gt.geometry.dims[0] * gt.geometry.dims[1];
    let areas: Vec<usize> = m.chunks(plane).map(|s| s.iter().filter(|&&x| x > 0).count()).collect();
    assert_eq!(areas, usizes(&j["gt_area_per_slice_voxels"]), "{case}");
    let k = j["key_slice_z"].as_u64().unwrap() as usize;
    assert_eq!(slice_box(gt, k).to_vec(), usizes(&j["key_slice_box_xyxy"]), "{case}");
}

#[test]
fn ct_lesion_crops_match_simpleitk() {
    let mut cases = 0;
    for entry in std::fs::read_dir(data("ct-lesion")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let j = json(&path);
            let case = path.file_stem().unwrap().to_string_lossy().into_owned();
            let image = open(&data(&format!("ct-lesion/{}", j["files"]["image"].as_str().unwrap())));
            let gt = open(&data(&format!("ct-lesion/{}", j["files"]["gt"].as_str().unwrap())));
            check_lesion_case(&j, &image, &gt, &case);
            cases += 1;
        }
    }
    assert_eq!(cases, 4);
}

#[test]
fn medsam2_npz_opens_image_and_labels() {
    let case = "CT_Lesion_000002_03_01_035-047";
    let path = fixtures().join(format!("npz/{case}.npz"));
    let j = json(&data(&format!("ct-lesion/{case}.json")));
    let image = open(&path);
    let gt = io::npz::read_labels(&path).unwrap();
    assert!(io::npz::has_labels(&path).unwrap());
    check_lesion_case(&j, &image, &gt, case);
}

/// Every readable fixture survives image -> NIfTI -> image with geometry and values intact.
#[test]
fn round_trips_through_nifti_keep_geometry_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<PathBuf> = Vec::new();
    for sub in ["nifti", "mhd", "ct-lesion"] {
        for e in std::fs::read_dir(data(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.to_string_lossy().into_owned();
            if p.is_file() && !name.ends_with(".json") && !name.ends_with(".raw") {
                inputs.push(p);
            }
        }
    }
    inputs.push(fixtures().join("npz/CT_Lesion_000002_03_01_035-047.npz"));
    assert!(inputs.len() >= 25);
    for (n, input) in inputs.iter().enumerate() {
        let original = open(input);
        for ext in ["nii", "nii.gz"] {
            let out = dir.path().join(format!("{n}.{ext}"));
            nifti::write(&out, &original, nifti::NiftiKind::Image).unwrap();
            let back = open(&out);
            assert_eq!(back.geometry.dims, original.geometry.dims, "{input:?}");
            assert_eq!(back.timepoints, original.timepoints);
            let (a, b) = (back.geometry.affine_lps(), original.geometry.affine_lps());
            for r in 0..3 {
                for c in 0..4 {
                    assert!((a[r][c] - b[r][c]).abs() < 1e-4, "{input:?}: affine {a:?} vs {b:?}");
                }
            }
            assert_eq!(back.data, original.data, "{input:?}: voxels");
        }
    }
}

/// A NIfTI source keeps its qform and sform exactly, even where they disagree.
#[test]
fn nifti_source_transforms_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["qform_sform_differ.nii", "qform_only.nii", "qfac_negative.nii", "oblique.nii.gz", "sform_only.nii"] {
        let src = data(&format!("nifti/{file}"));
        let v = open(&src);
        let out = dir.path().join("copy.nii");
        nifti::write(&out, &v, nifti::NiftiKind::Image).unwrap();
        let (a, b) = (nifti::read_header(&src).unwrap(), nifti::read_header(&out).unwrap());
        assert_eq!(a.transform, b.transform, "{file}");
    }
}

/// The `nifti` crate, an independent reader, sees what we wrote the way we meant it.
#[test]
fn the_nifti_crate_reads_our_output() {
    use nifti_crate::{IntoNdArray, NiftiObject, ReaderOptions};
    let dir = tempfile::tempdir().unwrap();
    let v = open(&data("mhd/mr_sagittal.mha"));
    let out = dir.path().join("mr.nii.gz");
    nifti::write(&out, &v, nifti::NiftiKind::Image).unwrap();
    let obj = ReaderOptions::new().read_file(&out).unwrap();
    let h = obj.header();
    assert_eq!(&h.dim[..4], &[3, 56, 64, 10]);
    assert_eq!(h.datatype, 512);
    let arr = obj.into_volume().into_ndarray::<f64>().unwrap();
    for (i, j, k) in [(0, 0, 0), (34, 22, 3), (55, 63, 9)] {
        assert_eq!(arr[[i, j, k]], v.value_at([i, j, k], 0).unwrap());
    }
}
