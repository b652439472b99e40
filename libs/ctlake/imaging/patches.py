r"""Fixed-size patches around nodule centres, negative candidates, and patient splits (DESIGN §5).

Pure numpy; arrays are (z, y, x) on a 1 mm volume (:func:`ctlake.imaging.resample.resample_to_spacing`),
so a patch of (32, 48, 48) voxels is 32 × 48 × 48 mm.

Patch placement
    A patch of size ``(sz, sy, sx)`` about the centre voxel ``(cz, cy, cx)`` covers indices
    ``c - s // 2 .. c - s // 2 + s - 1`` on each axis: the centre voxel is at ``s // 2`` in the
    patch (for even sizes one more voxel before the centre than after). Voxels outside the
    volume are padding: ``pad_hu`` (-1000 HU, the low end of the HU window: air) in the image
    and 0 in the mask. Images are stored as int16 HU (half the bytes of float32; the lake's
    ``gold.nodule_patches`` keeps int16), clipped to ``window_hu`` first (default [-1000, 400]
    HU, DESIGN §5), masks as uint8.

Negative candidates (:func:`sample_negative_centres`)
    Voxels drawn uniformly from the lung mask, at least ``min_distance_mm`` from every nodule
    centre (plus the nodule's radius when diameters are given), all different; randomness only
    from the ``rng`` passed in.

Patient splits (:func:`patient_split`)
    A patient's split depends on nothing but its pseudo id, the seed and the fractions:
    ``u = SHA-256("<seed>:<patient id>")[:8] / 2^64`` in [0, 1), split i where the cumulative
    fractions first exceed u. So one patient is never in two splits, and adding patients never
    moves an existing one. The realised fractions of a small cohort scatter around the targets
    (binomially); they converge for large ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ctlake.errors import CtlakeError

__all__ = [
    "CANDIDATE_PATCH_ZYX",
    "CUBE32_ZYX",
    "CUBE64_ZYX",
    "PATCH_SIZES",
    "SPLIT_NAMES",
    "Patch",
    "PatchError",
    "extract_patch",
    "patch_bounds",
    "patient_split",
    "sample_negative_centres",
    "split_of",
]

#: DESIGN §5 sizes (voxels, z y x): candidate classifier, and the two cubes.
CANDIDATE_PATCH_ZYX = (32, 48, 48)
CUBE32_ZYX = (32, 32, 32)
CUBE64_ZYX = (64, 64, 64)
PATCH_SIZES = {"candidate": CANDIDATE_PATCH_ZYX, "cube32": CUBE32_ZYX, "cube64": CUBE64_ZYX}
SPLIT_NAMES = ("train", "val", "test")
PAD_HU = -1000
DEFAULT_WINDOW_HU = (-1000.0, 400.0)


class PatchError(CtlakeError):
    """A patch or a sample cannot be made. ``code``: NOT_ENOUGH_NEGATIVES, EMPTY_LUNG_MASK."""

    code = "PATCH_ERROR"


@dataclass(frozen=True, eq=False)
class Patch:
    """One patch: ``image`` int16 HU and ``mask`` uint8 (or None), both ``size_zyx``;
    ``start_zyx`` is the volume index of patch voxel (0, 0, 0) (may be negative at an edge);
    ``centre_zyx`` the centre voxel asked for; ``padded_fraction`` the share of padding voxels."""

    image: np.ndarray
    mask: np.ndarray | None
    start_zyx: tuple[int, int, int]
    centre_zyx: tuple[int, int, int]
    padded_fraction: float


def patch_bounds(centre_zyx: Sequence[int], size_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) volume indices (exclusive stop) of a ``size_zyx`` patch about ``centre_zyx``:
    ``start = c - s // 2``, ``stop = start + s``."""
    c = np.asarray([int(v) for v in centre_zyx], dtype=np.int64)
    s = np.asarray([int(v) for v in size_zyx], dtype=np.int64)
    if c.shape != (3,) or s.shape != (3,) or np.any(s < 1):
        raise ValueError(f"centre_zyx and size_zyx must be 3 ints (sizes >= 1), got {centre_zyx}, {size_zyx}")
    start = c - s // 2
    return start, start + s


def _crop_padded(vol: np.ndarray, start: np.ndarray, stop: np.ndarray, fill, dtype) -> tuple[np.ndarray, int]:
    out = np.full(tuple(int(v) for v in stop - start), fill, dtype=dtype)
    shape = np.asarray(vol.shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(stop, shape)
    if np.all(hi > lo):
        src = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        dst = tuple(slice(int(a - s0), int(b - s0)) for a, b, s0 in zip(lo, hi, start, strict=True))
        out[dst] = vol[src]
        inside = int(np.prod(hi - lo))
    else:
        inside = 0
    return out, out.size - inside


def extract_patch(
    hu_zyx: np.ndarray,
    centre_zyx: Sequence[int],
    size_zyx: Sequence[int] = CANDIDATE_PATCH_ZYX,
    *,
    mask_zyx: np.ndarray | None = None,
    window_hu: tuple[float, float] | None = DEFAULT_WINDOW_HU,
    pad_hu: float | None = None,
) -> Patch:
    """The ``size_zyx`` patch of ``hu_zyx`` (and of ``mask_zyx``, same shape) about voxel
    ``centre_zyx`` (see the module docstring for placement and padding).

    window_hu: HU clipped to this window (None: not clipped, only to the int16 range); the
        image is rounded to the nearest HU and stored as int16.
    pad_hu: the value outside the volume; None: the window's low end (-1000 HU), or -1000 HU
        without a window.
    """
    vol = np.asarray(hu_zyx)
    if vol.ndim != 3:
        raise ValueError(f"hu_zyx must be (z, y, x), got shape {vol.shape}")
    if mask_zyx is not None and np.shape(mask_zyx) != vol.shape:
        raise ValueError(f"mask_zyx shape {np.shape(mask_zyx)} != volume shape {vol.shape}")
    start, stop = patch_bounds(centre_zyx, size_zyx)
    fill = float(PAD_HU if window_hu is None else window_hu[0]) if pad_hu is None else float(pad_hu)
    raw, padded = _crop_padded(vol, start, stop, fill, np.float32)
    lo, hi = (-32768.0, 32767.0) if window_hu is None else (max(-32768.0, window_hu[0]), min(32767.0, window_hu[1]))
    image = np.rint(np.clip(raw, lo, hi)).astype(np.int16)
    mask = None
    if mask_zyx is not None:
        mask, _ = _crop_padded(np.asarray(mask_zyx) != 0, start, stop, False, bool)
        mask = mask.astype(np.uint8)
    return Patch(image, mask, tuple(int(v) for v in start), tuple(int(v) for v in centre_zyx),  # type: ignore[arg-type]
                 padded / image.size)


def sample_negative_centres(
    lung_mask_zyx: np.ndarray,
    nodule_centres_zyx: np.ndarray | Sequence[Sequence[float]],
    n: int,
    rng: np.random.Generator,
    min_distance_mm: float,
    *,
    spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    nodule_diameters_mm: Sequence[float] | None = None,
    allow_fewer: bool = False,
    max_rounds: int = 50,
) -> np.ndarray:
    """``n`` distinct voxels (int64 (n, 3), z y x) of ``lung_mask_zyx`` drawn uniformly, each at
    least ``min_distance_mm`` (+ the nodule's radius when ``nodule_diameters_mm`` is given) from
    every nodule centre (fractional (z, y, x) voxel indices; mm via ``spacing_zyx_mm``).

    Draws uniform voxels in the mask's bounding box in batches and keeps those in the lung and
    far enough (rejection sampling, no list of all lung voxels). Raises PatchError
    EMPTY_LUNG_MASK, or NOT_ENOUGH_NEGATIVES after ``max_rounds`` batches unless ``allow_fewer``
    (then fewer rows come back).
    """
    lung = np.asarray(lung_mask_zyx, dtype=bool)
    if lung.ndim != 3:
        raise ValueError(f"lung_mask_zyx must be (z, y, x), got shape {lung.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    centres = np.asarray(nodule_centres_zyx, dtype=np.float64).reshape(-1, 3)
    radii = np.zeros(len(centres)) if nodule_diameters_mm is None else np.asarray(nodule_diameters_mm, float) / 2.0
    if len(radii) != len(centres):
        raise ValueError(f"{len(radii)} diameters for {len(centres)} nodule centres")
    reach_mm = float(min_distance_mm) + radii
    nz = [np.flatnonzero(lung.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in nz):
        raise PatchError("the lung mask is empty: no negative candidates", code="EMPTY_LUNG_MASK")
    lo = np.array([i[0] for i in nz])
    hi = np.array([i[-1] + 1 for i in nz])
    box_frac = lung[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))].mean()
    chosen: list[np.ndarray] = []
    seen: set[int] = set()
    shape = np.asarray(lung.shape)
    for _ in range(max_rounds):
        want = n - len(chosen)
        if want <= 0:
            break
        batch = int(min(1_000_000, max(64, 2 * want / max(box_frac, 1e-3))))
        cand = rng.integers(lo, hi, size=(batch, 3))
        ok = lung[cand[:, 0], cand[:, 1], cand[:, 2]]
        cand = cand[ok]
        if len(centres) and len(cand):
            d2 = ((((cand[:, None, :] - centres[None, :, :]) * spacing) ** 2).sum(-1))
            cand = cand[np.all(d2 >= reach_mm[None, :] ** 2, axis=1)]
        for c in cand:
            key = int(np.ravel_multi_index(tuple(c), tuple(shape)))
            if key in seen:
                continue
            seen.add(key)
            chosen.append(c)
            if len(chosen) == n:
                break
    if len(chosen) < n and not allow_fewer:
        raise PatchError(f"found {len(chosen)} of {n} negative centres in the lung at >= {min_distance_mm} mm "
                         f"from {len(centres)} nodules", code="NOT_ENOUGH_NEGATIVES",
                         hint="lower n or min_distance_mm, or pass allow_fewer=True")
    return np.asarray(chosen, dtype=np.int64).reshape(-1, 3)


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> np.ndarray:
    f = np.asarray([float(v) for v in fractions], dtype=np.float64)
    if len(f) != len(names) or len(f) == 0:
        raise ValueError(f"{len(f)} fractions for {len(names)} split names {tuple(names)}")
    if np.any(f < 0) or abs(float(f.sum()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    return np.cumsum(f)


def _unit_hash(patient_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{int(seed)}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(
    patient_id: str,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> str:
    """The split (one of ``names``) of one patient pseudo id; see the module docstring."""
    cum = _check_fractions(fractions, names)
    i = int(np.searchsorted(cum, _unit_hash(str(patient_id), seed), side="right"))
    return names[min(i, len(names) - 1)]


def patient_split(
    patient_ids: Iterable[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, str]:
    """Patient pseudo id → split name for every distinct id in ``patient_ids`` (repeats, e.g.
    one per nodule, map once). Deterministic per patient (:func:`split_of`): adding or removing
    other patients never moves a patient."""
    _check_fractions(fractions, names)
    return {str(p): split_of(str(p), fractions, seed, names) for p in dict.fromkeys(patient_ids)}
