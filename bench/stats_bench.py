"""`medsam-viewer stats` side by side with SimpleITK's LabelShapeStatistics and
LabelIntensityStatistics on a 512x512x300 int16 CT-like volume with two organ-sized labels,
in one run on one machine: times and the numbers, which must agree.

    pip install SimpleITK numpy scipy
    CARGO_TARGET_DIR=target-release cargo build --release
    python3 bench/stats_bench.py [--binary target-release/release/medsam-viewer] [--repeat 3]

The volume and masks are generated once (deterministic seed) under --dir. Ours: the wall time
of the whole command (reading both .nii.gz files included) and the measurement alone as the
command reports it. SimpleITK: ReadImage of both files, then the two filters timed on their own.
With scipy installed, the --reference figures (HD95, ASSD) are checked against a medpy-style
computation (scipy's exact EDT with the physical spacing, pooled 95th percentile).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE_ZYX = (300, 512, 512)
SPACING = (0.78125, 0.78125, 1.25)
ORIGIN = (-200.0, -180.0, -375.0)


def ellipsoid(zz, yy, xx, centre, axes):
    return ((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2 + ((zz - centre[2]) / axes[2]) ** 2 <= 1.0


def make_volumes(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f"{k}.nii.gz" for k in ("image", "mask", "reference")}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(20240611)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE_ZYX), indexing="ij")
    # Physical (mm) coordinates relative to the volume centre, index order x, y, z.
    xx = (xx - 255.5) * SPACING[0]
    yy = (yy - 255.5) * SPACING[1]
    zz = (zz - 149.5) * SPACING[2]
    body = (xx / 170) ** 2 + (yy / 120) ** 2 <= 1
    image = np.full(SHAPE_ZYX, -1000, dtype=np.float32)
    image[body] = 30
    # Label 1, liver-like: two overlapping ellipsoids (about 1.6 L); label 2, kidney-like (~150 mL).
    liver = ellipsoid(zz, yy, xx, (-60, 10, 20), (75, 60, 90)) | ellipsoid(zz, yy, xx, (-10, -20, 50), (55, 45, 50))
    kidney = ellipsoid(zz, yy, xx, (80, 45, -10), (28, 30, 55)) & ~liver
    image[liver] = 60
    image[kidney] = 150
    image += rng.normal(0, 18, SHAPE_ZYX).astype(np.float32)
    image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    mask = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    mask[liver] = 1
    mask[kidney] = 2
    # Reference: the same organs, shifted 2 voxels along x and 1 slice along z.
    reference = np.roll(np.roll(mask, 2, axis=2), 1, axis=0)
    for name, array in (("image", image), ("mask", mask), ("reference", reference)):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(SPACING)
        img.SetOrigin(ORIGIN)
        sitk.WriteImage(img, str(paths[name]))
    return paths


def run_ours(binary, paths, repeat, reference):
    cmd = [binary, "stats", "--image", str(paths["image"]), "--mask", str(paths["mask"]), "--json"]
    if reference:
        cmd += ["--reference", str(paths["reference"])]
    walls, measures, report = [], [], None
    for _ in range(repeat + 1):  # the first run warms the page cache and is not counted
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        report = json.loads(out.stdout)
        measures.append(report["timing_s"]["measure"])
    return statistics.median(walls[1:]), statistics.median(measures[1:]), report


def run_sitk(paths, repeat):
    reads, shapes, intensities = [], [], []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        image = sitk.ReadImage(str(paths["image"]))
        mask = sitk.ReadImage(str(paths["mask"]))
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.SetComputePerimeter(True)
        shape.Execute(mask)
        shapes.append(time.perf_counter() - t)
        t = time.perf_counter()
        inten = sitk.LabelIntensityStatisticsImageFilter()
        inten.Execute(mask, image)
        intensities.append(time.perf_counter() - t)
    return statistics.median(reads[1:]), statistics.median(shapes[1:]), statistics.median(intensities[1:]), shape, inten, image, mask


def medpy_style(mask, reference, label):
    """Pooled HD95 and mean of the pooled surface distances (scipy EDT), in mm."""
    from scipy import ndimage

    a = sitk.GetArrayViewFromImage(mask) == label
    b = sitk.GetArrayViewFromImage(reference) == label
    sampling = SPACING[::-1]
    cross = ndimage.generate_binary_structure(3, 1)
    sa = a ^ ndimage.binary_erosion(a, structure=cross, border_value=0)
    sb = b ^ ndimage.binary_erosion(b, structure=cross, border_value=0)
    dab = ndimage.distance_transform_edt(~sb, sampling=sampling)[sa]
    dba = ndimage.distance_transform_edt(~sa, sampling=sampling)[sb]
    pooled = np.hstack((dab, dba))
    return float(np.percentile(pooled, 95)), float(pooled.mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/statsbench")
    ap.add_argument("--binary", default=str(Path(__file__).resolve().parent.parent / "target-release/release/medsam-viewer"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    paths = make_volumes(Path(args.dir))
    ours_wall, ours_measure, ours = run_ours(args.binary, paths, args.repeat, reference=False)
    ref_wall, ref_measure, ours_ref = run_ours(args.binary, paths, args.repeat, reference=True)
    read, shape_t, inten_t, shape, inten, image, mask = run_sitk(paths, args.repeat)
    array = sitk.GetArrayViewFromImage(image)
    labels = sitk.GetArrayViewFromImage(mask)
    print(f"machine: {os.cpu_count()} cores; SimpleITK {sitk.Version.VersionString()} with {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads")
    print(f"volume {SHAPE_ZYX[::-1]} int16, spacing {SPACING}")
    print()
    print("times (median of %d, seconds)" % args.repeat)
    print(f"  medsam-viewer stats          whole command {ours_wall:8.3f}   measurement {ours_measure:8.3f}")
    print(f"  medsam-viewer stats --reference  command {ref_wall:8.3f}   measurement {ref_measure:8.3f}")
    print(f"  SimpleITK ReadImage x2 {read:8.3f}   LabelShapeStatistics (perimeter on) {shape_t:8.3f}   LabelIntensityStatistics {inten_t:8.3f}")
    print(f"  SimpleITK total (read + both filters) {read + shape_t + inten_t:8.3f}")
    figures = {"ours_wall_s": ours_wall, "ours_measure_s": ours_measure, "ours_reference_wall_s": ref_wall,
               "ours_reference_measure_s": ref_measure, "sitk_read_s": read, "sitk_shape_s": shape_t, "sitk_intensity_s": inten_t, "labels": []}
    worst = {}
    for entry, ref_entry in zip(ours["labels"], ours_ref["labels"]):
        label = entry["label"]
        inside = array[labels == label]
        sitk_ml = shape.GetPhysicalSize(label) / 1000.0
        bb = shape.GetBoundingBox(label)
        rows = [
            ("voxels", entry["voxels"], shape.GetNumberOfPixels(label)),
            ("volume_ml", entry["volume_ml"], sitk_ml),
            ("centroid x", entry["centroid_lps_mm"][0], shape.GetCentroid(label)[0]),
            ("centroid y", entry["centroid_lps_mm"][1], shape.GetCentroid(label)[1]),
            ("centroid z", entry["centroid_lps_mm"][2], shape.GetCentroid(label)[2]),
            ("bbox min i,j,k", entry["bbox_index"][0], list(bb[:3])),
            ("bbox max i,j,k", entry["bbox_index"][1], [bb[c] + bb[c + 3] - 1 for c in range(3)]),
            ("surface mm2 (Crofton)", entry["surface_area_mm2"], shape.GetPerimeter(label)),
            ("mean", entry["intensity"]["mean"], inten.GetMean(label)),
            ("sd (sample)", entry["intensity"]["sd"], inten.GetStandardDeviation(label)),
            ("min", entry["intensity"]["min"], inten.GetMinimum(label)),
            ("max", entry["intensity"]["max"], inten.GetMaximum(label)),
            ("median (numpy exact | sitk 128-bin)", entry["intensity"]["median"], f"{float(np.median(inside))} | {inten.GetMedian(label)}"),
        ]
        print()
        print(f"label {label}: {'':30s} {'medsam-viewer':>22s} {'SimpleITK':>22s}")
        for name, a, b in rows:
            print(f"  {name:36s} {str(a):>22s} {str(b):>22s}")
            if isinstance(a, float) and isinstance(b, float):
                worst[name] = max(worst.get(name, 0.0), abs(a - b) / max(abs(b), 1e-12))
        print(f"  {'voxel-face area mm2':36s} {entry['voxel_face_area_mm2']:>22.3f}")
        print(f"  {'RECIST long x short mm':36s} {entry['longest_diameter_mm']:>10.2f} x {entry['perpendicular_diameter_mm']:<9.2f}  (axial slice {entry['diameter_slice']})")
        ref = ref_entry["reference"]
        overlap = sitk.LabelOverlapMeasuresImageFilter()
        reference = sitk.ReadImage(str(paths["reference"]))
        overlap.Execute(reference, mask)
        print(f"  {'dice':36s} {ref['dice']:>22.6f} {overlap.GetDiceCoefficient(label):>22.6f}")
        print(f"  {'iou':36s} {ref['iou']:>22.6f} {overlap.GetJaccardCoefficient(label):>22.6f}")
        try:
            hd95, assd = medpy_style(mask, reference, label)
            print(f"  {'hd95 mm (scipy medpy-style)':36s} {ref['hd95_mm']:>22.6f} {hd95:>22.6f}")
            print(f"  {'assd mm (pooled, scipy)':36s} {ref['assd_mm']:>22.6f} {assd:>22.6f}")
        except ImportError:
            print("  (scipy not installed: HD95/ASSD not cross-checked)")
        figures["labels"].append({"label": label, "ours": entry, "ours_reference": ref})
    print()
    print("largest relative differences:", json.dumps({k: f"{v:.2e}" for k, v in worst.items()}))
    print(json.dumps({k: v for k, v in figures.items() if k != "labels"}))


if __name__ == "__main__":
    sys.exit(main())
