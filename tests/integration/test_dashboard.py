"""The built-in dashboard page (``ctlake dashboard``) in a real browser: Debian's chromium driven by
Playwright, against the real Elasticsearch node of the test profile.

Known synthetic documents are indexed under an index prefix of this module's own (with the real
generated mappings, templates and aliases of ``ctlake.index.model``), the page is started as the
CLI starts it (a ``ctlake dashboard`` subprocess on a free port), and the test checks: the page
loads; every panel of the five dashboards draws a Plotly SVG; the shown counts equal Elasticsearch's
(asked directly here, not through ``ctlake.index.aggs``); the manufacturer widget, the QC flag and
the date range change them; a click on a bar lists exactly that bucket's series; Elasticsearch down
or no index gives a sentence on the page, not a traceback.

Screenshots of each dashboard go to ``$CTLAKE_SCREENSHOTS`` (``docs`` = the repository's docs/, as
in the README) or else to the test's tmp folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 90_000            # a generous ceiling for the page to draw on a loaded machine (never a pass criterion)
MANUFACTURERS = ["SIEMENS"] * 6 + ["GE MEDICAL SYSTEMS"] * 5 + ["Philips"] * 3
MODELS = {"SIEMENS": ("SOMATOM Force", "SOMATOM Definition"), "GE MEDICAL SYSTEMS": ("Revolution",),
          "Philips": ("iCT 256",)}
KERNELS = {"SIEMENS": ("Br40", "Bl57"), "GE MEDICAL SYSTEMS": ("STANDARD", "LUNG"), "Philips": ("B",)}
THICKNESS = (0.625, 1.0, 1.25, 2.5, 1.0)
REFUSED = {4, 11}
FLAGS = {1: ["GANTRY_TILT"], 7: ["GANTRY_TILT", "MISSING_SLICE"], 12: ["GANTRY_TILT"], 2: ["MISSING_SLICE"]}


# --- known documents ---------------------------------------------------------------------
def _ts(d: dt.datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def synthetic_docs() -> dict[str, list[tuple[str, dict]]]:
    """(``_id``, document) per entity: 14 series over 3 manufacturers, their nodules and feature
    vectors, quarantine rows, pipeline runs and training runs (every value a function of its number)."""
    t0 = dt.datetime(2025, 3, 1, 10, 0)
    series, nodules, features = [], [], []
    for i, man in enumerate(MANUFACTURERS):
        uid = f"1.2.826.0.1.3680043.8.498.{900 + i}"
        built = i not in REFUSED
        flags = FLAGS.get(i, [])
        s = {"series_instance_uid": uid, "study_instance_uid": f"1.2.826.0.1.3680043.8.499.{i // 2}",
             "patient_pseudo_id": f"P-{i // 2:05d}", "status": "built" if built else "refused",
             "qc_flags": flags, "slices": 100 + i, "manufacturer": man,
             "manufacturer_model_name": MODELS[man][i % len(MODELS[man])],
             "convolution_kernel": KERNELS[man][i % len(KERNELS[man])], "kvp": 100.0 + 20 * (i % 3),
             "slice_thickness_mm": THICKNESS[i % len(THICKNESS)], "pixel_spacing_mm": [0.7, 0.7],
             "modality": "CT", "study_date": f"2024-{1 + i % 6:02d}-15", "built_at": _ts(t0 + dt.timedelta(days=i)),
             "qc_clean": built and not flags, "qc_flag_count": len(flags), "run_id": "dash-test"}
        if not built:
            s["refusal_code"] = "TOO_FEW_SLICES"
        series.append((uid, s))
        if not built:
            continue
        for j in range(2):
            nid = f"n{i:02d}{j}"
            mal = float(1 + (i + 2 * j) % 5)
            nodules.append((nid, {"nodule_id": nid, "series_instance_uid": uid, "source": "luna16",
                                  "patient_pseudo_id": s["patient_pseudo_id"], "status": "ok",
                                  "diameter_mm": 4.0 + 3 * j + i % 4, "malignancy": mal, "built_at": s["built_at"]}))
            k = 2 * i + j
            ok = k != 5
            f = {"roi_id": nid, "params_hash": "p1", "series_instance_uid": uid,
                 "patient_pseudo_id": s["patient_pseudo_id"], "status": "ok" if ok else "failed",
                 "nodule_malignancy": mal, "nodule_diameter_mm": 4.0 + 3 * j, "engine": "test", "run_id": "dash-test",
                 "extracted_at": _ts(t0 + dt.timedelta(days=i, hours=2))}
            if ok:
                f["features"] = {"original_firstorder_Mean": -600.0 + 37.0 * k + 40 * mal,
                                 "original_shape_Sphericity": 0.4 + 0.02 * k,
                                 "original_glcm_Contrast": 10.0 + 3.5 * (k % 7),
                                 "original_shape_MeshVolume": 50.0 * (k + 1)}
                f["feature_count"] = 4
            else:
                f["error_code"] = "EMPTY_MASK"
            features.append((f"{nid}|p1", f))
    quarantine = [(f"q{i}", {"quarantine_id": f"q{i}", "stage": stage, "error_code": code,
                             "error_message": "synthetic", "ingested_at": _ts(t0 + dt.timedelta(days=i % 3))})
                  for i, (stage, code) in enumerate([("parse", "NOT_DICOM"), ("deid", "PHI_IN_PIXELS"),
                                                     ("parse", "NOT_DICOM"), ("volume", "TRUNCATED"),
                                                     ("parse", "NOT_CT")])]
    runs = []
    for i, (job, status, dur) in enumerate([("ingest", "succeeded", 30.0), ("volumes", "succeeded", 80.0),
                                            ("volumes", "failed", 12.0), ("radiomics", "succeeded", 140.0),
                                            ("index_search", "succeeded", 9.0), ("index_search", "failed", 2.0)]):
        runs.append((f"run{i}", {"run_id": f"run{i}", "job": job, "status": status,
                                 "started_at": _ts(t0 + dt.timedelta(days=i)), "duration_s": dur,
                                 "rows_in": 100 * (i + 1), "rows_out": 90 * (i + 1), "profile": "test"}))
    training = []
    for i, (auc, model) in enumerate([(0.71, "ctlake-malignancy/1"), (0.78, "ctlake-malignancy/2"),
                                      (0.66, "ctlake-hybrid/1")]):
        training.append((f"mlrun{i}", {"run_id": f"mlrun{i}", "run_name": f"train-{i}", "status": "FINISHED",
                                       "start_time": _ts(t0 + dt.timedelta(days=i)), "model": [model],
                                       "model_name": [model.split("/")[0]], "model_version": [int(model[-1])],
                                       "metrics": {"test_auc": auc, "test_auc_ci_low": auc - 0.08,
                                                   "test_auc_ci_high": min(1.0, auc + 0.07)}}))
    return {"series": series, "nodules": nodules, "features": features, "quarantine": quarantine,
            "pipeline_runs": runs, "training_runs": training}


def fill_index(es, cfg, docs: dict[str, list[tuple[str, dict]]]) -> None:
    """Index ``docs`` the way ``ctlake index`` lays them out: generated mapping → versioned template →
    concrete index → documents → alias."""
    from ctlake.index import model
    from ctlake.index.entities import ENTITIES, entity_mapping, index_settings
    from ctlake.lake.schemas import TABLES

    for entity, items in docs.items():
        mapping, h = entity_mapping(ENTITIES[entity], TABLES, cfg)
        model.install_template(es, cfg, entity, mapping, h, index_settings(cfg))
        alias = model.alias_of(cfg, entity)
        index = model.create_index(es, alias, h)
        out = model.bulk(es, ({"_index": index, "_id": i, "_source": model.document(d)} for i, d in items), cfg.index)
        assert out.ok == len(items) and not out.rejected, (entity, out.rejected[:3])
        es.indices.refresh(index=index)
        model.swap_alias(es, alias, index)


def _drop(es, prefix: str) -> None:
    names = list(es.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True))
    if names:       # by name: the node refuses wildcard deletes
        es.indices.delete(index=",".join(names), ignore_unavailable=True)
    templates = es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*")
    for t in templates.get("index_templates", []):
        es.indices.delete_index_template(name=t["name"])


# --- the page and the browser --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path


def start_dashboard(tmp: Path, env_over: dict[str, str], name: str) -> Server:
    """``ctlake --profile test dashboard --port P`` as a user runs it; returns once it answers."""
    port = _free_port()
    env = {**os.environ, "CTLAKE_PROFILE": "test", **env_over}
    log = tmp / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ctlake", "--profile", "test", "dashboard", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=fh)
    url = proc.stdout.readline().decode().strip()             # the command prints its URL first
    assert url == f"http://127.0.0.1:{port}/", (url, log.read_text())
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"ctlake dashboard did not start (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    return Server(proc, url, log)


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver "
                    "(infra/local/install_test_deps.sh does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("CTLAKE_SCREENSHOTS")
    if where:
        path = ROOT / where if not os.path.isabs(where) else Path(where)
    else:
        path = tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dash_env(cfg, elasticsearch, tmp_path_factory) -> Iterator[SimpleNamespace]:
    from ctlake.index.model import client

    prefix = f"ctlake-test-dash{uuid.uuid4().hex[:6]}"
    dcfg = dataclasses.replace(cfg, elasticsearch=dataclasses.replace(cfg.elasticsearch, index_prefix=prefix))
    es = client(dcfg.elasticsearch, dcfg.index)
    tmp = tmp_path_factory.mktemp("dashboard")
    docs = synthetic_docs()
    try:
        fill_index(es, dcfg, docs)
        server = start_dashboard(tmp, {"CTLAKE__ELASTICSEARCH__INDEX_PREFIX": prefix}, "dashboard")
        try:
            yield SimpleNamespace(cfg=dcfg, es=es, prefix=prefix, docs=docs, server=server, tmp=tmp)
        finally:
            stop(server)
    finally:
        _drop(es, prefix)
        shutil.rmtree(tmp, ignore_errors=True)


# --- page helpers ----------------------------------------------------------------------------
def _panels(dashboard: str) -> list[str]:
    from ctlake.index.aggs import PANELS

    return [p.id for p in PANELS if p.dashboard == dashboard]


def open_tab(page, dashboard: str) -> None:
    """Click the tab and wait until every panel of that dashboard has drawn its SVG."""
    from ctlake.index.aggs import DASHBOARDS

    page.locator(f"#tab-{dashboard}").click()
    for pid in _panels(dashboard):
        page.locator(f"#panel-{pid} .js-plotly-plot .main-svg").first.wait_for(state="visible", timeout=WAIT_MS)
    assert DASHBOARDS[dashboard] in page.locator(".tab--selected, [aria-selected=true]").first.inner_text()


def shown_count(page, entity: str) -> int:
    return int(page.locator(f"#total-{entity}").get_attribute("data-count"))


def wait_count(page, entity: str, expected: int) -> int:
    """The shown total once it equals ``expected`` -- or, after the wait, whatever it shows (to assert)."""
    try:
        page.wait_for_function("([id, n]) => { const e = document.getElementById(id);"
                               " return e && e.dataset.count === String(n); }",
                               arg=[f"total-{entity}", expected], timeout=WAIT_MS)
    except Exception:  # noqa: BLE001 - the assertion below reports the value
        pass
    return shown_count(page, entity)


def chart_totals(page, panel_id: str) -> dict[str, float]:
    """Sum of the drawn y values per x category over every trace of a panel's plot (what the bars show)."""
    traces = page.evaluate("id => document.querySelector(`#panel-${id} .js-plotly-plot`).data"
                           ".map(t => ({x: t.x, y: t.y}))", panel_id)
    out: dict[str, float] = {}
    for t in traces:
        for x, y in zip(t["x"], t["y"], strict=True):
            out[str(x)] = out.get(str(x), 0) + y
    return out


def es_terms(es, index: str, field: str, query: dict | None = None) -> dict[str, int]:
    res = es.search(index=index, size=0, query=query or {"match_all": {}},
                    aggs={"t": {"terms": {"field": field, "size": 100}}})
    return {str(b["key"]): b["doc_count"] for b in res["aggregations"]["t"]["buckets"]}


def click_bar(page, panel_id: str, x: str, trace: str | None = None) -> None:
    """Click the bar drawn for category ``x`` (in the trace named ``trace``, else the first) of a
    panel, as a person does with the mouse."""
    traces = page.evaluate("id => document.querySelector(`#panel-${id} .js-plotly-plot`).data"
                           ".map(t => ({name: t.name, x: t.x}))", panel_id)
    t = next(k for k, tr in enumerate(traces) if trace is None or tr["name"] == trace)
    i = [str(v) for v in traces[t]["x"]].index(x)
    bar = page.locator(f"#panel-{panel_id} .barlayer .trace").nth(t).locator(".point path").nth(i)
    box = bar.bounding_box()
    assert box and box["height"] > 0, f"bar {x} of {panel_id} not drawn"
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.move(cx, cy + 1)
    page.mouse.click(cx, cy + 1)


def drill_uids(page) -> list[str]:
    page.locator("#drill-table").wait_for(state="visible", timeout=WAIT_MS)
    return page.locator("#drill-table td.uid").all_inner_texts()


# --- tests -------------------------------------------------------------------------------------
def test_every_dashboard_draws_with_the_index_counts(dash_env, browser, shots):
    from ctlake.index.aggs import DASHBOARDS

    es, prefix = dash_env.es, dash_env.prefix
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(dash_env.server.url)
    page.locator("#tabs").wait_for(timeout=WAIT_MS)
    for name in DASHBOARDS:
        open_tab(page, name)
        drawn = page.locator("#dashboard .panel").count()
        assert drawn == len(_panels(name)), name
        for pid in _panels(name):        # one Plotly SVG per panel, with something in it (not "no data")
            assert page.locator(f"#panel-{pid} .main-svg").count() >= 1, pid
            assert int(page.locator(f"#panel-{pid}").get_attribute("data-rows")) > 0, pid
        totals = page.locator("#totals [id^=total-]").evaluate_all("els => els.map(e => e.id.slice(6))")
        assert totals, name
        for entity in totals:            # what the page shows = what Elasticsearch holds
            assert shown_count(page, entity) == es.count(index=f"{prefix}-{entity}")["count"], (name, entity)
        assert page.locator("#status").inner_text().strip() == ""
        page.screenshot(path=str(shots / f"dashboard_{name}.png"), full_page=True)
    assert not errors, errors

    # the known documents, counted by Elasticsearch and by hand, equal the bars drawn
    page.locator("#tab-catalog").click()
    page.locator("#panel-catalog_manufacturer .main-svg").first.wait_for(timeout=WAIT_MS)
    by_hand = {m: MANUFACTURERS.count(m) for m in set(MANUFACTURERS)}
    assert es_terms(es, f"{prefix}-series", "manufacturer") == by_hand
    assert chart_totals(page, "catalog_manufacturer") == by_hand
    assert chart_totals(page, "catalog_kernel") == es_terms(es, f"{prefix}-series", "convolution_kernel")
    page.locator("#tab-data_quality").click()
    page.locator("#panel-dq_qc_flags .main-svg").first.wait_for(timeout=WAIT_MS)
    flags = es_terms(es, f"{prefix}-series", "qc_flags")
    assert flags == {"GANTRY_TILT": 3, "MISSING_SLICE": 2}
    assert chart_totals(page, "dq_qc_flags") == flags
    page.locator("#tab-pipelines").click()
    page.locator("#panel-pipe_status_time .main-svg").first.wait_for(timeout=WAIT_MS)
    assert sum(chart_totals(page, "pipe_status_time").values()) == len(dash_env.docs["pipeline_runs"])
    page.close()


def test_filters_change_the_counts(dash_env, browser):
    es, prefix = dash_env.es, dash_env.prefix
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(dash_env.server.url)
    open_tab(page, "catalog")
    all_series = es.count(index=f"{prefix}-series")["count"]
    assert shown_count(page, "series") == all_series == len(MANUFACTURERS)

    # the manufacturer widget, used as a person uses it: open, type, pick
    man = "GE MEDICAL SYSTEMS"
    page.locator("#f-manufacturer").click()
    page.keyboard.type("GE MED")
    page.get_by_role("option", name=man).first.click()
    page.keyboard.press("Escape")
    expected = es.count(index=f"{prefix}-series", query={"term": {"manufacturer": man}})["count"]
    assert expected == MANUFACTURERS.count(man) < all_series
    assert wait_count(page, "series", expected) == expected
    page.locator("#panel-catalog_manufacturer .main-svg").first.wait_for(timeout=WAIT_MS)
    assert chart_totals(page, "catalog_manufacturer") == {man: expected}
    # ... and it narrows the radiomics features through their series
    open_tab(page, "radiomics")
    ge_uids = [h["_id"] for h in es.search(index=f"{prefix}-series", query={"term": {"manufacturer": man}},
                                           size=100, source=False)["hits"]["hits"]]
    feats = es.count(index=f"{prefix}-features", query={"terms": {"series_instance_uid": ge_uids}})["count"]
    assert 0 < feats < es.count(index=f"{prefix}-features")["count"]
    assert wait_count(page, "features", feats) == feats

    # QC flag and date range from the URL (the same widgets, set on load)
    page.goto(f"{dash_env.server.url}?tab=data_quality&qc_flag=GANTRY_TILT")
    page.locator("#panel-dq_qc_flags .main-svg").first.wait_for(timeout=WAIT_MS)
    tilt = es.count(index=f"{prefix}-series", query={"term": {"qc_flags": "GANTRY_TILT"}})["count"]
    assert tilt == 3
    assert wait_count(page, "series", tilt) == tilt
    page.goto(f"{dash_env.server.url}?tab=catalog&from=2025-03-02&to=2025-03-06")
    page.locator("#panel-catalog_manufacturer .main-svg").first.wait_for(timeout=WAIT_MS)
    in_range = es.count(index=f"{prefix}-series", query={"range": {"built_at": {
        "gte": "2025-03-02T00:00:00Z", "lte": "2025-03-06T23:59:59.999Z"}}})["count"]
    assert in_range == 5
    assert wait_count(page, "series", in_range) == in_range
    assert sum(chart_totals(page, "catalog_kernel").values()) == in_range
    page.close()


def test_click_through_lists_the_series_of_a_bar(dash_env, browser):
    es, prefix = dash_env.es, dash_env.prefix
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(dash_env.server.url)
    open_tab(page, "catalog")
    kernel = "STANDARD"
    click_bar(page, "catalog_kernel", kernel)
    uids = drill_uids(page)
    hits = es.search(index=f"{prefix}-series", query={"term": {"convolution_kernel": kernel}}, size=100,
                     source=False, sort=[{"series_instance_uid": "asc"}])["hits"]["hits"]
    assert uids == [h["_id"] for h in hits] and len(uids) == 3
    assert int(page.locator("#drill-count").get_attribute("data-count")) == len(uids)

    # a QC flag bar: the series with that flag, by hand
    open_tab(page, "data_quality")
    click_bar(page, "dq_qc_flags", "MISSING_SLICE")
    page.wait_for_function("() => document.querySelector('#drill h3')?.innerText.includes('MISSING_SLICE')",
                           timeout=WAIT_MS)
    uids = drill_uids(page)
    expected = sorted(s["series_instance_uid"] for _, s in dash_env.docs["series"] if "MISSING_SLICE" in s["qc_flags"])
    assert uids == expected and len(uids) == 2

    # one segment of a stacked bar (manufacturer, split by model) under a date filter: bucket AND filter
    page.goto(f"{dash_env.server.url}?tab=catalog&from=2025-03-01&to=2025-03-04")
    page.locator("#panel-catalog_manufacturer .main-svg").first.wait_for(timeout=WAIT_MS)
    assert wait_count(page, "series", 4) == 4
    click_bar(page, "catalog_manufacturer", "SIEMENS", trace="SOMATOM Force")
    page.wait_for_function("() => document.querySelector('#drill h3')?.innerText.includes('SOMATOM Force')",
                           timeout=WAIT_MS)
    uids = drill_uids(page)
    hits = es.search(index=f"{prefix}-series", size=100, source=False, sort=[{"series_instance_uid": "asc"}],
                     query={"bool": {"filter": [
                         {"term": {"manufacturer": "SIEMENS"}}, {"term": {"manufacturer_model_name": "SOMATOM Force"}},
                         {"range": {"built_at": {"gte": "2025-03-01", "lte": "2025-03-04T23:59:59.999Z"}}}]}})["hits"]
    assert uids == [h["_id"] for h in hits["hits"]] and len(uids) == 2
    page.close()


def test_elasticsearch_down_or_no_index_is_a_sentence_not_a_traceback(dash_env, browser):
    down = start_dashboard(dash_env.tmp, {"CTLAKE__ELASTICSEARCH__URL": f"http://127.0.0.1:{_free_port()}",
                                          "CTLAKE__ELASTICSEARCH__INDEX_PREFIX": dash_env.prefix}, "down")
    nowhere = f"ctlake-test-none{uuid.uuid4().hex[:6]}"
    empty = start_dashboard(dash_env.tmp, {"CTLAKE__ELASTICSEARCH__INDEX_PREFIX": nowhere}, "empty")
    try:
        page = browser.new_page()
        for server, words in ((down, "is not answering"), (empty, "No search index")):
            page.goto(server.url)
            status = page.locator("#status")
            page.wait_for_function("w => document.getElementById('status')?.innerText.includes(w)", arg=words,
                                   timeout=WAIT_MS)
            text = status.inner_text()
            assert ("ctlake infra up elasticsearch" if server is down else "ctlake index") in text
            body = page.locator("body").inner_text()
            assert "Traceback" not in body and '.py"' not in body and "Exception" not in body, body[:2000]
            page.locator("#tab-models").click()         # every tab says it too, and the page keeps working
            page.wait_for_function("() => document.querySelector('#dashboard .no-data') &&"
                                   " document.getElementById('tab-models')?.getAttribute('aria-selected') !== 'false'",
                                   timeout=WAIT_MS)
            assert words in page.locator("#status").inner_text()
        page.close()
    finally:
        stop(down)
        stop(empty)
