"""Plotly figures for the panels of ``ctlake.index.aggs`` (one figure per panel, whatever its chart).

Rows come from ``aggs.run_panel``: ``{"key", "split"?, "count", <metric label>...}``. Every bar, line,
pie slice and heatmap cell carries ``customdata = [key, split]`` (the raw bucket keys, split ``None``
for one aggregation), which the page sends back on a click to list the bucket's series. A panel
without rows still gets a figure ("no data"), so every panel always draws.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from ctlake.index.aggs import Panel

HEIGHT = 330
PALETTE = ("#457b9d", "#f4a261", "#8ab17d", "#b5838d", "#6d597a", "#e9c46a", "#4cc9f0", "#adb5bd")
GOOD, BAD, BUSY = "#2a9d8f", "#e63946", "#f4a261"
STATUS_COLOURS = {**dict.fromkeys(("succeeded", "ok", "built", "finished", "true"), GOOD),
                  **dict.fromkeys(("failed", "refused", "killed", "false"), BAD),
                  **dict.fromkeys(("running", "scheduled", "deferred"), BUSY)}
_LAYOUT = {"height": HEIGHT, "colorway": list(PALETTE), "margin": {"l": 50, "r": 20, "t": 30, "b": 50},
           "template": "plotly_white", "legend": {"orientation": "h", "y": -0.2}, "font": {"size": 11}}


def _value_metrics(p: Panel) -> list[str]:
    """The metric labels drawn as values (count when there is no other, CI bounds drawn as error bars)."""
    names = [m.name for m in p.metrics if m.kind != "count" and m.name not in ("ci_low", "ci_high")]
    return names or ["count"]


def colour(v: Any) -> str | None:
    """The colour of a status-like value (succeeded / failed ...), None for others (the palette's)."""
    return STATUS_COLOURS.get(str(v).split(" / ")[0].lower())


def _label(v: Any) -> str:
    return "(none)" if v is None else str(v)


def _is_numeric(p: Panel, axis: int) -> bool:
    return len(p.buckets) > axis and p.buckets[axis].kind == "histogram"


def _x(p: Panel, key: Any) -> Any:
    """Axis value of a bucket key: numbers for histograms, dates as they are, text for terms."""
    if p.buckets and p.buckets[0].kind == "terms":
        return _label(key)
    return key


def empty(title: str = "no data") -> go.Figure:
    fig = go.Figure(layout=_LAYOUT)
    fig.add_annotation(text=title, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 16, "color": "#888"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def figure(p: Panel, rows: list[dict], *, extra: dict | None = None) -> go.Figure:
    """The figure of panel ``p`` from its ``rows`` (``extra``: more of the dashboard's dict, e.g. the
    correlation of the radiomics dashboard)."""
    if not rows or (p.chart == "metric" and not rows[0].get("count")):
        return empty()
    draw = {"metric": _metric, "bar": _bar, "line": _line, "pie": _pie, "table": _table, "heatmap": _heatmap}
    fig = draw.get(p.chart, _bar)(p, rows, extra or {})
    fig.update_layout(**_LAYOUT)
    return fig


def _metric(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    row = rows[0]
    fig = go.Figure()
    n = len(p.metrics)
    for i, m in enumerate(p.metrics):
        fig.add_trace(go.Indicator(mode="number", value=row.get(m.name) or 0, title={"text": m.name},
                                   domain={"x": [i / n, (i + 1) / n - 0.02], "y": [0, 1]}))
    return fig


def _bar(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    fig = go.Figure()
    values = _value_metrics(p)
    has_ci = any(m.name == "ci_low" for m in p.metrics)
    if len(p.buckets) > 1:
        splits: dict[Any, list[dict]] = {}
        for r in rows:
            splits.setdefault(r.get("split"), []).append(r)
        numeric_split = _is_numeric(p, 1)
        for s in sorted(splits, key=lambda v: (v is None, v if numeric_split else str(v))):
            rs = splits[s]
            name = f"{p.buckets[1].field.split('.')[-1]} {s:g}" if numeric_split and s is not None else _label(s)
            fig.add_trace(go.Bar(x=[_x(p, r["key"]) for r in rs], y=[r[values[0]] for r in rs], name=name,
                                 marker_color=colour(s), customdata=[[r["key"], r.get("split")] for r in rs]))
        fig.update_layout(barmode="stack")
    else:
        for v in values:
            err = None
            if has_ci:
                err = {"type": "data", "symmetric": False,
                       "array": [None if r.get("ci_high") is None or r.get(v) is None else r["ci_high"] - r[v]
                                 for r in rows],
                       "arrayminus": [None if r.get("ci_low") is None or r.get(v) is None else r[v] - r["ci_low"]
                                      for r in rows]}
            fig.add_trace(go.Bar(x=[_x(p, r["key"]) for r in rows], y=[r.get(v) for r in rows], name=v,
                                 error_y=err, customdata=[[r["key"], None] for r in rows]))
        fig.update_layout(barmode="group", showlegend=len(values) > 1)
    if p.buckets and p.buckets[0].kind == "terms":
        fig.update_xaxes(type="category")
    fig.update_yaxes(title_text=values[0] if len(values) == 1 else "", rangemode="tozero")
    return fig


def _line(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    v = _value_metrics(p)[0]
    return go.Figure(go.Scatter(x=[r["key"] for r in rows], y=[r.get(v) for r in rows], mode="lines+markers",
                                name=v, customdata=[[r["key"], None] for r in rows]),
                     layout={"yaxis": {"title": {"text": v}, "rangemode": "tozero"}})


def _pie(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    two = len(p.buckets) > 1
    labels = [f"{_label(r['key'])} / {_label(r.get('split'))}" if two else _label(r["key"]) for r in rows]
    colours = [colour(lb) or PALETTE[i % len(PALETTE)] for i, lb in enumerate(labels)]
    return go.Figure(go.Pie(labels=labels, values=[r["count"] for r in rows], sort=False, hole=0.35,
                            marker={"colors": colours}, textinfo="label+value",
                            customdata=[[r["key"], r.get("split")] for r in rows]))


def _table(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    cols = [p.buckets[0].field] if p.buckets else []
    if len(p.buckets) > 1:
        cols.append(p.buckets[1].field)
    metrics = [m.name for m in p.metrics]
    keys = ["key", "split"][:len(cols)] + metrics

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return _label(v)

    return go.Figure(go.Table(header={"values": [c.split(".")[-1] for c in cols] + metrics, "align": "left",
                                      "fill_color": "#e8eef5"},
                              cells={"values": [[cell(r.get(k)) for r in rows] for k in keys], "align": "left"}))


def _heatmap(p: Panel, rows: list[dict], extra: dict) -> go.Figure:
    xs = sorted({r["key"] for r in rows})
    ys = sorted({r["split"] for r in rows})
    cell = {(r["key"], r["split"]): r["count"] for r in rows}
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=[[cell.get((x, y), 0) for x in xs] for y in ys], colorscale="Blues",
                               customdata=[[[x, y] for x in xs] for y in ys], hoverongaps=False))
    fig.update_xaxes(title_text=p.buckets[0].field.split(".")[-1])
    fig.update_yaxes(title_text=p.buckets[1].field.split(".")[-1])
    corr = extra.get("correlation") or {}
    if corr.get("pearson_r") is not None:
        fig.add_annotation(text=f"Pearson r = {corr['pearson_r']:.3f} (n = {corr['n']})", showarrow=False,
                           x=1, y=1.08, xref="paper", yref="paper", xanchor="right")
    return fig
