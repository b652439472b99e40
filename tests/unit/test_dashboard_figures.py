"""The dashboard page's pure parts: one figure per panel from aggregation rows, the bucket a click
names, the filters of the widgets, and the sentence shown when Elasticsearch fails (no services)."""

from __future__ import annotations

import pytest
from ctlake.config import load_config
from ctlake.dashboard import data, figures
from ctlake.dashboard.app import _bucket_of
from ctlake.index.aggs import PANELS


def _rows(panel) -> list[dict]:
    """Two buckets (two splits each when the panel has two aggregations) with every metric filled."""
    keys = {"terms": ["A", "B"], "histogram": [0.0, 0.5], "date_histogram": ["2025-01-01T00:00:00.000Z",
                                                                                "2025-02-01T00:00:00.000Z"]}
    first = keys[panel.buckets[0].kind] if panel.buckets else [None]
    second = keys[panel.buckets[1].kind] if len(panel.buckets) > 1 else [None]
    rows = []
    for n, (k, s) in enumerate((k, s) for k in first for s in second):
        row = {"count": n + 1, **{m.name: float(n + 1) for m in panel.metrics}}
        if panel.buckets:
            row["key"] = k
        if len(panel.buckets) > 1:
            row["split"] = s
        rows.append(row)
    return rows


@pytest.mark.parametrize("panel", PANELS, ids=[p.id for p in PANELS])
def test_every_panel_draws_and_its_points_name_their_bucket(panel):
    rows = _rows(panel)
    fig = figures.figure(panel, rows, extra={"correlation": {"pearson_r": 0.5, "n": 10}})
    assert fig.data, panel.id
    kinds = {t.type for t in fig.data}
    expected = {"metric": "indicator", "bar": "bar", "line": "scatter", "pie": "pie", "table": "table",
                "heatmap": "heatmap"}[panel.chart]
    assert kinds == {expected}
    if panel.chart in ("bar", "line", "pie"):
        named = {tuple(c) for t in fig.data for c in t.customdata}
        assert named == {(r["key"], r.get("split")) for r in rows}
        metric = "count" if panel.chart == "pie" else figures._value_metrics(panel)[0]
        traces = [t for t in fig.data if len(panel.buckets) > 1 or panel.chart == "pie" or t.name == metric]
        drawn = sum(v for t in traces for v in (t.values if panel.chart == "pie" else t.y))
        assert drawn == sum(r[metric] for r in rows)
    if panel.chart == "heatmap":
        assert sum(map(sum, fig.data[0].z)) == sum(r["count"] for r in rows)


def test_no_rows_is_a_no_data_figure_not_an_error():
    for p in PANELS:
        fig = figures.figure(p, [])
        assert not fig.data and fig.layout.annotations[0].text == "no data"


def test_a_click_names_key_and_split():
    assert _bucket_of({"customdata": ["SIEMENS", "SOMATOM Force"], "x": "SIEMENS"}) == ("SIEMENS", "SOMATOM Force")
    assert _bucket_of({"customdata": [["built", None]], "label": "built"}) == ("built", None)   # pie nesting
    assert _bucket_of({"x": "B"}) == ("B", None)


def test_widget_filters():
    f = data.make_filters("2025-03-01", "2025-03-04T00:00:00", "SIEMENS", ["GANTRY_TILT"])
    assert f.date_from == "2025-03-01" and f.date_to == "2025-03-04T23:59:59.999Z"     # the whole last day
    assert f.manufacturer == ("SIEMENS",) and f.qc_flag == ("GANTRY_TILT",)
    assert data.make_filters() == data.make_filters(None, None, [], None)


def test_problems_are_sentences():
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elastic_transport import ConnectionError as TConnectionError
    from elasticsearch import NotFoundError

    cfg = load_config("test", environ={})
    down = data.explain(TConnectionError("refused"), cfg)
    assert down.kind == "unavailable" and cfg.elasticsearch.url in down.text()
    assert "ctlake infra up elasticsearch" in down.text()
    meta = ApiResponseMeta(404, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
    missing = data.explain(NotFoundError("index_not_found_exception", meta,
                                         {"error": {"index": "ctlake-test-series"}}), cfg)
    assert missing.kind == "no_index" and "ctlake-test-series" in missing.text() and "ctlake index" in missing.text()
    with pytest.raises(KeyError):
        data.panel("nope")
    assert not data.clickable(next(p for p in PANELS if p.entity == "pipeline_runs"))
    assert data.clickable(next(p for p in PANELS if p.id == "catalog_kernel"))
