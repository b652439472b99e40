"""``ctlake dashboard``: serve the built-in dashboard page (Dash) on 127.0.0.1."""

from __future__ import annotations

import argparse


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.dashboard import serve

    cfg = config_of(args)
    host = args.host or cfg.index.dashboard_host
    port = args.port or cfg.index.dashboard_port
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: serving on {host}: the page has no login; anyone who reaches this port sees the index")
    _check_free(host, port)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    say(f"dashboards of {cfg.elasticsearch.url} (indices {cfg.elasticsearch.index_prefix}-*); Ctrl-C stops")
    print(url, flush=True)
    serve(cfg, host=host, port=port)
    return 0


def _check_free(host: str, port: int) -> None:
    """A readable error (not Flask's exit) when the port is taken or the address is not this machine's."""
    import socket

    from ctlake.errors import CtlakeError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        raise CtlakeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})", code="USAGE",
                          hint="choose another port with --port (or index.dashboard_port)") from None


def register(sub, process) -> None:  # noqa: ARG001 - no `process` steps here
    p = sub.add_parser("dashboard", help="serve the built-in dashboard page (Catalog, Data quality, Radiomics, "
                                         "Pipelines, Models) on 127.0.0.1",
                       description="Serve the five dashboards drawn from the Elasticsearch index (the same "
                                   "aggregations as the Kibana objects of `ctlake dashboards export`), with date "
                                   "range, manufacturer and QC-flag filters; click a bar to list its series. "
                                   "Prints the URL, then serves until Ctrl-C. Build the index first: `ctlake index`.")
    p.add_argument("--host", help="address to listen on (default index.dashboard_host, 127.0.0.1; the page has "
                                  "no login, so keep it on loopback or put it behind a proxy)")
    p.add_argument("--port", type=int, help="TCP port (default index.dashboard_port: 8050, test profile 18050)")
    p.set_defaults(func=cmd_dashboard)
