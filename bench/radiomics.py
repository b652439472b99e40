"""Radiomics: ctlake.radiomics.extract against PyRadiomics, one core each, per nodule ROI.
Writes bench/results/radiomics.json.

    .venv/bin/python bench/radiomics.py [--diameters 5 10 20 30 --repeats 7 --profile]

Input: one synthetic chest at 1 x 1 x 1 mm (ctlake.synth.phantom_volume: 384 x 384 pixels, 160 slices,
int16 HU with 15 HU noise), with textured nodules of the given diameters painted into the lungs (lobulated
surface, the 20 mm one spiculated; 40 HU falling towards the rim plus 60 HU of smooth texture, 0.6 mm
partial-volume blur, 15 HU noise), each its own label. Every ROI is cut out of the volume as its
bounding box plus 5 voxels (PyRadiomics' padDistance), before any clock starts; both sides get that
crop: ours the int16 array and the 0/1 mask with spacing (1, 1, 1); PyRadiomics sitk images built
from the same arrays (GetImageFromArray not timed), RadiomicsFeatureExtractor() with its defaults
(binWidth 25, no resampling, all default classes and features: 107) plus additionalInfo False (the
diagnostics are not features; leaving them on only slows PyRadiomics down), setVerbosity(60).

Single-threaded: OMP/MKL/OPENBLAS threads set to 1 before numpy loads,
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1). Each side runs once to warm up, then
--repeats times; the best time is reported (the median beside it). max_rel_diff: the largest
|ours - PyRadiomics| / max(|ours|, |PyRadiomics|) over the 107 features (0 where both are < 1e-12).
Not a test: nothing passes or fails on these numbers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# this file is bench/radiomics.py: drop bench/ from the import path so that `import radiomics` finds
# PyRadiomics, not this script
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from ctlake.synth.phantom import lobulated_nodule  # noqa: E402
from scipy import ndimage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD_VOXELS = 5
GOAL = {"speedup": 20.0, "max_rel_diff": 1e-6}


def _common():
    """bench/_common.py, loaded by path (bench/ is off sys.path here, see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", Path(__file__).with_name("_common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> dict:
    return _common().machine()


def versions() -> dict:
    return _common().versions("numpy", "scipy", "SimpleITK", "pyradiomics", "PyWavelets")


def paint_nodule(hu: np.ndarray, labels: np.ndarray, centre_zyx: np.ndarray, diameter_mm: float, label: int,
                 rng: np.random.Generator, *, spiculated: bool) -> None:
    """Paint one textured nodule (1 mm grid) into ``hu`` (int16) and ``label`` into ``labels``."""
    radius = diameter_mm / 2.0
    reach = int(np.ceil(radius * (1.5 if spiculated else 1.2))) + 3
    lo = np.round(centre_zyx).astype(int) - reach
    box = tuple(slice(a, a + 2 * reach + 1) for a in lo)
    z, y, x = np.meshgrid(*[np.arange(s.start, s.stop) - c for s, c in zip(box, centre_zyx, strict=True)],
                          indexing="ij")
    r, mask = lobulated_nodule(z, y, x, diameter_mm, rng, spiculated=spiculated)
    texture = ndimage.gaussian_filter(rng.normal(size=r.shape), 1.0)
    texture /= texture.std()
    values = np.where(mask, 40.0 - 300.0 * np.clip(r / radius - 0.7, 0.0, None) + 60.0 * texture,
                      hu[box].astype(np.float64))
    values = ndimage.gaussian_filter(values, 0.6) + rng.normal(0.0, 15.0, r.shape)
    near = ndimage.binary_dilation(mask, iterations=2)
    hu[box][near] = np.clip(np.round(values[near]), -1024, 3071).astype(np.int16)
    labels[box][mask] = label


def make_case(diameters_mm: list[float], seed: int = 7):
    """The 1 mm phantom with the nodules painted in; returns (hu, labels, [(diameter, label)])."""
    from ctlake.synth.phantom import phantom_volume

    rng = np.random.default_rng(seed)
    ph = phantom_volume(rng, size=384, slices=160, slice_thickness_mm=1.0, fov_mm=384.0, nodules=0,
                        noise_sd_hu=15.0)
    assert ph.geometry.spacing_zyx_mm == (1.0, 1.0, 1.0)
    hu = ph.hu.copy()
    labels = np.zeros(hu.shape, dtype=np.uint8)
    depth = ndimage.distance_transform_edt(ph.lung_mask)        # mm to the nearest non-lung voxel
    placed: list[tuple[np.ndarray, float]] = []
    out = []
    for k, d in enumerate(sorted(diameters_mm, reverse=True), start=1):
        need = d / 2.0 * 1.5 + 4.0
        candidates = np.argwhere(depth >= need)
        rng.shuffle(candidates)
        for c in candidates[:5000]:
            if all(np.linalg.norm(c - p) > need + q + 4.0 for p, q in placed):
                break
        else:
            raise SystemExit(f"no room in the lungs for a {d} mm nodule")
        centre = c + rng.uniform(-0.5, 0.5, 3)
        paint_nodule(hu, labels, centre, d, k, rng, spiculated=(d == 20))
        placed.append((c, need))
        out.append((d, k))
    return hu, labels, sorted(out)


def crop(hu: np.ndarray, labels: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    nz = np.nonzero(labels == label)
    box = tuple(slice(max(int(a.min()) - PAD_VOXELS, 0), min(int(a.max()) + 1 + PAD_VOXELS, n))
                for a, n in zip(nz, labels.shape, strict=True))
    return np.ascontiguousarray(hu[box]), (labels[box] == label).astype(np.uint8)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    fn()                                       # warm-up
    times, result = [], None
    for _ in range(repeats):
        result = None
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def rel_diff(a: float, b: float) -> float:
    if np.isnan(a) or np.isnan(b):
        return float("inf")
    if abs(a) < 1e-12 and abs(b) < 1e-12:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diameters", type=float, nargs="+", default=[5.0, 10.0, 20.0, 30.0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of ours on the largest ROI")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "radiomics.json")
    args = ap.parse_args(argv)

    try:
        import radiomics
    except ImportError as exc:
        raise SystemExit(f"PyRadiomics is not importable ({exc}): run `make venv` "
                         "(infra/local/install_test_deps.sh installs requirements/test.in)") from None
    import SimpleITK as sitk
    from ctlake.radiomics import extract, params_from_mapping
    from radiomics import featureextractor

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    radiomics.setVerbosity(60)
    extractor = featureextractor.RadiomicsFeatureExtractor({"setting": {"additionalInfo": False}})
    params = params_from_mapping(None)
    spacing = (1.0, 1.0, 1.0)

    hu, labels, nodules = make_case(args.diameters)
    cases = []
    for diameter, label in nodules:
        image, mask = crop(hu, labels, label)
        image_sitk, mask_sitk = sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask)
        for img in (image_sitk, mask_sitk):
            img.SetSpacing(spacing)
        ours_t, ours = timed(lambda image=image, mask=mask: extract(image, mask, spacing, params), args.repeats)
        py_t, ref = timed(lambda a=image_sitk, b=mask_sitk: extractor.execute(a, b), max(3, args.repeats // 2))
        ref = {k: float(v) for k, v in ref.items() if k.startswith("original_")}
        if set(ref) != set(ours):
            raise SystemExit(f"feature names differ: {sorted(set(ref) ^ set(ours))}")
        diffs = {k: rel_diff(ours[k], ref[k]) for k in ref}
        worst = max(diffs, key=diffs.get)
        case = {"diameter_mm": diameter, "voxels": int(mask.sum()), "box_shape_zyx": list(image.shape),
                "ours_ms": round(min(ours_t) * 1e3, 3), "ours_median_ms": round(statistics.median(ours_t) * 1e3, 3),
                "pyradiomics_ms": round(min(py_t) * 1e3, 3),
                "pyradiomics_median_ms": round(statistics.median(py_t) * 1e3, 3),
                "speedup": round(min(py_t) / min(ours_t), 2), "max_rel_diff": diffs[worst],
                "max_rel_diff_feature": worst, "features": len(ref)}
        print(json.dumps(case))
        cases.append(case)

    if args.profile:
        import cProfile
        import pstats

        image, mask = crop(hu, labels, nodules[-1][1])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            extract(image, mask, spacing, params)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)

    result = {
        "what": "all 107 default PyRadiomics features (firstorder, shape, glcm, glrlm, glszm, gldm, ngtdm; "
                "binWidth 25, no resampling) per nodule ROI, pre-cropped to its bounding box + 5 voxels, "
                "1 mm synthetic chest CT; one thread each; best of repeats after a warm-up",
        "cases": cases,
        "ours_ms": round(statistics.median(c["ours_ms"] for c in cases), 3),
        "pyradiomics_ms": round(statistics.median(c["pyradiomics_ms"] for c in cases), 3),
        "speedup": round(statistics.median(c["speedup"] for c in cases), 2),
        "max_rel_diff": max(c["max_rel_diff"] for c in cases),
        "goal": GOAL,
        "meets_goal": {"speedup": statistics.median(c["speedup"] for c in cases) >= GOAL["speedup"],
                       "max_rel_diff": max(c["max_rel_diff"] for c in cases) <= GOAL["max_rel_diff"]},
        "repeats": {"ours": args.repeats, "pyradiomics": max(3, args.repeats // 2)},
        "threads": 1,
        "pyradiomics_settings": {"additionalInfo": False},
        "versions": versions(),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ours_ms", "pyradiomics_ms", "speedup", "max_rel_diff")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
