"""What the dashboard page reads from Elasticsearch: the five dashboards of ``ctlake.index.aggs``, the
filter choices, the series behind a clicked bar, and a readable message when Elasticsearch fails.

Nothing here draws; every function takes the client and the configuration, so the page and the tests
call the same code. Click-through (:func:`series_for_click`) narrows a panel's own query (its entity,
its extra filter and the page's filters, as ``aggs.run_panel`` built the chart) by the clicked bucket
-- so the series listed are exactly those counted in that bar. For panels over nodules, radiomics
features or predictions, the series are those of the matching documents; pipeline runs, quarantine
rows and training runs have no series.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctlake.config import Config
from ctlake.index import aggs
from ctlake.index.client import index_name

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger("ctlake.dashboard")

LOADERS = {"catalog": aggs.catalog, "data_quality": aggs.data_quality, "radiomics": aggs.radiomics,
           "pipelines": aggs.pipelines, "models": aggs.models}
SERIES_ENTITIES = ("nodules", "features", "predictions")     # documents that name their series
SERIES_LIMIT = 1000                                           # rows listed after a click (the count is exact)


@dataclass(frozen=True)
class Problem:
    """Why the page has no data: a one-line message for people, and what to do about it."""

    message: str
    hint: str = ""
    kind: str = "error"          # unavailable | no_index | refused | error

    def text(self) -> str:
        return f"{self.message} {self.hint}".strip()


def explain(exc: BaseException, cfg: Config) -> Problem:
    """A :class:`Problem` for an exception raised while querying (never a traceback)."""
    from elasticsearch import ApiError, NotFoundError, TransportError

    url = cfg.elasticsearch.url
    if isinstance(exc, TransportError):
        from elasticsearch import ConnectionTimeout

        why = "timed out" if isinstance(exc, ConnectionTimeout) else "no connection"
        return Problem(f"Elasticsearch at {url} is not answering ({why}).",
                       "Start it with `ctlake infra up elasticsearch` or fix elasticsearch.url, then reload "
                       "this page. The lake itself is unaffected.", "unavailable")
    if isinstance(exc, NotFoundError):
        missing = ""
        try:
            missing = exc.body["error"]["index"]            # type: ignore[index]
        except (TypeError, KeyError):
            pass
        return Problem(f"No search index {missing or ''} yet under the prefix "
                       f"'{cfg.elasticsearch.index_prefix}'.".replace("  ", " "),
                       "Build it with `ctlake index`, then reload this page.", "no_index")
    if isinstance(exc, ApiError):
        return Problem(f"Elasticsearch at {url} refused a dashboard query (HTTP {exc.meta.status}: {exc.message}).",
                       "Check the index mapping with `ctlake index --full`.", "refused")
    log.exception("dashboard query failed")
    return Problem(f"The dashboard query failed: {type(exc).__name__}: {exc}", "See the server log.", "error")


def make_filters(date_from: str | None = None, date_to: str | None = None, manufacturer: Any = None,
                 qc_flag: Any = None) -> aggs.Filters:
    """:class:`aggs.Filters` from the page's widgets (``date_to`` is inclusive: the whole day)."""
    def _tuple(v: Any) -> tuple[str, ...]:
        if not v:
            return ()
        return (v,) if isinstance(v, str) else tuple(v)

    to = date_to[:10] + "T23:59:59.999Z" if date_to else None
    return aggs.Filters(date_from=date_from[:10] if date_from else None, date_to=to,
                        manufacturer=_tuple(manufacturer), qc_flag=_tuple(qc_flag))


def load(es: Elasticsearch, cfg: Config, name: str, filters: aggs.Filters | None = None) -> dict:
    """One dashboard's data (``aggs.<name>(es, cfg, filters)``); raises what the client raises."""
    return LOADERS[name](es, cfg, filters)


def filter_choices(es: Elasticsearch, cfg: Config) -> dict[str, list[str]]:
    """Values for the filter widgets: manufacturers and QC flags present in the series index."""
    res = es.search(index=index_name(cfg, "series"), size=0, aggs={
        "manufacturer": {"terms": {"field": "manufacturer", "size": 200}},
        "qc_flag": {"terms": {"field": "qc_flags", "size": 200}}})
    return {k: sorted(str(b["key"]) for b in res["aggregations"][k]["buckets"]) for k in ("manufacturer", "qc_flag")}


def panel(panel_id: str) -> aggs.Panel:
    try:
        return next(p for p in aggs.PANELS if p.id == panel_id)
    except StopIteration:
        raise KeyError(f"unknown panel {panel_id!r}") from None


def clickable(p: aggs.Panel) -> bool:
    """Whether a bucket of ``p`` leads to series (a bucketed panel over series or documents naming them)."""
    return bool(p.buckets) and (p.entity == "series" or p.entity in SERIES_ENTITIES)


def bucket_clauses(es: Elasticsearch, cfg: Config, p: aggs.Panel, query: dict, key: Any,
                   split: Any = None) -> list[dict]:
    """Filter clauses selecting the documents of one bucket (``key``, and ``split`` for the second
    aggregation) of panel ``p`` whose documents match ``query`` (histogram widths as the chart's)."""
    index = index_name(cfg, p.entity)
    clauses: list[dict] = []
    for b, v in zip(p.buckets, (key, split), strict=False):
        if v is None:
            continue
        if b.kind == "terms":
            clauses.append({"term": {b.field: v}})
        elif b.kind == "histogram":
            step = aggs.bucket_interval(es, index, query, b)      # the same width the chart was drawn with
            clauses.append({"range": {b.field: {"gte": float(v), "lt": float(v) + float(step)}}})
        else:
            unit = {"day": "d", "week": "w", "month": "M", "year": "y"}.get(str(b.interval), "M")
            start = _date_key(v)
            clauses.append({"range": {b.field: {"gte": start, "lt": f"{start}||+1{unit}"}}})
    return clauses


def _date_key(v: Any) -> str:
    if isinstance(v, int | float):         # epoch milliseconds
        return dt.datetime.fromtimestamp(v / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return str(v)


def series_for_click(es: Elasticsearch, cfg: Config, panel_id: str, key: Any, split: Any = None,
                     filters: aggs.Filters | None = None, *, limit: int = SERIES_LIMIT) -> dict:
    """The series behind one clicked bucket: ``{"count": n, "series": [docs sorted by uid, ≤ limit],
    "documents": n matching documents of the panel's entity}``; ValueError for a panel without series."""
    p = panel(panel_id)
    if not clickable(p):
        raise ValueError(f"panel '{p.title}' is over {p.entity.replace('_', ' ')}: there are no series behind it")
    query = aggs.filter_query(es, cfg, p.entity, filters, p.query)
    selected = {"bool": {"filter": [query, *bucket_clauses(es, cfg, p, query, key, split)]}}
    series_index = index_name(cfg, "series")
    if p.entity == "series":
        series_query = selected
        documents = int(es.count(index=series_index, query=selected)["count"])
    else:
        from ctlake.index.search import unique_values

        documents = int(es.count(index=index_name(cfg, p.entity), query=selected)["count"])
        uids = unique_values(es, index_name(cfg, p.entity), "series_instance_uid", selected)
        series_query = {"terms": {"series_instance_uid": uids}}
    res = es.search(index=series_index, query=series_query, size=limit, track_total_hits=True,
                    sort=[{"series_instance_uid": "asc"}])
    return {"count": int(res["hits"]["total"]["value"]), "documents": documents,
            "series": [h["_source"] for h in res["hits"]["hits"]]}
