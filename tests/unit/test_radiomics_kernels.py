"""The compiled radiomics kernels (ctlake.radiomics._kernels, driven by ctlake.radiomics.engine) against
the numpy code of the family modules, which defines every matrix and feature.

Inputs are small random grey level volumes (several levels, masks with holes, a single voxel, two voxels,
a flat ROI, a one-slice ROI), under the settings the engine supports: distances 1 and 2, force2D on each
axis, symmetric and non-symmetric GLCMs, every weightingNorm, gldm_a > 0, voxelArrayShift, binCount.
Matrices must be equal (they are counts), features equal within 1e-9 relative, and ``extract`` through the
kernels equal to ``extract`` through the numpy code (numba switched off) within 1e-9 relative.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ctlake.radiomics import _kernels as K
from ctlake.radiomics import engine, extract, firstorder, glcm, gldm, glrlm, glszm, ngtdm, params_from_mapping, shape
from ctlake.radiomics.extract import FAMILIES
from ctlake.radiomics.mesh import marching_cubes

RTOL = 1e-9


def test_numba_is_there():
    """The venv has numba: the compiled path is the one under test (without it every test below would
    compare the numpy code with itself)."""
    assert K.AVAILABLE and engine.AVAILABLE


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _random_levels(shape, n_levels, rng, *, fill=0.7, smooth=False) -> np.ndarray:
    """Grey levels 1..n_levels (int64) inside a random mask with holes, 0 outside."""
    mask = rng.random(shape) < fill
    if smooth:                                    # spatially correlated levels: longer runs, bigger zones
        base = rng.integers(1, n_levels + 1, size=(shape[0], 1, shape[2]))
        levels = np.broadcast_to(base, shape).copy()
        flip = rng.random(shape) < 0.2
        levels[flip] = rng.integers(1, n_levels + 1, size=int(flip.sum()))
    else:
        levels = rng.integers(1, n_levels + 1, size=shape)
    out = np.where(mask, levels, 0).astype(np.int64)
    if not out.any():
        out[tuple(s // 2 for s in shape)] = 1
    return out


def _volumes():
    rng = np.random.default_rng(42)
    vols = {
        "random-holes": _random_levels((6, 7, 8), 5, rng),
        "smooth": _random_levels((7, 6, 9), 4, rng, fill=0.85, smooth=True),
        "many-levels": _random_levels((5, 9, 7), 23, rng, fill=0.9),
        "sparse": _random_levels((8, 8, 8), 3, rng, fill=0.15),
        "single-voxel": np.pad(np.array([[[3]]]), 2),
        "two-voxels": np.pad(np.array([[[2, 5]]]), 1),
        "flat": np.pad(np.full((3, 4, 2), 2), 1),
        "one-slice": np.pad(_random_levels((1, 6, 7), 4, rng, fill=0.9), ((1, 1), (0, 0), (0, 0))),
        "gapped-levels": _random_levels((5, 6, 6), 4, rng, fill=0.8) * 3,     # levels 3, 6, 9, 12 only
    }
    return vols


VOLUMES = _volumes()
SETTINGS = {
    "default": {},
    "distances-1-2": {"distances": [1, 2]},
    "force2D-z": {"force2D": True, "force2Ddimension": 0},
    "force2D-x": {"force2D": True, "force2Ddimension": 2},
    "asymmetric": {"symmetricalGLCM": False},
    "merged": {"weightingNorm": "no_weighting"},
    "manhattan": {"weightingNorm": "manhattan"},
    "euclidean": {"weightingNorm": "euclidean"},
    "infinity": {"weightingNorm": "infinity"},
    "gldm-a1": {"gldm_a": 1},
}
SPACING = (2.0, 0.8, 0.7)


def _settings(name: str) -> dict:
    return params_from_mapping({"setting": SETTINGS[name]}).settings


def _roi(levels_zyx: np.ndarray, settings: dict) -> engine.Roi:
    return engine.roi_from_levels(levels_zyx, SPACING, pad=max(settings["distances"]))


def _plane(settings: dict) -> dict:
    return {"force2d": settings["force2D"], "force2d_dimension": settings["force2Ddimension"]}


def _close(got, want, what: str, rtol: float = RTOL, atol: float = 1e-12) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    bad = ~(np.isclose(got, want, rtol=rtol, atol=atol) | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), f"{what}: compiled {got[bad]} vs numpy {want[bad]}"


# --------------------------------------------------------------------------------------------------
# preparation
# --------------------------------------------------------------------------------------------------
def test_bounding_box_and_level_volume():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((5, 6, 7)) < rng.uniform(0.0, 0.1)
        box = K.bounding_box(mask.view(np.uint8))
        if not mask.any():
            assert box[0] == -1
            continue
        nz = np.nonzero(mask)
        assert box.tolist() == [v for a in nz for v in (int(a.min()), int(a.max()) + 1)]
    levels = np.pad(_random_levels((4, 5, 6), 6, rng), ((1, 0), (0, 2), (3, 1)))
    roi = engine.roi_from_levels(levels, pad=2)
    nz = np.nonzero(levels)
    padded = np.pad(levels[tuple(slice(a.min(), a.max() + 1) for a in nz)], 2)
    assert np.array_equal(roi.lv.reshape(padded.shape), padded)
    assert np.array_equal(roi.roi, np.flatnonzero(padded))
    assert np.array_equal(roi.present, np.unique(levels[levels > 0]))
    assert np.array_equal(roi.counts, np.unique(levels[levels > 0], return_counts=True)[1])
    assert all(roi.rank[v] == k for k, v in enumerate(roi.present))


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.float32, np.uint8])
def test_gather_roi(dtype):
    rng = np.random.default_rng(4)
    image = (rng.random((6, 7, 8)) * 200).astype(dtype)
    mask = np.zeros(image.shape, dtype=bool)
    mask[1:4, 2:6, 3:5] = rng.random((3, 4, 2)) < 0.7
    mask[2, 3, 3] = True
    box, x, mask_box = K.gather_roi(image, mask.view(np.uint8))
    nz = np.nonzero(mask)
    sl = tuple(slice(a.min(), a.max() + 1) for a in nz)
    assert box.tolist() == [v for s in sl for v in (s.start, s.stop)]
    assert np.array_equal(mask_box.view(bool), mask[sl]) and mask_box.flags.c_contiguous
    assert x.dtype == np.float64 and np.array_equal(x, image[sl][mask[sl]].astype(np.float64))
    assert K.gather_roi(image, np.zeros(image.shape, np.uint8))[0][0] == -1


def test_digitize_equals_numpy():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 300, 500).round(), rng.normal(0, 3, 100), [-1000.0, 25.0, 50.0, 75.0]])
    edges = np.arange(-1050.0, 1200.0, 25.0)
    assert np.array_equal(K.digitize(x, edges), np.digitize(x, edges))


# --------------------------------------------------------------------------------------------------
# matrices: compiled == numpy, exactly (they count)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("volume", list(VOLUMES))
def test_glcm_matrices(volume, setting):
    lv, s = VOLUMES[volume], _settings(setting)
    want, grey = glcm.matrices(lv, SPACING, distances=tuple(s["distances"]), symmetric=s["symmetricalGLCM"],
                               weighting_norm=s["weightingNorm"], **_plane(s))
    roi = _roi(lv, s)
    got = engine.glcm_matrices(roi, s)
    assert np.array_equal(roi.present, grey)
    _close(got, want, f"GLCM {volume}/{setting}", rtol=1e-14, atol=0)


@pytest.mark.parametrize("setting", ["default", "force2D-z", "force2D-x", "merged", "euclidean"])
@pytest.mark.parametrize("volume", list(VOLUMES))
@pytest.mark.parametrize("drop_flat", [True, False])
def test_glrlm_matrices(volume, setting, drop_flat):
    lv, s = VOLUMES[volume], _settings(setting)
    want, grey = glrlm.matrices(lv, SPACING, weighting_norm=s["weightingNorm"], drop_flat=drop_flat, **_plane(s))
    got = engine.glrlm_matrices(_roi(lv, s), s, drop_flat=drop_flat)
    assert got.shape[:2] == want.shape[:2] and not got[:, :, want.shape[2]:].any()
    _close(got[:, :, :want.shape[2]], want, f"GLRLM {volume}/{setting}", rtol=1e-14, atol=0)


@pytest.mark.parametrize("setting", ["default", "force2D-z", "force2D-x"])
@pytest.mark.parametrize("volume", list(VOLUMES))
def test_glszm_matrix(volume, setting):
    lv, s = VOLUMES[volume], _settings(setting)
    want, _ = glszm.zone_matrix(lv, **_plane(s))
    got = engine.glszm_matrix(_roi(lv, s), s)
    assert np.array_equal(got, want), f"GLSZM {volume}/{setting}"


@pytest.mark.parametrize("setting", ["default", "distances-1-2", "force2D-z", "force2D-x", "gldm-a1"])
@pytest.mark.parametrize("volume", list(VOLUMES))
@pytest.mark.parametrize("exclude_isolated", [False, True])
def test_gldm_and_ngtdm_matrices(volume, setting, exclude_isolated):
    lv, s = VOLUMES[volume], _settings(setting)
    dep, n_i, s_i = engine.neighbourhoods(_roi(lv, s), s, exclude_isolated=exclude_isolated)
    want_dep, _ = gldm.dependence_matrix(lv, alpha=s["gldm_a"], distances=tuple(s["distances"]), **_plane(s))
    assert not dep[:, :, want_dep.shape[2]:].any()
    assert np.array_equal(dep[:, :, :want_dep.shape[2]], want_dep), f"GLDM {volume}/{setting}"
    want = ngtdm.matrix(lv, distances=tuple(s["distances"]), exclude_isolated=exclude_isolated, **_plane(s))
    present = np.unique(lv[lv > 0])
    keep = n_i > 0
    assert np.array_equal(present[keep], want.i) and np.array_equal(n_i[keep], want.n_i)
    _close(s_i[keep], want.s_i, f"NGTDM s_i {volume}/{setting}", rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------------------------
# features of the matrices
# --------------------------------------------------------------------------------------------------
def _numpy_features(module, data) -> np.ndarray:
    return np.array([np.asarray(f.fn(data), dtype=np.float64) for f in module.FEATURES.values()]).T


@pytest.mark.parametrize("setting", ["default", "asymmetric", "merged", "force2D-z"])
@pytest.mark.parametrize("volume", list(VOLUMES))
def test_glcm_features(volume, setting):
    lv, s = VOLUMES[volume], _settings(setting)
    roi = _roi(lv, s)
    p = engine.glcm_matrices(roi, s)
    got = K.glcm_features(p, roi.present.astype(np.float64), int(roi.present[-1]), s["symmetricalGLCM"])
    if not len(p):
        assert got.shape == (0, 24)
        return
    want = _numpy_features(glcm, glcm.coefficients(p, roi.present))
    # MCC: the compiled eigenvalue solver works on a symmetric similar matrix; the others are sums
    _close(got, want, f"GLCM features {volume}/{setting}")


def test_mcc_with_two_equal_leading_eigenvalues():
    """Two grey level groups that never meet: Q is block diagonal, eigenvalue 1 twice, MCC 1."""
    p = np.zeros((1, 4, 4))
    p[0, :2, :2] = [[4, 2], [2, 4]]
    p[0, 2:, 2:] = [[1, 3], [3, 2]]
    p /= p.sum()
    got = K.glcm_features(p, np.arange(1.0, 5.0), 4, True)[0, list(glcm.FEATURES).index("MCC")]
    assert got == pytest.approx(1.0, rel=1e-12)
    assert glcm.mcc(glcm.coefficients(p, np.arange(1, 5)))[0] == pytest.approx(1.0, rel=1e-7)


def test_second_largest_eigenvalue():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 17, 40):
        for _ in range(5):
            a = rng.normal(size=(n, n))
            s = a @ a.T
            want = np.sort(np.linalg.eigvalsh(s))[-2]
            assert K.second_largest_eigenvalue(s.copy()) == pytest.approx(want, rel=1e-10, abs=1e-12 * abs(s).max())
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))                     # repeated eigenvalues 3, 3, 3, 1, 1, 0.5
    s = q @ np.diag([3.0, 3.0, 3.0, 1.0, 1.0, 0.5]) @ q.T
    assert K.second_largest_eigenvalue(s.copy()) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("volume", list(VOLUMES))
def test_run_zone_dependence_and_ngtdm_features(volume):
    lv, s = VOLUMES[volume], _settings("default")
    roi = _roi(lv, s)
    g = roi.present.astype(np.float64)
    p = engine.glrlm_matrices(roi, s)
    if len(p):
        _close(K.matrix_features(p, g), _numpy_features(glrlm, glrlm.coefficients(p, roi.present)), f"GLRLM {volume}")
    zones = engine.glszm_matrix(roi, s)
    _close(K.matrix_features(zones, g)[0], _numpy_features(glszm, glrlm.coefficients(zones, roi.present)),
           f"GLSZM {volume}")
    dep, n_i, s_i = engine.neighbourhoods(roi, s)
    hood = engine.neighbourhood_values(roi, s)
    got = engine.gldm_values(roi, s, hood)
    want = dict(zip(gldm.FEATURES, _numpy_features(gldm, glrlm.coefficients(dep, roi.present)), strict=True))
    _close([got[k] for k in want], list(want.values()), f"GLDM {volume}")
    got = engine.ngtdm_values(roi, s, hood)
    _close([got[k] for k in ngtdm.FEATURES], [f.fn(ngtdm.matrix(lv)) for f in ngtdm.FEATURES.values()],
           f"NGTDM values {volume}")
    for exclude in (False, True):
        dep, n_i, s_i = engine.neighbourhoods(roi, s, exclude_isolated=exclude)
        ref = ngtdm.matrix(lv, exclude_isolated=exclude)
        _close(K.ngtdm_features(g, n_i, s_i), [f.fn(ref) for f in ngtdm.FEATURES.values()], f"NGTDM {volume}")


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")     # n = 2: nothing between P10 and P90
@pytest.mark.parametrize("integral", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_firstorder_features(n, integral):
    rng = np.random.default_rng(n)
    x = rng.normal(-50.0, 120.0, n)
    x = x.round() if integral else x
    counts = rng.integers(0, 9, size=12).astype(np.float64)
    counts[0] = max(counts[0], 1.0)
    data = firstorder.FirstOrderInput(x, counts, 0.75, 300.0)
    xs = engine.sorted_values(x)
    assert np.array_equal(xs, np.sort(x)) and K.counting_sort(x)[0] == integral
    got = K.firstorder_features(x, xs, counts, 0.75, 300.0)
    _close(got, [f.fn(data) for f in firstorder.FEATURES.values()], f"first order n={n}")
    for q in (10, 25, 50, 75, 90):
        assert K._percentile_sorted(np.sort(x), float(q)) == np.percentile(x, q)


# --------------------------------------------------------------------------------------------------
# shape
# --------------------------------------------------------------------------------------------------
def _masks():
    rng = np.random.default_rng(5)
    z, y, x = np.mgrid[-7:8, -6:7, -8:9]
    ball = (z / 6.5) ** 2 + (y / 5.5) ** 2 + (x / 7.2) ** 2 <= 1
    holes = ball & (rng.random(ball.shape) < 0.85)
    return {"single-voxel": np.ones((1, 1, 1), bool), "two-voxels": np.ones((1, 1, 2), bool),
            "line": np.ones((1, 1, 9), bool), "slab": np.ones((1, 5, 4), bool), "ball": ball, "holes": holes,
            "specks": rng.random((6, 7, 8)) < 0.1, "diagonal": np.eye(6, dtype=bool)[None].repeat(3, axis=0)}


MASKS = _masks()


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.65)])
def test_shape_input(mask, spacing):
    m = MASKS[mask]
    roi = engine.roi_from_levels(m.astype(np.int64), spacing)
    got = engine.shape_input(roi)
    want = shape.prepare(m, spacing)
    mesh = marching_cubes(m, spacing)
    assert got.mesh.surface_area_mm2 == pytest.approx(mesh.surface_area_mm2, rel=1e-12)
    assert got.mesh.volume_mm3 == pytest.approx(mesh.volume_mm3, rel=1e-12)
    assert got.n_voxels == want.n_voxels and got.voxel_volume_mm3 == want.voxel_volume_mm3
    # the same vertex set (up to the translation of the padding)
    shift = got.mesh.vertex_index2.min(axis=0) - mesh.vertex_index2.min(axis=0)
    assert sorted(map(tuple, got.mesh.vertex_index2 - shift)) == sorted(map(tuple, mesh.vertex_index2))
    _close(got.diameters_mm, want.diameters_mm, f"diameters {mask}", rtol=1e-12)
    _close(got.eigenvalues, want.eigenvalues, f"axes {mask}", rtol=1e-9, atol=1e-12)


def test_mesh_diameters_of_random_point_clouds():
    """The hull-based pruning never loses the farthest pair (brute force over all vertices)."""
    rng = np.random.default_rng(8)
    for trial in range(40):
        m = rng.random((5, 6, 7) if trial % 2 else (9, 4, 8)) < rng.uniform(0.05, 0.6)
        if not m.any():
            continue
        roi = engine.roi_from_levels(m.astype(np.int64), tuple(rng.uniform(0.3, 3.0, 3)))
        verts = K.mesh_vertices(roi.lv, roi.dims)
        got = K.mesh_diameters(verts, roi.dims, roi.spacing)
        mm = verts * (roi.spacing / 2.0)
        d2 = ((mm[:, None, :] - mm[None, :, :]) ** 2).sum(axis=2)
        want = [math.sqrt((d2 * (verts[:, None, a] == verts[None, :, a])).max()) for a in range(3)]
        _close(got, [*want, math.sqrt(d2.max())], "diameters", rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# extract: compiled == numpy end to end
# --------------------------------------------------------------------------------------------------
def _ct_like(shape, rng):
    image = rng.normal(-100.0, 150.0, shape).round().astype(np.int16)
    z, y, x = np.indices(shape)
    c = (np.asarray(shape) - 1) / 2.0
    mask = ((z - c[0]) / (shape[0] / 2.2)) ** 2 + ((y - c[1]) / (shape[1] / 2.2)) ** 2 + \
        ((x - c[2]) / (shape[2] / 2.2)) ** 2 <= 1
    mask &= rng.random(shape) < 0.95                                             # holes
    return image, mask.astype(np.uint8)


EXTRACT_SETTINGS = {
    **{k: v for k, v in SETTINGS.items()},
    "binCount": {"binCount": 16},
    "shift-and-label": {"voxelArrayShift": 1000, "label": 2},
}


@pytest.mark.parametrize("setting", list(EXTRACT_SETTINGS))
def test_extract_compiled_equals_numpy(setting, monkeypatch):
    rng = np.random.default_rng(11)
    image, mask = _ct_like((9, 12, 11), rng)
    settings = dict(EXTRACT_SETTINGS[setting])
    if settings.get("label") == 2:
        mask = mask * 2
    names = {cls: list(f) for cls, f in FAMILIES.items()}               # every feature, deprecated ones too
    params = params_from_mapping({"setting": settings, "featureClass": names})
    got = extract(image, mask, (1.5, 0.8, 0.8), params)
    monkeypatch.setattr(engine, "AVAILABLE", False)
    want = extract(image, mask, (1.5, 0.8, 0.8), params)
    assert set(got) == set(want) and len(got) == sum(len(v) for v in names.values())
    _close([got[k] for k in want], list(want.values()), f"extract {setting}: {list(want)}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # elongation, flatness: 0 / 0
def test_extract_of_a_single_voxel_compiled_equals_numpy(monkeypatch):
    image = np.arange(27, dtype=np.int16).reshape(3, 3, 3) * 10
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[1, 1, 1] = 1
    got = extract(image, mask, (1.0, 1.0, 1.0))
    monkeypatch.setattr(engine, "AVAILABLE", False)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = extract(image, mask, (1.0, 1.0, 1.0))
    _close([got[k] for k in want], list(want.values()), "single voxel")


def test_extract_of_big_endian_and_float16_images():
    """Arrays numba cannot take (non-native byte order, float16) go through the numpy gather; same values."""
    rng = np.random.default_rng(12)
    image, mask = _ct_like((7, 8, 9), rng)
    want = extract(image, mask, (1.0, 1.0, 1.0))
    for other in (image.astype(">i2"), image.astype(np.float16)):
        got = extract(other, mask, (1.0, 1.0, 1.0))
        _close([got[k] for k in want], list(want.values()), f"extract {other.dtype}")


def test_extract_refuses_an_empty_mask_on_both_paths(monkeypatch):
    image = np.zeros((3, 3, 3), np.int16)
    with pytest.raises(ValueError, match="no voxels with label 1"):
        extract(image, np.zeros((3, 3, 3), np.uint8), (1.0, 1.0, 1.0))
    monkeypatch.setattr(engine, "AVAILABLE", False)
    with pytest.raises(ValueError, match="no voxels with label 1"):
        extract(image, np.zeros((3, 3, 3), np.uint8), (1.0, 1.0, 1.0))


# --------------------------------------------------------------------------------------------------
# compilation cache
# --------------------------------------------------------------------------------------------------
def test_warm_up_compiles_every_kernel_extract_uses():
    assert engine.warm_up() >= 0.0
    for kernel in (K.gather_roi, K.prepare, K.firstorder_features, K.shape_values, K.glcm_values, K.glrlm_values,
                   K.glszm_values, K.neighbourhood_values):
        assert kernel.signatures, kernel.__name__



def test_jit_falls_back_to_no_cache_when_no_cache_location_is_writable(monkeypatch):
    import numba

    calls = []
    real = numba.njit

    def njit(*args, **options):     # numba's own error when it finds no writable cache location
        if args:                     # numba's internals decorating their own helpers
            return real(*args, **options)
        calls.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function 'f': no locator available for file '/ro/f.py'")
        return real(**options)

    monkeypatch.setattr(numba, "njit", njit)

    def twice(x):
        return 2 * x

    compiled = K._jit(twice)
    assert calls == [True, False] and compiled(21) == 42


def test_kernels_from_a_zip_without_a_writable_cache_location(tmp_path):
    """Spark's --py-files ships the package as a zip; numba then caches in the user-wide directory,
    which it does not check until it saves. With none writable the kernels still compile and run."""
    package = Path(K.__file__).resolve().parents[1]
    archive = tmp_path / "ctlake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in package.rglob("*.py"):
            zf.write(path, path.relative_to(package.parent))
    code = ("import numpy as np; from ctlake.radiomics import _kernels as K; m = np.zeros((3, 4, 5), np.uint8); "
            "m[1, 2, 3] = 1; print(K.bounding_box(m).tolist(), K.bounding_box._cache.__class__.__name__)")
    nowhere = "/proc/no-such-home"
    env = {**os.environ, "PYTHONPATH": str(archive), "HOME": nowhere, "XDG_CACHE_HOME": nowhere}
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[1,", "2,", "2,", "3,", "3,", "4]", "NullCache"]
