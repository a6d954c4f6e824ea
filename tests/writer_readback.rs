//! Label maps written by the NIfTI writer, from every kind of source, read back in nibabel and
//! SimpleITK with the same affine as their source image (tests/python/readback.py does the
//! reading; it needs `pip install nibabel SimpleITK numpy`, which .ci/run installs).

use medsam_viewer::io::{self, OpenOptions, nifti};
use medsam_viewer::volume::{Volume, VoxelBuffer};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A label map over `image` with a pattern that shows any axis swap or flip.
fn patterned_mask(image: &Volume) -> (Volume, Vec<[usize; 4]>) {
    let mut mask = Volume::label_map_like(&image.geometry);
    let [nx, ny, nz] = image.geometry.dims;
    let VoxelBuffer::U8(data) = &mut mask.data else { unreachable!("label maps are u8") };
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                data[i + nx * (j + ny * k)] = ((i + 2 * j + 3 * k) % 5) as u8;
            }
        }
    }
    let probes = [[0, 0, 0], [nx - 1, 0, 0], [0, ny - 1, 0], [0, 0, nz - 1], [nx / 2, ny / 3, nz / 2], [nx - 1, ny - 1, nz - 1]];
    let voxels = probes.iter().map(|&[i, j, k]| [i, j, k, (i + 2 * j + 3 * k) % 5]).collect();
    (mask, voxels)
}

#[test]
fn masks_read_back_in_nibabel_and_simpleitk_with_the_source_affine() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("data");
    let mut sources: Vec<PathBuf> = Vec::new();
    for sub in ["nifti", "mhd", "ct-lesion"] {
        for e in std::fs::read_dir(data.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.to_string_lossy().into_owned();
            if p.is_file() && !name.ends_with(".json") && !name.ends_with(".raw") && !name.contains("4d_") {
                sources.push(p);
            }
        }
    }
    let mut manifest = Vec::new();
    for (n, src) in sources.iter().enumerate() {
        let image = io::open(src, &OpenOptions::default()).unwrap();
        let (mask, voxels) = patterned_mask(&image);
        // A mask keeps the geometry and the NIfTI transforms of its image.
        let mask = Volume { meta: image.meta.clone(), ..mask };
        let out = dir.path().join(format!("mask{n}.nii.gz"));
        nifti::write(&out, &mask, nifti::NiftiKind::LabelMap).unwrap();
        manifest.push(json!({"source": src, "series_uid": null, "mask": out, "voxels": voxels}));
    }
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/readback.py");
    let out = Command::new("python3").arg(&script).arg(&manifest_path).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "readback failed (needs `pip install nibabel SimpleITK numpy`):\n{text}");
    assert!(text.contains(&format!("{0} of {0} masks", manifest.len())), "{text}");
}
