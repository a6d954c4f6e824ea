"""Load time and peak memory of MedSAM Viewer's readers side by side with nibabel and SimpleITK,
in one run on one machine.

    python3 bench/make_volumes.py /tmp/benchvol            # 512x512x300 int16 .nii.gz
    python3 bench/make_dicom_series.py /tmp/benchvol/dicom # the same size as 300 DICOM files
    cargo build --release
    python3 bench/io_bench.py /tmp/benchvol [--binary target/release/medsam-viewer] [--repeat 5]

Every reader runs in its own fresh process: one untimed warm-up load (page cache filled), then
`repeat` timed loads; the median is reported. Peak memory is the process's peak resident set
minus its resident set before the first load, divided by the decoded volume size.
nibabel: np.asanyarray(nib.load(p).dataobj) (the stored int16, no float conversion).
SimpleITK: sitk.ReadImage (NIfTI) / ImageSeriesReader over GetGDCMSeriesFileNames (DICOM,
series discovery included, as ours includes it); nibabel has no DICOM series reader.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

PY_READER = r"""
import json, resource, statistics, sys, time
import numpy as np
kind, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
def peak():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
if kind == 'nibabel':
    import nibabel as nib
    load = lambda: np.asanyarray(nib.load(path).dataobj)
elif kind == 'simpleitk':
    import SimpleITK as sitk
    load = lambda: sitk.GetArrayViewFromImage(sitk.ReadImage(path))
elif kind == 'simpleitk-dicom':
    import SimpleITK as sitk
    def load():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, ids[0]))
        return sitk.GetArrayViewFromImage(reader.Execute())
baseline = rss()
a = load(); decoded = a.nbytes; del a
times = []
for _ in range(repeat):
    t = time.perf_counter(); a = load(); times.append(time.perf_counter() - t); del a
print(json.dumps({"median_seconds": statistics.median(times), "seconds": times, "decoded_bytes": decoded,
                  "peak_over_decoded": (peak() - baseline) / decoded}))
"""


def run_python(kind, path, repeat):
    out = subprocess.run([sys.executable, "-c", PY_READER, kind, str(path), str(repeat)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_ours(binary, path, repeat):
    out = subprocess.run([binary, "bench", "load", str(path), "--repeat", str(repeat)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--binary", default="target/release/medsam-viewer")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cases = [("nii.gz 512x512x300 int16", args.folder / "ct_512x512x300.nii.gz", ["nibabel", "simpleitk"]),
             ("DICOM 300 files 512x512", args.folder / "dicom", ["simpleitk-dicom"])]
    report = {}
    for name, path, others in cases:
        if not path.exists():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        rows = {"medsam-viewer": run_ours(args.binary, path, args.repeat)}
        for kind in others:
            rows[kind] = run_python(kind, path, args.repeat)
        report[name] = rows
        fastest_other = min(r["median_seconds"] for k, r in rows.items() if k != "medsam-viewer")
        ours = rows["medsam-viewer"]["median_seconds"]
        print(f"\n{name}")
        for k, r in rows.items():
            print(f"  {k:16s} {r['median_seconds']*1000:8.1f} ms   peak {r['peak_over_decoded']:.2f}x decoded")
        print(f"  ours / fastest other = {ours / fastest_other:.2f} (goal <= 0.5)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
