"""Marching-cubes time of `medsam-viewer mesh` side by side with scikit-image and VTK, on one
machine in one run.

    pip install numpy nibabel scikit-image vtk
    CARGO_TARGET_DIR=target-release cargo build --release
    python3 bench/mesh_bench.py [--binary target-release/release/medsam-viewer] [--out /tmp/meshbench]
                                [--repeat 5] [--ct]

The mask: 512 x 512 x 300 uint8 with one organ-sized object, an ellipsoid of 150 x 120 x 100
voxels whose radius is modulated by a few sine waves (a bumpy surface), spacing 0.78 x 0.78 x
1.25 mm, written as .nii.gz. Every tool meshes the 0.5 iso-surface of the same array:

* medsam-viewer: `mesh --input MASK --label 1 --output OUT.stl`, a fresh process each time,
  with all cores and again with RAYON_NUM_THREADS=1; `mesh_seconds` is marching cubes (finding
  the label's box, shared vertices, normals, placement in world mm), `seconds` the whole
  command including reading the .nii.gz, the metrics (watertightness check) and the STL.
* scikit-image: `skimage.measure.marching_cubes(mask, 0.5, spacing=...)` (Lewiner; returns
  shared vertices and normals) on the array nibabel loaded.
* VTK: `vtkFlyingEdges3D` with normals on, on a vtkImageData holding the same array (no
  copy); VTK's SMP backend and thread count are printed.

Each Python tool runs `repeat` times after one warm-up in one process; medians are reported.

With `--ct`, the same comparison also runs on the iso-surface at -500 HU (skin and lungs) of
bench/make_volumes.py's 512 x 512 x 300 int16 CT phantom (noise 12 HU): there the surface
spans the whole body and every tool marches nearly the whole volume.
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

DIMS = (512, 512, 300)  # x, y, z
SPACING = (0.78, 0.78, 1.25)
SEMI_AXES = (75.0, 60.0, 50.0)  # voxels: a 150 x 120 x 100 object


def make_mask(path: Path):
    import nibabel as nib

    nx, ny, nz = DIMS
    cx, cy, cz = nx / 2 - 0.5, ny / 2 - 0.5, nz / 2 - 0.5
    x = (np.arange(nx, dtype=np.float32) - cx)[:, None, None] / SEMI_AXES[0]
    y = (np.arange(ny, dtype=np.float32) - cy)[None, :, None] / SEMI_AXES[1]
    z = (np.arange(nz, dtype=np.float32) - cz)[None, None, :] / SEMI_AXES[2]
    r = np.sqrt(x * x + y * y + z * z)
    theta = np.arccos(np.clip(z / np.maximum(r, 1e-6), -1, 1))
    phi = np.arctan2(y, x)
    bumps = 1.0 + 0.06 * np.sin(5 * theta) * np.cos(4 * phi) + 0.03 * np.sin(11 * phi + 3 * theta)
    mask = (r <= 0.93 * bumps).astype(np.uint8)
    # NIfTI stores RAS: LPS spacing along +L, +P, +S means negative x and y columns.
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    nib.save(nib.Nifti1Image(mask, affine), str(path))
    return mask


PY_TOOL = r"""
import json, statistics, sys, time
import numpy as np, nibabel as nib
kind, path, repeat, level = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
t = time.perf_counter()
img = nib.load(path)
mask = np.asanyarray(img.dataobj)
read = time.perf_counter() - t
spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
extra = {}
if kind == 'skimage':
    from skimage import measure
    def run():
        v, f, n, _ = measure.marching_cubes(mask, level, spacing=spacing)
        return len(v), len(f)
else:
    import vtk
    from vtk.util import numpy_support
    flat = np.ascontiguousarray(mask.transpose(2, 1, 0)).ravel()  # x fastest, as VTK stores
    image = vtk.vtkImageData()
    image.SetDimensions(*mask.shape)
    image.SetSpacing(*spacing)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=False))
    smp = vtk.vtkSMPTools()
    extra = {'vtk_version': vtk.vtkVersion.GetVTKVersion(), 'smp_backend': smp.GetBackend(),
             'smp_threads': smp.GetEstimatedNumberOfThreads()}
    def run():
        fe = vtk.vtkFlyingEdges3D()
        fe.SetInputData(image)
        fe.SetValue(0, level)
        fe.ComputeNormalsOn()
        fe.Update()
        out = fe.GetOutput()
        return out.GetNumberOfPoints(), out.GetNumberOfCells()
run()
times = []
for _ in range(repeat):
    t = time.perf_counter(); counts = run(); times.append(time.perf_counter() - t)
print(json.dumps({'read_seconds': read, 'mesh_seconds': statistics.median(times), 'all_seconds': times,
                  'vertices': counts[0], 'triangles': counts[1], **extra}))
"""


def run_python(kind, path, repeat, level=0.5):
    out = subprocess.run([sys.executable, '-c', PY_TOOL, kind, str(path), str(repeat), str(level)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(binary, path, out_dir, repeat, threads=None, select=('--label', '1')):
    reports = []
    env = dict(os.environ, **({'RAYON_NUM_THREADS': str(threads)} if threads else {}))
    for i in range(repeat + 1):
        out = out_dir / 'ours.stl'
        proc = subprocess.run([str(binary), 'mesh', '--input', str(path), *select, '--output', str(out), '--force'],
                              capture_output=True, text=True, check=True, env=env)
        if i > 0:  # the first run is the warm-up that fills the page cache
            reports.append(json.loads(proc.stdout))
    med = lambda key: statistics.median(r[key] for r in reports)
    r = reports[0]
    return {'read_seconds': med('read_seconds'), 'mesh_seconds': med('mesh_seconds'), 'seconds': med('seconds'),
            'all_mesh_seconds': [x['mesh_seconds'] for x in reports], 'vertices': r['vertices'],
            'triangles': r['triangles'], 'watertight': r['watertight'],
            'enclosed_volume_ml': r['enclosed_volume_ml'], 'surface_area_mm2': r['surface_area_mm2']}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    ap.add_argument('--binary', type=Path, default=root / 'target-release/release/medsam-viewer')
    ap.add_argument('--out', type=Path, default=Path('/tmp/meshbench'))
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--ct', action='store_true', help='also compare an iso-surface of a CT phantom')
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / 'organ_mask.nii.gz'
    if not path.exists():
        mask = make_mask(path)
    else:
        import nibabel as nib
        mask = np.asanyarray(nib.load(str(path)).dataobj)
    voxel_ml = np.prod(SPACING) / 1000.0
    print(f'mask {path}: {DIMS[0]}x{DIMS[1]}x{DIMS[2]}, {int(mask.sum())} voxels inside '
          f'({mask.sum() * voxel_ml:.1f} mL), {os.cpu_count()} CPUs')
    results = {
        'medsam-viewer': run_ours(args.binary, path, args.out, args.repeat),
        'medsam-viewer (1 thread)': run_ours(args.binary, path, args.out, args.repeat, threads=1),
        'scikit-image marching_cubes': run_python('skimage', path, args.repeat),
        'VTK vtkFlyingEdges3D': run_python('vtk', path, args.repeat),
    }
    table(results)
    ours = results['medsam-viewer']
    print(f"medsam-viewer whole command (read + mesh + metrics + write STL): {ours['seconds']:.3f} s; "
          f"watertight {ours['watertight']}, enclosed {ours['enclosed_volume_ml']:.2f} mL "
          f"vs voxels {mask.sum() * voxel_ml:.2f} mL")
    print(json.dumps(results))
    if args.ct:
        ct = args.out / 'ct_phantom.nii.gz'
        if not ct.exists():
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import nibabel as nib
            from make_volumes import ct_phantom
            affine = np.diag([-0.7, -0.7, 1.25, 1.0])
            nib.save(nib.Nifti1Image(ct_phantom(), affine), str(ct))
        level = -500.0
        print(f'\nCT phantom {ct}: iso-surface at {level} HU')
        results = {
            'medsam-viewer': run_ours(args.binary, ct, args.out, args.repeat, select=('--threshold', str(level))),
            'medsam-viewer (1 thread)': run_ours(args.binary, ct, args.out, args.repeat, threads=1,
                                                 select=('--threshold', str(level))),
            'scikit-image marching_cubes': run_python('skimage', ct, args.repeat, level),
            'VTK vtkFlyingEdges3D': run_python('vtk', ct, args.repeat, level),
        }
        table(results)
        print(json.dumps(results))


def table(results):
    print(f"{'tool':30} {'mesh s':>8} {'read s':>8} {'vertices':>10} {'triangles':>10}")
    for name, r in results.items():
        print(f"{name:30} {r['mesh_seconds']:8.3f} {r['read_seconds']:8.3f} {r['vertices']:10d} {r['triangles']:10d}")

if __name__ == '__main__':
    main()
