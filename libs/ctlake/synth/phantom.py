"""Analytic chest phantom in Hounsfield units, sampled on a CT slice grid.

Conventions
-----------
* Arrays are ``(z, y, x)``; world coordinates are DICOM patient coordinates (LPS, mm):
  ``x`` grows to the patient's left (image column direction), ``y`` grows to the patient's
  back (image row direction), ``z`` grows to the head (slice direction).
* Pixel ``(k, j, i)`` of a volume lies at world ``(z, y, x) = (slice_z_mm[k],
  origin_y_mm + slice_shift_y_mm[k] + j * dy, origin_x_mm + i * dx)``: axial slices whose first
  row may be shifted along ``y`` (gantry-tilt shear), at arbitrary (sorted) ``z`` positions.
* The anatomy is defined in millimetres and scales with the reconstruction field of view, never
  with the pixel count: the same patient drawn at 64x64 and at 512x512 has the same organs.

Tissue values (HU, before blur and noise): air -1000, fat -100, muscle/soft tissue 40, lung
-850 (+-25 HU dependent-density gradient, back is denser), vessels 40, rib 700, vertebral body 400
inside a 1000 HU cortical shell, intervertebral disc 80, spinal canal 15, solid nodule ~30,
ground-glass halo ~-500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import ndimage

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT = 40.0
HU_LUNG = -850.0
HU_LUNG_GRADIENT = 25.0  # +- across a lung, anterior lighter, posterior denser
HU_VESSEL = 40.0
HU_RIB = 700.0
HU_VERTEBRA = 400.0
HU_CORTICAL = 1000.0
HU_DISC = 80.0
HU_CSF = 15.0
HU_TABLE_SHELL = 200.0
HU_TABLE_CORE = -950.0
HU_NODULE_SOLID = 30.0
HU_NODULE_GGO = -500.0
HU_MIN = -1024.0
HU_MAX = 3071.0

# Label values of Phantom.labels
LABEL_AIR = 0
LABEL_FAT = 1
LABEL_SOFT = 2
LABEL_LUNG = 3
LABEL_VESSEL = 4
LABEL_BONE = 5
LABEL_TABLE = 6
LABEL_NODULE = 7

Texture = Literal["solid", "part_solid"]
Margin = Literal["smooth", "spiculated"]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Where every voxel of a ``(z, y, x)`` volume lies in LPS patient space (mm).

    ``spacing_zyx_mm[0]`` is the nominal slice step; the true slice positions are
    ``slice_z_mm`` (strictly increasing; uneven when a series has irregular steps).
    ``slice_shift_y_mm[k]`` is the y offset of slice k's first row (0 for an untilted gantry,
    ``(z_k - z_0) * tan(gantry_tilt_deg)`` for a tilted one). Orientation is always axial
    (ImageOrientationPatient 1,0,0,0,1,0).
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_yx_mm: tuple[float, float]
    slice_z_mm: tuple[float, ...]
    slice_shift_y_mm: tuple[float, ...]
    gantry_tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        nz = self.shape_zyx[0]
        if len(self.slice_z_mm) != nz or len(self.slice_shift_y_mm) != nz:
            raise ValueError(
                f"Geometry: {len(self.slice_z_mm)} slice positions and "
                f"{len(self.slice_shift_y_mm)} shifts for {nz} slices"
            )
        if nz > 1 and not np.all(np.diff(self.slice_z_mm) > 0):
            raise ValueError("Geometry: slice_z_mm must be strictly increasing")

    @classmethod
    def regular(
        cls,
        shape_zyx: tuple[int, int, int],
        spacing_zyx_mm: tuple[float, float, float],
        origin_zyx_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> Geometry:
        """An evenly spaced, untilted grid whose voxel (0, 0, 0) centre is at ``origin_zyx_mm``."""
        nz = shape_zyx[0]
        z = tuple(_r4(origin_zyx_mm[0] + k * spacing_zyx_mm[0]) for k in range(nz))
        return cls(
            shape_zyx=tuple(int(s) for s in shape_zyx),  # type: ignore[arg-type]
            spacing_zyx_mm=tuple(float(s) for s in spacing_zyx_mm),  # type: ignore[arg-type]
            origin_yx_mm=(float(origin_zyx_mm[1]), float(origin_zyx_mm[2])),
            slice_z_mm=z,
            slice_shift_y_mm=(0.0,) * nz,
        )

    @property
    def origin_zyx_mm(self) -> tuple[float, float, float]:
        """World (z, y, x) of voxel (0, 0, 0)'s centre."""
        return (self.slice_z_mm[0], self.origin_yx_mm[0] + self.slice_shift_y_mm[0], self.origin_yx_mm[1])

    def image_position_xyz_mm(self, k: int) -> tuple[float, float, float]:
        """DICOM ImagePositionPatient (x, y, z order, as the standard writes it) of slice k."""
        return (
            _r4(self.origin_yx_mm[1]),
            _r4(self.origin_yx_mm[0] + self.slice_shift_y_mm[k]),
            _r4(self.slice_z_mm[k]),
        )

    def index_to_world_zyx(self, index_zyx: np.ndarray) -> np.ndarray:
        """Fractional voxel indices (..., 3) -> world (z, y, x) mm (..., 3)."""
        idx = np.asarray(index_zyx, dtype=np.float64)
        k = idx[..., 0]
        ks = np.arange(self.shape_zyx[0])
        z = np.interp(k, ks, self.slice_z_mm)
        shift = np.interp(k, ks, self.slice_shift_y_mm)
        y = self.origin_yx_mm[0] + shift + idx[..., 1] * self.spacing_zyx_mm[1]
        x = self.origin_yx_mm[1] + idx[..., 2] * self.spacing_zyx_mm[2]
        return np.stack([z, y, x], axis=-1)

    def world_to_index_zyx(self, world_zyx_mm: np.ndarray) -> np.ndarray:
        """World (z, y, x) mm (..., 3) -> fractional voxel indices (k, j, i) (..., 3).

        The slice index interpolates linearly between the true slice positions, so it is exact
        for uneven spacing; outside the scanned range it extrapolates with the nominal step.
        """
        w = np.asarray(world_zyx_mm, dtype=np.float64)
        zs = np.asarray(self.slice_z_mm)
        ks = np.arange(len(zs), dtype=np.float64)
        k = np.interp(w[..., 0], zs, ks)
        below = w[..., 0] < zs[0]
        above = w[..., 0] > zs[-1]
        k = np.where(below, (w[..., 0] - zs[0]) / self.spacing_zyx_mm[0], k)
        k = np.where(above, ks[-1] + (w[..., 0] - zs[-1]) / self.spacing_zyx_mm[0], k)
        shift = np.interp(k, ks, self.slice_shift_y_mm)
        if len(zs) > 1:
            shear = (self.slice_shift_y_mm[-1] - self.slice_shift_y_mm[0]) / (zs[-1] - zs[0])
            shift = np.where(below | above, (w[..., 0] - zs[0]) * shear, shift)
        j = (w[..., 1] - self.origin_yx_mm[0] - shift) / self.spacing_zyx_mm[1]
        i = (w[..., 2] - self.origin_yx_mm[1]) / self.spacing_zyx_mm[2]
        return np.stack([k, j, i], axis=-1)

    def to_dict(self) -> dict[str, object]:
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_zyx_mm": list(self.spacing_zyx_mm),
            "origin_yx_mm": list(self.origin_yx_mm),
            "slice_z_mm": list(self.slice_z_mm),
            "slice_shift_y_mm": list(self.slice_shift_y_mm),
            "gantry_tilt_deg": self.gantry_tilt_deg,
        }


def _r4(v: float) -> float:
    """Round a coordinate to 0.1 micrometre so that DICOM DS strings are exact and short."""
    return float(round(float(v), 4)) + 0.0  # + 0.0 turns -0.0 into 0.0


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lung:
    """One lung: an elliptic cross-section that tapers to the apex and the base.

    Inside at (z, y, x) when ``((y - cy) / (ay f))^2 + ((x - cx) / (ax f))^2 <= 1`` with the
    profile ``f = sqrt(clip(t / 0.15, 0, 1) * clip((1 - t) / 0.35, 0, 1))`` and
    ``t = (z - z_base) / (z_apex - z_base)``.
    """

    side: Literal["right", "left"]
    center_yx_mm: tuple[float, float]
    semi_axes_yx_mm: tuple[float, float]
    z_base_mm: float
    z_apex_mm: float


@dataclass(frozen=True)
class Vessel:
    """A tapered tube (capsule) from ``start_zyx_mm`` to ``end_zyx_mm``, drawn only inside lung."""

    start_zyx_mm: tuple[float, float, float]
    end_zyx_mm: tuple[float, float, float]
    radius_start_mm: float
    radius_end_mm: float


@dataclass(frozen=True)
class Anatomy:
    """Everything that defines one synthetic chest, in world mm (see module docstring)."""

    body_center_yx_mm: tuple[float, float]
    body_semi_axes_yx_mm: tuple[float, float]
    fat_mm: float
    cavity_center_yx_mm: tuple[float, float]
    cavity_semi_axes_yx_mm: tuple[float, float]
    rib_width_mm: float
    rib_height_mm: float
    rib_pitch_mm: float
    rib_drop_mm: float
    rib_phase_mm: float
    vertebra_center_yx_mm: tuple[float, float]
    vertebra_radius_mm: float
    cortical_mm: float
    disc_pitch_mm: float
    disc_height_mm: float
    disc_phase_mm: float
    mediastinum_half_width_mm: float
    mediastinal_fat_center_yx_mm: tuple[float, float]
    mediastinal_fat_semi_axes_yx_mm: tuple[float, float]
    lungs: tuple[Lung, ...]
    vessels: tuple[Vessel, ...]
    table_top_y_mm: float | None
    sex: Literal["M", "F"]

    @property
    def lung_z_range_mm(self) -> tuple[float, float]:
        return (min(lu.z_base_mm for lu in self.lungs), max(lu.z_apex_mm for lu in self.lungs))

    def spine_box_yx_mm(self) -> tuple[float, float, float]:
        """(y_min, x_min, x_max) of the region behind the front of the vertebral body."""
        return _spine_box(self.vertebra_center_yx_mm, self.vertebra_radius_mm)


def _spine_box(center_yx_mm: tuple[float, float], radius_mm: float) -> tuple[float, float, float]:
    vy, vx = center_yx_mm
    return (vy - radius_mm - 6.0, vx - radius_mm - 6.0, vx + radius_mm + 6.0)


def lung_profile(t: np.ndarray) -> np.ndarray:
    """Cross-section scale of a lung at relative height t (0 base, 1 apex); 0 outside."""
    t = np.asarray(t, dtype=np.float64)
    return np.sqrt(np.clip(t / 0.15, 0.0, 1.0) * np.clip((1.0 - t) / 0.35, 0.0, 1.0))


def lung_contains(anatomy: Anatomy, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Boolean (broadcast of z, y, x in world mm): inside either lung, outside the spine box."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    inside = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
    for lung in anatomy.lungs:
        t = (z - lung.z_base_mm) / (lung.z_apex_mm - lung.z_base_mm)
        f = lung_profile(t)
        cy, cx = lung.center_yx_mm
        ay, ax = lung.semi_axes_yx_mm
        with np.errstate(divide="ignore", invalid="ignore"):
            e = ((y - cy) / (ay * f)) ** 2 + ((x - cx) / (ax * f)) ** 2
        inside |= (f > 0) & (e <= 1.0)
    sy, sx0, sx1 = anatomy.spine_box_yx_mm()
    inside &= ~((y >= sy) & (x >= sx0) & (x <= sx1))
    return inside


def sample_anatomy(
    rng: np.random.Generator,
    *,
    fov_mm: float,
    table: bool = True,
    z_base_mm: float | None = None,
) -> Anatomy:
    """Draw a chest that fits a reconstruction field of view of ``fov_mm`` (diameter).

    Body half-width = fov * U(0.34, 0.42), depth/width = U(0.68, 0.8); lungs fill the thoracic
    cavity (inside the ribs, beside the mediastinum and the spine); lung length =
    body half-width * U(1.35, 1.7); 2-3 vessel trees per lung, 4 generations each.
    """
    a_body = fov_mm * rng.uniform(0.34, 0.42)
    b_body = a_body * rng.uniform(0.68, 0.8)
    body_cy = rng.uniform(-10.0, 10.0)
    body_cx = rng.uniform(-6.0, 6.0)
    scale = a_body / 150.0
    fat = rng.uniform(5.0, 18.0) * scale
    muscle = rng.uniform(6.0, 10.0) * scale
    rib_w = rng.uniform(6.0, 9.0) * scale
    post_extra = rng.uniform(8.0, 14.0) * scale  # paraspinal muscles: the cavity sits anteriorly
    ac = a_body - fat - muscle - rib_w
    bc = b_body - fat - muscle - rib_w - post_extra
    cav_cy = body_cy - post_extra
    cav_cx = body_cx

    rv = rng.uniform(14.0, 19.0) * scale
    vert_cy = cav_cy + bc - 0.2 * rv
    vert_cx = body_cx
    med_half = ac * rng.uniform(0.13, 0.2)

    lung_len = a_body * rng.uniform(1.35, 1.7)
    z_base = rng.uniform(-260.0, -160.0) if z_base_mm is None else z_base_mm
    z_apex = z_base + lung_len

    lungs = []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        ax0 = (0.95 * ac - med_half) / 2.0 * (0.92 if side == "left" else 1.0)  # heart on the left
        cx = cav_cx + sign * (med_half + ax0)
        cy = cav_cy + 0.05 * bc
        ay0 = 0.8 * bc
        s = 1.0
        spine = _spine_box((vert_cy, vert_cx), rv)
        for _ in range(60):
            if _lung_fits((cav_cy, cav_cx), (bc, ac), med_half, spine, cy, cx, ay0 * s, ax0 * s, sign):
                break
            s *= 0.97
        lungs.append(
            Lung(
                side=side,  # type: ignore[arg-type]
                center_yx_mm=(float(cy), float(cx)),
                semi_axes_yx_mm=(float(ay0 * s), float(ax0 * s)),
                z_base_mm=float(z_base + rng.uniform(-6.0, 6.0)),
                z_apex_mm=float(z_apex + rng.uniform(-6.0, 6.0)),
            )
        )

    anatomy = Anatomy(
        body_center_yx_mm=(float(body_cy), float(body_cx)),
        body_semi_axes_yx_mm=(float(b_body), float(a_body)),
        fat_mm=float(fat),
        cavity_center_yx_mm=(float(cav_cy), float(cav_cx)),
        cavity_semi_axes_yx_mm=(float(bc), float(ac)),
        rib_width_mm=float(rib_w),
        rib_height_mm=float(rng.uniform(9.0, 12.0) * scale),
        rib_pitch_mm=float(lung_len / rng.uniform(9.0, 11.0)),
        rib_drop_mm=float(rng.uniform(30.0, 60.0) * scale),
        rib_phase_mm=float(rng.uniform(0.0, 30.0)),
        vertebra_center_yx_mm=(float(vert_cy), float(vert_cx)),
        vertebra_radius_mm=float(rv),
        cortical_mm=float(rng.uniform(1.5, 2.5)),
        disc_pitch_mm=float(rng.uniform(24.0, 30.0) * scale),
        disc_height_mm=float(rng.uniform(4.0, 6.0) * scale),
        disc_phase_mm=float(rng.uniform(0.0, 30.0)),
        mediastinum_half_width_mm=float(med_half),
        mediastinal_fat_center_yx_mm=(float(cav_cy - 0.45 * bc), float(body_cx)),
        mediastinal_fat_semi_axes_yx_mm=(float(0.22 * bc), float(0.8 * med_half)),
        lungs=tuple(lungs),
        vessels=(),
        table_top_y_mm=float(body_cy + b_body + rng.uniform(8.0, 30.0)) if table else None,
        sex="M" if rng.random() < 0.5 else "F",
    )
    vessels = _sample_vessels(rng, anatomy)
    return replace(anatomy, vessels=vessels)


def _lung_fits(
    cavity_center_yx_mm: tuple[float, float],
    cavity_semi_axes_yx_mm: tuple[float, float],
    mediastinum_half_width_mm: float,
    spine_box: tuple[float, float, float],
    cy: float,
    cx: float,
    ay: float,
    ax: float,
    sign: float,
) -> bool:
    """The lung's largest cross-section stays 3 mm inside the cavity, off the mediastinum and spine."""
    ang = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    y = cy + ay * np.sin(ang)
    x = cx + ax * np.cos(ang)
    ccy, ccx = cavity_center_yx_mm
    bc, ac = cavity_semi_axes_yx_mm
    m = 3.0
    in_cavity = ((y - ccy) / (bc - m)) ** 2 + ((x - ccx) / (ac - m)) ** 2 <= 1.0
    off_mediastinum = sign * (x - ccx) >= mediastinum_half_width_mm
    sy, sx0, sx1 = spine_box
    off_spine = ~((y >= sy) & (x >= sx0) & (x <= sx1))
    return bool(np.all(in_cavity & off_mediastinum & off_spine))


def _sample_vessels(rng: np.random.Generator, anatomy: Anatomy) -> tuple[Vessel, ...]:
    """Branching trees from each hilum: 4-6 roots per lung fanning up, down and sideways,
    5 generations, children at +-25-40 deg, 0.6-0.8 of the parent's length and 0.68 its radius."""
    vessels: list[Vessel] = []
    scale = anatomy.body_semi_axes_yx_mm[1] / 150.0
    for lung in anatomy.lungs:
        sign = -1.0 if lung.side == "right" else 1.0
        ay, ax = lung.semi_axes_yx_mm
        cy, cx = lung.center_yx_mm
        zlen = lung.z_apex_mm - lung.z_base_mm
        n_roots = int(rng.integers(4, 7))
        for r in range(n_roots):
            root = np.array(
                [
                    lung.z_base_mm + zlen * rng.uniform(0.4, 0.55),
                    cy + ay * rng.uniform(-0.2, 0.2),
                    cx - sign * ax * rng.uniform(0.5, 0.7),
                ]
            )
            up = -1.0 + 2.0 * (r + rng.uniform(0.2, 0.8)) / n_roots  # fan from down (-1) to up (+1)
            d = np.array([up, rng.uniform(-0.5, 0.5), sign * rng.uniform(0.4, 0.9)])
            d /= np.linalg.norm(d)
            length = rng.uniform(0.35, 0.5) * (abs(d[0]) * 0.5 * zlen + (1.0 - abs(d[0])) * 1.2 * ax)
            radius = rng.uniform(4.0, 6.0) * scale
            _grow(rng, vessels, root, d, length, radius, depth=5)
    return tuple(vessels)


def _grow(
    rng: np.random.Generator,
    out: list[Vessel],
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    depth: int,
) -> None:
    end = start + direction * length
    r_end = radius * 0.85
    out.append(Vessel(tuple(map(float, start)), tuple(map(float, end)), float(radius), float(r_end)))  # type: ignore[arg-type]
    if depth <= 1:
        return
    for side in (-1.0, 1.0):
        angle = math.radians(rng.uniform(25.0, 40.0)) * side
        axis = rng.normal(size=3)
        axis -= axis.dot(direction) * direction
        axis /= np.linalg.norm(axis) + 1e-12
        new_dir = direction * math.cos(angle) + axis * math.sin(angle)
        new_dir /= np.linalg.norm(new_dir)
        _grow(rng, out, end, new_dir, length * rng.uniform(0.6, 0.8), max(0.4, r_end * 0.8), depth - 1)


# --------------------------------------------------------------------------------------------
# Nodules
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spike:
    """A thin cone from the nodule centre along ``direction_zyx``, ``length_mm`` past the surface."""

    direction_zyx: tuple[float, float, float]
    length_mm: float
    radius_mm: float


@dataclass(frozen=True)
class Nodule:
    """A lung nodule. ``diameter_mm`` is the sphere diameter (the halo for part-solid ones),
    spikes not included; ``core_diameter_mm`` is the solid part (= diameter for solid ones)."""

    center_zyx_mm: tuple[float, float, float]
    diameter_mm: float
    texture: Texture
    margin: Margin
    core_diameter_mm: float
    solid_hu: float
    ggo_hu: float
    spikes: tuple[Spike, ...]
    lung: Literal["right", "left"]
    malignancy: int
    malignancy_score: float

    def to_dict(self) -> dict[str, object]:
        return {
            "center_zyx_mm": list(self.center_zyx_mm),
            "diameter_mm": self.diameter_mm,
            "texture": self.texture,
            "margin": self.margin,
            "core_diameter_mm": self.core_diameter_mm,
            "solid_hu": self.solid_hu,
            "ggo_hu": self.ggo_hu,
            "spikes": [
                {"direction_zyx": list(s.direction_zyx), "length_mm": s.length_mm, "radius_mm": s.radius_mm}
                for s in self.spikes
            ],
            "lung": self.lung,
            "malignancy": self.malignancy,
            "malignancy_score": self.malignancy_score,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Nodule:
        return cls(
            center_zyx_mm=tuple(d["center_zyx_mm"]),  # type: ignore[arg-type]
            diameter_mm=d["diameter_mm"],
            texture=d["texture"],
            margin=d["margin"],
            core_diameter_mm=d["core_diameter_mm"],
            solid_hu=d["solid_hu"],
            ggo_hu=d["ggo_hu"],
            spikes=tuple(
                Spike(tuple(s["direction_zyx"]), s["length_mm"], s["radius_mm"])  # type: ignore[arg-type]
                for s in d["spikes"]
            ),
            lung=d["lung"],
            malignancy=d["malignancy"],
            malignancy_score=d["malignancy_score"],
        )


MALIGNANCY_INTERCEPT = -0.6
MALIGNANCY_SIZE_WEIGHT = 2.0
MALIGNANCY_SOLID_WEIGHT = 0.8
MALIGNANCY_SPICULATED_WEIGHT = 1.2
MALIGNANCY_NOISE_SD = 0.6


def malignancy_rating(
    diameter_mm: float, texture: Texture, margin: Margin, rng: np.random.Generator
) -> tuple[int, float]:
    r"""Radiologist-style malignancy rating 1-5 (LIDC scale), a noisy logistic function.

    s = -0.6 + 2.0 * ln(d / 10 mm) + 0.8 * [texture = solid] + 1.2 * [margin = spiculated] + e,
        e ~ N(0, 0.6^2)
    p = 1 / (1 + exp(-s));  rating = 1 + min(4, floor(5 p))

    Bigger, solid and spiculated nodules score higher. Returns (rating, s).
    """
    s = (
        MALIGNANCY_INTERCEPT
        + MALIGNANCY_SIZE_WEIGHT * math.log(diameter_mm / 10.0)
        + MALIGNANCY_SOLID_WEIGHT * (texture == "solid")
        + MALIGNANCY_SPICULATED_WEIGHT * (margin == "spiculated")
        + float(rng.normal(0.0, MALIGNANCY_NOISE_SD))
    )
    p = 1.0 / (1.0 + math.exp(-s))
    return 1 + min(4, int(5.0 * p)), float(round(s, 6))


def _fibonacci_sphere(n: int) -> np.ndarray:
    """n roughly uniform unit vectors (n, 3) in (z, y, x)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1.0 - 2.0 * i / n)
    theta = math.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)


_SPHERE_PROBE = np.concatenate([_fibonacci_sphere(256), 0.5 * _fibonacci_sphere(32), np.zeros((1, 3))])


def sphere_in_lung(anatomy: Anatomy, center_zyx_mm: np.ndarray, radius_mm: float) -> bool:
    """True when a sphere (probed at 289 points on and inside its surface) lies inside a lung."""
    p = np.asarray(center_zyx_mm, dtype=np.float64) + radius_mm * _SPHERE_PROBE
    return bool(np.all(lung_contains(anatomy, p[:, 0], p[:, 1], p[:, 2])))


def sample_nodules(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    count: int,
    z_range_mm: tuple[float, float],
    diameter_range_mm: tuple[float, float] = (3.0, 30.0),
    part_solid_fraction: float = 0.3,
    spiculated_fraction: float = 0.35,
    margin_mm: float = 2.0,
) -> tuple[Nodule, ...]:
    """Place ``count`` nodules inside the lungs and inside ``z_range_mm`` (scanned slices).

    Diameter is log-uniform in ``diameter_range_mm``. The centre is drawn uniformly over the
    lungs and accepted when the sphere enlarged by ``margin_mm`` lies inside a lung, inside the
    scanned z range, and 3 mm away from earlier nodules; after 300 rejected centres the diameter
    shrinks by 15 % (never below the range's lower end; a nodule that still does not fit is
    dropped, so fewer than ``count`` may come back).
    """
    lo, hi = diameter_range_mm
    placed: list[Nodule] = []
    for _ in range(count):
        d = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        texture: Texture = "part_solid" if rng.random() < part_solid_fraction else "solid"
        margin: Margin = "spiculated" if rng.random() < spiculated_fraction else "smooth"
        lung_i = int(rng.integers(0, len(anatomy.lungs)))
        while True:
            center = _find_center(rng, anatomy, anatomy.lungs[lung_i], d / 2.0 + margin_mm, z_range_mm, placed)
            if center is None:
                other = anatomy.lungs[1 - lung_i] if len(anatomy.lungs) == 2 else anatomy.lungs[0]
                center = _find_center(rng, anatomy, other, d / 2.0 + margin_mm, z_range_mm, placed)
                if center is not None:
                    lung_i = anatomy.lungs.index(other)
            if center is not None or d * 0.85 < lo:
                break
            d *= 0.85
        if center is None:
            continue
        d = round(d, 2)
        core = round(d * rng.uniform(0.3, 0.6), 2) if texture == "part_solid" else d
        spikes: tuple[Spike, ...] = ()
        if margin == "spiculated":
            n = int(rng.integers(6, 15))
            dirs = rng.normal(size=(n, 3))
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            spikes = tuple(
                Spike(
                    tuple(round(float(v), 6) for v in dirs[s]),  # type: ignore[arg-type]
                    round(float(rng.uniform(0.4, 1.0) * d / 2.0), 3),
                    round(float(max(0.5, 0.12 * d / 2.0)), 3),
                )
                for s in range(n)
            )
        rating, score = malignancy_rating(d, texture, margin, rng)
        placed.append(
            Nodule(
                center_zyx_mm=tuple(round(float(c), 3) for c in center),  # type: ignore[arg-type]
                diameter_mm=d,
                texture=texture,
                margin=margin,
                core_diameter_mm=core,
                solid_hu=round(float(HU_NODULE_SOLID + rng.normal(0.0, 10.0)), 1),
                ggo_hu=round(float(HU_NODULE_GGO + rng.normal(0.0, 50.0)), 1),
                spikes=spikes,
                lung=anatomy.lungs[lung_i].side,
                malignancy=rating,
                malignancy_score=score,
            )
        )
    return tuple(placed)


def _find_center(
    rng: np.random.Generator,
    anatomy: Anatomy,
    lung: Lung,
    radius_mm: float,
    z_range_mm: tuple[float, float],
    placed: list[Nodule],
) -> np.ndarray | None:
    z0 = max(lung.z_base_mm, z_range_mm[0]) + radius_mm
    z1 = min(lung.z_apex_mm, z_range_mm[1]) - radius_mm
    if z1 < z0:
        return None
    cy, cx = lung.center_yx_mm
    ay, ax = lung.semi_axes_yx_mm
    if min(ay, ax) <= radius_mm:
        return None
    for _ in range(300):
        c = np.array(
            [
                rng.uniform(z0, z1),
                cy + rng.uniform(-1.0, 1.0) * (ay - radius_mm),
                cx + rng.uniform(-1.0, 1.0) * (ax - radius_mm),
            ]
        )
        if not lung_contains(anatomy, c[0], c[1], c[2]):
            continue
        if any(np.linalg.norm(c - np.asarray(n.center_zyx_mm)) < radius_mm + n.diameter_mm / 2.0 + 3.0 for n in placed):
            continue
        if sphere_in_lung(anatomy, c, radius_mm):
            return c
    return None


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered phantom: HU volume (z, y, x) int16, its geometry and ground truth masks.

    ``labels`` holds LABEL_* values per voxel; ``lung_mask`` is lung parenchyma plus what lies
    inside it (vessels, nodules); ``nodule_labels`` is 0 outside nodules and i + 1 inside
    ``nodules[i]`` (sphere, halo and spikes).
    """

    hu: np.ndarray
    geometry: Geometry
    labels: np.ndarray
    nodule_labels: np.ndarray
    anatomy: Anatomy
    nodules: tuple[Nodule, ...] = field(default=())

    @property
    def lung_mask(self) -> np.ndarray:
        return (self.labels == LABEL_LUNG) | (self.labels == LABEL_VESSEL) | (self.labels == LABEL_NODULE)


def _ell(y: np.ndarray, x: np.ndarray, cy: float, cx: float, b: float, a: float) -> np.ndarray:
    """Elliptic 'radius squared' of a (ny, 1) x (1, nx) grid: <= 1 inside."""
    return ((y - cy) / b) ** 2 + ((x - cx) / a) ** 2


def render_phantom(
    anatomy: Anatomy,
    geometry: Geometry,
    nodules: tuple[Nodule, ...] = (),
    *,
    rng: np.random.Generator | None = None,
    noise_sd_hu: float = 0.0,
    blur_sd_mm: float = 0.0,
) -> Phantom:
    """Sample the anatomy on the grid of ``geometry``; returns HU int16 (z, y, x) and labels.

    Order: body fat, muscle, mediastinal fat, lungs (with a +-25 HU antero-posterior gradient),
    ribs, sternum, spine, table; then vessels and nodules (only where lung); then an in-plane
    Gaussian blur of ``blur_sd_mm`` (the reconstruction kernel; skipped below 0.3 px) and white
    Gaussian noise of ``noise_sd_hu`` drawn from ``rng``; finally clipped to [-1024, 3071] HU.
    Vectorised per slice; vessels and nodules are drawn in their bounding boxes only.
    """
    nz, ny, nx = geometry.shape_zyx
    _, dy, dx = geometry.spacing_zyx_mm
    y0, x0 = geometry.origin_yx_mm
    hu = np.empty((nz, ny, nx), dtype=np.int16)
    labels = np.empty((nz, ny, nx), dtype=np.uint8)
    x = (x0 + dx * np.arange(nx, dtype=np.float64))[None, :]
    jj = dy * np.arange(ny, dtype=np.float64)[:, None]
    a = anatomy
    bcy, bcx = a.body_center_yx_mm
    bb, ba = a.body_semi_axes_yx_mm
    ccy, ccx = a.cavity_center_yx_mm
    cb, ca = a.cavity_semi_axes_yx_mm
    vy, vx = a.vertebra_center_yx_mm
    rv = a.vertebra_radius_mm
    canal_y = vy + rv + 8.0
    w = a.rib_width_mm
    for k in range(nz):
        z = geometry.slice_z_mm[k]
        y = y0 + geometry.slice_shift_y_mm[k] + jj
        s_hu = np.full((ny, nx), HU_AIR, dtype=np.float32)
        s_lab = np.zeros((ny, nx), dtype=np.uint8)
        body = _ell(y, x, bcy, bcx, bb, ba) <= 1.0
        inner = _ell(y, x, bcy, bcx, bb - a.fat_mm, ba - a.fat_mm) <= 1.0
        s_hu[body] = HU_FAT
        s_lab[body] = LABEL_FAT
        s_hu[inner] = HU_SOFT
        s_lab[inner] = LABEL_SOFT
        mfy, mfx = a.mediastinal_fat_center_yx_mm
        mfb, mfa = a.mediastinal_fat_semi_axes_yx_mm
        mf = _ell(y, x, mfy, mfx, mfb, mfa) <= 1.0
        s_hu[mf] = HU_FAT
        s_lab[mf] = LABEL_FAT
        for lung in a.lungs:
            t = (z - lung.z_base_mm) / (lung.z_apex_mm - lung.z_base_mm)
            f = float(lung_profile(t))
            if f <= 0.0:
                continue
            lcy, lcx = lung.center_yx_mm
            lay, lax = lung.semi_axes_yx_mm
            m = _ell(y, x, lcy, lcx, lay * f, lax * f) <= 1.0
            grad = (HU_LUNG + HU_LUNG_GRADIENT * np.clip((y - lcy) / lay, -1.0, 1.0)).astype(np.float32)
            s_hu = np.where(m, grad, s_hu)
            s_lab[m] = LABEL_LUNG
        # ribs: an elliptic band outside the cavity; rib i crosses the slice where
        # frac((z - phase + drop * (1 - s) / 2) / pitch) < height / pitch, s = sin(angle) (1 at back)
        sinang = np.clip((y - ccy) / (cb + w / 2.0), -1.0, 1.0)
        phase = np.mod((z - a.rib_phase_mm + a.rib_drop_mm * (1.0 - sinang) / 2.0) / a.rib_pitch_mm, 1.0)
        rib_rows = (phase < a.rib_height_mm / a.rib_pitch_mm) & (sinang > -0.8)
        cav = _ell(y, x, ccy, ccx, cb, ca)
        band = (cav > 1.0) & (_ell(y, x, ccy, ccx, cb + w, ca + w) <= 1.0) & inner & rib_rows
        s_hu[band] = HU_RIB
        s_lab[band] = LABEL_BONE
        # sternum, upper two thirds of the lungs
        lz0, lz1 = a.lung_z_range_mm
        if lz0 + 0.35 * (lz1 - lz0) <= z <= lz1:
            st = _ell(y, x, ccy - cb - w / 2.0, ccx, w / 2.0 + 1.0, 14.0) <= 1.0
            st_in = _ell(y, x, ccy - cb - w / 2.0, ccx, w / 2.0 - 1.0, 12.0) <= 1.0
            s_hu[st] = HU_CORTICAL
            s_hu[st_in] = HU_VERTEBRA
            s_lab[st] = LABEL_BONE
        # spine: vertebral body (cortical shell) or disc, canal, arch, spinous process
        in_disc = np.mod((z - a.disc_phase_mm) / a.disc_pitch_mm, 1.0) < a.disc_height_mm / a.disc_pitch_mm
        vb = _ell(y, x, vy, vx, rv, rv * 1.1) <= 1.0
        if in_disc:
            s_hu[vb] = HU_DISC
            s_lab[vb] = LABEL_SOFT
        else:
            vb_in = _ell(y, x, vy, vx, rv - a.cortical_mm, rv * 1.1 - a.cortical_mm) <= 1.0
            s_hu[vb] = HU_CORTICAL
            s_hu[vb_in] = HU_VERTEBRA
            s_lab[vb] = LABEL_BONE
        r2 = (y - canal_y) ** 2 + (x - vx) ** 2
        arch = (r2 <= 11.0**2) & inner & (y > vy + rv * 0.6)
        s_hu[arch] = HU_RIB
        s_lab[arch] = LABEL_BONE
        spinous = (y > canal_y) & (y < canal_y + 28.0) & (np.abs(x - vx) < 3.5) & inner
        s_hu[spinous] = HU_RIB
        s_lab[spinous] = LABEL_BONE
        canal = r2 <= 7.0**2
        s_hu[canal] = HU_CSF
        s_lab[canal] = LABEL_SOFT
        if a.table_top_y_mm is not None:
            ty = a.table_top_y_mm
            tab_x = np.abs(x - bcx) < 0.62 * 2 * ba
            shell = (((y >= ty) & (y < ty + 3.0)) | ((y >= ty + 22.0) & (y < ty + 25.0))) & tab_x
            core = (y >= ty + 3.0) & (y < ty + 22.0) & tab_x
            s_hu[shell] = HU_TABLE_SHELL
            s_hu[core] = HU_TABLE_CORE
            s_lab[shell | core] = LABEL_TABLE
        hu[k] = np.rint(s_hu).astype(np.int16)
        labels[k] = s_lab

    for v in a.vessels:
        _paint_vessel(hu, labels, geometry, anatomy, v)
    nodule_labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    for idx, n in enumerate(nodules):
        _paint_nodule(hu, labels, nodule_labels, geometry, anatomy, n, idx + 1)

    if noise_sd_hu > 0.0 or blur_sd_mm > 0.0:
        if noise_sd_hu > 0.0 and rng is None:
            raise ValueError("render_phantom: noise_sd_hu > 0 needs an rng")
        sigma_px = (blur_sd_mm / dy, blur_sd_mm / dx)
        blur = min(sigma_px) >= 0.3
        for k0 in range(0, nz, 16):
            slab = hu[k0 : k0 + 16].astype(np.float32)
            if blur:
                slab = ndimage.gaussian_filter(slab, sigma=(0.0, *sigma_px), mode="nearest")
            if noise_sd_hu > 0.0:
                assert rng is not None
                slab += rng.standard_normal(slab.shape, dtype=np.float32) * np.float32(noise_sd_hu)
            np.clip(slab, HU_MIN, HU_MAX, out=slab)
            hu[k0 : k0 + 16] = np.rint(slab).astype(np.int16)
    return Phantom(
        hu=hu, geometry=geometry, labels=labels, nodule_labels=nodule_labels, anatomy=anatomy, nodules=nodules
    )


def _bbox_grid(
    geometry: Geometry, lo_zyx: np.ndarray, hi_zyx: np.ndarray
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """Index box and world coordinates (Z (nk,1,1), Y (nk,nj,1), X (1,1,ni)) of the voxels whose
    centres may fall inside the world box [lo, hi]."""
    nz, ny, nx = geometry.shape_zyx
    zs = np.asarray(geometry.slice_z_mm)
    k0 = int(np.searchsorted(zs, lo_zyx[0], side="left"))
    k1 = int(np.searchsorted(zs, hi_zyx[0], side="right"))
    if k1 <= k0:
        return None
    shifts = np.asarray(geometry.slice_shift_y_mm[k0:k1])
    _, dy, dx = geometry.spacing_zyx_mm
    y0, x0 = geometry.origin_yx_mm
    j0 = max(0, int(math.floor((lo_zyx[1] - y0 - shifts.max()) / dy)))
    j1 = min(ny, int(math.ceil((hi_zyx[1] - y0 - shifts.min()) / dy)) + 1)
    i0 = max(0, int(math.floor((lo_zyx[2] - x0) / dx)))
    i1 = min(nx, int(math.ceil((hi_zyx[2] - x0) / dx)) + 1)
    if j1 <= j0 or i1 <= i0:
        return None
    zz = zs[k0:k1][:, None, None]
    yy = (y0 + shifts[:, None, None]) + dy * np.arange(j0, j1, dtype=np.float64)[None, :, None]
    xx = (x0 + dx * np.arange(i0, i1, dtype=np.float64))[None, None, :]
    return (slice(k0, k1), slice(j0, j1), slice(i0, i1)), zz, yy, xx


def _paint_vessel(hu: np.ndarray, labels: np.ndarray, geometry: Geometry, anatomy: Anatomy, v: Vessel) -> None:
    p0 = np.asarray(v.start_zyx_mm)
    p1 = np.asarray(v.end_zyx_mm)
    r = max(v.radius_start_mm, v.radius_end_mm)
    box = _bbox_grid(geometry, np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
    if box is None:
        return
    sl, zz, yy, xx = box
    d = p1 - p0
    dd = float(d @ d) or 1e-12
    t = np.clip(((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / dd, 0.0, 1.0)
    dist2 = (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    rad = v.radius_start_mm + (v.radius_end_mm - v.radius_start_mm) * t
    m = (dist2 <= rad**2) & lung_contains(anatomy, zz, yy, xx) & (labels[sl] == LABEL_LUNG)
    hu[sl][m] = int(HU_VESSEL)
    labels[sl][m] = LABEL_VESSEL


def _paint_nodule(
    hu: np.ndarray,
    labels: np.ndarray,
    nodule_labels: np.ndarray,
    geometry: Geometry,
    anatomy: Anatomy,
    n: Nodule,
    label: int,
) -> None:
    c = np.asarray(n.center_zyx_mm)
    radius = n.diameter_mm / 2.0
    reach = radius + max((s.length_mm for s in n.spikes), default=0.0)
    box = _bbox_grid(geometry, c - reach, c + reach)
    if box is None:
        return
    sl, zz, yy, xx = box
    dz, dyy, dxx = zz - c[0], yy - c[1], xx - c[2]
    r2 = dz**2 + dyy**2 + dxx**2
    sphere = r2 <= radius**2
    core = r2 <= (n.core_diameter_mm / 2.0) ** 2
    solid = core.copy()
    for s in n.spikes:
        u = s.direction_zyx
        t = dz * u[0] + dyy * u[1] + dxx * u[2]
        perp2 = np.maximum(r2 - t**2, 0.0)
        end = radius + s.length_mm
        rad = np.where(t <= radius, s.radius_mm, s.radius_mm * (end - t) / max(s.length_mm, 1e-6))
        solid |= (t >= 0.0) & (t <= end) & (perp2 <= rad**2)
    lung = lung_contains(anatomy, zz, yy, xx)
    solid &= lung
    ggo = sphere & ~solid & lung
    hu_box = hu[sl]
    hu_box[ggo] = int(round(n.ggo_hu))
    hu_box[solid] = int(round(n.solid_hu))
    m = ggo | solid
    labels[sl][m] = LABEL_NODULE
    nodule_labels[sl][m] = label


def nodule_sphere_mask(
    shape_zyx: tuple[int, int, int],
    spacing_zyx_mm: tuple[float, float, float],
    center_zyx_mm: tuple[float, float, float],
    diameter_mm: float,
    *,
    origin_zyx_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Boolean (z, y, x) mask of the voxels whose centres lie within ``diameter_mm / 2`` of
    ``center_zyx_mm`` on a regular grid (voxel (0, 0, 0) centred at ``origin_zyx_mm``)."""
    r = diameter_mm / 2.0
    axes = [
        (o + s * np.arange(n, dtype=np.float64) - c) ** 2
        for n, s, o, c in zip(shape_zyx, spacing_zyx_mm, origin_zyx_mm, center_zyx_mm, strict=True)
    ]
    return (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]) <= r * r


def phantom_volume(
    rng: np.random.Generator,
    *,
    size: int = 64,
    slices: int | None = 32,
    slice_thickness_mm: float = 2.5,
    fov_mm: float = 380.0,
    nodules: int = 2,
    nodule_diameter_mm: tuple[float, float] = (6.0, 20.0),
    noise_sd_hu: float = 15.0,
    blur_sd_mm: float = 0.0,
    table: bool = True,
) -> Phantom:
    """One synthetic chest as an HU volume, without DICOM.

    ``size`` x ``size`` pixels over ``fov_mm`` (pixel spacing fov/size), ``slices`` axial slices
    ``slice_thickness_mm`` apart centred on the widest part of the lungs (None: cover both lungs
    plus 15 mm). Everything random comes from ``rng``.
    """
    anatomy = sample_anatomy(rng, fov_mm=fov_mm, table=table)
    geometry = default_geometry(anatomy, size=size, fov_mm=fov_mm, slices=slices, slice_step_mm=slice_thickness_mm)
    z = geometry.slice_z_mm
    placed = sample_nodules(rng, anatomy, count=nodules, z_range_mm=(z[0], z[-1]), diameter_range_mm=nodule_diameter_mm)
    return render_phantom(anatomy, geometry, placed, rng=rng, noise_sd_hu=noise_sd_hu, blur_sd_mm=blur_sd_mm)


def scan_z_range_mm(
    anatomy: Anatomy, *, slices: int | None, slice_step_mm: float, max_slices: int = 512
) -> tuple[float, int]:
    """First slice z (mm) and slice count of a scan: the lungs + 15 mm each side when ``slices``
    is None (at most ``max_slices``), else ``slices`` centred at 40 % of the lung height."""
    lz0, lz1 = anatomy.lung_z_range_mm
    full = min(max_slices, int(math.ceil((lz1 - lz0 + 30.0) / slice_step_mm)) + 1)
    n = full if slices is None else slices
    centre = lz0 + 0.4 * (lz1 - lz0) if slices is not None else (lz0 + lz1) / 2.0
    return _r4(centre - (n - 1) * slice_step_mm / 2.0), n


def default_geometry(
    anatomy: Anatomy,
    *,
    size: int,
    fov_mm: float,
    slices: int | None,
    slice_step_mm: float,
    max_slices: int = 512,
    steps_mm: tuple[float, ...] | None = None,
    gantry_tilt_deg: float = 0.0,
) -> Geometry:
    """The slice grid of a scan of ``anatomy``: ``size`` x ``size`` pixels of fov/size mm centred
    on the isocentre, slices from :func:`scan_z_range_mm`; ``steps_mm`` (n - 1 values) overrides
    the even steps; a gantry tilt shears slice k by ``(z_k - z_0) * tan(tilt)`` along y."""
    pix = _r4(fov_mm / size)
    z0, n = scan_z_range_mm(anatomy, slices=slices, slice_step_mm=slice_step_mm, max_slices=max_slices)
    if steps_mm is None:
        steps = np.full(n - 1, slice_step_mm)
    else:
        steps = np.asarray(steps_mm, dtype=np.float64)
        if len(steps) != n - 1:
            raise ValueError(f"default_geometry: {len(steps)} steps for {n} slices")
    z = z0 + np.concatenate([[0.0], np.cumsum(steps)])
    shear = math.tan(math.radians(gantry_tilt_deg))
    origin = _r4(-pix * (size - 1) / 2.0)
    return Geometry(
        shape_zyx=(n, size, size),
        spacing_zyx_mm=(float(slice_step_mm), pix, pix),
        origin_yx_mm=(origin, origin),
        slice_z_mm=tuple(_r4(v) for v in z),
        slice_shift_y_mm=tuple(_r4((v - z[0]) * shear) for v in z),
        gantry_tilt_deg=float(gantry_tilt_deg),
    )


def lobulated_nodule(z_mm: np.ndarray, y_mm: np.ndarray, x_mm: np.ndarray, diameter_mm: float,
                     rng: np.random.Generator, *, spiculated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A lobulated (optionally spiculated) nodule shape sampled at offsets from its centre (mm).

    Surface r <= R(u): R = d/2 (1 + sum_k a_k (u . v_k)^2) over 6 random unit directions v_k with
    |a_k| <= 0.12 (lobulation); spiculated adds 10 narrow spikes up to 0.45 d/2 long. Returns
    (r, mask): the distance from the centre (mm) and the boolean inside mask, both shaped like z_mm.
    Draws from ``rng`` in a fixed order, so a seed gives the same shape.
    """
    radius = diameter_mm / 2.0
    r = np.sqrt(z_mm**2 + y_mm**2 + x_mm**2)
    u = np.stack([z_mm, y_mm, x_mm], axis=-1) / np.maximum(r, 1e-9)[..., None]
    bound = np.full(r.shape, radius)
    lobes = rng.normal(size=(6, 3))
    for v, a in zip(lobes / np.linalg.norm(lobes, axis=1, keepdims=True), rng.uniform(-0.12, 0.12, 6), strict=True):
        bound += radius * a * (u @ v) ** 2
    if spiculated:
        spikes = rng.normal(size=(10, 3))
        for v in spikes / np.linalg.norm(spikes, axis=1, keepdims=True):
            bound += radius * 0.45 * np.clip((u @ v - 0.97) / 0.03, 0.0, None) ** 2
    return r, r <= bound
