"""The Dash app: five tabs (Catalog, Data quality, Radiomics, Pipelines, Models), filters, click-through.

Page structure (the ids are what the browser test and a reader of the HTML rely on):

- ``#f-dates`` (date range over each entity's time field: series built, features extracted, runs
  started …), ``#f-manufacturer`` and ``#f-qc`` (multi-select; they narrow series and, through their
  series, nodules, features and predictions) -- the values can also come from the URL:
  ``/?tab=data_quality&from=2025-01-01&to=2025-01-31&manufacturer=SIEMENS&qc_flag=GANTRY_TILT``;
- ``#tabs`` with one tab per dashboard of :data:`ctlake.index.aggs.DASHBOARDS`;
- ``#status``: empty, or one sentence saying why there is no data (Elasticsearch down, no index yet)
  -- never a traceback;
- ``#dashboard``: ``#total-<entity>`` (the number of documents under the filters, ``data-count``)
  and one ``#panel-<panel id>`` per panel of ``aggs.PANELS``, each holding one Plotly graph;
- ``#drill``: after a click on a bar / slice / cell, the series behind it (``#drill-count``,
  a table ``#drill-table`` of series uids, patients, scanner, kernel, slice thickness, QC flags).

Every figure is computed on the server from ``ctlake.index.aggs``; the browser only draws.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ctlake.config import Config
from ctlake.dashboard import data, figures
from ctlake.index import aggs

if TYPE_CHECKING:
    import dash
    from elasticsearch import Elasticsearch

log = logging.getLogger("ctlake.dashboard")

ENTITY_LABELS = {"series": "series", "quarantine": "quarantined objects", "features": "feature vectors",
                 "nodules": "nodules", "pipeline_runs": "pipeline runs", "training_runs": "training runs",
                 "predictions": "predictions"}
DRILL_COLUMNS = ("series_instance_uid", "patient_pseudo_id", "status", "manufacturer", "manufacturer_model_name",
                 "convolution_kernel", "slice_thickness_mm", "study_date", "qc_flags")

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; background: #f4f6f9;
       color: #1d2733; }
header { background: #1d3557; color: #fff; padding: 10px 20px; display: flex; align-items: baseline; gap: 18px; }
header h1 { font-size: 20px; margin: 0; }
header span { font-size: 12px; opacity: .8; }
#filters { display: flex; flex-wrap: wrap; gap: 18px; align-items: end; padding: 10px 20px; background: #fff;
           border-bottom: 1px solid #dde3ea; }
#filters .filter { display: flex; flex-direction: column; gap: 4px; min-width: 240px; font-size: 12px; }
#status:not(:empty) { margin: 10px 20px; padding: 10px 14px; border-radius: 4px; background: #fdecea;
                      color: #8a1c12; border: 1px solid #f5c2bd; }
#status.empty-index:not(:empty) { background: #fff8e1; color: #6d4c00; border-color: #f3d98b; }
.tabs-bar { padding: 0 20px; }
#dashboard { padding: 10px 20px; }
.totals { display: flex; gap: 14px; flex-wrap: wrap; margin-bottom: 10px; }
.total { background: #fff; border: 1px solid #dde3ea; border-radius: 4px; padding: 6px 12px; font-size: 12px; }
.total strong { display: block; font-size: 22px; }
.panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.panel { background: #fff; border: 1px solid #dde3ea; border-radius: 4px; padding: 6px 10px; }
.panel h3 { font-size: 14px; margin: 4px 0; }
.panel .hint { font-size: 11px; color: #6b7785; }
#drill { margin: 0 20px 20px; background: #fff; border: 1px solid #dde3ea; border-radius: 4px; padding: 8px 12px; }
#drill:empty { display: none; }
#drill table { border-collapse: collapse; font-size: 12px; width: 100%; }
#drill th, #drill td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef1f5; }
"""


def _index_string() -> str:
    return ("<!DOCTYPE html><html><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}"
            f"<style>{_CSS}</style></head><body>{{%app_entry%}}<footer>{{%config%}}{{%scripts%}}{{%renderer%}}"
            "</footer></body></html>")


def create_app(cfg: Config, *, es: Elasticsearch | None = None) -> dash.Dash:
    """The Dash app for profile ``cfg`` (its Elasticsearch and index prefix). Nothing is queried
    until a page asks, so it starts whether Elasticsearch is up or not."""
    import dash
    from dash import ALL, Input, Output, State, ctx, dcc, html

    from ctlake.index.model import client

    es = es or client(cfg.elasticsearch, cfg.index).options(request_timeout=30, max_retries=0)
    app = dash.Dash(__name__, title="ctlake dashboards", update_title=None, serve_locally=True,
                    suppress_callback_exceptions=True)
    app.index_string = _index_string()

    app.layout = html.Div([
        dcc.Location(id="url"),
        html.Header([html.H1("ctlake dashboards"),
                     html.Span(f"Elasticsearch {cfg.elasticsearch.url} · indices "
                               f"{cfg.elasticsearch.index_prefix}-* · profile {cfg.profile}", id="source")]),
        html.Div(id="filters", children=[
            html.Div(className="filter", children=[html.Label("Date range (UTC, inclusive)", htmlFor="f-dates"),
                                                   dcc.DatePickerRange(id="f-dates", clearable=True,
                                                                       display_format="YYYY-MM-DD")]),
            html.Div(className="filter", children=[html.Label("Manufacturer"),
                                                   dcc.Dropdown(id="f-manufacturer", multi=True, options=[],
                                                                placeholder="all manufacturers")]),
            html.Div(className="filter", children=[html.Label("QC flag (series with every flag chosen)"),
                                                   dcc.Dropdown(id="f-qc", multi=True, options=[],
                                                                placeholder="any QC flags")]),
        ]),
        html.Div(id="status", role="alert"),
        html.Div(className="tabs-bar", children=dcc.Tabs(id="tabs", value="catalog", children=[
            dcc.Tab(label=title, value=name, id=f"tab-{name}") for name, title in aggs.DASHBOARDS.items()])),
        html.Div(id="dashboard"),
        html.Section(id="drill"),
    ])

    @app.callback(Output("tabs", "value"), Output("f-dates", "start_date"), Output("f-dates", "end_date"),
                  Output("f-manufacturer", "options"), Output("f-manufacturer", "value"),
                  Output("f-qc", "options"), Output("f-qc", "value"), Input("url", "search"))
    def from_url(search: str | None):
        """Widget choices from the index, and initial values from the URL (options and values are set
        together: a dropdown drops a value that is not among its options)."""
        q = parse_qs((search or "").lstrip("?"))
        tab = (q.get("tab") or ["catalog"])[0]
        try:
            c = data.filter_choices(es, cfg)
        except Exception:  # noqa: BLE001 - the dashboard callback says what is wrong
            c = {"manufacturer": [], "qc_flag": []}
        man, qc = q.get("manufacturer") or [], q.get("qc_flag") or []
        return (tab if tab in aggs.DASHBOARDS else "catalog", (q.get("from") or [None])[0], (q.get("to") or [None])[0],
                sorted(set(c["manufacturer"]) | set(man)), man, sorted(set(c["qc_flag"]) | set(qc)), qc)

    @app.callback(Output("dashboard", "children"), Output("status", "children"), Output("status", "className"),
                  Input("tabs", "value"), Input("f-dates", "start_date"), Input("f-dates", "end_date"),
                  Input("f-manufacturer", "value"), Input("f-qc", "value"))
    def show(tab: str, start: str | None, end: str | None, manufacturer: list | None, qc: list | None):
        filters = data.make_filters(start, end, manufacturer, qc)
        try:
            out = data.load(es, cfg, tab, filters)
        except Exception as exc:  # noqa: BLE001 - shown as a sentence on the page, logged on the server
            problem = data.explain(exc, cfg)
            return (html.Div(f"No data for {aggs.DASHBOARDS.get(tab, tab)}.", className="no-data"),
                    problem.text(), problem.kind.replace("no_index", "empty-index"))
        return render(tab, out), "", ""

    @app.callback(Output("drill", "children"),
                  Input({"type": "chart", "panel": ALL}, "clickData"), Input("tabs", "value"),
                  Input("f-dates", "start_date"), Input("f-dates", "end_date"), Input("f-manufacturer", "value"),
                  Input("f-qc", "value"), State({"type": "chart", "panel": ALL}, "id"))
    def drill(clicks: list, tab: str, start: str | None, end: str | None, manufacturer: list | None,
              qc: list | None, ids: list):
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or trig.get("type") != "chart":
            return []                      # a new tab or filter: the old list no longer applies
        click = next((c for c, i in zip(clicks, ids, strict=True) if i == trig), None)
        if not click or not click.get("points"):
            return []
        point = click["points"][0]
        key, split = _bucket_of(point)
        filters = data.make_filters(start, end, manufacturer, qc)
        return drill_view(es, cfg, trig["panel"], key, split, filters)

    return app


def _bucket_of(point: dict) -> tuple[Any, Any]:
    cd = point.get("customdata")
    while isinstance(cd, list) and cd and isinstance(cd[0], list):      # pie / heatmap nesting
        cd = cd[0]
    if isinstance(cd, list) and cd:
        return cd[0], (cd[1] if len(cd) > 1 else None)
    return point.get("x", point.get("label")), None


def render(tab: str, out: dict) -> Any:
    """The children of ``#dashboard`` for dashboard ``tab`` from its data (``aggs.<tab>``)."""
    from dash import dcc, html

    totals = [html.Div(className="total", children=[
        html.Span(ENTITY_LABELS.get(e, e)),
        html.Strong(f"{n:,}", id=f"total-{e}", **{"data-count": str(n)})]) for e, n in out["totals"].items()]
    panels = []
    for p in (p for p in aggs.PANELS if p.dashboard == tab):
        rows = out.get(p.id, [])
        fig = figures.figure(p, rows, extra=out)
        if p.id == "dq_qc_flags" and out.get("qc_flag_rates"):
            rates = {r["flag"]: r["rate"] for r in out["qc_flag_rates"]}
            fig.update_traces(text=[f"{rates.get(x, 0):.0%}" for x in fig.data[0].x], textposition="outside")
        hint = "click a bar, slice or cell to list its series" if data.clickable(p) else ""
        panels.append(html.Div(id=f"panel-{p.id}", className="panel",
                               **{"data-chart": p.chart, "data-entity": p.entity, "data-rows": str(len(rows))},
                               children=[html.H3(p.title),
                                         dcc.Graph(id={"type": "chart", "panel": p.id}, figure=fig,
                                                   style={"height": f"{figures.HEIGHT}px"},
                                                   config={"displaylogo": False, "responsive": True}),
                                         html.Div(hint, className="hint")]))
    return [html.Div(className="totals", id="totals", children=totals), html.Div(className="panels", children=panels)]


def drill_view(es: Elasticsearch, cfg: Config, panel_id: str, key: Any, split: Any,
               filters: aggs.Filters) -> Any:
    """``#drill``: the series behind one bucket, or why there are none."""
    from dash import html

    p = data.panel(panel_id)
    label = " / ".join(str(v) for v in (key, split) if v is not None)
    try:
        res = data.series_for_click(es, cfg, panel_id, key, split, filters)
    except ValueError as exc:
        return [html.H3(f"{p.title}: {label}"), html.P(str(exc), id="drill-count", **{"data-count": "0"})]
    except Exception as exc:  # noqa: BLE001
        return [html.H3(f"{p.title}: {label}"), html.P(data.explain(exc, cfg).text(), className="no-data")]
    shown = res["series"]
    what = "" if p.entity == "series" else f" (from {res['documents']} {ENTITY_LABELS.get(p.entity, p.entity)})"
    more = f"; the first {len(shown)} are listed" if len(shown) < res["count"] else ""
    head = html.Tr([html.Th(c) for c in DRILL_COLUMNS])
    body = [html.Tr([html.Td(_cell(s.get(c)), className="uid" if c == "series_instance_uid" else None)
                     for c in DRILL_COLUMNS]) for s in shown]
    return [html.H3(f"{p.title}: {label}"),
            html.P(f"{res['count']} series{what}{more}", id="drill-count", **{"data-count": str(res["count"])}),
            html.Table(id="drill-table", children=[html.Thead(head), html.Tbody(body)])]


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "–"
    return str(v)


def serve(cfg: Config, *, host: str, port: int) -> None:
    """Serve the page until interrupted (Flask's threaded server; for one person on this machine)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    create_app(cfg).run(host=host, port=port, debug=False)
