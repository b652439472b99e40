"""Index faults against the real node: the job SIGKILLed mid-bulk and re-run; 429s retried with backoff."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from ctlake.config import LakeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def icfg(cfg, lake_tmp, elasticsearch):
    from ctlake.index.model import client

    prefix = f"ctlake-test-if{uuid.uuid4().hex[:6]}"
    c = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake_tmp / "lake")),
                            elasticsearch=dataclasses.replace(cfg.elasticsearch, index_prefix=prefix))
    yield c
    es = client(c.elasticsearch, c.index)
    names = list(es.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names), ignore_unavailable=True)
    templates = es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*")
    for t in templates.get("index_templates", []):
        es.indices.delete_index_template(name=t["name"])


def test_killed_mid_bulk_then_rerun_converges(spark, icfg):
    from ctlake.index.indexer import index_tables, read_state
    from ctlake.index.model import alias_of, client, scan_ids
    from ctlake.index.synthetic import feature_frame
    from ctlake.lake import delta

    es = client(icfg.elasticsearch, icfg.index)
    names = ("original_firstorder_Mean", "original_shape_MeshVolume", "original_glcm_Contrast")
    delta.write(spark, icfg, feature_frame(spark, 100, names=names), "gold.radiomics_features", mode="append")
    first = index_tables(spark, icfg, ["features"])["entities"][0]
    assert first["mode"] == "full" and first["docs"] == 100
    v_indexed = first["versions"]["gold.radiomics_features"]
    n_new = 12_000
    delta.write(spark, icfg, feature_frame(spark, n_new, start=100, names=names), "gold.radiomics_features",
                mode="append")
    total = 100 + n_new
    # the job in its own process: small bulk requests, one at a time, so it is mid-bulk for a while
    env = {**os.environ, "CTLAKE_PROFILE": "test", "CTLAKE__LAKE__ROOT": icfg.lake.root,
           "CTLAKE__ELASTICSEARCH__INDEX_PREFIX": icfg.elasticsearch.index_prefix,
           "CTLAKE__INDEX__CHUNK_DOCS": "25", "CTLAKE__INDEX__PARALLELISM": "1",
           "CTLAKE__SPARK__MASTER": "local[1]"}
    proc = subprocess.Popen([sys.executable, "-m", "ctlake", "index", "features", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    alias = alias_of(icfg, "features")
    seen = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            seen = es.count(index=alias)["count"]
            if seen >= 100 + 1000:           # some bulk requests landed, most not yet
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)     # the job's process group: python, its JVM and workers
        proc.wait(timeout=60)
    err = proc.stderr.read().decode(errors="replace")[-2000:]
    assert proc.returncode == -signal.SIGKILL, f"the job ended before it could be killed: {err}"
    assert 100 < seen < total
    es.indices.refresh(index=alias)
    partial = es.count(index=alias)["count"]
    assert partial < total
    # nothing was recorded for the killed run: the state still says the earlier version
    state = {(r["entity"], r["table"]): r for r in read_state(spark, icfg)}
    assert state[("features", "gold.radiomics_features")]["version"] == v_indexed
    # re-run: the change feed since that version again; upserts by id → nothing missing, nothing twice
    again = index_tables(spark, icfg, ["features"])["entities"][0]
    assert again["mode"] == "incremental" and again["docs"] == n_new
    assert es.count(index=alias)["count"] == total
    lake_ids = {f"{r.roi_id}|{r.params_hash}" for r in delta.read(spark, icfg, "gold.radiomics_features").collect()}
    assert scan_ids(es, alias) == lake_ids and len(lake_ids) == total


class _Throttle(http.server.BaseHTTPRequestHandler):
    """Forwards to Elasticsearch, answering the first ``reject`` bulk requests with 429 itself."""

    upstream = ""
    reject = 0
    rejected = 0
    lock = threading.Lock()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "_bulk" in self.path:
            with self.lock:
                throttle = type(self).rejected < type(self).reject
                if throttle:
                    type(self).rejected += 1
            if throttle:
                return self._send(429, json.dumps({"error": {"type": "es_rejected_execution_exception",
                                                             "reason": "rejected execution (test throttle)"},
                                                   "status": 429}).encode())
        req = urllib.request.Request(self.upstream + self.path, data=body or None, method=self.command,
                                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                self._send(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            self._send(exc.code, exc.read(), dict(exc.headers))

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

    def log_message(self, *args):
        pass


def test_429_is_retried_with_backoff(icfg):
    from ctlake.index.model import IndexUnavailable, bulk, client

    es = client(icfg.elasticsearch, icfg.index)
    index = f"{icfg.elasticsearch.index_prefix}-throttled"
    es.indices.create(index=index, mappings={"dynamic": "strict", "properties": {"n": {"type": "long"}}},
                      settings={"number_of_replicas": 0})
    _Throttle.upstream, _Throttle.reject, _Throttle.rejected = icfg.elasticsearch.url.rstrip("/"), 3, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        via = dataclasses.replace(icfg.elasticsearch, url=f"http://127.0.0.1:{server.server_port}")
        ic = dataclasses.replace(icfg.index, chunk_docs=100, initial_backoff_s=0.05, max_backoff_s=0.2, max_retries=4)
        proxied = client(via, ic)
        actions = [{"_index": index, "_id": str(i), "_source": {"n": i}} for i in range(500)]
        res = bulk(proxied, actions, ic)
        assert res.ok == 500 and not res.rejected and _Throttle.rejected == 3
        es.indices.refresh(index=index)
        assert es.count(index=index)["count"] == 500
        # a node that keeps refusing: the run fails (and so records nothing) instead of dropping documents
        _Throttle.reject, _Throttle.rejected = 10**6, 0
        with pytest.raises(IndexUnavailable, match="429"):
            bulk(proxied, actions[:10], dataclasses.replace(ic, max_retries=2))
        assert _Throttle.rejected == 3
    finally:
        server.shutdown()
