"""The index model without services: generated mappings, documents, cohort files, Kibana objects,
and the Kibana import request (against a loopback HTTP server that records it)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import math
import threading

import pytest
from ctlake.config import load_config
from ctlake.errors import ConfigError
from ctlake.index import aggs, kibana, mapping, search
from ctlake.index.entities import ENTITIES, doc_fields, entity_mapping, radiomics_feature_names
from ctlake.index.model import document, dumps, parse_index
from ctlake.lake import schemas as S
from pyspark.sql import types as T


@pytest.fixture(scope="module")
def cfg(request):
    from pathlib import Path

    root = Path(request.config.rootpath)
    return load_config("test", conf_dir=root / "conf", environ={})


def test_series_mapping_is_generated_from_the_schemas(cfg):
    m, h = entity_mapping(ENTITIES["series"], S.TABLES, cfg)
    props = m["properties"]
    assert m["dynamic"] == "strict" and len(h) == 8
    # every column of silver.ct_series, with the type its Spark type gives
    for f in S.CT_SERIES.fields:
        assert f.name in props, f.name
    assert props["series_instance_uid"] == {"type": "keyword", "ignore_above": 4096}
    assert props["qc_flags"]["type"] == "keyword" and props["slices"] == {"type": "integer"}
    assert props["source_spacing_zyx_mm"] == {"type": "double"} and props["built_at"] == {"type": "date"}
    assert props["decisions"] == {"type": "flattened"} and props["refusal_detail"] == {"type": "text"}
    # the first DICOM instance's columns, typed as bronze declares them; computed and common fields
    assert props["kvp"] == {"type": "double"} and props["study_date"] == {"type": "date"}
    assert props["qc_clean"] == {"type": "boolean"} and props["lake_version"] == {"type": "long"}


def test_a_column_added_to_a_table_appears_in_the_mapping(cfg, monkeypatch):
    before, h0 = entity_mapping(ENTITIES["nodules"], S.TABLES, cfg)
    decl = S.TABLES["gold.nodules"]
    grown = dataclasses.replace(decl, schema=T.StructType([*decl.schema.fields,
                                                           T.StructField("lobe", T.StringType(), True)]))
    monkeypatch.setitem(S.TABLES, "gold.nodules", grown)
    after, h1 = entity_mapping(ENTITIES["nodules"], S.TABLES, cfg)
    assert "lobe" not in before["properties"] and after["properties"]["lobe"]["type"] == "keyword"
    assert h1 != h0
    # bytes never: the mask is left out
    assert "mask_data" not in after["properties"] and "mask_codec" in after["properties"]


def test_feature_map_is_numeric_fields_and_everything_else_strict(cfg):
    m, _ = entity_mapping(ENTITIES["features"], S.TABLES, cfg)
    feats = m["properties"]["features"]
    names = radiomics_feature_names()
    assert len(names) >= 100 and "original_firstorder_Mean" in names
    assert feats["subobjects"] is False and feats["dynamic"] == "true"
    assert set(feats["properties"]) == set(names)
    assert all(v == {"type": "double"} for v in feats["properties"].values())
    assert m["dynamic_templates"] == [{"features_values": {"path_match": "features.*",
                                                           "mapping": {"type": "double"}}}]
    assert m["properties"]["ibsi_codes"] == {"type": "flattened"}
    assert m["properties"]["nodule_malignancy"] == {"type": "double"}      # looked up from gold.nodules
    assert m["dynamic"] == "strict"
    # training runs: metrics with their CIs declared up front
    tm, _ = entity_mapping(ENTITIES["training_runs"], S.TABLES, cfg)
    assert {"test_auc", "test_auc_ci_low", "test_auc_ci_high"} <= set(tm["properties"]["metrics"]["properties"])


def test_type_rules():
    assert mapping.es_field("x", T.BinaryType()) is None
    assert mapping.es_field("x", T.ArrayType(T.LongType())) == {"type": "long"}
    assert mapping.es_field("error", T.StringType()) == {"type": "text"}
    nested = mapping.es_field("s", T.StructType([T.StructField("a", T.FloatType())]))
    assert nested == {"type": "object", "properties": {"a": {"type": "float"}}}
    assert mapping.es_field("m", T.MapType(T.StringType(), T.LongType()))["subobjects"] is False
    with pytest.raises(TypeError, match="no Elasticsearch mapping"):
        mapping.es_field("x", T.CalendarIntervalType())


def test_documents_are_json_without_nan_bytes_or_nulls():
    row = {"a": float("nan"), "b": 1.5, "c": None, "d": b"\x00", "e": dt.datetime(2026, 1, 2, 3, 4, 5, 678901),
           "f": dt.date(2026, 1, 2), "g": [("x", 1.0), ("y", float("inf"))], "h": [1.0, float("nan")],
           "i": {"k": "v"}, "j": dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))}
    doc = document(row)
    assert doc == {"b": 1.5, "e": "2026-01-02T03:04:05.678Z", "f": "2026-01-02", "g": {"x": 1.0},
                   "h": [1.0, None], "i": {"k": "v"}, "j": "2026-01-01T22:00:00.000Z"}
    assert json.loads(dumps(doc)) == doc
    with pytest.raises(ValueError):
        dumps({"x": math.nan})


def test_index_names_parse():
    assert parse_index("ctlake-test-series-v0a1b2c3d-12") == ("0a1b2c3d", 12)
    assert parse_index("ctlake-series") is None


def test_cohort_files_round_trip(cfg, tmp_path):
    uids = ["1.2.3", "1.2.4"]
    for name in ("c.json", "c.txt", "sub/c.cohort"):
        path = search.write_cohort(tmp_path / name, uids, cfg=cfg, query={"kernel": ["B30f"]})
        assert search.read_cohort(path) == uids
        header = search.cohort_header(path)
        assert header["format"] == "ctlake-cohort/1" and header["count"] == 2 and header["query"]["kernel"]
    assert json.loads((tmp_path / "c.json").read_text())["series_instance_uids"] == uids
    assert (tmp_path / "c.txt").read_text().splitlines()[1:] == uids
    (tmp_path / "plain.txt").write_text("1.2.3\n\n# a comment\n1.2.4\n")
    assert search.read_cohort(tmp_path / "plain.txt") == uids


def test_series_query_from_filters(cfg):
    flt = search.make_filter("kvp:[100 TO 140]", manufacturer="siemens", kernel=["B30f", "B70f"],
                             slice_thickness_mm=(None, 1.5), qc_clean=True)
    q = search.series_query(cfg, flt)
    clauses = q["bool"]["filter"]
    assert clauses[0]["query_string"]["query"] == "kvp:[100 TO 140]"
    assert {"term": {"manufacturer": {"value": "siemens", "case_insensitive": True}}} in \
        clauses[1]["bool"]["should"]
    assert len(clauses[2]["bool"]["should"]) == 2
    assert {"range": {"slice_thickness_mm": {"lte": 1.5}}} in clauses and {"term": {"qc_clean": True}} in clauses
    with pytest.raises(Exception, match="unknown series filter"):
        search.make_filter(vendor="x")


def test_kibana_objects_reference_only_declared_fields_and_objects(cfg):
    objects = kibana.saved_objects(cfg)
    ids = {(o["type"], o["id"]) for o in objects}
    for o in objects:
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in ids, (o["id"], ref)
    dashboards = [o for o in objects if o["type"] == "dashboard"]
    assert sorted(o["attributes"]["title"] for o in dashboards) == sorted(
        f"ctlake · {t}" for t in aggs.DASHBOARDS.values())
    for d in dashboards:
        panels = json.loads(d["attributes"]["panelsJSON"])
        assert panels and {f"{p['panelIndex']}:{p['panelRefName']}" for p in panels} == \
            {r["name"] for r in d["references"]}
    # every field an object uses is in the entity's generated mapping (the live check is an integration test)
    by_title = {kibana.index_name(cfg, e): e for e in ENTITIES}
    for title, fields in kibana.referenced_fields(objects).items():
        m, _ = entity_mapping(ENTITIES[by_title[title]], S.TABLES, cfg)
        leaves = mapping.leaf_fields(m)
        for f in fields:
            assert leaves.get(f) not in (None, "text", "flattened"), (title, f)
    # one NDJSON line per object, and the checked-in file is what the generator writes
    text = kibana.to_ndjson(objects)
    assert len(text.splitlines()) == len(objects)
    local = dataclasses.replace(cfg, elasticsearch=dataclasses.replace(cfg.elasticsearch, index_prefix="ctlake"))
    shipped = cfg.project_root / "infra" / "kibana" / kibana.FILE_NAME
    assert shipped.read_text() == kibana.to_ndjson(kibana.saved_objects(local)), \
        "infra/kibana is stale: run `ctlake dashboards export`"


def test_every_panel_names_a_field_of_its_entity(cfg):
    for p in aggs.PANELS:
        fields = {f.name for f in doc_fields(ENTITIES[p.entity], S.TABLES)}
        for f in p.fields():
            assert f.split(".")[0] in fields, (p.id, f)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, self.headers, body))   # case-insensitive lookups
        answer = json.dumps({"success": True, "successCount": body.count(b'"coreMigrationVersion"')}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_import_posts_multipart_ndjson_with_auth(cfg, tmp_path):
    path = kibana.export(cfg, tmp_path)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        answer = kibana.import_objects(url, path, api_key="abc", space="lab")
        kibana.import_objects(url, path, user="elastic", password="pw")
    finally:
        server.shutdown()
    (p1, h1, b1), (p2, h2, _) = _Recorder.seen[-2:]
    assert p1 == "/s/lab/api/saved_objects/_import?overwrite=true" and p2 == "/api/saved_objects/_import?overwrite=true"
    assert h1["kbn-xsrf"] == "true" and h1["Authorization"] == "ApiKey abc"
    assert h2["Authorization"] == "Basic ZWxhc3RpYzpwdw=="
    boundary = h1["Content-Type"].split("boundary=")[1]
    assert b1.startswith(f"--{boundary}\r\n".encode()) and b'name="file"; filename="ctlake-saved-objects.ndjson"' in b1
    assert path.read_bytes() in b1 and answer["successCount"] == len(kibana.saved_objects(cfg))


def test_index_config_is_checked():
    from ctlake.config import IndexConfig

    with pytest.raises(ConfigError, match="chunk_docs"):
        IndexConfig(chunk_docs=0)
    with pytest.raises(ConfigError, match="initial_backoff_s"):
        IndexConfig(initial_backoff_s=5, max_backoff_s=1)
