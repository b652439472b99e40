"""`ctlake synth`: a synthetic chest CT cohort as real DICOM series plus ground truth.

Output layout::

    OUT/<patient_id>/<study_uid>/<series_uid>/<index:04d>.dcm
    OUT/annotations.csv      LUNA16 columns + malignancy, texture, margin, patient_id
    OUT/manifest.json        seed, config, per-series geometry, scanner, edge cases, files

Determinism: the same config (seed included) gives byte-identical files and the same manifest.
Patient i draws from random streams keyed by (seed, i, purpose), so its anatomy and nodules do
not depend on how many patients the cohort has. UIDs are name-based (``2.25.`` + uuid5) from the
config fingerprint, the patient index and the instance role.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ctlake.errors import ConfigError, CtlakeError, SetupError
from ctlake.synth import dicomio as dio
from ctlake.synth.phantom import (
    HU_MAX,
    Anatomy,
    Geometry,
    Nodule,
    default_geometry,
    render_phantom,
    sample_anatomy,
    sample_nodules,
    scan_z_range_mm,
)

EDGE_CASES = (
    "missing_slice",
    "duplicate_slice",
    "gantry_tilt",
    "uneven_spacing",
    "compressed",
    "non_ct",
    "truncated",
    "corrupt",
    "phi",
    "burned_in",
)
#: Slice thicknesses (= slice steps) real scanners reconstruct; drawn within the configured range.
SLICE_THICKNESSES_MM = (0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
ANNOTATION_COLUMNS = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "malignancy",
    "texture",
    "margin",
    "patient_id",
)
MANIFEST_VERSION = 1

_STREAMS = {
    "scanner": 1,
    "anatomy": 2,
    "nodules": 3,
    "noise": 4,
    "edge": 5,
    "phi": 6,
    "corrupt": 7,
    "dates": 8,
}


class SynthConfigError(ConfigError, ValueError):
    """A SynthConfig field is out of range; the message names the field."""

    code = "SYNTH_CONFIG_INVALID"


class SynthOutputError(CtlakeError):
    """The output folder cannot be used (not empty, or not an earlier synth cohort)."""

    code = "SYNTH_OUTPUT_NOT_EMPTY"


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """What cohort to generate. Every option is keyword-only; lists are accepted for tuples.

    patients: number of patients (one study, one CT series each, plus extras for `non_ct`).
    seed: non-negative integer; everything random derives from it.
    size: rows = columns of every CT image (16-2048); pixel spacing = fov / size.
    slices: slices per CT series (>= 6); None covers both lungs + 15 mm at the series' slice step,
        at most ``max_slices``. A fixed count is centred at 40 % of the lung height.
    fov_mm: (low, high) range of the reconstruction diameter in mm, drawn per series; the body is
        0.68-0.84 of it wide. The default gives 0.6-0.9 mm pixels at size 512.
    slice_thickness_mm: (low, high) range; the thickness (= slice step) is drawn from the common
        reconstruction values 0.625 ... 5 mm inside it (uniform in it when none is).
    nodules: (low, high) nodules per patient, inclusive.
    nodule_diameter_mm: (low, high) diameter range, log-uniform; a nodule that does not fit the
        lung and the scanned slab shrinks (never below low) or is dropped.
    edge_cases: names from EDGE_CASES to plant. ``edge_case_series='spread'`` plants each one in
        a single series (the k-th selected case, in EDGE_CASES order, goes to patient k mod
        patients); ``'all'`` plants every selected case in every patient's CT series.
    compressed_syntaxes: transfer syntax UIDs a `compressed` series uses;
        ``compressed_mode='round_robin'`` cycles them over its slices, ``'per_series'`` gives the
        whole series one (the n-th compressed series gets syntaxes[n mod len]).
    transfer_syntax: syntax of every other file (Explicit or Implicit VR Little Endian).
    manufacturers: vendors drawn from (keys of dicomio.SCANNERS).
    table: draw the patient table.
    noise_scale: multiplies the kernel-dependent image noise (0 = noise free).
    """

    patients: int = 4
    seed: int = 0
    size: int = 64
    slices: int | None = None
    max_slices: int = 512
    fov_mm: tuple[float, float] = (307.2, 460.8)
    slice_thickness_mm: tuple[float, float] = (0.625, 2.5)
    nodules: tuple[int, int] = (0, 4)
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0)
    edge_cases: tuple[str, ...] = ()
    edge_case_series: Literal["spread", "all"] = "spread"
    compressed_syntaxes: tuple[str, ...] = dio.COMPRESSED_SYNTAXES
    compressed_mode: Literal["round_robin", "per_series"] = "round_robin"
    transfer_syntax: str = dio.EXPLICIT_VR_LITTLE_ENDIAN
    manufacturers: tuple[str, ...] = tuple(dio.SCANNERS)
    table: bool = True
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "fov_mm",
            "slice_thickness_mm",
            "nodules",
            "nodule_diameter_mm",
            "edge_cases",
            "compressed_syntaxes",
            "manufacturers",
        ):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check(_is_int(self.patients) and self.patients >= 1, "patients", self.patients, "an integer >= 1")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(_is_int(self.size) and 16 <= self.size <= 2048, "size", self.size, "an integer in [16, 2048]")
        _check(
            self.slices is None or (_is_int(self.slices) and 6 <= self.slices <= 4096),
            "slices",
            self.slices,
            "None or an integer in [6, 4096]",
        )
        _check(
            _is_int(self.max_slices) and 6 <= self.max_slices <= 4096,
            "max_slices",
            self.max_slices,
            "an integer in [6, 4096]",
        )
        _range(self.fov_mm, "fov_mm", 50.0, 1000.0)
        _range(self.slice_thickness_mm, "slice_thickness_mm", 0.1, 20.0)
        _range(self.nodule_diameter_mm, "nodule_diameter_mm", 1.0, 60.0)
        _check(
            isinstance(self.nodules, tuple)
            and len(self.nodules) == 2
            and all(_is_int(v) for v in self.nodules)
            and 0 <= self.nodules[0] <= self.nodules[1] <= 20,
            "nodules",
            self.nodules,
            "(low, high) integers with 0 <= low <= high <= 20",
        )
        _check(isinstance(self.edge_cases, tuple), "edge_cases", self.edge_cases, "a tuple of names")
        unknown = [e for e in self.edge_cases if e not in EDGE_CASES]
        _check(not unknown, "edge_cases", unknown, f"names from {', '.join(EDGE_CASES)}")
        _check(len(set(self.edge_cases)) == len(self.edge_cases), "edge_cases", self.edge_cases, "no repeats")
        _check(
            self.edge_case_series in ("spread", "all"),
            "edge_case_series",
            self.edge_case_series,
            "'spread' or 'all'",
        )
        bad = [s for s in self.compressed_syntaxes if s not in dio.COMPRESSED_SYNTAXES]
        _check(
            not bad and len(self.compressed_syntaxes) > 0,
            "compressed_syntaxes",
            bad or "()",
            f"a non-empty tuple of {', '.join(dio.COMPRESSED_SYNTAXES)}",
        )
        _check(
            self.compressed_mode in ("round_robin", "per_series"),
            "compressed_mode",
            self.compressed_mode,
            "'round_robin' or 'per_series'",
        )
        _check(
            self.transfer_syntax in dio.UNCOMPRESSED_SYNTAXES,
            "transfer_syntax",
            self.transfer_syntax,
            f"one of {', '.join(dio.UNCOMPRESSED_SYNTAXES)}",
        )
        bad = [m for m in self.manufacturers if m not in dio.SCANNERS]
        _check(
            not bad and len(self.manufacturers) > 0,
            "manufacturers",
            bad or "()",
            f"a non-empty tuple of {', '.join(dio.SCANNERS)}",
        )
        _check(isinstance(self.table, bool), "table", self.table, "true or false")
        _check(
            isinstance(self.noise_scale, int | float) and 0.0 <= self.noise_scale <= 10.0,
            "noise_scale",
            self.noise_scale,
            "a number in [0, 10]",
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SynthConfig:
        """Build from a YAML/JSON mapping; an unknown key is an error that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SynthConfigError(f"synth: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise SynthConfigError(f"synth.{name}: got {value!r}, expected {expected}")


def _range(value: object, name: str, lo: float, hi: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and lo <= value[0] <= value[1] <= hi
    )
    _check(ok, name, value, f"(low, high) with {lo} <= low <= high <= {hi}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileRecord:
    """One file written. ``status``: ok | duplicate (a second copy of ``slice_index``) |
    truncated | corrupt. ``slice_index`` is the z index in the series' volume (-1 if none)."""

    path: str
    index: int
    slice_index: int
    sop_instance_uid: str
    instance_number: int
    transfer_syntax_uid: str
    image_position_xyz_mm: tuple[float, float, float] | None
    status: str = "ok"


@dataclass(frozen=True)
class SeriesRecord:
    """One series as written. ``shape_zyx`` and ``spacing_zyx_mm`` describe the rendered volume
    before edge cases (a missing slice is still counted in shape); ``slice_z_mm`` are its true
    slice positions and ``slice_shift_y_mm`` the gantry-tilt shear per slice."""

    series_uid: str
    study_uid: str
    patient_id: str
    patient_index: int
    header_patient_id: str
    kind: Literal["ct", "mr", "sc"]
    modality: str
    sop_class_uid: str
    directory: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_zyx_mm: tuple[float, float, float]
    image_orientation_patient: tuple[float, ...]
    slice_z_mm: tuple[float, ...]
    slice_shift_y_mm: tuple[float, ...]
    manufacturer: str
    model: str
    kernel: str
    kvp: int
    slice_thickness_mm: float
    fov_mm: float
    pixel_representation: int
    bits_stored: int
    gantry_tilt_deg: float
    transfer_syntaxes: tuple[str, ...]
    edge_cases: dict[str, dict[str, Any]]
    phi_values: tuple[dict[str, str], ...]
    nodules: tuple[dict[str, Any], ...]
    files: tuple[FileRecord, ...]

    def geometry(self) -> Geometry:
        """The Geometry of the rendered volume (world <-> voxel for the annotations)."""
        return Geometry(
            shape_zyx=self.shape_zyx,
            spacing_zyx_mm=self.spacing_zyx_mm,
            origin_yx_mm=(self.origin_zyx_mm[1] - self.slice_shift_y_mm[0], self.origin_zyx_mm[2]),
            slice_z_mm=self.slice_z_mm,
            slice_shift_y_mm=self.slice_shift_y_mm,
            gantry_tilt_deg=self.gantry_tilt_deg,
        )


@dataclass(frozen=True)
class Annotation:
    """One row of annotations.csv: world LPS centre (mm), diameter (mm) and labels."""

    seriesuid: str
    coordX: float  # noqa: N815 - LUNA16 column names
    coordY: float  # noqa: N815
    coordZ: float  # noqa: N815
    diameter_mm: float
    malignancy: int
    texture: str
    margin: str
    patient_id: str


@dataclass(frozen=True)
class Manifest:
    """What generate_cohort wrote; ``manifest.json`` is ``to_dict()`` as JSON."""

    seed: int
    config: dict[str, Any]
    syntax_support: dict[str, str]
    series: tuple[SeriesRecord, ...]
    annotations: tuple[Annotation, ...]
    annotations_csv: str = "annotations.csv"
    format_version: int = MANIFEST_VERSION
    generator: str = "ctlake.synth"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable_deep(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        series = tuple(
            SeriesRecord(
                **{
                    **s,
                    **{
                        k: _tupled(s[k])
                        for k in (
                            "shape_zyx",
                            "spacing_zyx_mm",
                            "origin_zyx_mm",
                            "image_orientation_patient",
                            "slice_z_mm",
                            "slice_shift_y_mm",
                            "transfer_syntaxes",
                        )
                    },
                    "phi_values": tuple(s["phi_values"]),
                    "nodules": tuple(s["nodules"]),
                    "files": tuple(
                        FileRecord(**{**f, "image_position_xyz_mm": _tupled(f["image_position_xyz_mm"])})
                        for f in s["files"]
                    ),
                }
            )
            for s in d["series"]
        )
        return cls(
            seed=d["seed"],
            config=d["config"],
            syntax_support=d["syntax_support"],
            series=series,
            annotations=tuple(Annotation(**a) for a in d["annotations"]),
            annotations_csv=d["annotations_csv"],
            format_version=d["format_version"],
            generator=d["generator"],
        )

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read ``manifest.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def ct_series(self) -> tuple[SeriesRecord, ...]:
        return tuple(s for s in self.series if s.kind == "ct")

    def with_edge_case(self, name: str) -> tuple[SeriesRecord, ...]:
        return tuple(s for s in self.series if name in s.edge_cases)


def _tupled(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _jsonable_deep(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable_deep(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_jsonable_deep(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------------------------
# Planning (cheap: no pixels)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesPlan:
    """Everything needed to write one patient's CT series (and its non-CT extras)."""

    patient_index: int
    patient_id: str
    header: dio.SeriesHeader
    sharpness: str
    anatomy: Anatomy
    geometry: Geometry
    nodules: tuple[Nodule, ...]
    edge_cases: tuple[str, ...]
    details: dict[str, dict[str, Any]]
    slice_syntaxes: tuple[str, ...]
    noise_sd_hu: float
    blur_sd_mm: float
    fingerprint: str = field(repr=False)


def _rng(config: SynthConfig, patient_index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([config.seed, patient_index, _STREAMS[stream]])


def config_fingerprint(config: SynthConfig) -> str:
    """16 hex digits of SHA-256 over the config: part of every UID, so two different cohorts
    never share UIDs while the same config always gives the same ones."""
    return dio.fingerprint(json.dumps(config.to_dict(), sort_keys=True))


def patient_id_for(patient_index: int) -> str:
    """The synthetic pseudonym of patient ``patient_index`` (0-based): SYNTH-0001, SYNTH-0002, ..."""
    return f"SYNTH-{patient_index + 1:04d}"


def edge_cases_for(config: SynthConfig, patient_index: int) -> tuple[str, ...]:
    """The edge cases planted in patient ``patient_index``'s CT series (EDGE_CASES order)."""
    selected = [e for e in EDGE_CASES if e in config.edge_cases]
    if config.edge_case_series == "all":
        return tuple(selected)
    return tuple(e for k, e in enumerate(selected) if k % config.patients == patient_index)


def _thickness(rng: np.random.Generator, lo: float, hi: float) -> float:
    choices = [t for t in SLICE_THICKNESSES_MM if lo - 1e-9 <= t <= hi + 1e-9]
    if choices:
        return float(choices[int(rng.integers(0, len(choices)))])
    return float(round(rng.uniform(lo, hi), 3))


def plan_patient(config: SynthConfig, patient_index: int) -> SeriesPlan:
    """Draw scanner, geometry, anatomy, nodules and edge-case details of one patient."""
    fp = config_fingerprint(config)
    pid = patient_id_for(patient_index)
    cases = edge_cases_for(config, patient_index)

    rs = _rng(config, patient_index, "scanner")
    scanner = dio.SCANNERS[config.manufacturers[int(rs.integers(0, len(config.manufacturers)))]]
    model = scanner.models[int(rs.integers(0, len(scanner.models)))]
    kernel, sharpness = scanner.kernels[int(rs.integers(0, len(scanner.kernels)))]
    kvp = int((100, 120, 120, 140)[int(rs.integers(0, 4))])
    tube_ma = int(rs.integers(80, 400))
    fov = float(round(rs.uniform(*config.fov_mm), 1))
    step = _thickness(rs, *config.slice_thickness_mm)
    noise_sd = round(dio.KERNEL_NOISE_SD_HU[sharpness] * float(rs.uniform(0.85, 1.2)) * config.noise_scale, 2)
    blur_sd = dio.KERNEL_BLUR_SD_MM[sharpness]

    anatomy = sample_anatomy(_rng(config, patient_index, "anatomy"), fov_mm=fov, table=config.table)
    _, n = scan_z_range_mm(anatomy, slices=config.slices, slice_step_mm=step, max_slices=config.max_slices)

    edge_rng = _rng(config, patient_index, "edge")
    details: dict[str, dict[str, Any]] = {}
    steps: tuple[float, ...] | None = None
    tilt = 0.0
    if "uneven_spacing" in cases:
        changed = sorted(
            int(i) for i in edge_rng.choice(np.arange(1, n - 2), size=max(1, (n - 3) // 40), replace=False)
        )
        s = [step] * (n - 1)
        for i in changed:
            s[i] = round(step * float(edge_rng.choice([0.5, 0.75, 1.5])), 4)
        steps = tuple(s)
        details["uneven_spacing"] = {
            "nominal_step_mm": step,
            "changed_steps": [{"between_slices": [i, i + 1], "step_mm": s[i]} for i in changed],
        }
    if "gantry_tilt" in cases:
        tilt = float(round(edge_rng.uniform(8.0, 25.0) * (1 if edge_rng.random() < 0.5 else -1), 1))
    geometry = default_geometry(
        anatomy,
        size=config.size,
        fov_mm=fov,
        slices=config.slices,
        slice_step_mm=step,
        max_slices=config.max_slices,
        steps_mm=steps,
        gantry_tilt_deg=tilt,
    )
    if "gantry_tilt" in cases:
        details["gantry_tilt"] = {
            "tilt_deg": tilt,
            "shear_y_mm_per_mm_z": round(math.tan(math.radians(tilt)), 6),
            "rule": "ImagePositionPatient y of slice k = y_0 + (z_k - z_0) * tan(tilt); orientation axial",
        }
    # distinct interior slices for the per-slice edge cases
    per_slice = [c for c in ("missing_slice", "duplicate_slice", "truncated", "corrupt") if c in cases]
    picks = [int(i) for i in edge_rng.choice(np.arange(1, n - 1), size=len(per_slice), replace=False)]
    chosen = dict(zip(per_slice, picks, strict=True))
    if "missing_slice" in chosen:
        k = chosen["missing_slice"]
        details["missing_slice"] = {"slice_index": k, "position_z_mm": geometry.slice_z_mm[k]}
    if "duplicate_slice" in chosen:
        details["duplicate_slice"] = {"slice_index": chosen["duplicate_slice"], "file_index": n}
    if "truncated" in chosen:
        details["truncated"] = {"slice_index": chosen["truncated"]}
    if "corrupt" in chosen:
        details["corrupt"] = {
            "slice_index": chosen["corrupt"],
            "mode": "garbage_header" if edge_rng.random() < 0.5 else "random_bytes",
        }

    slice_syntaxes = (config.transfer_syntax,) * n
    if "compressed" in cases:
        syn = config.compressed_syntaxes
        if config.compressed_mode == "round_robin":
            slice_syntaxes = tuple(syn[k % len(syn)] for k in range(n))
        else:
            ordinal = sum(1 for p in range(patient_index) if "compressed" in edge_cases_for(config, p))
            slice_syntaxes = (syn[ordinal % len(syn)],) * n
        details["compressed"] = {"mode": config.compressed_mode, "syntaxes": sorted(set(slice_syntaxes))}

    rd = _rng(config, patient_index, "dates")
    study_date = dio.date_from(rd, _dt.date(2015, 1, 1), 9 * 365)
    study_time = f"{int(rd.integers(7, 19)):02d}{int(rd.integers(0, 60)):02d}{int(rd.integers(0, 60)):02d}"
    age = int(rd.integers(45, 86))
    phi: tuple[dio.PhiValue, ...] = ()
    header_pid, header_name, birth, accession = pid, pid, "", ""
    if "phi" in cases:
        phi = dio.sample_phi(_rng(config, patient_index, "phi"), study_date, study_time)
        values = {p.path: p.value for p in phi}
        header_pid, header_name = values["PatientID"], values["PatientName"]
        birth, accession = values["PatientBirthDate"], values["AccessionNumber"]
        details["phi"] = {"values": [dataclasses.asdict(p) for p in phi]}
    header = dio.SeriesHeader(
        patient_id=header_pid,
        patient_name=header_name,
        patient_sex=anatomy.sex,
        patient_age=f"{age:03d}Y",
        patient_birth_date=birth,
        study_uid=dio.synthetic_uid(fp, patient_index, "study"),
        series_uid=dio.synthetic_uid(fp, patient_index, "series", "ct"),
        frame_of_reference_uid=dio.synthetic_uid(fp, patient_index, "frame"),
        study_date=study_date,
        study_time=study_time,
        accession_number=accession,
        series_number=2,
        manufacturer=scanner.manufacturer,
        model=model,
        kernel=kernel,
        kvp=kvp,
        tube_current_ma=tube_ma,
        pixel_representation=scanner.pixel_representation,
        slice_thickness_mm=step,
        fov_mm=fov,
        gantry_tilt_deg=tilt,
        window_center=-600 if sharpness == "sharp" else 40,
        window_width=1600 if sharpness == "sharp" else 400,
        burned_in_annotation="burned_in" in cases,
        phi=phi,
    )
    z = geometry.slice_z_mm
    lo, hi = config.nodules
    rn = _rng(config, patient_index, "nodules")
    count = int(rn.integers(lo, hi + 1))
    nodules = sample_nodules(
        rn, anatomy, count=count, z_range_mm=(z[0], z[-1]), diameter_range_mm=config.nodule_diameter_mm
    )
    return SeriesPlan(
        patient_index=patient_index,
        patient_id=pid,
        header=header,
        sharpness=sharpness,
        anatomy=anatomy,
        geometry=geometry,
        nodules=nodules,
        edge_cases=cases,
        details=details,
        slice_syntaxes=slice_syntaxes,
        noise_sd_hu=noise_sd,
        blur_sd_mm=blur_sd,
        fingerprint=fp,
    )


def annotations_for(plan: SeriesPlan) -> list[Annotation]:
    """The annotations.csv rows of one planned series (world LPS mm, x/y/z as DICOM)."""
    return [
        Annotation(
            seriesuid=plan.header.series_uid,
            coordX=n.center_zyx_mm[2],
            coordY=n.center_zyx_mm[1],
            coordZ=n.center_zyx_mm[0],
            diameter_mm=n.diameter_mm,
            malignancy=n.malignancy,
            texture=n.texture,
            margin=n.margin,
            patient_id=plan.patient_id,
        )
        for n in plan.nodules
    ]


def cohort_annotations(config: SynthConfig) -> list[Annotation]:
    """The annotations generate_cohort would write, without rendering or writing anything
    (milliseconds per patient: for label statistics over large cohorts)."""
    return [a for p in range(config.patients) for a in annotations_for(plan_patient(config, p))]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def generate_cohort(
    out_dir: Path,
    config: SynthConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    overwrite: bool = False,
) -> Manifest:
    """Write the cohort under ``out_dir`` and return its manifest (also written as manifest.json).

    ``progress(done, total)`` is called after each patient. An ``out_dir`` that is not empty is
    refused unless ``overwrite`` is true and it holds an earlier cohort (a manifest.json), whose
    listed files are then removed first.
    """
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    support = dio.syntax_support()
    needed = {
        s
        for p in range(config.patients)
        if "compressed" in edge_cases_for(config, p)
        for s in config.compressed_syntaxes
    }
    missing = {s: support[s] for s in needed if support.get(s) != "ok"}
    if missing:
        raise SetupError(
            "synth: cannot encode " + "; ".join(f"{s} ({why})" for s, why in sorted(missing.items())),
            hint="install the pylibjpeg codecs (requirements) or drop these from compressed_syntaxes",
        )
    series: list[SeriesRecord] = []
    annotations: list[Annotation] = []
    for p in range(config.patients):
        plan = plan_patient(config, p)
        series.extend(write_patient(out_dir, plan, config))
        annotations.extend(annotations_for(plan))
        if progress is not None:
            progress(p + 1, config.patients)
    manifest = Manifest(
        seed=config.seed,
        config=config.to_dict(),
        syntax_support=support,
        series=tuple(series),
        annotations=tuple(annotations),
    )
    write_annotations_csv(out_dir / manifest.annotations_csv, annotations)
    (out_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        old = out_dir / "manifest.json"
        if not overwrite:
            raise SynthOutputError(
                f"synth: {out_dir} is not empty",
                hint="pass overwrite=True (--overwrite) to replace an earlier cohort, or choose an empty folder",
            )
        if not old.is_file():
            raise SynthOutputError(
                f"synth: {out_dir} is not empty and holds no manifest.json",
                hint="refusing to delete files that synth did not write; choose an empty folder",
            )
        m = json.loads(old.read_text(encoding="utf-8"))
        dirs = set()
        for s in m.get("series", []):
            for f in s.get("files", []):
                path = out_dir / f["path"]
                path.unlink(missing_ok=True)
                dirs.update([path.parent, path.parent.parent, path.parent.parent.parent])
        for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
            if d != out_dir and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        (out_dir / m.get("annotations_csv", "annotations.csv")).unlink(missing_ok=True)
        old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def write_annotations_csv(path: Path, rows: list[Annotation]) -> None:
    """LUNA16 columns (seriesuid, coordX, coordY, coordZ, diameter_mm) + malignancy, texture,
    margin, patient_id."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ANNOTATION_COLUMNS)
        for a in rows:
            w.writerow(
                [
                    a.seriesuid,
                    repr(a.coordX),
                    repr(a.coordY),
                    repr(a.coordZ),
                    repr(a.diameter_mm),
                    a.malignancy,
                    a.texture,
                    a.margin,
                    a.patient_id,
                ]
            )


def write_patient(out_dir: Path, plan: SeriesPlan, config: SynthConfig) -> list[SeriesRecord]:
    """Render and write one patient's CT series (+ MR and secondary-capture series for `non_ct`)."""
    h = plan.header
    g = plan.geometry
    phantom = render_phantom(
        plan.anatomy,
        g,
        plan.nodules,
        rng=_rng(config, plan.patient_index, "noise"),
        noise_sd_hu=plan.noise_sd_hu,
        blur_sd_mm=plan.blur_sd_mm,
    )
    stored = dio.hu_to_stored(phantom.hu, h.pixel_representation)
    details = {k: dict(v) for k, v in plan.details.items()}
    if "burned_in" in plan.edge_cases:
        text = f"{h.patient_name.replace('^', ' ').strip()} {h.patient_id} {h.study_date}"
        value = int(min(HU_MAX, 1000.0)) + 1024
        box: tuple[list[int], list[int], str] = ([], [], "")
        for k in range(stored.shape[0]):
            box = dio.burn_in(stored[k], text, value)
        details["burned_in"] = {"text": box[2], "rows": box[0], "cols": box[1], "stored_value": value}

    series_rel = Path(plan.patient_id) / h.study_uid / h.series_uid
    fp = plan.fingerprint
    n = g.shape_zyx[0]
    missing = details.get("missing_slice", {}).get("slice_index")
    files: list[FileRecord] = []
    pixel_bytes: dict[int, int] = {}

    def write_one(file_index: int, k: int, sop: str, status: str) -> None:
        ts = plan.slice_syntaxes[k]
        ds = dio.ct_slice_dataset(h, g, k, stored[k], sop_uid=sop, instance_number=file_index + 1)
        rel = series_rel / f"{file_index:04d}.dcm"
        pixel_bytes[file_index] = dio.write_dataset(ds, out_dir / rel, ts)
        files.append(
            FileRecord(rel.as_posix(), file_index, k, sop, file_index + 1, ts, g.image_position_xyz_mm(k), status)
        )

    for k in range(n):
        if k == missing:
            continue
        write_one(k, k, dio.synthetic_uid(fp, plan.patient_index, "ct", k), "ok")
    if "duplicate_slice" in details:
        d = details["duplicate_slice"]
        k, fi = d["slice_index"], d["file_index"]
        write_one(fi, k, dio.synthetic_uid(fp, plan.patient_index, "ct", "duplicate", k), "duplicate")
        d["path"] = files[-1].path
        d["sop_instance_uids"] = [
            dio.synthetic_uid(fp, plan.patient_index, "ct", k),
            files[-1].sop_instance_uid,
        ]
        d["position_xyz_mm"] = list(g.image_position_xyz_mm(k))
    for case in ("truncated", "corrupt"):
        if case not in details:
            continue
        d = details[case]
        k = d["slice_index"]
        idx = next(i for i, f in enumerate(files) if f.index == k)
        path = out_dir / files[idx].path
        if case == "truncated":
            d.update(dio.truncate_file(path, pixel_bytes[k], files[idx].transfer_syntax_uid))
        else:
            d.update(dio.corrupt_file(path, _rng(config, plan.patient_index, "corrupt"), d["mode"]))
        d["path"] = files[idx].path
        files[idx] = dataclasses.replace(files[idx], status=case)
    if "missing_slice" in details:
        d = details["missing_slice"]
        d["missing_path"] = (series_rel / f"{missing:04d}.dcm").as_posix()

    extras: list[SeriesRecord] = []
    if "non_ct" in plan.edge_cases:
        extras = _write_non_ct(out_dir, plan, phantom.hu)
        details["non_ct"] = {"extra_series": [e.series_uid for e in extras]}

    record = _series_record(plan, series_rel, "ct", "CT", dio.CT_IMAGE_STORAGE, g, details, files)
    return [record, *extras]


def _series_record(
    plan: SeriesPlan,
    series_rel: Path,
    kind: Literal["ct", "mr", "sc"],
    modality: str,
    sop_class: str,
    g: Geometry | None,
    details: dict[str, dict[str, Any]],
    files: list[FileRecord],
    image_shape_yx: tuple[int, int] = (0, 0),
) -> SeriesRecord:
    h = plan.header
    if g is None:
        shape = (len(files), *image_shape_yx)
        spacing, origin, zs, shifts = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (), ()
    else:
        shape, spacing, origin = g.shape_zyx, g.spacing_zyx_mm, g.origin_zyx_mm
        zs, shifts = g.slice_z_mm, g.slice_shift_y_mm
    return SeriesRecord(
        series_uid=h.series_uid,
        study_uid=h.study_uid,
        patient_id=plan.patient_id,
        patient_index=plan.patient_index,
        header_patient_id=h.patient_id,
        kind=kind,
        modality=modality,
        sop_class_uid=sop_class,
        directory=series_rel.as_posix(),
        shape_zyx=shape,  # type: ignore[arg-type]
        spacing_zyx_mm=spacing,
        origin_zyx_mm=origin,
        image_orientation_patient=dio.AXIAL_ORIENTATION if g is not None else (),
        slice_z_mm=zs,
        slice_shift_y_mm=shifts,
        manufacturer=h.manufacturer,
        model=h.model,
        kernel=h.kernel if kind == "ct" else "",
        kvp=h.kvp if kind == "ct" else 0,
        slice_thickness_mm=h.slice_thickness_mm if kind == "ct" else (g.spacing_zyx_mm[0] if g else 0.0),
        fov_mm=h.fov_mm,
        pixel_representation=h.pixel_representation if kind == "ct" else 0,
        bits_stored=h.bits_stored if kind == "ct" else (12 if kind == "mr" else 8),
        gantry_tilt_deg=h.gantry_tilt_deg if kind == "ct" else 0.0,
        transfer_syntaxes=tuple(sorted({f.transfer_syntax_uid for f in files})),
        edge_cases=details,
        phi_values=tuple(dataclasses.asdict(p) for p in h.phi) if kind == "ct" else (),
        nodules=tuple(n.to_dict() for n in plan.nodules) if kind == "ct" else (),
        files=tuple(files),
    )


def _write_non_ct(out_dir: Path, plan: SeriesPlan, hu: np.ndarray) -> list[SeriesRecord]:
    """An MR series (MR Image Storage, Modality MR) of up to 8 slices drawn from the same anatomy
    with T1-like contrast, and a one-image Secondary Capture series with Modality CT."""
    h = plan.header
    g = plan.geometry
    fp = plan.fingerprint
    n = g.shape_zyx[0]
    ks = sorted({int(round(v)) for v in np.linspace(0, n - 1, min(8, n))})
    mr_geom = Geometry(
        shape_zyx=(len(ks), g.shape_zyx[1], g.shape_zyx[2]),
        spacing_zyx_mm=(
            round((g.slice_z_mm[ks[-1]] - g.slice_z_mm[ks[0]]) / max(1, len(ks) - 1), 4),
            g.spacing_zyx_mm[1],
            g.spacing_zyx_mm[2],
        ),
        origin_yx_mm=g.origin_yx_mm,
        slice_z_mm=tuple(g.slice_z_mm[k] for k in ks),
        slice_shift_y_mm=tuple(g.slice_shift_y_mm[k] for k in ks),
    )
    mr_h = dataclasses.replace(
        h,
        series_uid=dio.synthetic_uid(fp, plan.patient_index, "series", "mr"),
        series_number=901,
        manufacturer="SIEMENS",
        model="MAGNETOM Aera",
        burned_in_annotation=False,
        phi=(),
        frame_of_reference_uid=dio.synthetic_uid(fp, plan.patient_index, "frame", "mr"),
    )
    mr_rel = Path(plan.patient_id) / h.study_uid / mr_h.series_uid
    t1 = np.interp(
        hu[ks].astype(np.float32), [-1000, -850, -100, 40, 400, 1000, 3071], [0, 40, 1100, 450, 350, 120, 120]
    )
    files: list[FileRecord] = []
    for i in range(len(ks)):
        sop = dio.synthetic_uid(fp, plan.patient_index, "mr", i)
        ds = dio.mr_slice_dataset(
            mr_h, mr_geom, i, np.rint(t1[i]).astype(np.uint16), sop_uid=sop, instance_number=i + 1
        )
        rel = mr_rel / f"{i:04d}.dcm"
        dio.write_dataset(ds, out_dir / rel, dio.EXPLICIT_VR_LITTLE_ENDIAN)
        files.append(
            FileRecord(
                rel.as_posix(),
                i,
                i,
                sop,
                i + 1,
                dio.EXPLICIT_VR_LITTLE_ENDIAN,
                mr_geom.image_position_xyz_mm(i),
            )
        )
    mr_plan = dataclasses.replace(plan, header=mr_h)
    mr = _series_record(
        mr_plan,
        mr_rel,
        "mr",
        "MR",
        dio.MR_IMAGE_STORAGE,
        mr_geom,
        {"non_ct": {"modality": "MR", "sop_class_uid": dio.MR_IMAGE_STORAGE, "ct_series_uid": h.series_uid}},
        files,
    )

    sc_h = dataclasses.replace(
        h,
        series_uid=dio.synthetic_uid(fp, plan.patient_index, "series", "sc"),
        series_number=902,
        burned_in_annotation=False,
        phi=(),
    )
    sc_rel = Path(plan.patient_id) / h.study_uid / sc_h.series_uid
    mid = hu[n // 2].astype(np.float32)
    img = np.clip((mid + 1000.0) / 1400.0 * 255.0, 0, 255).astype(np.uint8)  # window [-1000, 400]
    sop = dio.synthetic_uid(fp, plan.patient_index, "sc", 0)
    ds = dio.sc_dataset(sc_h, img, sop_uid=sop)
    rel = sc_rel / "0000.dcm"
    dio.write_dataset(ds, out_dir / rel, dio.EXPLICIT_VR_LITTLE_ENDIAN)
    sc_plan = dataclasses.replace(plan, header=sc_h)
    sc = _series_record(
        sc_plan,
        sc_rel,
        "sc",
        "CT",
        dio.SECONDARY_CAPTURE_STORAGE,
        None,
        {
            "non_ct": {
                "modality": "CT",
                "sop_class_uid": dio.SECONDARY_CAPTURE_STORAGE,
                "ct_series_uid": h.series_uid,
            }
        },
        [FileRecord(rel.as_posix(), 0, -1, sop, 1, dio.EXPLICIT_VR_LITTLE_ENDIAN, None)],
        image_shape_yx=(int(img.shape[0]), int(img.shape[1])),
    )
    return [mr, sc]
