"""Training runs from MLflow → the ``training_runs`` index (no Delta table, so no change feed).

Every run of the profile's experiment (``mlflow.experiment``) becomes one document: run id and
name, status, start/end time, params (``flattened``), the final value of every metric
(``metrics.<name>``, doubles; the evaluation metrics and their ``_ci_low``/``_ci_high`` are declared
up front), user tags (``mlflow.*`` internals left out), and the registered model versions that
came from the run (``model_name``, ``model_version``, ``model`` = "name/version", aliases). A sync
upserts every run and deletes documents of runs that are gone; the set is small, so each sync
compares all of it.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from ctlake.config import Config
from ctlake.index import model
from ctlake.index.entities import entity, entity_mapping, index_settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

ENTITY = "training_runs"


def _ms(value: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None) if value else None


def _reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()  # noqa: S310 - the profile's URI
    except (urllib.error.URLError, OSError) as exc:
        raise model.IndexJobError(f"MLflow at {uri} did not answer ({exc})",
                                  hint="start it (`ctlake infra up mlflow`) or fix mlflow.tracking_uri") from None


def training_docs(cfg: Config) -> list[dict]:
    """One document (with ``run_id``) per run of ``cfg.mlflow.experiment``; [] when it does not exist."""
    from mlflow.tracking import MlflowClient

    _reachable(cfg.mlflow.tracking_uri)
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return []
    by_run: dict[str, list] = {}
    token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        for mv in page:
            if mv.run_id:
                by_run.setdefault(mv.run_id, []).append(mv)
        token = page.token
        if not token:
            break
    docs = []
    token = None
    while True:
        runs = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        for run in runs:
            info, data = run.info, run.data
            start, end = _ms(info.start_time), _ms(info.end_time)
            versions = by_run.get(info.run_id, [])
            docs.append({
                "run_id": info.run_id, "run_name": info.run_name, "experiment_id": exp.experiment_id,
                "experiment": exp.name, "status": info.status, "start_time": start, "end_time": end,
                "duration_s": (end - start).total_seconds() if start and end else None,
                "params": dict(data.params), "metrics": dict(data.metrics),
                "tags": {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
                "model_name": [mv.name for mv in versions], "model_version": [int(mv.version) for mv in versions],
                "model": [f"{mv.name}/{mv.version}" for mv in versions],
                "model_aliases": sorted({a for mv in versions for a in (getattr(mv, "aliases", None) or [])}),
                "artifact_uri": info.artifact_uri,
            })
        token = runs.token
        if not token:
            break
    return docs


def sync_training_runs(cfg: Config, es: Elasticsearch, *, full: bool = False):
    """Upsert every run of the experiment, delete the documents of runs no longer there."""
    from ctlake.index.indexer import EntityResult
    from ctlake.lake.runs import utcnow
    from ctlake.lake.schemas import TABLES

    ent = entity(ENTITY)
    mapping, h = entity_mapping(ent, TABLES, cfg)
    model.install_template(es, cfg, ENTITY, mapping, h, index_settings(cfg))
    alias = model.alias_of(cfg, ENTITY)
    targets = model.alias_targets(es, alias)
    current = targets[0] if len(targets) == 1 else None
    parsed = model.parse_index(current) if current else None
    rebuild = full or parsed is None or parsed[0] != h
    index = model.create_index(es, alias, h, drop_orphans=not cfg.index.keep_old_indices) if rebuild else current
    now = utcnow()
    docs = training_docs(cfg)
    actions = [{"_index": index, "_id": d["run_id"],
                "_source": model.dumps(model.document({**d, "indexed_at": now}))} for d in docs]
    out = model.bulk(es, actions, cfg.index)
    stale = set() if rebuild else model.scan_ids(es, index) - {d["run_id"] for d in docs}
    deleted = model.delete_ids(es, index, sorted(stale), cfg.index)
    es.indices.refresh(index=index)
    if rebuild:
        model.swap_alias(es, alias, index, delete_old=not cfg.index.keep_old_indices)
    return EntityResult(ENTITY, mode="full" if rebuild else "incremental", index=index, docs=out.ok,
                        deleted=deleted, rejected=len(out.rejected),
                        message="; ".join(f"{r['doc_id']}: {r['reason']}" for r in out.rejected)[:2000])
