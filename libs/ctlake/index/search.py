"""Finding series: field filters or a query string over the series index → series uids → a cohort.

``find_series(cfg, manufacturer="SIEMENS", min_nodule_mm=8, min_malignancy=4)`` returns one dict
per matching series (uid, patient, scanner, kernel, slice thickness, QC flags …), sorted by uid.
Nodule criteria are met by ONE nodule of the series (diameter ≥ N mm -- measured, or annotated
when no mask was measured -- and malignancy ≥ M); they are answered by the nodules index first.

Cohort files (:func:`write_cohort`, :func:`read_cohort`), accepted by the training job and the
notebooks as a list of series:

- ``*.json``: ``{"format": "ctlake-cohort/1", "created_at": ISO-8601 UTC, "profile": …, "index": the
  alias searched, "query": the filters, "count": n, "series_instance_uids": [...]}``
- any other name: plain text, one series uid per line, preceded by one header line
  ``# ctlake-cohort/1 {…the same header as JSON…}``; blank lines and ``#`` lines are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.index.client import index_name

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

COHORT_FORMAT = "ctlake-cohort/1"
SERIES_COLUMNS = ("series_instance_uid", "patient_pseudo_id", "study_instance_uid", "status", "manufacturer",
                  "manufacturer_model_name", "convolution_kernel", "slice_thickness_mm", "kvp", "slices",
                  "qc_flags", "study_date")


@dataclass(frozen=True)
class SeriesFilter:
    """Field filters over the series index; ``None``/empty means "any". Text values match
    case-insensitively and exactly (``manufacturer="siemens"`` finds ``SIEMENS``)."""

    query: str | None = None                       # Elasticsearch query-string syntax, e.g. kvp:[100 TO 120]
    manufacturer: tuple[str, ...] = ()
    model: tuple[str, ...] = ()                    # manufacturer_model_name
    kernel: tuple[str, ...] = ()                   # convolution_kernel
    slice_thickness_mm: tuple[float | None, float | None] | None = None   # [low, high], either open
    qc_clean: bool | None = None                   # built and no QC flag
    qc_flag: tuple[str, ...] = ()                  # has every one of these flags
    status: str | None = None                      # built | refused
    patient: tuple[str, ...] = ()
    study_date: tuple[str | None, str | None] | None = None    # ISO dates, inclusive
    min_nodule_mm: float | None = None             # has a nodule of at least this diameter ...
    min_malignancy: float | None = None            # ... and/or at least this malignancy (the same nodule)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, (), "")}


def _terms_ci(field: str, values: Sequence[str]) -> dict:
    return {"bool": {"should": [{"term": {field: {"value": v, "case_insensitive": True}}} for v in values],
                     "minimum_should_match": 1}}


def _range(field: str, low: Any, high: Any) -> dict | None:
    r = {k: v for k, v in (("gte", low), ("lte", high)) if v is not None}
    return {"range": {field: r}} if r else None


def nodule_query(min_nodule_mm: float | None, min_malignancy: float | None) -> dict:
    """Nodules with diameter ≥ N mm (measured, else annotated) and malignancy ≥ M."""
    must: list[dict] = []
    if min_nodule_mm is not None:
        must.append({"bool": {"minimum_should_match": 1, "should": [
            {"range": {"diameter_mm": {"gte": min_nodule_mm}}},
            {"bool": {"must_not": {"exists": {"field": "diameter_mm"}},
                      "filter": {"range": {"annotated_diameter_mm": {"gte": min_nodule_mm}}}}}]}})
    if min_malignancy is not None:
        must.append({"range": {"malignancy": {"gte": min_malignancy}}})
    return {"bool": {"filter": must}}


def unique_values(es: Elasticsearch, index: str, field: str, query: dict | None = None) -> list[str]:
    """Every distinct value of ``field`` among the documents matching ``query`` (composite paging)."""
    out: list[str] = []
    after = None
    while True:
        comp: dict = {"size": 5000, "sources": [{"v": {"terms": {"field": field}}}]}
        if after:
            comp["after"] = after
        res = es.search(index=index, size=0, query=query or {"match_all": {}}, aggs={"u": {"composite": comp}})
        agg = res["aggregations"]["u"]
        out += [b["key"]["v"] for b in agg["buckets"]]
        after = agg.get("after_key")
        if not agg["buckets"] or not after:
            return out


def series_query(cfg: Config, flt: SeriesFilter, *, es: Elasticsearch | None = None) -> dict:
    """The Elasticsearch query over the series alias for ``flt`` (nodule criteria resolved to uids)."""
    clauses: list[dict] = []
    if flt.query:
        clauses.append({"query_string": {"query": flt.query, "default_operator": "AND", "lenient": True}})
    for field, values in (("manufacturer", flt.manufacturer), ("manufacturer_model_name", flt.model),
                          ("convolution_kernel", flt.kernel), ("patient_pseudo_id", flt.patient)):
        if values:
            clauses.append(_terms_ci(field, values))
    if flt.slice_thickness_mm and (r := _range("slice_thickness_mm", *flt.slice_thickness_mm)):
        clauses.append(r)
    if flt.study_date and (r := _range("study_date", *flt.study_date)):
        clauses.append(r)
    if flt.qc_clean is not None:
        clauses.append({"term": {"qc_clean": flt.qc_clean}})
    clauses += [{"term": {"qc_flags": f}} for f in flt.qc_flag]
    if flt.status:
        clauses.append({"term": {"status": flt.status}})
    if flt.min_nodule_mm is not None or flt.min_malignancy is not None:
        from ctlake.index.model import client

        es = es or client(cfg.elasticsearch, cfg.index)
        uids = unique_values(es, index_name(cfg, "nodules"), "series_instance_uid",
                             nodule_query(flt.min_nodule_mm, flt.min_malignancy))
        clauses.append({"terms": {"series_instance_uid": uids}})
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def find_series(cfg: Config, query: str | None = None, *, limit: int | None = None,
                es: Elasticsearch | None = None, **filters: Any) -> list[dict]:
    """Series matching ``query`` (query-string syntax) and the :class:`SeriesFilter` fields given as
    keywords, e.g. ``find_series(cfg, kernel=["B30f"], slice_thickness_mm=(None, 1.5), qc_clean=True,
    min_nodule_mm=8, min_malignancy=4)``. Strings are accepted where tuples are expected."""
    from ctlake.index.model import client

    flt = make_filter(query, **filters)
    es = es or client(cfg.elasticsearch, cfg.index)
    alias = index_name(cfg, "series")
    q = series_query(cfg, flt, es=es)
    out: list[dict] = []
    after = None
    while limit is None or len(out) < limit:
        size = 1000 if limit is None else min(1000, limit - len(out))
        res = es.search(index=alias, query=q, size=size, sort=[{"series_instance_uid": "asc"}],
                        search_after=after, source_includes=list(SERIES_COLUMNS))
        hits = res["hits"]["hits"]
        out += [h["_source"] for h in hits]
        if len(hits) < size:
            break
        after = hits[-1]["sort"]
    return out


def make_filter(query: str | None = None, **filters: Any) -> SeriesFilter:
    fields = SeriesFilter.__dataclass_fields__
    unknown = set(filters) - set(fields)
    if unknown:
        raise CtlakeError(f"unknown series filter(s) {sorted(unknown)}", code="USAGE",
                          hint=f"filters: {', '.join(f for f in fields if f != 'query')}")
    norm: dict[str, Any] = {}
    for k, v in filters.items():
        if k in ("manufacturer", "model", "kernel", "qc_flag", "patient") and v is not None:
            v = (v,) if isinstance(v, str) else tuple(v)
        elif k in ("slice_thickness_mm", "study_date") and v is not None:
            v = tuple(v)
        if v is not None:
            norm[k] = v
    return SeriesFilter(query=query, **norm)


# --- cohort files ----------------------------------------------------------------------------
def write_cohort(path: str | Path, uids: Iterable[str], *, cfg: Config | None = None,
                 query: dict | None = None) -> Path:
    """Write a cohort file (``.json``, or text with one uid per line); see the module docstring."""
    path = Path(path)
    uids = list(uids)
    header = {"format": COHORT_FORMAT,
              "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "profile": cfg.profile if cfg else None,
              "index": index_name(cfg, "series") if cfg else None,
              "query": query or {}, "count": len(uids)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({**header, "series_instance_uids": uids}, indent=2, default=str) + "\n")
    else:
        path.write_text(f"# {COHORT_FORMAT} {json.dumps(header, default=str)}\n" + "".join(f"{u}\n" for u in uids))
    return path


def read_cohort(path: str | Path) -> list[str]:
    """The series uids of a cohort file (either form; a plain list of uids, one per line, too)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("series_instance_uids"), list):
            raise CtlakeError(f"{path}: not a ctlake cohort (no series_instance_uids list)", code="BAD_COHORT")
        return [str(u) for u in doc["series_instance_uids"]]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def cohort_header(path: str | Path) -> dict:
    """The header of a cohort file ({} for a bare list of uids)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return {k: v for k, v in json.loads(text).items() if k != "series_instance_uids"}
    first = text.splitlines()[0] if text else ""
    prefix = f"# {COHORT_FORMAT} "
    return json.loads(first[len(prefix):]) if first.startswith(prefix) else {}
