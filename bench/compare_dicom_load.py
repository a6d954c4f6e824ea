#!/usr/bin/env python3
"""Times loading a DICOM series folder with SimpleITK and with `medsam-viewer info`, and
checks that both read the same geometry and values.

    python3 bench/compare_dicom_load.py SERIES_DIR [--viewer target/release/medsam-viewer] [--runs 5]

SimpleITK: GetGDCMSeriesIDs + GetGDCMSeriesFileNames + ImageSeriesReader.Execute (what
reading a folder takes there), timed in this process. medsam-viewer: wall time of
`info SERIES_DIR --json` (list the series, open the volume, min/max), CPU time and peak RSS
from /usr/bin/time -v. Runs alternate between the two so both see the same page cache state
and about the same machine load; medians (and the median of the per-pair ratios, which a
shared, busy machine distorts least) are printed as one JSON object. CPU seconds count all
threads. Needs SimpleITK and numpy.
"""

import argparse
import json
import statistics
import subprocess
import time

import numpy as np
import SimpleITK as sitk


def load_simpleitk(folder):
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def run_viewer(viewer, folder, at):
    command = ["/usr/bin/time", "-v", viewer, "info", folder, "--json"]
    for ijk in at:
        command += ["--at", ",".join(map(str, ijk))]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    fields = dict(line.strip().rsplit(": ", 1) for line in done.stderr.splitlines() if ": " in line)
    rss_kb = int(fields["Maximum resident set size (kbytes)"])
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    return seconds, cpu, rss_kb, json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--viewer", default="target/release/medsam-viewer")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    image = load_simpleitk(args.folder)  # warm the page cache once
    array = sitk.GetArrayFromImage(image)  # k, j, i
    size = image.GetSize()
    at = [(0, 0, 0), (size[0] // 2, size[1] // 2, size[2] // 2), (size[0] - 1, size[1] // 3, size[2] - 1)]
    itk_seconds, itk_cpu, our_seconds, our_cpu, our_rss = [], [], [], [], []
    report = None
    for _ in range(args.runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        load_simpleitk(args.folder)
        itk_seconds.append(time.perf_counter() - start)
        itk_cpu.append(time.process_time() - start_cpu)
        seconds, cpu, rss_kb, report = run_viewer(args.viewer, args.folder, at)
        our_seconds.append(seconds)
        our_cpu.append(cpu)
        our_rss.append(rss_kb)

    same = {
        "dims": list(report["dims"]) == list(size),
        "spacing": bool(np.allclose(report["spacing"], image.GetSpacing(), atol=1e-4)),
        "origin": bool(np.allclose(report["origin"], image.GetOrigin(), atol=1e-4)),
        "direction": bool(np.allclose(report["direction"], image.GetDirection(), atol=1e-6)),
        "values": [int(array[k, j, i]) for i, j, k in at] == report["values"],
        "min_max": [int(array.min()), int(array.max())] == [report["min"], report["max"]],
    }
    decoded_mb = array.size * 2 / 2**20  # our volume is i16 HU
    print(json.dumps({
        "folder": args.folder,
        "dims": report["dims"],
        "runs": args.runs,
        "simpleitk_s_median": round(statistics.median(itk_seconds), 3),
        "simpleitk_s_all": [round(s, 3) for s in itk_seconds],
        "simpleitk_pixel_type": image.GetPixelIDTypeAsString(),
        "viewer_info_s_median": round(statistics.median(our_seconds), 3),
        "viewer_info_s_all": [round(s, 3) for s in our_seconds],
        "ratio_wall_median_of_pairs": round(statistics.median(o / i for o, i in zip(our_seconds, itk_seconds)), 3),
        "simpleitk_cpu_s_median": round(statistics.median(itk_cpu), 3),
        "viewer_info_cpu_s_median": round(statistics.median(our_cpu), 3),
        "viewer_peak_rss_mb": round(max(our_rss) / 1024, 1),
        "decoded_volume_mb": round(decoded_mb, 1),
        "viewer_rss_over_volume": round(max(our_rss) / 1024 / decoded_mb, 2),
        "viewer_datatype": report["datatype"],
        "same_as_simpleitk": same,
    }, indent=1))


if __name__ == "__main__":
    main()
