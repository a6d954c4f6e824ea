#!/usr/bin/env python3
"""Writes a CT-like DICOM series for load-time benchmarks (never commit its output).

    python3 bench/make_dicom_series.py OUT_DIR [--slices 300] [--size 512] [--seed 1]

Each slice is a 512 x 512 signed 16-bit CT Image Storage file (Explicit VR Little Endian) of
a phantom with noise: air, a body ellipse with a bone ring, two lungs and a contrast rod
whose position changes along z. Stored values are HU + 1024 (RescaleIntercept -1024, slope
1). File names are random and InstanceNumber is a random permutation, so a reader that
sorts by either gets the volume wrong. Needs pydicom and numpy.
"""

import argparse
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def phantom_slice(size, z_fraction, rng):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body = (x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1.0
    hu[body] = 40.0
    ring = body & ((x / 0.40) ** 2 + (y / 0.30) ** 2 >= 0.92)
    hu[ring] = 700.0
    for cx in (-0.17, 0.17):
        hu[((x - cx) / 0.12) ** 2 + (y / 0.18) ** 2 <= 1.0] = -800.0
    rod_x = -0.1 + 0.2 * z_fraction
    hu[((x - rod_x) ** 2 + (y - 0.2) ** 2) <= 0.02 ** 2] = 300.0
    hu += rng.normal(0.0, 10.0, hu.shape).astype(np.float32)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    instance_numbers = rng.permutation(args.slices) + 1
    spacing, thickness, pixel = 1.25, 1.25, 0.7
    origin_xy = -pixel * (args.size - 1) / 2
    for k in range(args.slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName = "Bench^Phantom"
        ds.PatientID = "BENCH"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SeriesNumber = 1
        ds.SeriesDescription = "bench CT phantom"
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = [origin_xy, origin_xy, -200.0 + k * spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel, pixel]
        ds.SliceThickness = thickness
        ds.Rows = ds.Columns = args.size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        stored = phantom_slice(args.size, k / max(args.slices - 1, 1), rng).astype(np.int32) + 1024
        ds.PixelData = stored.astype(np.int16).tobytes()
        name = "%016x.dcm" % int(rng.integers(0, 2**63))
        ds.save_as(args.out_dir / name, enforce_file_format=True)
    print(f"wrote {args.slices} files of {args.size} x {args.size} to {args.out_dir}")


if __name__ == "__main__":
    main()
