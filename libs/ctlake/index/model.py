"""The Elasticsearch side of the index model: versioned templates, concrete indices, aliases, bulk.

Naming (``<prefix>`` = ``elasticsearch.index_prefix``):

- alias ``<prefix>-<entity>`` -- what searches, dashboards and Kibana data views use;
- index template ``<prefix>-<entity>-v<hash>`` with pattern ``<prefix>-<entity>-v<hash>-*``,
  ``<hash>`` = 8 hex digits of the generated mapping (+ shard count);
- concrete index ``<prefix>-<entity>-v<hash>-<generation>``: a mapping change gives a new hash, a
  ``--full`` rebuild with the same mapping the next generation. A build fills the new index, then
  one ``_aliases`` call moves the alias (atomic for readers), then the previous index is deleted.

Documents: ``_id`` = the table key (``|``-joined), ``_source`` = the row as JSON (NaN and
infinities dropped: JSON has no such numbers; ``None`` dropped). Bulk requests go through
``elasticsearch.helpers.streaming_bulk`` with retries and exponential backoff on 429/502/503/504.
An item refused with another 4xx is a *rejection* (reported with its reason); anything still
429/5xx after the retries fails the run, which then records nothing and is simply run again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctlake.config import Config, ElasticsearchConfig, IndexConfig
from ctlake.errors import CtlakeError, ServiceError
from ctlake.index.client import auth_kwargs, index_name

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

RETRY_STATUS = (429, 502, 503, 504)


class IndexUnavailable(ServiceError):
    """Elasticsearch cannot be reached (or keeps answering 429/5xx): nothing was recorded."""

    code = "INDEX_UNAVAILABLE"


class IndexJobError(CtlakeError):
    code = "INDEX_JOB_FAILED"


# --- names ---------------------------------------------------------------------------------
def alias_of(cfg: Config, entity: str) -> str:
    return index_name(cfg, entity)


def template_name(cfg: Config, entity: str, mapping_hash: str) -> str:
    return f"{alias_of(cfg, entity)}-v{mapping_hash}"


_INDEX_RE = re.compile(r"-v(?P<hash>[0-9a-f]{8})-(?P<gen>\d+)$")


def parse_index(name: str) -> tuple[str, int] | None:
    """(mapping hash, generation) of a concrete index name, None for a name not of ours."""
    m = _INDEX_RE.search(name)
    return (m["hash"], int(m["gen"])) if m else None


# --- client --------------------------------------------------------------------------------
def client(es_cfg: ElasticsearchConfig, ic: IndexConfig) -> Elasticsearch:
    """A client for bulk work (also built inside Spark executors from the two config sections)."""
    from elasticsearch import Elasticsearch

    # 429/5xx are retried by the bulk helper with exponential backoff, not by the transport at once
    return Elasticsearch(es_cfg.url, request_timeout=ic.request_timeout_s, retry_on_timeout=True, max_retries=2,
                         retry_on_status=(), **auth_kwargs(es_cfg))


def check_available(es: Elasticsearch, url: str) -> dict:
    """``GET /`` once; an :class:`IndexUnavailable` that names the URL when it does not answer."""
    from elasticsearch import ApiError, TransportError

    try:
        return dict(es.options(request_timeout=10, max_retries=0).info())
    except (TransportError, ApiError) as exc:
        raise IndexUnavailable(f"Elasticsearch at {url} did not answer ({type(exc).__name__}: {exc})",
                               hint="start it (`ctlake infra up elasticsearch`) or fix elasticsearch.url; "
                                    "the lake is unaffected and the next `ctlake index` catches up") from None


# --- templates, indices, aliases -------------------------------------------------------------
def install_template(es: Elasticsearch, cfg: Config, entity: str, mapping: dict, mapping_hash: str,
                     settings: dict) -> str:
    """Put the versioned index template of ``entity`` (idempotent); return its name."""
    name = template_name(cfg, entity, mapping_hash)
    es.indices.put_index_template(
        name=name, index_patterns=[f"{name}-*"], priority=200, version=1,
        template={"settings": settings, "mappings": mapping},
        meta={"ctlake_entity": entity, "mapping_hash": mapping_hash, "alias": alias_of(cfg, entity)})
    return name


def drop_old_templates(es: Elasticsearch, cfg: Config, entity: str, mapping_hash: str) -> list[str]:
    """Delete the entity's index templates of other mapping hashes (after its alias moved on)."""
    current = template_name(cfg, entity, mapping_hash)
    found = es.options(ignore_status=404).indices.get_index_template(name=f"{alias_of(cfg, entity)}-v*")
    old = [t["name"] for t in found.get("index_templates", []) if t["name"] != current]
    for name in old:
        es.indices.delete_index_template(name=name)
    return old


def alias_targets(es: Elasticsearch, alias: str) -> list[str]:
    from elasticsearch import NotFoundError

    try:
        return sorted(es.indices.get_alias(name=alias))
    except NotFoundError:
        return []


def entity_indices(es: Elasticsearch, alias: str) -> list[str]:
    """Every concrete index of the entity (behind the alias or not)."""
    found = es.indices.get(index=f"{alias}-v*", expand_wildcards="open,closed", ignore_unavailable=True,
                           allow_no_indices=True)
    return sorted(n for n in found if parse_index(n) and n.startswith(alias + "-v"))


def create_index(es: Elasticsearch, alias: str, mapping_hash: str, *, drop_orphans: bool = True) -> str:
    """A new empty concrete index of the next generation (its template gives settings and mapping).
    With ``drop_orphans``, earlier indices of this entity that the alias does not point to (an
    interrupted build, a previous generation) are deleted first."""
    keep = set(alias_targets(es, alias))
    existing = entity_indices(es, alias)
    for name in existing:
        if drop_orphans and name not in keep:
            es.indices.delete(index=name, ignore_unavailable=True)
    gens = [g for n in existing if (p := parse_index(n)) and p[0] == mapping_hash for g in (p[1],)]
    name = f"{alias}-v{mapping_hash}-{max(gens, default=0) + 1}"
    es.indices.create(index=name)
    return name


def swap_alias(es: Elasticsearch, alias: str, new_index: str, *, delete_old: bool = True) -> list[str]:
    """Point ``alias`` at ``new_index`` only, in one atomic ``_aliases`` call; return the old indices."""
    old = [n for n in alias_targets(es, alias) if n != new_index]
    actions = [{"add": {"index": new_index, "alias": alias}}] + \
              [{"remove": {"index": n, "alias": alias}} for n in old]
    es.indices.update_aliases(actions=actions)
    if delete_old:
        for n in old:
            es.indices.delete(index=n, ignore_unavailable=True)
    return old


# --- documents -----------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-ready value: NaN/inf and None dropped, maps (Arrow: list of pairs) to objects, times ISO."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _clean(v)
            if v is not None:
                out[k] = v
        return out
    if isinstance(value, list):
        if value and isinstance(value[0], tuple) and len(value[0]) == 2:     # an Arrow map
            return _clean(dict(value))
        return [_clean(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return None
    return value


def document(row: dict) -> dict:
    """The ``_source`` of one row (a dict of column -> value)."""
    out = {}
    for k, v in row.items():
        v = _clean(v)
        if v is not None and v != {}:
            out[k] = v
    return out


def dumps(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def doc_id(values: Iterable[Any]) -> str:
    return "|".join("" if v is None else str(v) for v in values)


@dataclass
class BulkResult:
    ok: int = 0
    rejected: list[dict] = field(default_factory=list)     # {"doc_id", "status", "error_type", "reason"}


class _LockedIter:
    """One iterator shared by several bulk threads."""

    def __init__(self, it: Iterator) -> None:
        self._it = it
        self._lock = threading.Lock()

    def __iter__(self) -> _LockedIter:
        return self

    def __next__(self):
        with self._lock:
            return next(self._it)


def bulk(es: Elasticsearch, actions: Iterable[dict], ic: IndexConfig, *, threads: int = 1) -> BulkResult:
    """Send ``actions`` (bulk action dicts; ``_source`` may be a JSON string) with retries on
    429/502/503/504 and backoff; ``threads`` bulk requests in flight. Items refused with another
    status are returned as rejections (a delete of a missing document is fine); an item still
    429/5xx after the retries raises :class:`IndexUnavailable`."""
    from elasticsearch import helpers

    result = BulkResult()
    lock = threading.Lock()
    errors: list[BaseException] = []
    counter = {"n": 0}

    def counted(it: Iterable[dict]) -> Iterator[dict]:
        for a in it:
            with lock:
                counter["n"] += 1
            yield a

    shared = _LockedIter(counted(actions))

    def worker() -> None:
        try:
            for _ok, item in helpers.streaming_bulk(
                    es, shared, chunk_size=ic.chunk_docs, max_chunk_bytes=ic.chunk_mb * 1024 * 1024,
                    max_retries=ic.max_retries, initial_backoff=ic.initial_backoff_s,
                    max_backoff=ic.max_backoff_s, retry_on_status=RETRY_STATUS, raise_on_error=False,
                    raise_on_exception=True, yield_ok=False):
                op, info = next(iter(item.items()))
                status = int(info.get("status", 0))
                if op == "delete" and status == 404:
                    continue
                if status in RETRY_STATUS:
                    raise IndexUnavailable(f"Elasticsearch kept answering {status} for {info.get('_id')} after "
                                           f"{ic.max_retries} retries", hint="run `ctlake index` again later")
                err = info.get("error") or {}
                reason = err.get("reason") if isinstance(err, dict) else str(err)
                caused = err.get("caused_by", {}) if isinstance(err, dict) else {}
                if caused.get("reason"):
                    reason = f"{reason} (caused by {caused.get('type')}: {caused['reason']})"
                with lock:
                    result.rejected.append({"doc_id": str(info.get("_id")), "status": status,
                                            "error_type": err.get("type") if isinstance(err, dict) else None,
                                            "reason": (reason or "rejected")[:4000]})
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    if threads <= 1:
        worker()
    else:
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    if errors:
        from elasticsearch import ApiError, TransportError

        exc = errors[0]
        if isinstance(exc, ApiError) and exc.meta.status in RETRY_STATUS:
            raise IndexUnavailable(f"Elasticsearch kept answering {exc.meta.status} to bulk requests after "
                                   f"{ic.max_retries} retries ({exc})", hint="run `ctlake index` again later") from exc
        if isinstance(exc, TransportError):
            raise IndexUnavailable(f"Elasticsearch connection failed during a bulk request ({exc})",
                                   hint="run `ctlake index` again when it answers") from exc
        raise exc
    result.ok = counter["n"] - len(result.rejected)
    return result


def delete_ids(es: Elasticsearch, index: str, ids: Iterable[str], ic: IndexConfig) -> int:
    """Bulk-delete documents by id (there is no delete-by-query on the embedded node); returns the count."""
    ids = list(ids)
    if ids:
        bulk(es, ({"_op_type": "delete", "_index": index, "_id": i} for i in ids), ic)
    return len(ids)


def scan_ids(es: Elasticsearch, index: str) -> set[str]:
    """Every ``_id`` in ``index`` (point in time + search_after, sorted by ``_doc``)."""
    ids: set[str] = set()
    pit = es.open_point_in_time(index=index, keep_alive="2m")["id"]
    after = None
    try:
        while True:
            page = es.search(size=5000, pit={"id": pit, "keep_alive": "2m"}, sort=["_doc"], search_after=after,
                             source=False, track_total_hits=False)
            hits = page["hits"]["hits"]
            if not hits:
                break
            ids.update(h["_id"] for h in hits)
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)
    return ids


def iter_docs(es: Elasticsearch, index: str, *, page: int = 2000) -> Iterator[dict]:
    """Every hit (``_id`` and ``_source``) of ``index``, in ``_doc`` order (for scans and checks)."""
    pit = es.open_point_in_time(index=index, keep_alive="2m")["id"]
    after = None
    try:
        while True:
            res = es.search(size=page, pit={"id": pit, "keep_alive": "2m"}, sort=["_doc"], search_after=after,
                            track_total_hits=False)
            hits = res["hits"]["hits"]
            if not hits:
                return
            yield from hits
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)
