r"""Synthetic ``gold.nodule_patches`` rows (and radiomics features) whose answer is known by construction.

For tests and benchmarks of the training path without the imaging pipeline: nodule cubes in
lung parenchyma, where malignancy depends on SIZE, DENSITY and MARGIN, and negatives without a
nodule. Pure numpy (no Spark); :func:`ctlake.train.data.write_synthetic` puts the rows in Delta.

A patch (z, y, x) at 1 mm voxels, int16 HU, clipped to [-1000, 400]:
    parenchyma   -850 HU + N(0, noise_hu^2) per voxel
    vessel       with p = 0.5 a straight tube (radius 1-1.5 mm, +40 HU) through a random point
    nodule       (positives) at the centre +-1 voxel: the lobulated shape of
                 :func:`ctlake.synth.phantom.lobulated_nodule` (spiculated margin: with spikes),
                 diameter d log-uniform in ``diameter_mm``; density solid (~+30 HU) or sub-solid
                 (a -500 HU ground-glass body with a solid core of 0.3 d)

Malignancy (LIDC-style rating 1..5, from the hidden truth, not the image):
    s = intercept + size_weight ln(d / 10 mm) + solid_weight [solid] + spiculated_weight [spiculated] + e,
        e ~ N(0, noise_sd^2)
    p = 1 / (1 + exp(-s)),  rating = 1 + min(4, floor(5 p)),  malignant = rating >= 3
so diameter alone ranks malignancy only partly; a model that also sees density and margin can do better.

Splits are by patient: patients are shuffled (seeded) and cut at the ``splits`` fractions into
train | validation | test, so no patient is in two splits.

Radiomics features per nodule (PyRadiomics names, from the mask and HU inside it; voxel counts at
1 mm, so mm^3 = voxels): original_shape_VoxelVolume, original_shape_SurfaceArea (exposed voxel
faces, mm^2), original_shape_Sphericity (pi^(1/3) (6V)^(2/3) / A), original_firstorder_Mean,
original_firstorder_Median, original_firstorder_StandardDeviation, original_firstorder_90Percentile.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ctlake.synth.phantom import lobulated_nodule

__all__ = ["FEATURE_NAMES", "SyntheticCohort", "SyntheticPatchConfig", "make_cohort", "malignancy_of"]

FEATURE_NAMES = (
    "original_shape_VoxelVolume",
    "original_shape_SurfaceArea",
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_firstorder_Median",
    "original_firstorder_StandardDeviation",
    "original_firstorder_90Percentile",
)
PARAMS_HASH = "synthetic-params"


@dataclass(frozen=True)
class SyntheticPatchConfig:
    patients: int = 40
    nodules_per_patient: tuple[int, int] = (1, 4)        # inclusive range, uniform
    negatives_per_patient: int = 2
    shape_zyx: tuple[int, int, int] = (32, 32, 32)
    diameter_mm: tuple[float, float] = (4.0, 16.0)       # log-uniform
    solid_fraction: float = 0.5
    spiculated_fraction: float = 0.4
    noise_hu: float = 40.0
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, validation, test (of patients)
    intercept: float = -1.5
    size_weight: float = 1.5
    solid_weight: float = 2.0
    spiculated_weight: float = 2.0
    noise_sd: float = 0.5
    seed: int = 0

    @property
    def size_name(self) -> str:
        return "x".join(str(s) for s in self.shape_zyx)


@dataclass
class SyntheticCohort:
    """Rows of ``gold.nodule_patches`` (dicts with every column) and radiomics feature rows
    (roi_id = nodule_id, params_hash, features: name -> value), plus the hidden truth per nodule."""

    config: SyntheticPatchConfig
    patch_rows: list[dict] = field(default_factory=list)
    feature_rows: list[dict] = field(default_factory=list)
    truth: dict[str, dict] = field(default_factory=dict)   # nodule_id -> diameter, texture, margin, score


def malignancy_of(diameter_mm: float, solid: bool, spiculated: bool, cfg: SyntheticPatchConfig,
                  rng: np.random.Generator) -> tuple[int, float]:
    """(rating 1..5, latent score s) of the module docstring."""
    s = (cfg.intercept + cfg.size_weight * math.log(diameter_mm / 10.0) + cfg.solid_weight * solid
         + cfg.spiculated_weight * spiculated + float(rng.normal(0.0, cfg.noise_sd)))
    p = 1.0 / (1.0 + math.exp(-s))
    return 1 + min(4, int(5.0 * p)), s


def _id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _grid(shape_zyx: tuple[int, int, int], centre_zyx: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.arange(n, dtype=np.float64)[tuple(slice(None) if a == i else None for a in range(3))] - c
                 for i, (n, c) in enumerate(zip(shape_zyx, centre_zyx, strict=True)))


def _background(shape: tuple[int, int, int], cfg: SyntheticPatchConfig, rng: np.random.Generator) -> np.ndarray:
    hu = -850.0 + rng.normal(0.0, cfg.noise_hu, size=shape)
    if rng.random() < 0.5:                                    # a vessel through a random point
        point = rng.uniform(0, 1, 3) * np.asarray(shape)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        z, y, x = _grid(shape, point)
        t = z * direction[0] + y * direction[1] + x * direction[2]
        d2 = z**2 + y**2 + x**2 - t**2
        hu[d2 <= rng.uniform(1.0, 1.5) ** 2] = 40.0 + rng.normal(0.0, cfg.noise_hu / 2)
    return hu


def _features(hu: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    m = mask.astype(bool)
    volume = float(m.sum())
    padded = np.pad(m, 1)
    faces = sum(int(np.sum(padded != np.roll(padded, 1, axis=a))) for a in range(3))
    values = hu[m].astype(np.float64)
    area = float(faces)
    return {
        "original_shape_VoxelVolume": volume,
        "original_shape_SurfaceArea": area,
        "original_shape_Sphericity": float(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area else 0.0,
        "original_firstorder_Mean": float(values.mean()),
        "original_firstorder_Median": float(np.median(values)),
        "original_firstorder_StandardDeviation": float(values.std()),
        "original_firstorder_90Percentile": float(np.percentile(values, 90)),
    }


def make_cohort(cfg: SyntheticPatchConfig = SyntheticPatchConfig()) -> SyntheticCohort:
    """Generate every patch row (module docstring); deterministic for a given ``cfg``."""
    rng = np.random.default_rng(cfg.seed)
    shape = tuple(int(s) for s in cfg.shape_zyx)
    out = SyntheticCohort(cfg)
    order = rng.permutation(cfg.patients)
    n_train = int(round(cfg.splits[0] * cfg.patients))
    n_val = int(round(cfg.splits[1] * cfg.patients))
    split_of = {int(p): ("train" if i < n_train else "validation" if i < n_train + n_val else "test")
                for i, p in enumerate(order)}
    centre = np.asarray(shape) // 2
    run_id = f"synthetic-{cfg.seed}"
    for p in range(cfg.patients):
        patient = f"SYN{cfg.seed:03d}-{p:04d}"
        series = f"1.2.826.0.1.3680043.10.999.{cfg.seed}.{p}"
        n_nod = int(rng.integers(cfg.nodules_per_patient[0], cfg.nodules_per_patient[1] + 1))
        for k in range(n_nod + cfg.negatives_per_patient):
            is_nodule = k < n_nod
            hu = _background(shape, cfg, rng)
            mask = np.zeros(shape, np.uint8)
            row_extra: dict = {"malignancy": None, "malignant": None, "diameter_mm": None, "nodule_id": None}
            if is_nodule:
                lo, hi = np.log(cfg.diameter_mm[0]), np.log(cfg.diameter_mm[1])
                d = float(np.exp(rng.uniform(lo, hi)))
                solid = bool(rng.random() < cfg.solid_fraction)
                spiculated = bool(rng.random() < cfg.spiculated_fraction)
                c = centre + rng.uniform(-1.0, 1.0, 3)
                z, y, x = np.broadcast_arrays(*_grid(shape, c))
                r, inside = lobulated_nodule(z, y, x, d, rng, spiculated=spiculated)
                if solid:
                    hu[inside] = 30.0 + rng.normal(0.0, cfg.noise_hu / 2, size=int(inside.sum()))
                else:
                    hu[inside] = -500.0 + rng.normal(0.0, cfg.noise_hu, size=int(inside.sum()))
                    core = inside & (r <= 0.15 * d)
                    hu[core] = 30.0 + rng.normal(0.0, cfg.noise_hu / 2, size=int(core.sum()))
                mask[inside] = 1
                rating, score = malignancy_of(d, solid, spiculated, cfg, rng)
                nodule_id = _id("synthetic", cfg.seed, patient, k)
                row_extra = {"malignancy": float(rating), "malignant": int(rating >= 3),
                             "diameter_mm": round(d, 3), "nodule_id": nodule_id}
                out.truth[nodule_id] = {"diameter_mm": d, "solid": solid, "spiculated": spiculated,
                                        "score": score, "rating": rating}
            image = np.clip(np.rint(hu), -1000, 400).astype("<i2")
            if is_nodule:
                out.feature_rows.append({"roi_id": row_extra["nodule_id"], "params_hash": PARAMS_HASH,
                                         "features": _features(image, mask)})
            out.patch_rows.append({
                "patch_id": _id("synthetic-patch", cfg.seed, patient, k, cfg.size_name),
                "nodule_id": row_extra["nodule_id"],
                "series_instance_uid": series,
                "patient_pseudo_id": patient,
                "kind": "nodule" if is_nodule else "negative",
                "label": int(is_nodule),
                "malignancy": row_extra["malignancy"],
                "malignant": row_extra["malignant"],
                "diameter_mm": row_extra["diameter_mm"],
                "size_name": cfg.size_name,
                "shape_zyx": list(shape),
                "centre_zyx_vox": [int(v) for v in centre],
                "image": np.ascontiguousarray(image).tobytes(),
                "mask": np.ascontiguousarray(mask).tobytes(),
                "padded_voxels": 0,
                "split": split_of[p],
                "run_id": run_id,
            })
    return out
