"""Kibana saved objects (NDJSON) generated from the same field list as the built-in dashboards.

``saved_objects(cfg)`` returns, for the profile's index prefix:

- one data view (``index-pattern``) per index entity, on its alias, with the entity's time field;
- one visualization per :data:`ctlake.index.aggs.PANELS` entry;
- five dashboards (Catalog, Data quality, Radiomics, Pipelines, Models) laid out two per row.

Visualizations are the aggregation-based ("legacy") kind, not Lens: their ``visState`` names each
field once in plain aggregation parameters (``params.field``), which is exactly what
:data:`~ctlake.index.aggs.PANELS` holds, so one generator maps one panel to one object and a test can
read back every field an object uses; Lens documents carry a column/layer state whose format
changes between Kibana minors. Kibana 8.x and 9.x still import, migrate and render aggregation-based
visualizations, and a user can convert any of them to Lens in the editor.

``export(cfg, out_dir)`` writes ``ctlake-saved-objects.ndjson``; ``import_objects(...)`` posts it to
``POST <kibana>/api/saved_objects/_import?overwrite=true`` as multipart/form-data (``kbn-xsrf``
header; basic auth or an API key; a space with ``space=``).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.index.aggs import DASHBOARDS, PANELS, Bucket, Panel
from ctlake.index.client import index_name
from ctlake.index.entities import ENTITIES

FILE_NAME = "ctlake-saved-objects.ndjson"
CORE_MIGRATION = "8.8.0"
TYPE_MIGRATION = {"index-pattern": "8.0.0", "visualization": "8.5.0", "dashboard": "8.9.0"}
_VIS_TYPE = {"bar": "histogram", "line": "line", "pie": "pie", "table": "table", "heatmap": "heatmap",
             "metric": "metric"}
_FILTER_REF = "kibanaSavedObjectMeta.searchSourceJSON.filter[0].meta.index"
_DATE_INTERVAL = {"day": "d", "week": "w", "month": "M", "year": "y"}


def _obj(type_: str, id_: str, attributes: dict, references: list[dict] | None = None) -> dict:
    return {"type": type_, "id": id_, "attributes": attributes, "references": references or [],
            "coreMigrationVersion": CORE_MIGRATION, "typeMigrationVersion": TYPE_MIGRATION[type_], "managed": False}


def data_view_id(cfg: Config, entity: str) -> str:
    return f"{cfg.elasticsearch.index_prefix}-dv-{entity}"


def data_views(cfg: Config) -> list[dict]:
    out = []
    for ent in ENTITIES.values():
        alias = index_name(cfg, ent.name)
        attrs = {"title": alias, "name": f"ctlake {ent.name.replace('_', ' ')}", "fieldAttrs": "{}",
                 "fieldFormatMap": "{}", "runtimeFieldMap": "{}", "sourceFilters": "[]", "typeMeta": "{}",
                 "allowHidden": False}
        if ent.time_field:
            attrs["timeFieldName"] = ent.time_field
        out.append(_obj("index-pattern", data_view_id(cfg, ent.name), attrs))
    return out


def _bucket_agg(i: int, b: Bucket, schema: str) -> dict:
    if b.kind == "terms":
        params = {"field": b.field, "orderBy": "1", "order": "desc", "size": b.size, "otherBucket": False,
                  "otherBucketLabel": "Other", "missingBucket": False, "missingBucketLabel": "Missing"}
    elif b.kind == "histogram":
        params = {"field": b.field, "interval": b.interval if b.interval != "auto" else "auto",
                  "min_doc_count": False, "has_extended_bounds": False, "extended_bounds": {}}
    else:
        params = {"field": b.field, "interval": _DATE_INTERVAL.get(str(b.interval), "auto"), "min_doc_count": 1,
                  "extended_bounds": {}, "useNormalizedEsInterval": True, "scaleMetricValues": False,
                  "drop_partials": False}
    return {"id": str(i), "enabled": True, "type": b.kind, "params": params, "schema": schema}


def vis_state(panel: Panel) -> dict:
    aggs = []
    for i, m in enumerate(panel.metrics, start=1):
        params = {} if m.kind == "count" else {"field": m.field}
        if m.label:
            params["customLabel"] = m.label
        aggs.append({"id": str(i), "enabled": True, "type": m.kind, "params": params, "schema": "metric"})
    schemas = {"bar": ("segment", "group"), "line": ("segment", "group"), "heatmap": ("segment", "group"),
               "pie": ("segment", "segment"), "table": ("bucket", "bucket"), "metric": ()}[panel.chart]
    for j, b in enumerate(panel.buckets):
        aggs.append(_bucket_agg(len(panel.metrics) + j + 1, b, schemas[j]))
    vtype = _VIS_TYPE[panel.chart]
    params: dict = {"type": vtype, "addTooltip": True, "addLegend": True, "legendPosition": "right"}
    if panel.chart == "pie":
        params.update({"isDonut": True, "legendDisplay": "show", "labels": {"show": True, "values": True}})
    if panel.chart == "table":
        params = {"perPage": 20, "showPartialRows": False, "showMetricsAtAllLevels": False, "showTotal": False,
                  "percentageCol": ""}
    return {"title": panel.title, "type": vtype, "aggs": aggs, "params": params}


def vis_id(cfg: Config, panel: Panel) -> str:
    return f"{cfg.elasticsearch.index_prefix}-vis-{panel.id}"


def visualizations(cfg: Config) -> list[dict]:
    out = []
    for p in PANELS:
        search = {"query": {"query": "", "language": "kuery"}, "filter": [],
                  "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
        if p.query:
            meta = {"alias": None, "negate": False, "disabled": False, "type": "custom", "key": "query",
                    "value": json.dumps(p.query), "indexRefName": _FILTER_REF}
            search["filter"] = [{"meta": meta, "query": p.query, "$state": {"store": "appState"}}]
        refs = [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
                 "id": data_view_id(cfg, p.entity)}]
        if p.query:
            refs.append({"name": _FILTER_REF, "type": "index-pattern", "id": data_view_id(cfg, p.entity)})
        attrs = {"title": f"ctlake · {p.title}", "visState": json.dumps(vis_state(p)), "uiStateJSON": "{}",
                 "description": f"{DASHBOARDS[p.dashboard]} dashboard; index {index_name(cfg, p.entity)}",
                 "version": 1, "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)}}
        out.append(_obj("visualization", vis_id(cfg, p), attrs, refs))
    return out


def dashboards(cfg: Config) -> list[dict]:
    out = []
    for name, title in DASHBOARDS.items():
        panels, refs = [], []
        for n, p in enumerate(q for q in PANELS if q.dashboard == name):
            key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctlake/{name}/{p.id}"))
            w, h = (24, 15) if p.chart != "metric" else (48, 8)
            panels.append({"version": "8.19.0", "type": "visualization",
                           "gridData": {"x": 0 if p.chart == "metric" else (n % 2) * 24, "y": (n // 2) * 15,
                                        "w": w, "h": h, "i": key},
                           "panelIndex": key, "embeddableConfig": {"enhancements": {}},
                           "panelRefName": f"panel_{key}"})
            refs.append({"name": f"{key}:panel_{key}", "type": "visualization", "id": vis_id(cfg, p)})
        attrs = {"title": f"ctlake · {title}", "description": f"ctlake {title} (generated by ctlake.index.kibana)",
                 "panelsJSON": json.dumps(panels),
                 "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                            "syncTooltips": False, "hidePanelTitles": False}),
                 "version": 1, "timeRestore": False,
                 "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                     {"query": {"query": "", "language": "kuery"}, "filter": []})}}
        out.append(_obj("dashboard", f"{cfg.elasticsearch.index_prefix}-dashboard-{name}", attrs, refs))
    return out


def saved_objects(cfg: Config) -> list[dict]:
    """Data views, then visualizations, then dashboards (Kibana resolves references in any order)."""
    return data_views(cfg) + visualizations(cfg) + dashboards(cfg)


def to_ndjson(objects: list[dict]) -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)


def export(cfg: Config, out_dir: str | Path | None = None) -> Path:
    """Write the NDJSON (``index.kibana_dir`` by default, relative to the project root)."""
    folder = Path(out_dir) if out_dir else Path(cfg.index.kibana_dir)
    if not folder.is_absolute():
        folder = (Path.cwd() if out_dir else cfg.project_root) / folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    path.write_text(to_ndjson(saved_objects(cfg)))
    return path


def referenced_fields(objects: list[dict]) -> dict[str, set[str]]:
    """Data view title -> every field the objects aggregate on or use as time field (read back from
    the objects themselves, so the check covers what Kibana will actually query)."""
    titles = {o["id"]: o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    out: dict[str, set[str]] = {t: set() for t in titles.values()}
    for o in objects:
        if o["type"] == "index-pattern" and o["attributes"].get("timeFieldName"):
            out[o["attributes"]["title"]].add(o["attributes"]["timeFieldName"])
        if o["type"] != "visualization":
            continue
        ref = next(r["id"] for r in o["references"] if r["name"] == "kibanaSavedObjectMeta.searchSourceJSON.index")
        for agg in json.loads(o["attributes"]["visState"])["aggs"]:
            if agg["params"].get("field"):
                out[titles[ref]].add(agg["params"]["field"])
    return out


def import_objects(kibana_url: str, ndjson: str | Path, *, user: str | None = None, password: str | None = None,
                   api_key: str | None = None, space: str | None = None, overwrite: bool = True,
                   timeout_s: float = 60.0) -> dict:
    """POST the NDJSON file to Kibana's saved-objects ``_import`` API; returns Kibana's answer (raises a
    :class:`CtlakeError` with Kibana's message when it refuses or reports errors)."""
    data = Path(ndjson).read_bytes()
    boundary = f"ctlake-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{FILE_NAME}\"\r\n"
            f"Content-Type: application/ndjson\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    base = kibana_url.rstrip("/") + (f"/s/{space}" if space else "")
    url = f"{base}/api/saved_objects/_import?overwrite={'true' if overwrite else 'false'}"
    headers = {"kbn-xsrf": "true", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - user's Kibana
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            answer = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise CtlakeError(f"Kibana refused the import: HTTP {exc.code} {exc.read()[:500]!r}",
                          code="KIBANA_IMPORT", hint="check --kibana, the credentials and the space") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CtlakeError(f"Kibana at {kibana_url} did not answer ({exc})", code="KIBANA_UNREACHABLE") from None
    if not answer.get("success", False):
        raise CtlakeError(f"Kibana imported with errors: {json.dumps(answer.get('errors', answer))[:1000]}",
                          code="KIBANA_IMPORT")
    return answer
