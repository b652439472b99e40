"""Search-index throughput: the incremental index job (Delta change feed → Elasticsearch) against a
plain ``elasticsearch.helpers.bulk`` loop over the same documents. Writes bench/results/index.json.

    .venv/bin/python bench/index.py [--docs 100000]

Ours: ``docs`` radiomics feature rows (every PyRadiomics name the engine computes, as
``features.<name>`` doubles) committed to ``gold.radiomics_features`` in one Delta commit, then the
whole job timed -- ``index_tables(spark, cfg, ["features"])``: state, change feed, bulk from the Spark
tasks, refresh, ``ops.index_state`` and ``ops.pipeline_runs`` rows. The peer: the same documents
(the ``_source`` our job produces, as Python dicts in memory) sent by ``helpers.bulk`` with the same
chunk size into an index with the same mapping, once before and once after ours (``ratio`` uses
their mean). ``lag_s``: seconds from the return of a small Delta commit until its rows are
searchable (seen by a search from another client) with the job run right after the commit (median of
``--lag-runs``); ``lag_job_s_runs`` are the times until the job returned.

Needs the `test` profile's Elasticsearch (started if not running). Index names start with
``ctlake-bench-`` and are deleted at the end. Not a test: nothing passes or fails on these numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import machine, versions, write_result  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--lag-runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "index.json"))
    args = ap.parse_args(argv)

    from ctlake.config import LakeConfig, load_config
    from ctlake.index import indexer
    from ctlake.index.entities import ENTITIES, entity_mapping, index_settings, radiomics_feature_names
    from ctlake.index.model import alias_of, alias_targets, client
    from ctlake.index.synthetic import feature_frame
    from ctlake.infra.services import SERVICES
    from ctlake.lake import delta
    from ctlake.lake.schemas import TABLES
    from ctlake.spark import get_spark
    from elasticsearch import helpers

    cfg = load_config("test", conf_dir=ROOT / "conf")     # CTLAKE__* overrides apply
    work = Path(tempfile.mkdtemp(prefix="ctlake-bench-index-"))
    prefix = f"ctlake-bench-{uuid.uuid4().hex[:6]}"
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(work / "lake")),
                              elasticsearch=dataclasses.replace(cfg.elasticsearch, index_prefix=prefix))
    SERVICES["elasticsearch"](cfg).start(progress=lambda m: print(f"[bench] {m}", file=sys.stderr))
    es = client(cfg.elasticsearch, cfg.index)
    spark = get_spark(cfg, app_name="ctlake-bench-index")
    say = lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True)  # noqa: E731
    names = radiomics_feature_names()
    load_start = _load()
    try:
        # the table exists and is indexed (one row), so the timed run is an incremental one
        delta.write(spark, cfg, feature_frame(spark, 1, start=10**8, names=names), "gold.radiomics_features",
                    mode="append", count=False)
        indexer.index_tables(spark, cfg, ["features"])
        say(f"committing {args.docs} feature rows ({len(names)} features each)")
        delta.write(spark, cfg, feature_frame(spark, args.docs, names=names), "gold.radiomics_features",
                    mode="append", count=False)
        version = indexer.table_version(spark, cfg.table_path("gold.radiomics_features"))

        # the same documents for the peer: what our job sends, as dicts
        say("collecting the documents for the peer")
        ent = ENTITIES["features"]
        frame = indexer._docs_frame(spark, cfg, ent, TABLES, {"gold.radiomics_features": version, "gold.nodules": -1},
                                    delta.read(spark, cfg, "gold.radiomics_features").filter("roi_id < 'r1'"))
        docs = [(r[indexer.ID_COL], json.loads(r[indexer.SOURCE_COL])) for r in frame.toLocalIterator()]
        assert len(docs) == args.docs, len(docs)
        mapping, _ = entity_mapping(ent, TABLES, cfg)
        settings = index_settings(cfg)

        def peer(tag: str) -> float:
            index = f"{prefix}-peer-{tag}"
            es.indices.create(index=index, mappings=mapping, settings=settings)
            t0 = time.perf_counter()
            ok, errors = helpers.bulk(es, ({"_index": index, "_id": i, "_source": d} for i, d in docs),
                                      chunk_size=cfg.index.chunk_docs, max_chunk_bytes=cfg.index.chunk_mb * 2**20,
                                      raise_on_error=False)
            es.indices.refresh(index=index)
            seconds = time.perf_counter() - t0
            assert ok == args.docs and not errors, errors[:3]
            assert es.count(index=index)["count"] == args.docs
            es.indices.delete(index=index)
            say(f"peer ({tag}): {seconds:.1f} s, {args.docs / seconds:.0f} docs/s")
            return seconds

        peer_s = [peer("before")]
        say("ours: the incremental index job")
        t0 = time.perf_counter()
        summary = indexer.index_tables(spark, cfg, ["features"])
        ours_s = time.perf_counter() - t0
        res = summary["entities"][0]
        assert res["mode"] == "incremental" and res["docs"] == args.docs and not res.get("rejected"), res
        alias = alias_of(cfg, "features")
        assert es.count(index=alias)["count"] == args.docs + 1
        say(f"ours: {ours_s:.1f} s, {args.docs / ours_s:.0f} docs/s")
        peer_s.append(peer("after"))
        docs.clear()

        # lag: a small commit, the job right after it, until its rows are searchable
        lags, jobs = [], []
        for k in range(args.lag_runs):
            start = 2 * 10**8 + 100 * k
            ids = [f"r{start + i:09d}|p1" for i in range(10)]
            delta.write(spark, cfg, feature_frame(spark, 10, start=start, names=names), "gold.radiomics_features",
                        mode="append", count=False)
            t0 = time.perf_counter()
            seen: list[float] = []

            def watch(ids=ids, t0=t0, seen=seen) -> None:      # searchable = found by a search, from another client
                watcher = client(cfg.elasticsearch, cfg.index)
                while watcher.count(index=alias, query={"ids": {"values": ids}})["count"] < len(ids):
                    time.sleep(0.02)
                seen.append(time.perf_counter() - t0)

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            indexer.index_tables(spark, cfg, ["features"])
            jobs.append(round(time.perf_counter() - t0, 2))
            thread.join(timeout=60)
            lags.append(round(seen[0], 2))
            say(f"lag run {k + 1}: searchable after {lags[-1]} s, job returned after {jobs[-1]} s")
        peer_mean = statistics.mean(peer_s)
        result = {
            "benchmark": "index",
            "docs": args.docs,
            "features_per_doc": len(names),
            "ours": {"what": "incremental index job (change feed → bulk from Spark tasks → refresh → state)",
                     "seconds": round(ours_s, 2), "docs_per_s": round(args.docs / ours_s, 1)},
            "peer": {"what": "elasticsearch.helpers.bulk over the same documents (dicts in memory)",
                     "seconds": [round(s, 2) for s in peer_s], "docs_per_s": round(args.docs / peer_mean, 1)},
            "ratio": round(peer_mean / ours_s, 3),
            "goal_ratio": 0.8,
            "lag_s": statistics.median(lags),
            "lag_s_runs": lags,
            "lag_job_s_runs": jobs,      # the whole job (it records state and its run after the refresh)
            "settings": {"chunk_docs": cfg.index.chunk_docs, "parallelism": cfg.index.parallelism,
                         "shards": cfg.index.shards, "replicas": cfg.index.replicas, "spark_master": cfg.spark.master},
            "elasticsearch": es.info()["version"]["number"],
            "load_avg_1_5_15": {"start": load_start, "end": _load()},
            "versions": versions("pyspark", "delta-spark", "elasticsearch", "pyarrow"),
            "machine": machine(),
            "index": alias_targets(es, alias),
        }
    finally:
        names_left = list(es.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True))
        if names_left:
            es.indices.delete(index=",".join(names_left), ignore_unavailable=True)
        for t in es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*") \
                .get("index_templates", []):
            es.indices.delete_index_template(name=t["name"])
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
