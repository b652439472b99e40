"""silver.lung_masks, gold.nodules and gold.nodule_patches with the real Spark and Delta.

One pipeline for the whole module (building it once keeps the file to a few minutes): a synthetic
cohort (3 patients, 128², 48 slices; one gantry-tilted series; a DICOM RTSTRUCT drawn around one
nodule) and the real TCIA series Lung_Dx-A0002 are ingested (de-identified) → volumes → lungs →
nodules (the cohort's annotations.csv, a CSV row for a series that is not in the lake, the real
series' VOC boxes, the RTSTRUCT from bronze) → patches; then lungs, nodules and patches run a
second time. Answers come from the cohort's manifest (true centres and diameters) and from the
VOC files; the annotation files name the ORIGINAL UIDs, the lake the de-identified ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REAL_SERIES = "dicom/ct_series/Lung_Dx-A0002_series3_B40f"
REAL_VOC = "dicom/ct_series/annotations_voc_xml/A0002"
RT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def write_rtstruct(path: Path, series_dir: Path, nodule: dict) -> None:
    """An RTSTRUCT (one GTV ROI) with a 48-gon around ``nodule`` (manifest: centre (z, y, x) mm,
    diameter) on every slice plane of the ORIGINAL series in ``series_dir`` that cuts it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series_dir.glob("*.dcm"))]
    ref = slices[0]
    cz, cy, cx = nodule["center_zyx_mm"]
    r = nodule["diameter_mm"] / 2.0
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = RT_SOP_CLASS, uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RT_SOP_CLASS, uid, "RTSTRUCT"
    for kw in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
               "FrameOfReferenceUID", "StudyID", "AccessionNumber", "PatientBirthDate"):
        if kw in ref:
            setattr(ds, kw, getattr(ref, kw))
    ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), 99
    series = Dataset()
    series.SeriesInstanceUID = ref.SeriesInstanceUID
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", ref.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = ref.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, "GTV nodule", ref.FrameOfReferenceUID
    ds.StructureSetROISequence = [roi]
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = 1, 1, "GTV"
    ds.RTROIObservationsSequence = [obs]
    contours = []
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    for s in slices:
        z = float(s.ImagePositionPatient[2])
        if abs(z - cz) >= r:
            continue
        rk = np.sqrt(r * r - (z - cz) ** 2)
        c = Dataset()
        c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(t)
        c.ContourData = [f"{v:.4f}" for p in zip(cx + rk * np.cos(t), cy + rk * np.sin(t), [z] * len(t),
                                                 strict=True) for v in p]
        contours.append(c)
    item = Dataset()
    item.ReferencedROINumber, item.ContourSequence = 1, contours
    ds.ROIContourSequence = [item]
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def write_seg(path: Path, series_dir: Path, nodule: dict) -> None:
    """A BINARY DICOM SEG (one segment) of ``nodule``: on every slice plane of the ORIGINAL series
    that cuts it, a frame with the pixels whose centres lie inside the sphere."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series_dir.glob("*.dcm"))]
    ref = slices[0]
    cz, cy, cx = nodule["center_zyx_mm"]
    r = nodule["diameter_mm"] / 2.0
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = SEG_SOP_CLASS, uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SEG_SOP_CLASS, uid, "SEG"
    for kw in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
               "FrameOfReferenceUID", "StudyID", "AccessionNumber", "PatientBirthDate"):
        if kw in ref:
            setattr(ds, kw, getattr(ref, kw))
    ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), 98
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = ref.SeriesInstanceUID, []
    ds.ReferencedSeriesSequence = [series]
    ds.SegmentationType, ds.Rows, ds.Columns = "BINARY", ref.Rows, ref.Columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    segment = Dataset()
    segment.SegmentNumber, segment.SegmentLabel, segment.SegmentAlgorithmType = 1, "nodule", "MANUAL"
    ds.SegmentSequence = [segment]
    shared, ori, px = Dataset(), Dataset(), Dataset()
    ori.ImageOrientationPatient = list(ref.ImageOrientationPatient)
    px.PixelSpacing, px.SliceThickness = list(ref.PixelSpacing), ref.SliceThickness
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [ori], [px]
    ds.SharedFunctionalGroupsSequence = [shared]
    dy, dx = (float(v) for v in ref.PixelSpacing)
    jj, ii = np.mgrid[: ref.Rows, : ref.Columns]
    frames, per_frame = [], []
    for s in slices:
        x0, y0, z = (float(v) for v in s.ImagePositionPatient)
        inside = ((x0 + ii * dx - cx) ** 2 + (y0 + jj * dy - cy) ** 2) <= r * r - (z - cz) ** 2
        if not inside.any():
            continue
        frames.append(inside)
        item, pos, ident = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient, ident.ReferencedSegmentNumber = list(s.ImagePositionPatient), 1
        item.PlanePositionSequence, item.SegmentIdentificationSequence = [pos], [ident]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence, ds.NumberOfFrames = per_frame, len(frames)
    packed = np.packbits(np.stack(frames).ravel().astype(np.uint8), bitorder="little").tobytes()
    ds.PixelData = packed + b"\0" * (len(packed) % 2)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def table(spark, cfg, name: str) -> list[dict]:
    return [r.asDict() for r in spark.read.format("delta").load(cfg.table_path(name)).collect()]


@pytest.fixture(scope="module")
def gold(spark, cfg, shared_data, tmp_path_factory):
    """Run the pipeline twice on one lake; everything the tests look at."""
    from ctlake.dicom.deid import remap_uid
    from ctlake.ingest import bronze
    from ctlake.ingest.keys import site_key
    from ctlake.process.lungs import build_lung_masks
    from ctlake.process.nodules import build_nodules
    from ctlake.process.patches import build_patches
    from ctlake.process.volumes import build_volumes
    from ctlake.synth import SynthConfig, generate_cohort

    lake = Path(cfg.lake_root) / "t" / "test_gold_jobs"
    shutil.rmtree(lake, ignore_errors=True)
    gcfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake / "lake")))
    tmp = tmp_path_factory.mktemp("gold")
    inbox = tmp / "inbox"                       # one folder, one ingest: cohort, RTSTRUCT, real series
    cohort = inbox / "cohort"
    manifest = generate_cohort(cohort, SynthConfig(
        patients=3, size=128, slices=48, seed=3, fov_mm=(200.0, 220.0), slice_thickness_mm=(1.0, 2.5),
        nodules=(2, 3), nodule_diameter_mm=(6.0, 20.0), edge_cases=("gantry_tilt",)))
    clean = [s for s in manifest.ct_series() if not s.edge_cases]
    spheres = sorted(((s, n) for s in clean for n in s.nodules if n["texture"] == "solid" and n["margin"] == "smooth"),
                     key=lambda sn: -sn[1]["diameter_mm"])
    (rt_series, rt_nodule), (seg_series, seg_nodule) = spheres[:2]
    write_rtstruct(inbox / "objects" / "rt.dcm", cohort / rt_series.directory, rt_nodule)
    write_seg(inbox / "objects" / "seg.dcm", cohort / seg_series.directory, seg_nodule)
    shutil.copytree(shared_data / REAL_SERIES, inbox / "real")
    bad_csv = tmp / "elsewhere.csv"
    bad_csv.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm,malignancy\n1.2.826.0.1.999.1,10,20,30,8,4\n")

    bronze.ingest_folder(spark, gcfg, str(inbox))
    volumes = build_volumes(spark, gcfg)
    runs = {}
    for i in (1, 2):
        runs[f"lungs{i}"] = build_lung_masks(spark, gcfg)
        runs[f"nodules{i}"] = build_nodules(spark, gcfg, luna16=[cohort / "annotations.csv", bad_csv],
                                            voc=[shared_data / REAL_VOC])
        runs[f"patches{i}"] = build_patches(spark, gcfg)
        if i == 1:
            counts = {t: spark.read.format("delta").load(gcfg.table_path(t)).count()
                      for t in ("silver.lung_masks", "gold.nodules", "gold.nodule_patches")}
    key = site_key(gcfg)
    return {"cfg": gcfg, "manifest": manifest, "key": key, "volumes": volumes, "runs": runs, "counts": counts,
            "lake_uid": {s.series_uid: remap_uid(s.series_uid, key) for s in manifest.ct_series()},
            "rtstruct": (rt_series, rt_nodule), "seg": (seg_series, seg_nodule), "bad_csv": bad_csv,
            "series": {r["series_instance_uid"]: r for r in table(spark, gcfg, "silver.ct_series")},
            "lungs": table(spark, gcfg, "silver.lung_masks"),
            "nodules": table(spark, gcfg, "gold.nodules"),
            "patches": table(spark, gcfg, "gold.nodule_patches")}


def test_gantry_tilt_is_read_from_the_header_in_the_spark_path(gold):
    """The tilted series' GantryDetectorTilt reaches silver.ct_series (qc_json) and is resampled."""
    (tilted,) = gold["manifest"].with_edge_case("gantry_tilt")
    row = gold["series"][gold["lake_uid"][tilted.series_uid]]
    assert row["status"] == "built" and "GANTRY_TILT" in row["qc_flags"]
    assert json.loads(row["qc_json"])["gantry_tilt_deg"] == pytest.approx(tilted.gantry_tilt_deg, abs=0.05)
    assert row["decisions"]["GANTRY_TILT"] == "resample"


def test_lung_masks_on_the_volume_slabs(spark, gold):
    from ctlake.lake import codec
    from ctlake.process.lungs import read_lung_mask
    from ctlake.process.volumes import read_volume

    cfg = gold["cfg"]
    built = {u for u, r in gold["series"].items() if r["status"] == "built"}
    assert len(built) == 4                                 # 3 synthetic + the real series
    assert {r["series_instance_uid"] for r in gold["lungs"]} == built
    assert all(r["status"] == "ok" for r in gold["lungs"])
    vol_ranges = {(r.series_instance_uid, r.slab_index): (r.z0, r.z1) for r in spark.read.format("delta")
                  .load(cfg.table_path("silver.ct_volumes")).select("series_instance_uid", "slab_index", "z0", "z1")
                  .collect()}
    assert {(r["series_instance_uid"], r["slab_index"]): (r["z0"], r["z1"]) for r in gold["lungs"]} == vol_ranges
    for r in gold["lungs"]:
        slab = codec.decode(r["data"])
        assert slab.dtype == np.uint8 and list(slab.shape) == r["slab_shape_zyx"] and slab.max() <= 1
        assert 50.0 < r["lung_volume_ml"] < 8000.0 and r["components"] >= 1
    uid = gold["lake_uid"][gold["manifest"].ct_series()[0].series_uid]
    mask, grid = read_lung_mask(spark, cfg, uid)
    hu, vgrid = read_volume(spark, cfg, uid)
    assert grid == vgrid and mask.shape == hu.shape and mask.dtype == np.bool_
    ml = mask.sum() * np.prod(grid.spacing_zyx_mm) / 1000.0
    assert ml == pytest.approx(next(r for r in gold["lungs"] if r["series_instance_uid"] == uid)["lung_volume_ml"])
    assert np.median(hu[mask]) < -700                      # aerated lung inside the mask


def test_nodules_from_the_luna16_csv(gold):
    """Every CSV nodule is found within one voxel of its centre; spheres measure within 1 mm."""
    from ctlake.imaging.grid import Grid
    from ctlake.lake import codec

    by_key = {(r["series_instance_uid"], r["source"], tuple(np.round(r["centre_xyz_mm"], 2))): r
              for r in gold["nodules"] if r["source"] == "luna16" and r["centre_xyz_mm"] is not None}
    checked = spheres = 0
    for s in gold["manifest"].ct_series():
        uid = gold["lake_uid"][s.series_uid]
        patient = gold["series"][uid]["patient_pseudo_id"]
        for n in s.nodules:
            z, y, x = n["center_zyx_mm"]
            row = by_key[(uid, "luna16", tuple(np.round([x, y, z], 2)))]
            assert row["status"] == "ok", row["error_detail"]
            assert row["patient_pseudo_id"] == patient and patient.startswith("P-")
            assert row["malignancy"] == n["malignancy"] and row["attributes"]["texture"] == n["texture"]
            assert not any(k.lower().startswith("patient") for k in row["attributes"])   # original ids stay out
            grid = Grid(tuple(gold["series"][uid]["shape_zyx"]), tuple(row["spacing_zyx_mm"]),
                        tuple(gold["series"][uid]["origin_xyz_mm"]), tuple(gold["series"][uid]["direction"]))
            truth = grid.world_xyz_to_index_zyx(np.array([x, y, z]))
            assert np.abs(np.asarray(row["centre_zyx_vox"]) - truth).max() <= 1.0, (n, row["centre_zyx_vox"])
            np.testing.assert_allclose(row["annotated_centre_zyx_vox"], truth, atol=1e-6)
            mask = codec.decode(row["mask_data"])
            assert mask.dtype == np.uint8 and list(mask.shape) == row["mask_shape_zyx"]
            assert int(mask.sum()) == row["mask_voxels"] and row["mask_codec"] == "CTT1"
            assert row["volume_mm3"] == pytest.approx(row["mask_voxels"] * np.prod(row["spacing_zyx_mm"]))
            assert row["mask_method"] == "otsu" and row["annotated_diameter_mm"] == pytest.approx(n["diameter_mm"])
            if n["texture"] == "solid" and n["margin"] == "smooth":
                assert row["diameter_mm"] == pytest.approx(n["diameter_mm"], abs=1.0), (n, row["diameter_mm"])
                spheres += 1
            checked += 1
    assert checked == len(gold["manifest"].annotations) >= 6 and spheres >= 2


def test_annotation_of_a_series_not_in_the_lake_is_a_failed_row(gold):
    from ctlake.dicom.deid import remap_uid

    (row,) = [r for r in gold["nodules"] if r["status"] == "failed"]
    assert row["error_code"] == "SERIES_NOT_IN_LAKE" and "remap_uid" in row["error_detail"]
    assert row["series_instance_uid"] == remap_uid("1.2.826.0.1.999.1", gold["key"])   # never the original UID
    assert row["source"] == "luna16" and row["mask_data"] is None and row["malignancy"] == 4.0


def test_voc_boxes_of_the_real_series(gold, shared_data):
    """The 10 VOC boxes (files named by ORIGINAL SOP UIDs) become one tumour on the de-identified series."""
    from ctlake.dicom.deid import remap_uid

    run = gold["runs"]["nodules1"]
    assert run["voc_files"] == 18 and run["voc_unmatched_files"] == 8 and run["voc_lesions"] == 1
    (row,) = [r for r in gold["nodules"] if r["source"] == "voc"]
    assert row["status"] == "ok", row["error_detail"]
    stems = sorted(p.stem for p in (shared_data / REAL_VOC).glob("*.xml"))
    lake_sops = row["attributes"]["sop_instance_uids"].split()
    assert len(lake_sops) == 10 and set(lake_sops) <= {remap_uid(s, gold["key"]) for s in stems}
    assert not any(s in json.dumps(row, default=str) for s in stems)          # no original UID in the lake
    lo, hi = np.asarray(row["annotated_box_lo_xyz_mm"]), np.asarray(row["annotated_box_hi_xyz_mm"])
    assert lo[2] == pytest.approx(172.0) and hi[2] == pytest.approx(252.0)    # 10 slices of 8 mm, ± half a step
    half = (hi - lo) / 2 * 1.15 + 1.0
    assert np.all(np.abs(np.asarray(row["measured_centre_xyz_mm"]) - (lo + hi) / 2) <= half)
    assert 20.0 < row["diameter_mm"] < row["max_diameter_mm"] and row["mask_method"] == "otsu"
    assert row["malignancy"] is None and row["annotated_diameter_mm"] is None


@pytest.mark.parametrize(("source", "method", "roi_type"), [("rtstruct", "contour", "GTV"), ("seg", "seg", None)])
def test_dicom_objects_in_bronze_become_nodules(gold, source, method, roi_type):
    """An RTSTRUCT and a SEG ingested with the series (contours / frames on the original slice planes)
    give a mask of the right size at the right place on the 1 mm grid."""
    series, nodule = gold[source]
    uid = gold["lake_uid"][series.series_uid]
    (row,) = [r for r in gold["nodules"] if r["source"] == source]
    assert row["status"] == "ok", row["error_detail"]
    assert row["series_instance_uid"] == uid and row["mask_method"] == method
    assert row["attributes"].get("roi_type") == roi_type
    csv_row = next(r for r in gold["nodules"] if r["series_instance_uid"] == uid and r["source"] == "luna16"
                   and r["annotated_diameter_mm"] == pytest.approx(nodule["diameter_mm"]))
    assert np.abs(np.subtract(row["centre_zyx_vox"], csv_row["annotated_centre_zyx_vox"])).max() <= 1.0
    assert row["diameter_mm"] == pytest.approx(nodule["diameter_mm"], abs=1.5), row["diameter_mm"]
    assert gold["runs"]["nodules1"]["dicom_objects"] == 2


def test_patches(gold):
    from ctlake.lake.schemas import NODULE_PATCHES

    cfg = gold["cfg"]
    p = cfg.imaging.patches
    patches, nodules = gold["patches"], {r["nodule_id"]: r for r in gold["nodules"]}
    assert patches and set(patches[0]) == set(NODULE_PATCHES.fieldNames())
    sizes = dict(zip(p.size_names, p.sizes_zyx, strict=True))
    ok = [n for n in nodules.values() if n["status"] == "ok"]
    nodule_patches = [q for q in patches if q["kind"] == "nodule"]
    assert {q["nodule_id"] for q in nodule_patches} <= {n["nodule_id"] for n in ok}
    assert len({q["patch_id"] for q in nodule_patches}) >= 3 * (len(ok) - 2)   # RTSTRUCT / SEG may share a centre
    for q in patches:
        shape = tuple(q["shape_zyx"])
        assert shape == sizes[q["size_name"]]
        image = np.frombuffer(q["image"], dtype="<i2").reshape(shape)
        mask = np.frombuffer(q["mask"], dtype=np.uint8).reshape(shape)
        assert image.min() >= -1000 and image.max() <= 400 and mask.max() <= 1
        centre = tuple(s // 2 for s in shape)
        if q["kind"] == "nodule":
            n = nodules[q["nodule_id"]]
            assert q["label"] == 1 and mask[centre] == 1 and q["malignancy"] == n["malignancy"]
            assert q["malignant"] == (None if n["malignancy"] is None else int(n["malignancy"] >= 3))
            assert q["centre_zyx_vox"] == [int(np.floor(v + 0.5)) for v in n["centre_zyx_vox"]]
        else:
            assert q["label"] == 0 and q["nodule_id"] is None and q["malignant"] == 0
    # negatives: per annotated series, inside the lung, away from every nodule
    negatives = [q for q in patches if q["kind"] == "negative" and q["size_name"] == p.size_names[0]]
    assert len(negatives) == 4 * p.negatives_per_series
    for q in negatives:
        c = np.asarray(q["centre_zyx_vox"], dtype=float)
        for n in ok:
            if n["series_instance_uid"] != q["series_instance_uid"]:
                continue
            reach = p.negative_min_distance_mm + max(n["diameter_mm"], n["max_diameter_mm"],
                                                     n["annotated_diameter_mm"] or 0.0) / 2.0
            assert np.linalg.norm((c - np.asarray(n["centre_zyx_vox"])) * n["spacing_zyx_mm"]) >= reach - 1e-6
    # a patient is in one split only, and splits follow the configured names
    split_of_patient: dict[str, set[str]] = {}
    for q in patches:
        split_of_patient.setdefault(q["patient_pseudo_id"], set()).add(q["split"])
    assert all(len(s) == 1 for s in split_of_patient.values()) and len(split_of_patient) == 4
    assert {q["split"] for q in patches} <= set(p.split_names)


def test_second_run_adds_nothing_and_runs_are_recorded(spark, gold):
    runs, counts, cfg = gold["runs"], gold["counts"], gold["cfg"]
    assert runs["lungs1"]["ok"] == 4 and runs["lungs2"]["series"] == 0
    first = runs["nodules1"]
    assert first["ok"] == len(gold["manifest"].annotations) + 3 and first["failed"] == 1   # + VOC, RTSTRUCT, SEG
    assert runs["nodules2"]["ok"] == 0 and runs["nodules2"]["failed"] == 0
    assert runs["nodules2"]["skipped_existing"] == first["annotations"]
    assert runs["patches1"]["written"] == counts["gold.nodule_patches"] > 0
    assert runs["patches2"]["written"] == 0 and runs["patches2"]["series"] == 0
    assert {t: spark.read.format("delta").load(cfg.table_path(t)).count() for t in counts} == counts
    rows = spark.read.format("delta").load(cfg.table_path("ops.pipeline_runs")).collect()
    jobs = [r.job for r in rows]
    for job in ("build_lung_masks", "build_nodules", "build_patches"):
        assert jobs.count(job) == 2
    patches_run = next(r for r in rows if r.run_id == runs["patches1"]["run_id"])
    assert patches_run.status == "succeeded" and patches_run.rows_out == counts["gold.nodule_patches"]
    assert patches_run.output_versions["gold.nodule_patches"] >= 0


def test_process_volumes_flags_override_the_config(cfg):
    """`ctlake process volumes` takes imaging.volume / imaging.series from the profile unless a flag is given."""
    from ctlake.cli import build_parser, volume_settings
    from ctlake.config import load_config

    parser = build_parser()
    tilt_refused = load_config("test", conf_dir=Path(cfg.project_root) / "conf",
                               environ={"CTLAKE__IMAGING__VOLUME__ORDER": "0",
                                        "CTLAKE__IMAGING__SERIES__POLICY__GANTRY_TILT": "refuse",
                                        "CTLAKE__IMAGING__SERIES__SPACING_RTOL": "0.2"})
    plain = volume_settings(tilt_refused, parser.parse_args(["process", "volumes"]))
    assert plain.order == 0 and plain.spacing_zyx_mm == (1.0, 1.0, 1.0) and plain.window_hu == (-1000.0, 400.0)
    assert plain.policy.gantry_tilt == "refuse" and dict(plain.tolerances)["spacing_rtol"] == 0.2
    flags = volume_settings(tilt_refused, parser.parse_args(
        ["process", "volumes", "--spacing", "2", "--window=-1100,300", "--order", "1"]))
    assert flags.spacing_zyx_mm == (2.0, 2.0, 2.0) and flags.window_hu == (-1100.0, 300.0) and flags.order == 1
    assert flags.policy.gantry_tilt == "refuse"
    none = volume_settings(tilt_refused, parser.parse_args(["process", "volumes", "--window", "none"]))
    assert none.window_hu is None
    assert isinstance(parser.parse_args(["process", "nodules", "--luna16", "a.csv", "--luna16", "b.csv"]),
                      argparse.Namespace)
