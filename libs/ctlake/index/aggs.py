"""The five dashboards' data: one field list (:data:`PANELS`), plain functions returning dicts/lists.

Each :class:`Panel` names an index entity, up to two bucket aggregations (x axis, then split) and
its metrics. The same list drives the Kibana saved objects (``ctlake.index.kibana``) and these
functions, which a dashboard page calls directly:

- :func:`catalog`, :func:`data_quality`, :func:`radiomics`, :func:`pipelines`, :func:`models` →
  ``{"total": n, "<panel id>": rows, ...}`` for that dashboard, where ``rows`` is a list of dicts
  ``{"key": x, "split": s (if split), "count": n, "<metric label>": value ...}``;
- :func:`run_panel` for one panel; :func:`dashboard` by name; :func:`total` for a count.

``filters`` (:class:`Filters`) narrow every panel: a time range on the entity's time field, and
manufacturer / QC flag, which apply to series directly and to nodules, features and predictions
through their series (for runs and quarantine rows they do not apply). Click-through from a chart to
the matching series: :func:`series_for_bucket` (or ``ctlake.index.search.find_series``).
No scripts (the embedded node has no painless): correlations are computed here from the values.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.index.client import index_name
from ctlake.index.entities import ENTITIES

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

DASHBOARDS = {
    "catalog": "Catalog",
    "data_quality": "Data quality",
    "radiomics": "Radiomics",
    "pipelines": "Pipelines",
    "models": "Models",
}
MODEL_METRIC = "test_auc"                 # what ctlake.train logs (with _ci_low / _ci_high)
RADIOMICS_FEATURES = ("original_firstorder_Mean", "original_shape_Sphericity", "original_glcm_Contrast")
CORRELATION = ("original_shape_MeshVolume", "original_firstorder_Mean")


@dataclass(frozen=True)
class Bucket:
    kind: str                         # terms | histogram | date_histogram
    field: str
    size: int = 20                    # terms
    interval: float | str = "auto"    # histogram: a number or "auto" (≈ 20 bars); date_histogram: day/week/month


@dataclass(frozen=True)
class Metric:
    kind: str                         # count | avg | min | max | sum | cardinality
    field: str | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or (self.kind if self.kind == "count" else f"{self.kind}_{self.field}")


@dataclass(frozen=True)
class Panel:
    id: str
    dashboard: str
    title: str
    entity: str
    chart: str                        # bar | line | pie | table | heatmap | metric
    buckets: tuple[Bucket, ...] = ()
    metrics: tuple[Metric, ...] = (Metric("count"),)
    query: dict | None = None         # an extra filter for this panel

    def fields(self) -> list[str]:
        """Every document field the panel aggregates on (checked against the live mapping)."""
        return [b.field for b in self.buckets] + [m.field for m in self.metrics if m.field]


def _feature(name: str) -> str:
    return f"features.{name}"


_M = f"metrics.{MODEL_METRIC}"
PANELS: tuple[Panel, ...] = (
    # --- Catalog
    Panel("catalog_total", "catalog", "Series in the lake", "series", "metric",
          metrics=(Metric("count", label="series"), Metric("cardinality", "patient_pseudo_id", "patients"),
                   Metric("cardinality", "study_instance_uid", "studies"))),
    Panel("catalog_manufacturer", "catalog", "Series by manufacturer", "series", "bar",
          (Bucket("terms", "manufacturer"), Bucket("terms", "manufacturer_model_name", size=10))),
    Panel("catalog_kernel", "catalog", "Series by reconstruction kernel", "series", "bar",
          (Bucket("terms", "convolution_kernel"),)),
    Panel("catalog_thickness", "catalog", "Series by slice thickness (mm)", "series", "bar",
          (Bucket("histogram", "slice_thickness_mm", interval=0.5),)),
    Panel("catalog_studies", "catalog", "Studies over time (study date, shifted)", "series", "line",
          (Bucket("date_histogram", "study_date", interval="month"),),
          (Metric("cardinality", "study_instance_uid", "studies"),)),
    # --- Data quality
    Panel("dq_status", "data_quality", "Series built / refused", "series", "pie", (Bucket("terms", "status"),)),
    Panel("dq_qc_flags", "data_quality", "QC flags (series with the flag)", "series", "bar",
          (Bucket("terms", "qc_flags", size=30),)),
    Panel("dq_qc_clean", "data_quality", "Series without any QC flag", "series", "pie",
          (Bucket("terms", "qc_clean"),)),
    Panel("dq_quarantine_time", "data_quality", "Quarantine reasons over time", "quarantine", "bar",
          (Bucket("date_histogram", "ingested_at", interval="day"), Bucket("terms", "error_code", size=15))),
    Panel("dq_quarantine_stage", "data_quality", "Quarantine by stage", "quarantine", "pie",
          (Bucket("terms", "stage"),)),
    # --- Radiomics
    *(Panel(f"rad_{f.split('_', 1)[1]}", "radiomics", f"{f} by malignancy", "features", "bar",
            (Bucket("histogram", _feature(f)), Bucket("histogram", "nodule_malignancy", interval=1)),
            query={"term": {"status": "ok"}})
      for f in RADIOMICS_FEATURES),
    Panel("rad_mean_by_malignancy", "radiomics", "Mean feature value by malignancy", "features", "table",
          (Bucket("histogram", "nodule_malignancy", interval=1),),
          (Metric("count"), *(Metric("avg", _feature(f), f) for f in RADIOMICS_FEATURES)),
          query={"term": {"status": "ok"}}),
    Panel("rad_correlation", "radiomics", f"{CORRELATION[0]} vs {CORRELATION[1]}", "features", "heatmap",
          (Bucket("histogram", _feature(CORRELATION[0])), Bucket("histogram", _feature(CORRELATION[1]))),
          query={"term": {"status": "ok"}}),
    Panel("rad_status", "radiomics", "Extraction status", "features", "pie",
          (Bucket("terms", "status"), Bucket("terms", "error_code"))),
    # --- Pipelines
    Panel("pipe_duration", "pipelines", "Duration by job (s)", "pipeline_runs", "bar",
          (Bucket("terms", "job"),),
          (Metric("avg", "duration_s", "avg duration s"), Metric("max", "duration_s", "max duration s"))),
    Panel("pipe_rows", "pipelines", "Rows in / out by job", "pipeline_runs", "table",
          (Bucket("terms", "job"),),
          (Metric("count", label="runs"), Metric("sum", "rows_in", "rows in"), Metric("sum", "rows_out", "rows out"))),
    Panel("pipe_status_time", "pipelines", "Runs over time by status", "pipeline_runs", "bar",
          (Bucket("date_histogram", "started_at", interval="day"), Bucket("terms", "status"))),
    Panel("pipe_failures", "pipelines", "Failed runs by job", "pipeline_runs", "table",
          (Bucket("terms", "job"),), (Metric("count", label="failed runs"),),
          query={"term": {"status": "failed"}}),
    # --- Models
    Panel("models_runs", "models", f"{MODEL_METRIC} with 95% CI per run", "training_runs", "table",
          (Bucket("terms", "run_id", size=50), Bucket("terms", "model", size=10)),
          (Metric("max", _M, MODEL_METRIC), Metric("min", f"{_M}_ci_low", "ci_low"),
           Metric("max", f"{_M}_ci_high", "ci_high"))),
    Panel("models_versions", "models", f"{MODEL_METRIC} per registered model version", "training_runs", "bar",
          (Bucket("terms", "model", size=30),),
          (Metric("max", _M, MODEL_METRIC), Metric("min", f"{_M}_ci_low", "ci_low"),
           Metric("max", f"{_M}_ci_high", "ci_high"))),
    Panel("models_status", "models", "Training runs by status", "training_runs", "pie", (Bucket("terms", "status"),)),
)


@dataclass(frozen=True)
class Filters:
    """Dashboard filters; all optional. Dates are ISO strings or date/datetime (UTC), inclusive."""

    date_from: str | dt.date | None = None
    date_to: str | dt.date | None = None
    manufacturer: tuple[str, ...] = ()
    qc_flag: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)     # any Elasticsearch filter, applied as it is


def _iso(v: Any) -> str | None:
    if v is None:
        return None
    return v.isoformat() if isinstance(v, dt.date) else str(v)


def filter_query(es: Elasticsearch, cfg: Config, entity: str, filters: Filters | None,
                 panel_query: dict | None = None) -> dict:
    """The bool query of ``filters`` for an index entity (see the module docstring)."""
    clauses: list[dict] = [panel_query] if panel_query else []
    f = filters or Filters()
    ent = ENTITIES[entity]
    if ent.time_field and (f.date_from or f.date_to):
        r = {k: _iso(v) for k, v in (("gte", f.date_from), ("lte", f.date_to)) if v}
        if "lte" in r and len(r["lte"]) == 10:   # a day (YYYY-MM-DD): up to its last millisecond
            r["lte"] += "||/d"
        clauses.append({"range": {ent.time_field: r}})
    if f.manufacturer or f.qc_flag:
        series_clauses: list[dict] = []
        if f.manufacturer:
            series_clauses.append({"bool": {"minimum_should_match": 1, "should": [
                {"term": {"manufacturer": {"value": m, "case_insensitive": True}}} for m in f.manufacturer]}})
        series_clauses += [{"term": {"qc_flags": q}} for q in f.qc_flag]
        if entity == "series":
            clauses += series_clauses
        elif entity in ("nodules", "features", "predictions"):
            from ctlake.index.search import unique_values

            uids = unique_values(es, index_name(cfg, "series"), "series_instance_uid",
                                 {"bool": {"filter": series_clauses}})
            clauses.append({"terms": {"series_instance_uid": uids}})
    if f.extra:
        clauses.append(f.extra)
    return {"bool": {"filter": clauses}}


def bucket_interval(es: Elasticsearch, index: str, query: dict, b: Bucket) -> float | str | None:
    if b.kind == "terms":
        return None
    if b.kind == "date_histogram":
        return {"day": "day", "week": "week", "month": "month", "year": "year"}.get(str(b.interval), "month")
    if b.interval != "auto":
        return float(b.interval)
    st = es.search(index=index, size=0, query=query, aggs={"s": {"stats": {"field": b.field}}})["aggregations"]["s"]
    if not st["count"] or st["max"] is None or st["max"] == st["min"]:
        return 1.0
    raw = (st["max"] - st["min"]) / 20
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _bucket_agg(b: Bucket, interval: float | str) -> dict:
    if b.kind == "terms":
        return {"terms": {"field": b.field, "size": b.size}}
    if b.kind == "histogram":
        return {"histogram": {"field": b.field, "interval": interval, "min_doc_count": 1}}
    return {"date_histogram": {"field": b.field, "calendar_interval": interval, "min_doc_count": 1}}


def _metric_aggs(metrics: tuple[Metric, ...]) -> dict:
    return {f"m{i}": {m.kind: {"field": m.field}} for i, m in enumerate(metrics) if m.kind != "count"}


def _metric_values(bucket: dict, metrics: tuple[Metric, ...]) -> dict:
    out = {}
    for i, m in enumerate(metrics):
        out[m.name] = bucket["doc_count"] if m.kind == "count" else bucket[f"m{i}"]["value"]
    return out


def _key(b: dict) -> Any:
    return b.get("key_as_string", b["key"]) if "key_as_string" in b else b["key"]


def run_panel(es: Elasticsearch, cfg: Config, panel: Panel, filters: Filters | None = None) -> list[dict]:
    """Rows of one panel: ``[{"key", "split"?, "count", <metric>...}]`` (a metric panel: one row)."""
    index = index_name(cfg, panel.entity)
    query = filter_query(es, cfg, panel.entity, filters, panel.query)
    metric_aggs = _metric_aggs(panel.metrics)
    if not panel.buckets:
        res = es.search(index=index, size=0, query=query, aggs=metric_aggs or None, track_total_hits=True)
        bucket = {"doc_count": res["hits"]["total"]["value"], **res.get("aggregations", {})}
        return [{"count": bucket["doc_count"], **_metric_values(bucket, panel.metrics)}]
    intervals = [bucket_interval(es, index, query, b) for b in panel.buckets]
    inner = dict(metric_aggs)
    if len(panel.buckets) > 1:
        inner = {"split": {**_bucket_agg(panel.buckets[1], intervals[1]), "aggs": metric_aggs} if metric_aggs
                 else _bucket_agg(panel.buckets[1], intervals[1])}
    top = _bucket_agg(panel.buckets[0], intervals[0])
    if inner:
        top["aggs"] = inner
    res = es.search(index=index, size=0, query=query, aggs={"b": top})
    rows: list[dict] = []
    for b in res["aggregations"]["b"]["buckets"]:
        if len(panel.buckets) > 1:
            for s in b["split"]["buckets"]:
                rows.append({"key": _key(b), "split": _key(s), "count": s["doc_count"],
                             **_metric_values(s, panel.metrics)})
        else:
            rows.append({"key": _key(b), "count": b["doc_count"], **_metric_values(b, panel.metrics)})
    return rows


def total(es: Elasticsearch, cfg: Config, entity: str, filters: Filters | None = None) -> int:
    return int(es.count(index=index_name(cfg, entity), query=filter_query(es, cfg, entity, filters))["count"])


def dashboard(es: Elasticsearch, cfg: Config, name: str, filters: Filters | None = None) -> dict:
    """Every panel of dashboard ``name`` (a key of :data:`DASHBOARDS`): ``{panel id: rows}`` + totals."""
    if name not in DASHBOARDS:
        raise KeyError(f"unknown dashboard {name!r}; dashboards: {list(DASHBOARDS)}")
    panels = [p for p in PANELS if p.dashboard == name]
    out: dict[str, Any] = {"dashboard": name, "title": DASHBOARDS[name],
                           "totals": {e: total(es, cfg, e, filters) for e in sorted({p.entity for p in panels})}}
    for p in panels:
        out[p.id] = run_panel(es, cfg, p, filters)
    return out


def catalog(es: Elasticsearch, cfg: Config, filters: Filters | None = None) -> dict:
    """Series by manufacturer (and model), kernel, slice thickness; studies per month."""
    return dashboard(es, cfg, "catalog", filters)


def data_quality(es: Elasticsearch, cfg: Config, filters: Filters | None = None) -> dict:
    """Built/refused, QC flag counts and rates (``qc_flag_rates``), quarantine reasons over time."""
    out = dashboard(es, cfg, "data_quality", filters)
    n = out["totals"]["series"]
    out["qc_flag_rates"] = [{"flag": r["key"], "series": r["count"], "rate": r["count"] / n if n else 0.0}
                            for r in out["dq_qc_flags"]]
    return out


def radiomics(es: Elasticsearch, cfg: Config, filters: Filters | None = None,
              correlate: tuple[str, str] = CORRELATION, sample: int = 5000) -> dict:
    """Feature distributions by malignancy and the Pearson correlation of two features
    (``correlation``: {"x", "y", "n", "pearson_r"} over up to ``sample`` documents)."""
    out = dashboard(es, cfg, "radiomics", filters)
    out["correlation"] = feature_correlation(es, cfg, *correlate, filters=filters, sample=sample)
    return out


def feature_correlation(es: Elasticsearch, cfg: Config, x: str, y: str, *, filters: Filters | None = None,
                        sample: int = 5000) -> dict:
    fx, fy = _feature(x), _feature(y)
    query = filter_query(es, cfg, "features", filters, {"bool": {"filter": [
        {"term": {"status": "ok"}}, {"exists": {"field": fx}}, {"exists": {"field": fy}}]}})
    res = es.search(index=index_name(cfg, "features"), size=sample, query=query, source=False,
                    docvalue_fields=[fx, fy])
    pairs = [(h["fields"][fx][0], h["fields"][fy][0]) for h in res["hits"]["hits"]
             if fx in h.get("fields", {}) and fy in h.get("fields", {})]
    return {"x": x, "y": y, "n": len(pairs), "pearson_r": _pearson(pairs)}


def _pearson(pairs: list[tuple[float, float]]) -> float | None:
    n = len(pairs)
    if n < 3:
        return None
    mx = sum(p[0] for p in pairs) / n
    my = sum(p[1] for p in pairs) / n
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    syy = sum((p[1] - my) ** 2 for p in pairs)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def pipelines(es: Elasticsearch, cfg: Config, filters: Filters | None = None) -> dict:
    """Durations, rows in/out and failures per job; runs over time by status."""
    return dashboard(es, cfg, "pipelines", filters)


def models(es: Elasticsearch, cfg: Config, filters: Filters | None = None, metric: str = MODEL_METRIC) -> dict:
    """Per training run: ``metric`` with its CI and the registered model versions (``runs``), plus the
    panels. ``runs``: [{"run_id", "run_name", "model": [...], "value", "ci_low", "ci_high", "start_time"}]."""
    out = dashboard(es, cfg, "models", filters)
    m = f"metrics.{metric}"
    res = es.search(index=index_name(cfg, "training_runs"), size=1000,
                    query=filter_query(es, cfg, "training_runs", filters, {"exists": {"field": m}}),
                    sort=[{"start_time": {"order": "asc", "unmapped_type": "date"}}],
                    source_includes=["run_id", "run_name", "model", "start_time", "status", "metrics"])
    out["runs"] = [{"run_id": s["run_id"], "run_name": s.get("run_name"), "model": s.get("model", []),
                    "start_time": s.get("start_time"), "status": s.get("status"),
                    "value": s["metrics"].get(metric), "ci_low": s["metrics"].get(f"{metric}_ci_low"),
                    "ci_high": s["metrics"].get(f"{metric}_ci_high")}
                   for s in (h["_source"] for h in res["hits"]["hits"])]
    return out


def series_for_bucket(cfg: Config, panel_id: str, key: Any, *, split: Any = None, filters: Filters | None = None,
                      es: Elasticsearch | None = None, limit: int | None = 1000) -> list[dict]:
    """Click-through: the series behind one bar of a series panel (terms/histogram buckets), under the
    same ``filters`` the chart was drawn with (histogram widths are computed on that filtered query)."""
    from ctlake.index.model import client

    panel = next(p for p in PANELS if p.id == panel_id)
    if panel.entity != "series":
        raise ValueError(f"panel {panel_id} is not over series")
    es = es or client(cfg.elasticsearch, cfg.index)
    query = filter_query(es, cfg, "series", filters, panel.query)
    clauses = [query]
    for b, v in zip(panel.buckets, (key, split), strict=False):
        if v is None:
            continue
        if b.kind == "terms":
            clauses.append({"term": {b.field: v}})
        elif b.kind == "histogram":
            step = bucket_interval(es, index_name(cfg, "series"), query, b)
            clauses.append({"range": {b.field: {"gte": v, "lt": float(v) + float(step)}}})
        else:
            unit = {"day": "d", "week": "w", "month": "M", "year": "y"}.get(str(b.interval), "M")
            clauses.append({"range": {b.field: {"gte": v, "lt": f"{v}||+1{unit}"}}})
    res = es.search(index=index_name(cfg, "series"), query={"bool": {"filter": clauses}}, size=limit or 10000,
                    sort=[{"series_instance_uid": "asc"}])
    return [h["_source"] for h in res["hits"]["hits"]]
