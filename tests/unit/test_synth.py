"""ctlake.synth: a deterministic synthetic chest CT cohort written as real DICOM.

Every check reads the files back with pydicom, so what is tested is what a user would ingest.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.synth import (
    COMPRESSED_SYNTAXES,
    EDGE_CASES,
    Geometry,
    Manifest,
    SeriesRecord,
    SynthConfig,
    SynthConfigError,
    SynthOutputError,
    cohort_annotations,
    generate_cohort,
    nodule_sphere_mask,
    phantom_volume,
    plan_patient,
    render_phantom,
    syntax_support,
)
from ctlake.synth.dicomio import phi_found_in
from ctlake.synth.phantom import (
    LABEL_BONE,
    LABEL_FAT,
    LABEL_LUNG,
    LABEL_SOFT,
    sphere_in_lung,
)
from pydicom.errors import InvalidDicomError

ALL_EDGES = SynthConfig(patients=4, seed=7, size=64, slices=24, nodules=(1, 4), edge_cases=EDGE_CASES)
#: every edge case in every series at once: they must not get in each other's way
PILED_UP = SynthConfig(
    patients=2, seed=9, size=48, slices=16, nodules=(1, 2), edge_cases=EDGE_CASES, edge_case_series="all"
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("cohort")
    return out, generate_cohort(out, ALL_EDGES)


@pytest.fixture(scope="module", params=["spread", "all"])
def edge_cohort(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cohort):
    if request.param == "spread":
        return (*cohort, ALL_EDGES)
    out = tmp_path_factory.mktemp("piled")
    return out, generate_cohort(out, PILED_UP), PILED_UP


def _read(out: Path, rec: SeriesRecord, statuses: tuple[str, ...] = ("ok", "duplicate")) -> list:
    return [pydicom.dcmread(out / f.path) for f in rec.files if f.status in statuses]


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _z(ds: pydicom.Dataset) -> float:
    return float(ds.ImagePositionPatient[2])


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"size": 8}, "size"),
        ({"slices": 3}, "slices"),
        ({"patients": 0}, "patients"),
        ({"seed": -1}, "seed"),
        ({"fov_mm": (400.0, 300.0)}, "fov_mm"),
        ({"nodules": (3, 1)}, "nodules"),
        ({"nodule_diameter_mm": (0.0, 10.0)}, "nodule_diameter_mm"),
        ({"edge_cases": ("missing_slice", "wormhole")}, "edge_cases"),
        ({"compressed_syntaxes": ("1.2.840.10008.1.2.4.50",)}, "compressed_syntaxes"),
        ({"transfer_syntax": "1.2.840.10008.1.2.5"}, "transfer_syntax"),
        ({"manufacturers": ("ACME",)}, "manufacturers"),
    ],
)
def test_config_error_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(SynthConfigError, match=rf"synth\.{field}:"):
        SynthConfig(**changes)


def test_config_from_mapping_accepts_lists_and_rejects_unknown_keys() -> None:
    cfg = SynthConfig.from_mapping({"patients": 2, "edge_cases": ["phi"], "fov_mm": [350, 350]})
    assert cfg.edge_cases == ("phi",) and cfg.fov_mm == (350, 350)
    with pytest.raises(SynthConfigError, match="pateints"):
        SynthConfig.from_mapping({"pateints": 2})
    with pytest.raises(TypeError):
        SynthConfig(4)  # type: ignore[misc]  # keyword-only


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_another_seed_differs(cohort, tmp_path: Path) -> None:
    out, manifest = cohort
    again = generate_cohort(tmp_path / "again", ALL_EDGES)
    assert again == manifest
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert (tmp_path / "again" / "annotations.csv").read_bytes() == (out / "annotations.csv").read_bytes()
    paths = [f.path for s in manifest.series for f in s.files]
    assert len(paths) > 90
    for p in paths:
        assert (tmp_path / "again" / p).read_bytes() == (out / p).read_bytes(), p

    other = generate_cohort(tmp_path / "other", dataclasses.replace(ALL_EDGES, seed=8))
    assert {s.series_uid for s in other.series}.isdisjoint({s.series_uid for s in manifest.series})
    a = pydicom.dcmread(out / manifest.series[0].files[0].path)
    b = pydicom.dcmread(tmp_path / "other" / other.series[0].files[0].path)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert not np.array_equal(a.pixel_array, b.pixel_array)


def test_patient_does_not_depend_on_cohort_size() -> None:
    small = plan_patient(SynthConfig(patients=2, seed=5), 1)
    large = plan_patient(SynthConfig(patients=9, seed=5), 1)
    assert small.anatomy == large.anatomy and small.nodules == large.nodules


def test_manifest_json_round_trips(cohort) -> None:
    out, manifest = cohort
    assert Manifest.load(out) == manifest
    assert manifest.seed == 7 and manifest.config["edge_cases"] == list(EDGE_CASES)


def test_refuses_to_overwrite_unless_asked(cohort, tmp_path: Path) -> None:
    cfg = SynthConfig(patients=1, seed=1, size=32, slices=6, nodules=(0, 0))
    generate_cohort(tmp_path / "c", cfg)
    with pytest.raises(SynthOutputError, match="not empty"):
        generate_cohort(tmp_path / "c", cfg)
    generate_cohort(tmp_path / "c", cfg, overwrite=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SynthOutputError, match="no manifest.json"):
        generate_cohort(tmp_path / "foreign", cfg, overwrite=True)


# ------------------------------------------------------------------------------ reading it back
def test_every_intact_file_decodes_with_the_manifest_geometry(edge_cohort) -> None:
    out, manifest, config = edge_cohort
    for rec in manifest.ct_series():
        plan = plan_patient(config, rec.patient_index)
        assert plan.header.series_uid == rec.series_uid
        rerender = render_phantom(plan.anatomy, plan.geometry, plan.nodules)  # noise-free reference
        burned = rec.edge_cases.get("burned_in")
        for f in rec.files:
            if f.status not in ("ok", "duplicate"):
                continue
            ds = pydicom.dcmread(out / f.path)
            assert ds.file_meta.TransferSyntaxUID == f.transfer_syntax_uid
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
            assert ds.SOPInstanceUID == f.sop_instance_uid and ds.SeriesInstanceUID == rec.series_uid
            assert (ds.Rows, ds.Columns) == rec.shape_zyx[1:]
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx(rec.spacing_zyx_mm[1:])
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(f.image_position_xyz_mm)
            assert float(ds.SliceThickness) == rec.slice_thickness_mm
            assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 1.0)
            assert ds.BitsAllocated == 16 and ds.PixelRepresentation == rec.pixel_representation
            assert ds.Manufacturer == rec.manufacturer and ds.ConvolutionKernel == rec.kernel
            assert ds.PatientID == rec.header_patient_id
            hu = _hu(ds)
            assert hu.shape == rec.shape_zyx[1:]
            assert hu.min() >= -1024 and hu.max() <= 3071
            # lossless in every syntax: noisy HU stay within a few noise SDs of the clean phantom
            ref = rerender.hu[f.slice_index].astype(np.float64)
            diff = np.abs(hu - ref)
            if burned:
                diff[burned["rows"][0] : burned["rows"][1], burned["cols"][0] : burned["cols"][1]] = 0
            assert np.median(diff) < 60, (f.path, np.median(diff))
        if not rec.edge_cases.keys() & {"missing_slice", "duplicate_slice", "uneven_spacing", "gantry_tilt"}:
            zs = sorted(_z(ds) for ds in _read(out, rec))
            assert np.diff(zs) == pytest.approx(rec.spacing_zyx_mm[0], abs=1e-3)


def test_every_edge_case_is_where_the_manifest_says(edge_cohort) -> None:
    out, manifest, config = edge_cohort
    for name in EDGE_CASES:
        assert manifest.with_edge_case(name), f"{name} not planted"
    ct_with = {name: [s for s in manifest.ct_series() if name in s.edge_cases] for name in EDGE_CASES}
    expected = 1 if config.edge_case_series == "spread" else config.patients
    assert all(len(v) == expected for v in ct_with.values())

    for rec in ct_with["missing_slice"]:
        d = rec.edge_cases["missing_slice"]
        assert not (out / d["missing_path"]).exists()
        assert d["slice_index"] not in {f.slice_index for f in rec.files}
        z_written = {round(float(f.image_position_xyz_mm[2]), 4) for f in rec.files}
        assert z_written == {round(z, 4) for z in rec.slice_z_mm} - {round(d["position_z_mm"], 4)}
        if "uneven_spacing" not in rec.edge_cases:
            zs = sorted(_z(ds) for ds in _read(out, rec))
            steps = np.diff(zs)
            steps = steps[steps > 0]  # a duplicate, if any, repeats a position
            gaps = np.flatnonzero(steps > 1.5 * rec.spacing_zyx_mm[0])
            assert len(gaps) == 1 and steps[gaps[0]] == pytest.approx(2 * rec.spacing_zyx_mm[0], abs=1e-3)
            assert zs[0] < d["position_z_mm"] < zs[-1]

    for rec in ct_with["duplicate_slice"]:
        d = rec.edge_cases["duplicate_slice"]
        first = next(f for f in rec.files if f.index == d["slice_index"])
        a, b = pydicom.dcmread(out / first.path), pydicom.dcmread(out / d["path"])
        assert a.ImagePositionPatient == b.ImagePositionPatient
        assert [a.SOPInstanceUID, b.SOPInstanceUID] == d["sop_instance_uids"] and len(set(d["sop_instance_uids"])) == 2
        assert np.array_equal(a.pixel_array, b.pixel_array)
        positions = [tuple(f.image_position_xyz_mm) for f in rec.files]
        assert len(positions) - len(set(positions)) == 1

    for rec in ct_with["gantry_tilt"]:
        tilt = rec.edge_cases["gantry_tilt"]["tilt_deg"]
        series = sorted(_read(out, rec), key=_z)
        assert all(float(ds.GantryDetectorTilt) == tilt != 0 for ds in series)
        assert all([float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0] for ds in series)
        z = np.array([_z(ds) for ds in series])
        y = np.array([float(ds.ImagePositionPatient[1]) for ds in series])
        assert np.diff(y) == pytest.approx(np.diff(z) * math.tan(math.radians(tilt)), abs=2e-4)
    for other in manifest.ct_series():
        if "gantry_tilt" not in other.edge_cases:
            assert float(pydicom.dcmread(out / other.files[0].path).GantryDetectorTilt) == 0.0

    for rec in ct_with["uneven_spacing"]:
        changed = rec.edge_cases["uneven_spacing"]["changed_steps"]
        z_by_index = {f.slice_index: _z(pydicom.dcmread(out / f.path)) for f in rec.files if f.status == "ok"}
        steps = np.diff([z_by_index[k] for k in sorted(z_by_index)])
        assert changed and len(np.unique(np.round(steps, 3))) > 1
        for c in changed:
            k0, k1 = c["between_slices"]
            assert rec.slice_z_mm[k1] - rec.slice_z_mm[k0] == pytest.approx(c["step_mm"], abs=1e-3)
            assert c["step_mm"] != rec.spacing_zyx_mm[0]
            if k0 in z_by_index and k1 in z_by_index:
                assert z_by_index[k1] - z_by_index[k0] == pytest.approx(c["step_mm"], abs=1e-3)

    for rec in ct_with["compressed"]:
        used = {f.transfer_syntax_uid for f in rec.files}
        assert used == set(config.compressed_syntaxes) == set(rec.transfer_syntaxes)
        read = {pydicom.dcmread(out / f.path).file_meta.TransferSyntaxUID for f in rec.files if f.status == "ok"}
        assert read == used

    for rec in ct_with["non_ct"]:
        extras = [s for s in manifest.series if s.series_uid in rec.edge_cases["non_ct"]["extra_series"]]
        assert sorted(s.kind for s in extras) == ["mr", "sc"]
        for s in extras:
            assert s.edge_cases["non_ct"]["ct_series_uid"] == rec.series_uid
            for ds in _read(out, s):
                assert ds.SOPClassUID == s.sop_class_uid != "1.2.840.10008.5.1.4.1.1.2"
                assert ds.Modality == s.modality and ds.pixel_array.shape == s.shape_zyx[1:]
        assert {s.modality for s in extras} == {"MR", "CT"}  # the screen capture claims CT

    for rec in ct_with["truncated"]:
        d = rec.edge_cases["truncated"]
        assert (out / d["path"]).stat().st_size == d["kept_bytes"] < d["original_bytes"]
        with pytest.raises(Exception), warnings.catch_warnings():  # noqa: B017 - error type varies by syntax
            warnings.simplefilter("ignore")  # pydicom warns about the missing sequence delimiter first
            pydicom.dcmread(out / d["path"]).pixel_array  # noqa: B018

    for rec in ct_with["corrupt"]:
        d = rec.edge_cases["corrupt"]
        assert d["mode"] in ("garbage_header", "random_bytes")
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(out / d["path"])

    clean = [s for s in manifest.ct_series() if not s.edge_cases.keys() & {"phi", "burned_in"}]
    for rec in ct_with["phi"]:
        planted = rec.edge_cases["phi"]["values"]
        assert len(planted) >= 15 and planted == list(rec.phi_values)
        paths = {p["path"] for p in planted}
        assert {
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientAddress",
            "InstitutionName",
            "InstitutionAddress",
            "ReferringPhysicianName",
            "OtherPatientIDs",
            "AccessionNumber",
            "StudyDate",
            "StudyTime",
        } <= paths
        assert any(p.startswith("(0011,10") for p in paths) and any("Sequence[0]." in p for p in paths)
        for ds in _read(out, rec):
            found = phi_found_in(ds)
            missing = [p for p in planted if p["value"] not in found]
            assert not missing, missing
            assert ds.PatientName == next(p["value"] for p in planted if p["path"] == "PatientName")
        for other in clean:
            ds = pydicom.dcmread(out / other.files[0].path)
            assert ds.PatientID == other.patient_id == ds.PatientName and ds.PatientID.startswith("SYNTH-")
            assert not {p["value"] for p in planted if p["path"] not in ("StudyDate", "StudyTime")} & phi_found_in(ds)

    for rec in ct_with["burned_in"]:
        d = rec.edge_cases["burned_in"]
        assert len(d["text"]) >= 10
        for ds in _read(out, rec):
            assert ds.BurnedInAnnotation == "YES"
            box = ds.pixel_array[d["rows"][0] : d["rows"][1], d["cols"][0] : d["cols"][1]]
            assert (box == d["stored_value"]).sum() > 10
    for other in clean:
        assert pydicom.dcmread(out / other.files[0].path).BurnedInAnnotation == "NO"


# ---------------------------------------------------------------------------------- ground truth
def test_annotations_csv_is_luna16_plus_labels(cohort) -> None:
    out, manifest = cohort
    with (out / "annotations.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "seriesuid",
        "coordX",
        "coordY",
        "coordZ",
        "diameter_mm",
        "malignancy",
        "texture",
        "margin",
        "patient_id",
    ]
    assert len(rows) == sum(len(s.nodules) for s in manifest.ct_series()) == len(manifest.annotations) > 0
    assert [r["seriesuid"] for r in rows] == [a.seriesuid for a in manifest.annotations]
    assert {r["texture"] for r in rows} <= {"solid", "part_solid"}
    assert {r["margin"] for r in rows} <= {"smooth", "spiculated"}
    assert all(1 <= int(r["malignancy"]) <= 5 and 3.0 <= float(r["diameter_mm"]) <= 30.0 for r in rows)
    assert [dataclasses.astuple(a) for a in cohort_annotations(ALL_EDGES)] == [
        dataclasses.astuple(a) for a in manifest.annotations
    ]


def test_nodule_centres_read_back_from_dicom_are_nodules_in_lung(tmp_path: Path) -> None:
    cfg = SynthConfig(
        patients=4,
        seed=11,
        size=128,
        slices=40,
        slice_thickness_mm=(1.25, 2.5),
        nodules=(2, 3),
        nodule_diameter_mm=(12.0, 30.0),
    )
    manifest = generate_cohort(tmp_path, cfg)
    checked = 0
    for a in manifest.annotations:
        rec = next(s for s in manifest.series if s.series_uid == a.seriesuid)
        series = sorted(_read(tmp_path, rec), key=_z)
        vol = np.stack([_hu(ds) for ds in series])
        zs = np.array([_z(ds) for ds in series])
        x0, y0 = (float(v) for v in series[0].ImagePositionPatient[:2])
        dy, dx = (float(v) for v in series[0].PixelSpacing)
        k = int(np.argmin(np.abs(zs - a.coordZ)))
        j, i = round((a.coordY - y0) / dy), round((a.coordX - x0) / dx)
        centre = vol[k, j, i]
        assert centre > (-300 if a.texture == "solid" else -700), (a, centre)
        # a shell 1.5-3 voxels outside the sphere is mostly lung at about -850 HU
        kk, jj, ii = np.meshgrid(
            zs, y0 + dy * np.arange(vol.shape[1]), x0 + dx * np.arange(vol.shape[2]), indexing="ij"
        )
        r = np.sqrt((kk - a.coordZ) ** 2 + (jj - a.coordY) ** 2 + (ii - a.coordX) ** 2)
        shell = vol[(r > a.diameter_mm / 2 + 1.5 * dx) & (r < a.diameter_mm / 2 + 3 * dx)]
        lung = shell[shell < -600]
        assert lung.size > 0.5 * shell.size, (a, lung.size, shell.size)
        assert np.median(lung) == pytest.approx(-850, abs=40)
        checked += 1
    assert checked >= 8


def test_nodules_lie_inside_the_lung_mask() -> None:
    cfg = SynthConfig(patients=6, seed=3, size=96, slices=48, nodules=(3, 4), slice_thickness_mm=(2.0, 2.5))
    seen = 0
    for p in range(cfg.patients):
        plan = plan_patient(cfg, p)
        ph = render_phantom(plan.anatomy, plan.geometry, plan.nodules)
        for idx, n in enumerate(plan.nodules):
            assert sphere_in_lung(plan.anatomy, np.array(n.center_zyx_mm), n.diameter_mm / 2)
            voxels = ph.nodule_labels == idx + 1
            assert ph.lung_mask[voxels].all()
            seen += int(voxels.any())
    assert seen >= 10


def test_malignancy_is_a_noisy_increasing_function_of_size_density_and_margin() -> None:
    rows = cohort_annotations(SynthConfig(patients=200, seed=3, nodules=(1, 4)))
    assert len(rows) > 300
    d = np.array([r.diameter_mm for r in rows])
    m = np.array([r.malignancy for r in rows])

    def ranks(v: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(v, kind="stable"), kind="stable")

    rho = np.corrcoef(ranks(d), ranks(m))[0, 1]
    assert 0.5 < rho < 0.97  # learnable, not a lookup
    assert set(np.unique(m)) >= {1, 2, 3, 4, 5}
    spic = np.array([r.margin == "spiculated" for r in rows])
    solid = np.array([r.texture == "solid" for r in rows])
    assert m[spic].mean() > m[~spic].mean() and m[solid].mean() > m[~solid].mean()


# -------------------------------------------------------------------------------------- phantom
def test_phantom_tissues_have_their_hounsfield_units() -> None:
    ph = phantom_volume(np.random.default_rng(0), size=128, slices=24, nodules=2, noise_sd_hu=10.0)
    assert ph.hu.dtype == np.int16 and ph.hu.shape == (24, 128, 128) == ph.geometry.shape_zyx
    med = {lab: np.median(ph.hu[ph.labels == lab]) for lab in (LABEL_LUNG, LABEL_FAT, LABEL_SOFT)}
    assert med[LABEL_LUNG] == pytest.approx(-850, abs=15)
    assert med[LABEL_FAT] == pytest.approx(-100, abs=15)
    assert med[LABEL_SOFT] == pytest.approx(40, abs=15)
    assert np.median(ph.hu[ph.labels == LABEL_BONE]) > 300
    assert np.median(ph.hu[:, :3, :3]) == pytest.approx(-1000, abs=15)  # air in the corner
    assert 0.05 < ph.lung_mask.mean() < 0.5
    assert len(ph.nodules) == 2 and set(np.unique(ph.nodule_labels)) == {0, 1, 2}


def test_anatomy_scales_with_field_of_view_not_pixels() -> None:
    coarse = phantom_volume(np.random.default_rng(4), size=32, slices=8, nodules=0, noise_sd_hu=0.0)
    fine = phantom_volume(np.random.default_rng(4), size=128, slices=8, nodules=0, noise_sd_hu=0.0)
    assert coarse.anatomy == fine.anatomy
    vox_mm2 = [p.geometry.spacing_zyx_mm[1] * p.geometry.spacing_zyx_mm[2] for p in (coarse, fine)]
    areas = [p.lung_mask.sum() * v for p, v in zip((coarse, fine), vox_mm2, strict=True)]
    assert areas[0] == pytest.approx(areas[1], rel=0.1)


def test_nodule_sphere_mask_volume() -> None:
    m = nodule_sphere_mask((40, 60, 60), (1.0, 0.5, 0.5), (20.0, 15.0, 15.0), 20.0)
    assert m.dtype == bool
    assert m.sum() * 1.0 * 0.5 * 0.5 == pytest.approx(4 / 3 * math.pi * 10**3, rel=0.03)
    assert m[20, 30, 30] and not m[20, 30, 51] and not m[0, 0, 0]


def test_geometry_world_index_round_trip_with_tilt_and_uneven_steps() -> None:
    zs = (0.0, 1.0, 2.0, 3.5, 4.5)
    shear = math.tan(math.radians(15.0))
    g = Geometry(
        shape_zyx=(5, 8, 8),
        spacing_zyx_mm=(1.0, 0.7, 0.7),
        origin_yx_mm=(-3.0, -2.0),
        slice_z_mm=zs,
        slice_shift_y_mm=tuple(z * shear for z in zs),
        gantry_tilt_deg=15.0,
    )
    idx = np.array([[0, 0, 0], [3, 2.5, 7], [4, 7, 1], [2.5, 1, 1]])
    assert g.world_to_index_zyx(g.index_to_world_zyx(idx)) == pytest.approx(idx)
    assert g.image_position_xyz_mm(3) == pytest.approx((-2.0, -3.0 + 3.5 * shear, 3.5), abs=1e-4)


def test_supported_transfer_syntaxes_encode() -> None:
    support = syntax_support()
    assert set(support) == set(COMPRESSED_SYNTAXES)
    assert all(v == "ok" for v in support.values()), support
