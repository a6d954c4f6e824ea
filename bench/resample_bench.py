"""Resampling time and peak memory, MedSAM Viewer's `convert --spacing` side by side with
SimpleITK's `Resample`, alternating A B A B in one run on one machine.

    cargo build --release
    python3 bench/resample_bench.py /tmp/resample-bench [--binary target/release/medsam-viewer]
                                    [--interpolation linear] [--repeat 3]

The input is bench/make_volumes.py's CT phantom, 512x512x300 int16, at 0.8 x 0.8 x 2.5 mm, written
once as uncompressed .nii; both resample it to 1 x 1 x 1 mm (410 x 410 x 750) with the same grid
(origin and direction kept, size round(n * spacing_in / 1)), default value 0, int16 kept.
Timed: the resampling alone (ours from the `seconds.resample` of convert's JSON summary,
SimpleITK around sitk.Resample), each in a fresh process; peak memory: the process's peak
resident set (VmHWM), which for both holds the input and the output volume.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SITK = r"""
import json, sys, time
import SimpleITK as sitk
path, interpolation = sys.argv[1], sys.argv[2]
interp = {'nearest': sitk.sitkNearestNeighbor, 'linear': sitk.sitkLinear, 'bspline': sitk.sitkBSpline}[interpolation]
img = sitk.ReadImage(path)
size = [int(round(n * s)) for n, s in zip(img.GetSize(), img.GetSpacing())]
t = time.perf_counter()
out = sitk.Resample(img, size, sitk.Transform(), interp, img.GetOrigin(), (1.0, 1.0, 1.0), img.GetDirection(), 0, img.GetPixelID())
seconds = time.perf_counter() - t
peak = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]
print(json.dumps({'seconds': seconds, 'peak_bytes': peak, 'dims': out.GetSize()}))
"""


def ours(binary, path, out, interpolation):
    run = subprocess.run(
        ["/usr/bin/time", "-v", binary, "convert", str(path), str(out), "--spacing", "1,1,1",
         "--interpolation", interpolation, "--force"],
        capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout)
    peak_kb = next(int(l.split()[-1]) for l in run.stderr.splitlines() if "Maximum resident set size" in l)
    return {"seconds": summary["seconds"]["resample"], "peak_bytes": peak_kb * 1024, "dims": summary["dims"]}


def simpleitk(path, interpolation):
    run = subprocess.run([sys.executable, "-c", SITK, str(path), interpolation], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--binary", default="target/release/medsam-viewer")
    ap.add_argument("--interpolation", default="linear")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "ct_512x512x300_0.8x0.8x2.5.nii"
    if not path.exists():
        import nibabel as nib
        import numpy as np
        sys.path.insert(0, str(Path(__file__).parent))
        from make_volumes import ct_phantom
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
        affine[:3, 3] = [204.0, 204.0, -375.0]
        img = nib.Nifti1Image(ct_phantom(), affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        nib.save(img, path)
    results = {"ours": [], "simpleitk": []}
    for _ in range(args.repeat):
        results["ours"].append(ours(args.binary, path, args.dir / "out.nii", args.interpolation))
        results["simpleitk"].append(simpleitk(path, args.interpolation))
    report = {"interpolation": args.interpolation, "binary": args.binary}
    for name, runs in results.items():
        report[name] = {
            "seconds_median": statistics.median(r["seconds"] for r in runs),
            "seconds": [round(r["seconds"], 3) for r in runs],
            "peak_mb": round(max(r["peak_bytes"] for r in runs) / 1e6),
            "dims": list(runs[0]["dims"]),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
