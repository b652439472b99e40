"""Volume resampling: ctlake.imaging.resample against SimpleITK, one core each, on a full
512 x 512 chest series. Writes bench/results/volume.json.

    .venv/bin/python bench/volume.py [--slices 300 --size 512 --slice-mm 1.25 --pixel-mm 0.7]

The series is the synthetic phantom (ctlake.synth.phantom_volume: int16 HU, 0.7 mm pixels,
1.25 mm slices), made in memory before any clock starts. Both sides time the same work on the
same in-memory HU volume: clip to [-1000, 400] HU, then linear resampling to 1 x 1 x 1 mm onto
the same output grid (ctlake's output_grid), ending in a float32 (z, y, x) volume.
  ours: resample_to_spacing(hu_int16_zyx, grid) (clip and int16 -> float32 included);
  SimpleITK: sitk.Clamp(img, sitkFloat32, -1000, 400) + sitk.Resample(..., sitkLinear, ...,
  sitkFloat32) on an sitk.Image already built from the array (GetImageFromArray not timed).
DICOM decoding is not included on either side. Single-threaded: OMP/MKL/OPENBLAS threads set to
1 before numpy loads, sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1). Each side runs
--repeats times; the best time is reported (the median beside it). Not a test: nothing passes or
fails on these numbers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _common import machine, versions, write_result  # noqa: E402  (bench/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def memcpy_gb_per_s(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """np.copyto of one large float32 array into another: bytes read + written per second (best)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        result = None                      # free the last output before the next run
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slice-mm", type=float, default=1.25)
    ap.add_argument("--pixel-mm", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sitk-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "volume.json"))
    args = ap.parse_args(argv)

    import SimpleITK as sitk
    from ctlake.imaging.grid import Grid
    from ctlake.imaging.resample import DEFAULT_WINDOW_HU, output_grid, resample_to_spacing
    from ctlake.synth import phantom_volume

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    t0 = time.perf_counter()
    phantom = phantom_volume(np.random.default_rng(args.seed), size=args.size, slices=args.slices,
                             slice_thickness_mm=args.slice_mm, fov_mm=args.size * args.pixel_mm,
                             blur_sd_mm=0.7, noise_sd_hu=15.0)
    hu = phantom.hu                                               # int16 (z, y, x)
    geometry = phantom.geometry
    z0, y0, x0 = geometry.origin_zyx_mm
    grid = Grid(hu.shape, geometry.spacing_zyx_mm, (x0, y0, z0))
    out_grid = output_grid(grid, (1.0, 1.0, 1.0))
    print(f"[volume] phantom {hu.shape} {hu.dtype} spacing {grid.spacing_zyx_mm} mm in "
          f"{time.perf_counter() - t0:.1f} s; output {out_grid.shape_zyx}")

    ours_times, ours = timed(lambda: resample_to_spacing(hu, grid).array, args.repeats)
    ours_i16_times, ours_i16 = timed(lambda: resample_to_spacing(hu, grid, out_dtype=np.int16).array, args.repeats)
    print(f"[volume] ours {min(ours_times):.3f} s (int16 out {min(ours_i16_times):.3f} s)")

    img = sitk.GetImageFromArray(hu)
    img.SetOrigin(grid.origin_xyz_mm)
    img.SetSpacing(grid.spacing_xyz_mm)
    img.SetDirection(grid.direction)
    lo, hi = DEFAULT_WINDOW_HU

    def peer():
        clamped = sitk.Clamp(img, sitk.sitkFloat32, lo, hi)
        return sitk.Resample(clamped, out_grid.shape_zyx[::-1], sitk.Transform(), sitk.sitkLinear,
                             out_grid.origin_xyz_mm, out_grid.spacing_xyz_mm, out_grid.direction, lo,
                             sitk.sitkFloat32)

    sitk_times, ref = timed(peer, args.sitk_repeats)
    print(f"[volume] SimpleITK {min(sitk_times):.3f} s")
    ref_arr = sitk.GetArrayFromImage(ref)
    max_abs_diff = float(np.abs(ours - ref_arr).max())
    max_abs_diff_i16 = float(np.abs(ours_i16 - ref_arr).max())

    memcpy = memcpy_gb_per_s()
    ours_s, sitk_s = min(ours_times), min(sitk_times)
    moved = hu.nbytes + ours.nbytes                               # read the int16 input once, write float32 once
    result = {
        "what": "clip to [-1000, 400] HU then linear resampling to 1 mm, in-memory int16 HU volume -> "
                "float32 volume on the same output grid; one thread each; best of repeats",
        "input_shape_zyx": list(hu.shape),
        "input_spacing_zyx_mm": list(grid.spacing_zyx_mm),
        "output_shape_zyx": list(out_grid.shape_zyx),
        "voxels_in": int(hu.size),
        "voxels_out": int(ours.size),
        "ours_s": round(ours_s, 4),
        "ours_median_s": round(statistics.median(ours_times), 4),
        "ours_int16_out_s": round(min(ours_i16_times), 4),
        "sitk_s": round(sitk_s, 4),
        "sitk_median_s": round(statistics.median(sitk_times), 4),
        "speedup": round(sitk_s / ours_s, 2),
        "max_abs_diff_hu": max_abs_diff,
        "max_abs_diff_int16_out_hu": max_abs_diff_i16,
        "memcpy_gb_per_s": round(memcpy, 2),
        "ours_gb_per_s": round(moved / ours_s / 1e9, 2),
        "ours_bytes_read_written": int(moved),
        "ours_fraction_of_memcpy": round(moved / ours_s / 1e9 / memcpy, 3),
        "memcpy_bound_s": round(moved / (memcpy * 1e9), 4),
        "repeats": {"ours": args.repeats, "sitk": args.sitk_repeats},
        "threads": 1,
        "versions": versions("numpy", "scipy", "SimpleITK"),
        "machine": machine(),
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
