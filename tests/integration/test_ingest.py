"""Ingestion against the real broker, Spark and Delta: edge → Kafka → bronze, exactly once."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pydicom
import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def icfg(cfg, lake_tmp):
    """The test profile with a fresh lake for this test."""
    return dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")))


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _bronze(spark, cfg):
    return spark.read.format("delta").load(cfg.table_path("bronze.dicom_instances"))


def _quarantine(spark, cfg):
    return spark.read.format("delta").load(cfg.table_path("bronze.quarantine"))


def test_cohort_sent_and_streamed_exactly(spark, icfg, kafka, tmp_path):
    from ctlake.dicom.deid import remap_uid
    from ctlake.ingest import bronze
    from ctlake.ingest.keys import site_key
    from ctlake.ingest.producer import send
    from ctlake.synth import SynthConfig, generate_cohort

    manifest = generate_cohort(tmp_path / "cohort", SynthConfig(patients=2, size=32, slices=8, seed=3,
                                                                edge_cases=("compressed",)))
    topic = _topic("ingest-e2e")
    rep = send(icfg, tmp_path / "cohort", topic=topic, progress=False)
    n_files = sum(len(s.files) for s in manifest.series)
    # annotations.csv and manifest.json are not DICOM: refused at the edge, announced, not lost
    assert rep.files == n_files + 2 and rep.sent == n_files and rep.refused == {"NOT_DICOM": 2}
    bronze.stream(spark, icfg, topic=topic, available_now=True)
    rows = _bronze(spark, icfg).select("sop_instance_uid", "content_sha256", "dicom_bytes",
                                       "patient_pseudo_id").collect()
    assert len(rows) == n_files
    assert {r.content_sha256 for r in rows} == set(rep.digests)
    notices = _quarantine(spark, icfg).collect()
    assert [(r.stage, r.error_code, r.dicom_bytes) for r in notices] == [("edge", "NOT_DICOM", None)] * 2
    # a replay adds nothing
    bronze.stream(spark, icfg, topic=topic, available_now=True)
    assert _bronze(spark, icfg).count() == n_files
    # the pixels in bronze equal the source's, instance by instance (UIDs are remapped by key)
    key = site_key(icfg)
    by_uid = {r.sop_instance_uid: r for r in rows}
    for series in manifest.series:
        for f in series.files:
            src = pydicom.dcmread(tmp_path / "cohort" / f.path)
            row = by_uid[remap_uid(f.sop_instance_uid, key)]
            got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(row.dicom_bytes))
            np.testing.assert_array_equal(got.pixel_array, src.pixel_array)
            assert row.patient_pseudo_id and row.patient_pseudo_id != src.PatientID
    runs = spark.read.format("delta").load(icfg.table_path("ops.pipeline_runs")) \
        .filter("job = 'ingest_stream'").collect()
    assert sum(r.rows_out for r in runs) == n_files
    # derived views and typed keyword columns, computed from bronze on read
    import datetime as dt

    from ctlake.ingest import views

    series = {r.series_instance_uid: r for r in views.series_view(spark, icfg).collect()}
    assert len(series) == len(manifest.series) == 2
    assert sorted(r.instances for r in series.values()) == sorted(len(s.files) for s in manifest.series)
    assert all(r.modalities == ["CT"] and r.last_z_mm > r.first_z_mm for r in series.values())
    assert views.patient_view(spark, icfg).count() == 2
    assert [r.series for r in views.study_view(spark, icfg).collect()] == [1, 1]
    typed = views.keyword_columns(spark, icfg, ["PatientName", "StudyDate", "PixelSpacing", "Rows", "KVP",
                                                 "ConvolutionKernel", "PatientIdentityRemoved"]).collect()
    assert len(typed) == n_files
    for r in typed:
        assert r.PatientName.family.startswith("P-") and isinstance(r.StudyDate, dt.date)
        assert len(r.PixelSpacing) == 2 and all(v > 0 for v in r.PixelSpacing)
        assert r.Rows == 32 and r.KVP > 0 and r.PatientIdentityRemoved == "YES"


def test_every_sample_file_is_ingested_or_quarantined(spark, icfg, shared_data):
    from ctlake.ingest import bronze

    samples = shared_data / "dicom" / "samples"
    files = [p for p in samples.rglob("*") if p.is_file()]
    assert len(files) >= 15, f"expected pydicom's sample files under {samples}"
    summary = bronze.ingest_folder(spark, icfg, str(samples))
    assert summary["bronze"] + summary["quarantine"] == len(files)
    q = _quarantine(spark, icfg).collect()
    assert all(r.error_code and r.error_message and r.stage for r in q)
    # nothing that failed the gate or could not be parsed keeps its bytes
    assert all(r.dicom_bytes is None for r in q if r.stage in ("parse", "deid_gate", "edge"))
    by_code = {r.error_code for r in q}
    assert {"NOT_DICOM", "DUPLICATE_SOP_INSTANCE"} <= by_code, by_code
    bronze_rows = _bronze(spark, icfg).collect()
    assert len(bronze_rows) == summary["bronze"] >= 2
    # Two pairs share a SOPInstanceUID with other bytes: 693_UNCI and its lossy JPEG 2000 copy (the
    # lossless one is kept), and CT_small with no_meta (the same data set without file meta). The
    # second of each pair is quarantined as a duplicate, with its bytes.
    lossy = "1.2.840.10008.1.2.4.91"
    assert all(r.transfer_syntax_uid != lossy for r in bronze_rows)
    dup = [r for r in q if r.error_code == "DUPLICATE_SOP_INSTANCE"]
    assert len(dup) == 2 and all(r.dicom_bytes for r in dup)
    assert any(lossy in str(r.dicom_bytes[:400]) for r in dup)


def test_phi_never_reaches_bronze_and_raw_files_are_refused(spark, icfg, kafka, tmp_path):
    from ctlake.ingest import bronze
    from ctlake.ingest.producer import send
    from ctlake.synth import SynthConfig, generate_cohort

    manifest = generate_cohort(tmp_path / "phi", SynthConfig(patients=2, size=32, slices=6, seed=5,
                                                             edge_cases=("phi",), edge_case_series="all"))
    # times alone are not identifying and the modified-dates option keeps them; everything else goes
    planted = {v["value"] for s in manifest.series for v in s.phi_values if v["path"] != "StudyTime"}
    assert len(planted) >= 10
    topic = _topic("ingest-phi")
    send(icfg, tmp_path / "phi", topic=topic, progress=False)
    raw = send(icfg, tmp_path / "phi", topic=topic, progress=False, deidentify=False)
    assert raw.sent == sum(len(s.files) for s in manifest.series)
    bronze.stream(spark, icfg, topic=topic, available_now=True)
    df = _bronze(spark, icfg)
    n = df.count()
    assert n == raw.sent  # the de-identified copies; every raw copy was refused
    q = _quarantine(spark, icfg).filter("stage = 'deid_gate'")
    assert q.count() == raw.sent
    assert q.filter("dicom_bytes IS NOT NULL").count() == 0
    # scan every bronze column (as text, header_json included) and every quarantine column
    for frame in (df, _quarantine(spark, icfg)):
        for row in frame.collect():
            text = " ".join(str(v) for k, v in row.asDict().items() if k != "dicom_bytes")
            blob = row["dicom_bytes"] or b""
            for value in planted:
                assert value not in text, f"PHI {value!r} found in a lake row"
                for encoded in {value.encode(), value.encode("latin-1", "replace")}:
                    assert encoded not in blob, f"PHI {value!r} found in stored bytes"
