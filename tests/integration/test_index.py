"""The search index with the real Spark, Delta, Elasticsearch and MLflow: lake → index → search.

One small lake (a synthetic cohort with planted PHI, a gantry tilt and a missing slice; nodules and
radiomics features written from the gold schemas) is indexed under a prefix of its own on the
shared test node, and removed at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ids(spark, cfg, table: str) -> set[str]:
    from ctlake.index.model import doc_id
    from ctlake.lake import delta
    from ctlake.lake.schemas import table as decl

    key = list(decl(table).key)
    return {doc_id(r[k] for k in key) for r in delta.read(spark, cfg, table).select(*key).collect()}


def _es_ids(es, cfg, entity: str) -> set[str]:
    from ctlake.index.model import alias_of, scan_ids

    return scan_ids(es, alias_of(cfg, entity))


def _nodule_rows(series: list, now: dt.datetime) -> list[dict]:
    """Two nodules per built series: (4 mm, malignancy 2) and (9 mm, malignancy 4 for the first
    series, 3 for the others) -- so 'a nodule >= 8 mm with malignancy >= 4' is the first series only."""
    rows = []
    for i, s in enumerate(series):
        for j, (diam, mal) in enumerate([(4.0, 2.0), (9.0, 4.0 if i == 0 else 3.0)]):
            rows.append({"nodule_id": f"n{i}{j}", "series_instance_uid": s.series_instance_uid,
                         "patient_pseudo_id": s.patient_pseudo_id, "source": "luna16", "source_ref": f"row{i}{j}",
                         "status": "ok", "centre_xyz_mm": [1.0, 2.0, 3.0], "annotated_diameter_mm": diam,
                         "diameter_mm": diam + 0.1, "volume_mm3": 4.19 * (diam / 2) ** 3, "mask_voxels": 10,
                         "mask_method": "otsu", "mask_codec": "CTT1", "mask_data": b"\x00\x01mask",
                         "malignancy": mal, "attributes": {"texture": "solid"}, "run_id": "t", "built_at": now})
    return rows


def _feature_rows(nodules: list[dict], now: dt.datetime) -> list[dict]:
    rows = []
    for k, n in enumerate(nodules):
        feats = {"original_firstorder_Mean": -400.0 + 50 * k, "original_shape_MeshVolume": 100.0 * (k + 1),
                 "original_shape_Sphericity": 0.5 + 0.01 * k, "original_glcm_Contrast": float("nan"),
                 "wavelet-LLH_firstorder_Mean": float(k)}     # not a predeclared name: the dynamic template
        rows.append({"roi_id": n["nodule_id"], "params_hash": "p1", "series_instance_uid": n["series_instance_uid"],
                     "patient_pseudo_id": n["patient_pseudo_id"], "status": "ok", "features": feats,
                     "ibsi_codes": {"original_firstorder_Mean": "Q4LE"}, "feature_count": len(feats),
                     "params_json": "{}", "engine": "test", "run_id": "t", "extracted_at": now})
    return rows


@pytest.fixture(scope="module")
def lake(cfg, spark, elasticsearch, mlflow_server, tmp_path_factory):
    from ctlake.index.model import client

    prefix = f"ctlake-test-ix{uuid.uuid4().hex[:6]}"
    root = Path(cfg.lake_root) / "t" / prefix
    icfg = dataclasses.replace(
        cfg, lake=LakeConfig(root=str(root / "lake")),
        elasticsearch=dataclasses.replace(cfg.elasticsearch, index_prefix=prefix),
        mlflow=dataclasses.replace(cfg.mlflow, experiment=prefix))
    es = client(icfg.elasticsearch, icfg.index)
    yield SimpleNamespace(cfg=icfg, es=es, tmp=tmp_path_factory.mktemp("index"), data={})
    names = list(es.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True))
    if names:       # by name: the node refuses wildcard deletes
        es.indices.delete(index=",".join(names), ignore_unavailable=True)
    templates = es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*")
    for t in templates.get("index_templates", []):
        es.indices.delete_index_template(name=t["name"])
    shutil.rmtree(root, ignore_errors=True)


def test_es_down_then_catch_up_search_and_cohort(spark, lake):
    from ctlake.index import search
    from ctlake.index.indexer import index_after, index_tables
    from ctlake.ingest import bronze
    from ctlake.lake import delta
    from ctlake.lake.runs import utcnow
    from ctlake.process.volumes import build_volumes
    from ctlake.synth import SynthConfig, generate_cohort

    cfg, es = lake.cfg, lake.es
    manifest = generate_cohort(lake.tmp / "c", SynthConfig(patients=3, size=32, slices=8, seed=11,
                                                           edge_cases=("phi", "gantry_tilt", "missing_slice")))
    lake.data["phi"] = {v["value"] for s in manifest.series for v in s.phi_values if v["path"] != "StudyTime"}
    assert len(lake.data["phi"]) >= 10
    # --- Elasticsearch down: the pipeline (ingest → volumes → index step) still succeeds, nothing indexed
    down = dataclasses.replace(cfg, elasticsearch=dataclasses.replace(
        cfg.elasticsearch, url=f"http://127.0.0.1:{_closed_port()}"))
    bronze.ingest_folder(spark, down, str(lake.tmp / "c"))
    vols = build_volumes(spark, down)
    assert vols["built"] == 2 and vols["refused"] == 1
    deferred = index_after(spark, down)
    assert deferred["status"] == "deferred" and "did not answer" in deferred["error"]
    series = delta.read(spark, cfg, "silver.ct_series").filter("status = 'built'").orderBy("series_instance_uid") \
        .collect()
    now = utcnow()
    nodules = _nodule_rows(series, now)
    delta.write(spark, cfg, spark.createDataFrame(nodules, _schema("gold.nodules")), "gold.nodules")
    delta.write(spark, cfg, spark.createDataFrame(_feature_rows(nodules, now), _schema("gold.radiomics_features")),
                "gold.radiomics_features")
    assert not es.indices.exists_alias(name=f"{cfg.elasticsearch.index_prefix}-series")

    # --- back up: one run catches up; every index has exactly the lake's ids
    summary = index_tables(spark, cfg)
    assert summary["status"] == "succeeded", summary
    by = {e["entity"]: e for e in summary["entities"]}
    assert all(by[e]["mode"] == "full" for e in ("series", "nodules", "features", "quarantine", "pipeline_runs"))
    for entity, table in (("series", "silver.ct_series"), ("nodules", "gold.nodules"),
                          ("features", "gold.radiomics_features"), ("quarantine", "bronze.quarantine"),
                          ("pipeline_runs", "ops.pipeline_runs")):
        assert _es_ids(es, cfg, entity) == _ids(spark, cfg, table), entity
    # the failed index run (Elasticsearch down) is in the lake and in the index, as failed
    runs = {h["_source"]["run_id"]: h["_source"] for h in
            es.search(index=f"{cfg.elasticsearch.index_prefix}-pipeline_runs", size=100,
                      query={"term": {"job": "index_search"}})["hits"]["hits"]}
    assert sorted(r["status"] for r in runs.values()) == ["failed", "succeeded"]
    # documents: typed fields from the lake and the first DICOM instance; no bytes
    doc = es.get(index=f"{cfg.elasticsearch.index_prefix}-series", id=series[0].series_instance_uid)["_source"]
    assert doc["manufacturer"] and doc["kvp"] > 0 and doc["slice_thickness_mm"] > 0 and doc["lake_version"] >= 0
    assert len(doc["pixel_spacing_mm"]) == 2 and doc["modality"] == "CT" and "ingested_at" in doc
    ndoc = es.get(index=f"{cfg.elasticsearch.index_prefix}-nodules", id="n00")["_source"]
    assert "mask_data" not in ndoc and ndoc["attributes"] == {"texture": "solid"}
    fdoc = es.get(index=f"{cfg.elasticsearch.index_prefix}-features", id="n01|p1")["_source"]
    assert fdoc["nodule_malignancy"] == 4.0 and fdoc["nodule_diameter_mm"] == pytest.approx(9.1)
    assert "original_glcm_Contrast" not in fdoc["features"]          # NaN is not a number in JSON: left out
    mapping = next(iter(es.indices.get_mapping(index=f"{cfg.elasticsearch.index_prefix}-features").values()))
    props = mapping["mappings"]["properties"]["features"]["properties"]
    assert props["original_shape_Sphericity"]["type"] == "double"
    assert props["wavelet-LLH_firstorder_Mean"]["type"] == "double"  # added by the features.* template

    # --- search: filters, nodule criteria, query string, cohort files
    all_uids = sorted(s.series_instance_uid for s in delta.read(spark, cfg, "silver.ct_series").collect())
    assert [r["series_instance_uid"] for r in search.find_series(cfg)] == all_uids
    built = [s.series_instance_uid for s in series]
    assert [r["series_instance_uid"] for r in search.find_series(cfg, status="built")] == built
    hits = search.find_series(cfg, min_nodule_mm=8, min_malignancy=4)
    assert [r["series_instance_uid"] for r in hits] == [built[0]]
    assert len(search.find_series(cfg, min_nodule_mm=8, min_malignancy=3)) == 2
    assert search.find_series(cfg, min_nodule_mm=10) == []
    tilted = [r["series_instance_uid"] for r in search.find_series(cfg, qc_flag="GANTRY_TILT")]
    assert len(tilted) == 1 and tilted[0] in built
    assert search.find_series(cfg, qc_clean=True, qc_flag="GANTRY_TILT") == []
    maker = doc["manufacturer"]
    mine = search.find_series(cfg, manufacturer=maker.lower(), slice_thickness_mm=(0.1, 10.0))
    assert series[0].series_instance_uid in [r["series_instance_uid"] for r in mine]
    assert all(r["manufacturer"] == maker for r in mine)
    assert [r["series_instance_uid"] for r in search.find_series(cfg, "status:refused")] == \
        sorted(set(all_uids) - set(built))
    for name in ("cohort.json", "cohort.txt"):
        path = search.write_cohort(lake.tmp / name, [r["series_instance_uid"] for r in hits], cfg=cfg,
                                   query={"min_nodule_mm": 8, "min_malignancy": 4})
        assert search.read_cohort(path) == [built[0]]
        assert search.cohort_header(path)["count"] == 1
    lake.data.update(series=series, nodules=nodules, built=built)


def _schema(table: str):
    from ctlake.lake.schemas import table as decl

    return decl(table).schema


def test_incremental_updates_deletes_rejections_and_rebuilds(spark, lake, monkeypatch):
    from ctlake.index.indexer import index_tables, read_state
    from ctlake.index.model import alias_targets, parse_index
    from ctlake.lake import delta
    from ctlake.lake import schemas as S
    from ctlake.lake.runs import utcnow
    from delta.tables import DeltaTable
    from pyspark.sql import types as T

    cfg, es = lake.cfg, lake.es
    pre = cfg.elasticsearch.index_prefix
    before = {e: alias_targets(es, f"{pre}-{e}")[0] for e in ("nodules", "features")}
    # a nodule re-rated (MERGE), another deleted, new feature rows: one with an empty feature name
    now = utcnow()
    changed = dict(lake.data["nodules"][0], malignancy=5.0)
    delta.write(spark, cfg, spark.createDataFrame([changed], _schema("gold.nodules")), "gold.nodules")
    DeltaTable.forPath(spark, cfg.table_path("gold.nodules")).delete("nodule_id = 'n11'")
    new = _feature_rows([dict(lake.data["nodules"][0], nodule_id="x1"), dict(lake.data["nodules"][0], nodule_id="x2")],
                        now)
    new[1]["features"] = {"": 1.0, "original_firstorder_Mean": 3.0}
    delta.write(spark, cfg, spark.createDataFrame(new, _schema("gold.radiomics_features")), "gold.radiomics_features")
    summary = index_tables(spark, cfg, ["gold.nodules", "features"])
    by = {e["entity"]: e for e in summary["entities"]}
    assert by["nodules"]["mode"] == "incremental" and by["nodules"]["docs"] == 1 and by["nodules"]["deleted"] == 1
    assert by["features"]["mode"] == "incremental" and by["features"]["rejected"] == 1
    assert {e: alias_targets(es, f"{pre}-{e}")[0] for e in before} == before     # same indices, updated in place
    assert _es_ids(es, cfg, "nodules") == _ids(spark, cfg, "gold.nodules")
    assert "n11" not in _es_ids(es, cfg, "nodules")
    # the lookup changed: the features document of n00 carries the new rating
    assert es.get(index=f"{pre}-features", id="n00|p1")["_source"]["nodule_malignancy"] == 5.0
    assert es.get(index=f"{pre}-features", id="n11|p1")["_source"].get("nodule_malignancy") is None
    # the refused document is reported with Elasticsearch's reason; the rest are indexed
    assert _es_ids(es, cfg, "features") == _ids(spark, cfg, "gold.radiomics_features") - {"x2|p1"}
    rej = delta.read(spark, cfg, "ops.index_rejections").collect()
    assert [(r.entity, r.doc_id, r.table) for r in rej] == [("features", "x2|p1", "gold.radiomics_features")]
    assert "empty" in rej[0].reason.lower() and rej[0].status == 400 and rej[0].error_type
    state = {(r["entity"], r["table"]): r for r in read_state(spark, cfg)}
    assert state[("features", "gold.nodules")]["version"] == delta.version(spark, cfg.table_path("gold.nodules"))
    # nothing new: nothing done
    again = index_tables(spark, cfg, ["nodules", "features"])
    assert {e["entity"]: e["status"] for e in again["entities"]} == {"nodules": "unchanged", "features": "unchanged"}

    # a table written without the change data feed (by a tool other than ctlake): turned on, indexed in full
    preds = [{"patch_id": f"p{i}", "model_name": "m", "model_version": "1", "score": i / 10, "predicted_label": i % 2,
              "threshold": 0.5, "run_id": "t", "predicted_at": now} for i in range(5)]
    frame = spark.createDataFrame(preds, _schema("gold.predictions"))
    frame.write.format("delta").save(cfg.table_path("gold.predictions"))
    frame.limit(1).write.format("delta").mode("append").save(cfg.table_path("gold.predictions"))  # a key twice
    # and a column added in the schemas module: a new mapping, a new index, the alias swapped, the old one gone
    decl = S.TABLES["gold.nodules"]
    grown = dataclasses.replace(decl, schema=T.StructType([*decl.schema.fields,
                                                           T.StructField("reader_count", T.IntegerType(), True)]))
    monkeypatch.setitem(S.TABLES, "gold.nodules", grown)
    old = alias_targets(es, f"{pre}-nodules")[0]
    by = {e["entity"]: e for e in index_tables(spark, cfg, ["predictions", "nodules"])["entities"]}
    assert by["predictions"]["mode"] == "full" and by["predictions"]["docs"] == 6
    assert _es_ids(es, cfg, "predictions") == {f"p{i}|m|1" for i in range(5)}
    detail = DeltaTable.forPath(spark, cfg.table_path("gold.predictions")).detail().first()
    assert detail.properties.get("delta.enableChangeDataFeed") == "true"
    res = by["nodules"]
    new_index = alias_targets(es, f"{pre}-nodules")[0]
    assert res["mode"] == "full" and new_index != old and parse_index(new_index)[0] != parse_index(old)[0]
    assert not es.indices.exists(index=old)
    templates = es.indices.get_index_template(name=f"{pre}-nodules-v*")["index_templates"]
    assert [t["name"] for t in templates] == [f"{pre}-nodules-v{parse_index(new_index)[0]}"]
    props = next(iter(es.indices.get_mapping(index=new_index).values()))["mappings"]["properties"]
    assert props["reader_count"] == {"type": "integer"} and "mask_data" not in props
    assert _es_ids(es, cfg, "nodules") == _ids(spark, cfg, "gold.nodules")
    monkeypatch.undo()
    # --full with the same mapping: the next generation of the same hash
    old = alias_targets(es, f"{pre}-quarantine")[0]
    index_tables(spark, cfg, ["quarantine"], full=True)
    new_index = alias_targets(es, f"{pre}-quarantine")[0]
    assert parse_index(new_index) == (parse_index(old)[0], parse_index(old)[1] + 1)
    assert _es_ids(es, cfg, "quarantine") == _ids(spark, cfg, "bronze.quarantine")


def test_phi_scan_kibana_fields_and_dashboard_aggregations(spark, lake):
    from ctlake.index import aggs, kibana
    from ctlake.index.entities import ENTITIES
    from ctlake.index.model import alias_of, iter_docs

    cfg, es = lake.cfg, lake.es
    # PHI: the values planted in the DICOM headers appear in no document of any index
    planted = lake.data["phi"]
    scanned = 0
    for ent in ENTITIES:
        for hit in iter_docs(es, alias_of(cfg, ent)):
            text = json.dumps(hit["_source"], ensure_ascii=False)
            for value in planted:
                assert value not in text, f"PHI {value!r} found in {ent} document {hit['_id']}"
            scanned += 1
    assert scanned >= 20
    # every field a Kibana object aggregates on exists in the live mapping with an aggregatable type
    objects = kibana.saved_objects(cfg)
    assert {o["type"] for o in objects} == {"index-pattern", "visualization", "dashboard"}
    assert len([o for o in objects if o["type"] == "dashboard"]) == 5
    for title, fields in kibana.referenced_fields(objects).items():
        caps = es.field_caps(index=title, fields=sorted(fields))["fields"]
        for f in fields:
            assert f in caps, f"{title}: {f} is not in the live mapping"
            assert all(c["aggregatable"] for c in caps[f].values()), f"{title}: {f} is not aggregatable"
    # the dashboards' aggregations agree with the index
    built = lake.data["built"]
    cat = aggs.catalog(es, cfg)
    assert cat["totals"]["series"] == 3 and cat["catalog_total"][0]["patients"] == 3
    assert sum(r["count"] for r in cat["catalog_kernel"]) == 3
    dq = aggs.data_quality(es, cfg)
    assert {r["key"]: r["count"] for r in dq["dq_status"]} == {"built": 2, "refused": 1}
    assert any(r["flag"] == "GANTRY_TILT" and r["rate"] == pytest.approx(1 / 3) for r in dq["qc_flag_rates"])
    assert sum(r["count"] for r in dq["dq_quarantine_stage"]) == es.count(index=alias_of(cfg, "quarantine"))["count"]
    rad = aggs.radiomics(es, cfg)
    assert rad["correlation"]["n"] == rad["totals"]["features"] >= 4
    assert rad["correlation"]["pearson_r"] is not None
    maker = es.get(index=alias_of(cfg, "series"), id=built[0])["_source"]["manufacturer"]
    only = aggs.catalog(es, cfg, aggs.Filters(manufacturer=(maker.lower(),)))
    n_maker = es.count(index=alias_of(cfg, "series"), query={"term": {"manufacturer": maker}})["count"]
    assert only["totals"]["series"] == sum(r["count"] for r in only["catalog_kernel"]) == n_maker >= 1
    feats = aggs.radiomics(es, cfg, aggs.Filters(manufacturer=(maker,)))["totals"]["features"]
    assert feats == es.count(index=alias_of(cfg, "features"), query={"terms": {"series_instance_uid": [
        h["_id"] for h in es.search(index=alias_of(cfg, "series"), query={"term": {"manufacturer": maker}})[
            "hits"]["hits"]]}})["count"]
    pipes = aggs.pipelines(es, cfg)
    assert "index_search" in {r["key"] for r in pipes["pipe_duration"]}
    clicked = aggs.series_for_bucket(cfg, "catalog_kernel", cat["catalog_kernel"][0]["key"], es=es)
    assert len(clicked) == cat["catalog_kernel"][0]["count"]
    # click-through under a filter lists only the series the filtered bar counted
    kernel = only["catalog_kernel"][0]
    under = aggs.series_for_bucket(cfg, "catalog_kernel", kernel["key"], filters=aggs.Filters(manufacturer=(maker,)),
                                   es=es)
    assert len(under) == kernel["count"] and {s["manufacturer"] for s in under} == {maker}


def test_training_runs_from_mlflow(spark, lake):
    import mlflow
    from ctlake.index import aggs
    from ctlake.index.indexer import index_tables
    from mlflow.tracking import MlflowClient

    cfg, es = lake.cfg, lake.es
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    exp_id = client.create_experiment(cfg.mlflow.experiment)
    run = client.create_run(exp_id, run_name="malignancy-cnn")
    client.log_param(run.info.run_id, "lr", "0.001")
    for k, v in {"test_auc": 0.81, "test_auc_ci_low": 0.7, "test_auc_ci_high": 0.9, "val_loss": 0.4}.items():
        client.log_metric(run.info.run_id, k, v)
    client.log_metric(run.info.run_id, "test_auc", 0.83)          # the final value wins
    client.set_terminated(run.info.run_id)
    name = f"{cfg.mlflow.experiment}-model"
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    res = index_tables(spark, cfg, ["mlflow"])["entities"][0]
    assert res["status"] == "ok" and res["docs"] == 1
    doc = es.get(index=f"{cfg.elasticsearch.index_prefix}-training_runs", id=run.info.run_id)["_source"]
    assert doc["metrics"]["test_auc"] == 0.83 and doc["metrics"]["val_loss"] == 0.4
    assert doc["params"] == {"lr": "0.001"} and doc["status"] == "FINISHED"
    assert doc["model"] == [f"{name}/{mv.version}"] and doc["model_version"] == [int(mv.version)]
    runs = aggs.models(es, cfg)["runs"]
    assert runs == [{"run_id": run.info.run_id, "run_name": "malignancy-cnn", "model": [f"{name}/{mv.version}"],
                     "start_time": doc["start_time"], "status": "FINISHED", "value": 0.83, "ci_low": 0.7,
                     "ci_high": 0.9}]
    # a run deleted in MLflow leaves the index on the next sync
    client.delete_registered_model(name)
    client.delete_run(run.info.run_id)
    res = index_tables(spark, cfg, ["mlflow"])["entities"][0]
    assert res["deleted"] == 1 and es.count(index=f"{cfg.elasticsearch.index_prefix}-training_runs")["count"] == 0
