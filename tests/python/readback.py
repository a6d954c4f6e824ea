"""Reads masks written by MedSAM Viewer with nibabel and SimpleITK and checks that each lands
exactly on its source image: same dims, same affine (1e-4 mm), same voxel values.

Usage: python3 tests/python/readback.py MANIFEST.json
The manifest (written by tests/writer_readback.rs) is a list of
  {"source": path, "series_uid": uid or null, "mask": path, "voxels": [[i, j, k, value], ...]}
Sources are NIfTI / MetaImage files or DICOM folders (then series_uid picks the series).
Exit status 0 when every check passes; otherwise one line per failure and status 1.
"""
import json
import sys

import nibabel as nib
import numpy as np
import SimpleITK as sitk

TOL = 1e-4
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_read(path, series_uid=None):
    if series_uid is not None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, series_uid))
        return reader.Execute()
    return sitk.ReadImage(path)


def sitk_affine_lps(img):
    d = np.array(img.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = d @ np.diag(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    return m


def check(entry, failures):
    src, mask = entry["source"], entry["mask"]
    uid = entry.get("series_uid")
    tag = f"{mask} (from {src})"
    src_sitk = sitk_read(src, uid)
    mask_sitk = sitk.ReadImage(mask)
    mask_nib = nib.load(mask)
    if tuple(mask_sitk.GetSize()) != tuple(src_sitk.GetSize()[:3]):
        failures.append(f"{tag}: SimpleITK size {mask_sitk.GetSize()} vs source {src_sitk.GetSize()}")
        return
    a, b = sitk_affine_lps(mask_sitk), sitk_affine_lps(src_sitk)
    if np.abs(a - b).max() > TOL:
        failures.append(f"{tag}: SimpleITK affine differs by {np.abs(a - b).max():.2e}\n{a}\n{b}")
    # nibabel: against nibabel's own reading of a NIfTI source, else SimpleITK's geometry in RAS.
    if src.endswith((".nii", ".nii.gz")):
        expected = nib.load(src).affine
    else:
        expected = LPS_TO_RAS @ b
    if np.abs(mask_nib.affine - expected).max() > TOL:
        failures.append(f"{tag}: nibabel affine differs by {np.abs(mask_nib.affine - expected).max():.2e}\n{mask_nib.affine}\n{expected}")
    arr_nib = np.asanyarray(mask_nib.dataobj)
    arr_sitk = sitk.GetArrayFromImage(mask_sitk)  # [k, j, i]
    for i, j, k, value in entry["voxels"]:
        if arr_nib[i, j, k] != value or arr_sitk[k, j, i] != value:
            failures.append(f"{tag}: voxel {(i, j, k)} nibabel {arr_nib[i, j, k]} SimpleITK {arr_sitk[k, j, i]} expected {value}")


def main():
    entries = json.load(open(sys.argv[1]))
    failures, bad_entries = [], 0
    for entry in entries:
        before = len(failures)
        check(entry, failures)
        bad_entries += len(failures) > before
    for f in failures:
        print("FAIL", f)
    print(f"{len(entries) - bad_entries} of {len(entries)} masks read back identically in nibabel and SimpleITK")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
