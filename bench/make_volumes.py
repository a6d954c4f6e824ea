"""Generates the I/O benchmark inputs: a 512x512x300 int16 CT-like volume as .nii.gz (written by
nibabel with its default gzip level) and the same volume as a 300-file DICOM series is made by
bench/make_dicom_series.py. Nothing generated here is committed.

    python3 bench/make_volumes.py OUT_DIR
"""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def ct_phantom(nx=512, ny=512, nz=300, seed=0):
    """Air, a body ellipse with lungs, a spine and noise, in HU (int16), shape (x, y, z)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, nx)[:, None]
    y = np.linspace(-1, 1, ny)[None, :]
    vol = np.empty((nx, ny, nz), dtype=np.int16)
    for k in range(nz):
        t = k / nz
        body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
        lung_l = ((x - 0.35) / 0.25) ** 2 + ((y + 0.05) / 0.35) ** 2 < 1 - 0.3 * t
        lung_r = ((x + 0.35) / 0.25) ** 2 + ((y + 0.05) / 0.35) ** 2 < 1 - 0.3 * t
        spine = (x / 0.08) ** 2 + ((y - 0.45) / 0.08) ** 2 < 1
        s = np.full((nx, ny), -1000.0)
        s[body] = 40
        s[lung_l | lung_r] = -820
        s[spine] = 700
        s += rng.normal(0, 12, size=(nx, ny))
        vol[:, :, k] = np.clip(s, -1024, 3071).astype(np.int16)
    return vol


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    vol = ct_phantom()
    affine = np.diag([-0.7, -0.7, 1.25, 1.0])
    affine[:3, 3] = [179.0, 179.0, -187.5]
    img = nib.Nifti1Image(vol, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, out / "ct_512x512x300.nii.gz")
    np.save(out / "ct_512x512x300.npy", vol)
    print("wrote", out / "ct_512x512x300.nii.gz")


if __name__ == "__main__":
    main()
