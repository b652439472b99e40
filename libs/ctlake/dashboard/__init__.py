"""The built-in dashboard page (``ctlake dashboard``): the five dashboards of ``ctlake.index.aggs``
(Catalog, Data quality, Radiomics, Pipelines, Models) drawn with Dash/Plotly on 127.0.0.1, with
date-range / manufacturer / QC-flag filters and click-through from a chart to its series.

- :mod:`ctlake.dashboard.data`: Elasticsearch reads (dashboards, filter choices, click-through) and
  readable messages when Elasticsearch is down or the index is missing;
- :mod:`ctlake.dashboard.figures`: one Plotly figure per panel;
- :mod:`ctlake.dashboard.app`: the Dash layout and callbacks (:func:`create_app`, :func:`serve`).
"""

from __future__ import annotations

from ctlake.dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
