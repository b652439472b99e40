"""``ctlake index``, ``ctlake search`` and ``ctlake dashboards``: the search index and what reads it."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_index(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.index.indexer import index_tables
    from ctlake.spark import get_spark

    cfg = config_of(args)
    spark = get_spark(cfg, app_name="ctlake-index")
    summary = index_tables(spark, cfg, args.targets, full=args.full, progress=None if args.quiet else say)
    print(json.dumps(summary, default=str))
    return 0 if summary["status"] == "succeeded" else 1


def _range(text: str | None) -> tuple[float | None, float | None] | None:
    """``LOW:HIGH``, ``LOW:`` or ``:HIGH`` (mm) → (low, high); one number means exactly that."""
    if not text:
        return None
    from ctlake.errors import CtlakeError

    try:
        if ":" not in text:
            return float(text), float(text)
        lo, hi = text.split(":", 1)
        return (float(lo) if lo else None), (float(hi) if hi else None)
    except ValueError:
        raise CtlakeError(f"--slice-thickness {text!r}: expected LOW:HIGH, LOW:, :HIGH or a number (mm)",
                          code="USAGE") from None


def cmd_search(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.index.search import SERIES_COLUMNS, find_series, make_filter, write_cohort

    cfg = config_of(args)
    filters = {"manufacturer": args.manufacturer, "model": args.model, "kernel": args.kernel,
               "qc_flag": args.qc_flag, "patient": args.patient,
               "slice_thickness_mm": _range(args.slice_thickness),
               "qc_clean": True if args.qc_clean else (False if args.qc_flagged else None),
               "status": args.status, "min_nodule_mm": args.min_nodule_mm, "min_malignancy": args.min_malignancy}
    filters = {k: v for k, v in filters.items() if v not in (None, [], ())}
    rows = find_series(cfg, args.query, limit=args.limit, **filters)
    if args.out:
        path = write_cohort(args.out, [r["series_instance_uid"] for r in rows], cfg=cfg,
                            query=make_filter(args.query, **filters).as_dict())
        say(f"{len(rows)} series → {path}")
    if args.format == "json":
        print(json.dumps(rows, default=str))
    elif args.format == "uids":
        print("\n".join(r["series_instance_uid"] for r in rows))
    elif not args.out or args.format == "table":
        cols = [c for c in SERIES_COLUMNS if c not in ("study_instance_uid", "study_date")]
        text = [[_cell(r.get(c)) for c in cols] for r in rows]
        widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for t in text:
            print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))
        print(f"({len(rows)} series)", file=sys.stderr)
    return 0


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    if isinstance(v, float):
        return f"{v:g}"
    text = str(v)
    return text if len(text) <= 48 else text[:20] + "…" + text[-20:]


def cmd_dashboards(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.index import kibana

    cfg = config_of(args)
    if args.action == "export":
        path = kibana.export(cfg, args.out)
        say(f"wrote {len(kibana.saved_objects(cfg))} Kibana saved objects to {path}")
        print(path)
        return 0
    if not args.kibana:
        from ctlake.errors import CtlakeError

        raise CtlakeError("dashboards import needs --kibana URL", code="USAGE")
    import os
    import tempfile
    from pathlib import Path

    path = Path(args.file) if args.file else kibana.export(cfg, tempfile.mkdtemp(prefix="ctlake-kibana-"))
    answer = kibana.import_objects(args.kibana, path, user=args.user,
                                   password=args.password or os.environ.get("KIBANA_PASSWORD"),
                                   api_key=args.api_key or os.environ.get("KIBANA_API_KEY"), space=args.space)
    say(f"Kibana imported {answer.get('successCount', 0)} objects from {path}")
    print(json.dumps(answer))
    return 0


def register(sub, process) -> None:  # noqa: ARG001 - no `process` steps here
    p = sub.add_parser("index", help="index the lake in Elasticsearch (incremental, from Delta's change feed)",
                       description="Bring the Elasticsearch index of every entity (series, nodules, features, "
                                   "quarantine, pipeline_runs, predictions, training_runs) up to the lake: reads each "
                                   "table's change data feed since the version in ops.index_state, upserts by key, "
                                   "deletes by id. TARGET is an entity, a table (layer.table) or 'mlflow'.")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="entities or tables (default: all)")
    p.add_argument("--full", action="store_true", help="rebuild into a new index and swap the alias")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="find series (filters or a query string); print them or write a cohort file",
                       description="Search the series index. Filters combine with AND; text values match "
                                   "case-insensitively. Nodule filters need one nodule meeting both. "
                                   "--out FILE writes a cohort: FILE.json ({format: ctlake-cohort/1, query, "
                                   "series_instance_uids: [...]}) or text (a '# ctlake-cohort/1 {header}' line, "
                                   "then one series uid per line), accepted by training and notebooks.")
    p.add_argument("query", nargs="?", help="Elasticsearch query string, e.g. 'kvp:[100 TO 120] AND status:built'")
    p.add_argument("--manufacturer", action="append", help="repeatable")
    p.add_argument("--model", action="append", help="manufacturer model name (repeatable)")
    p.add_argument("--kernel", action="append", help="reconstruction kernel (repeatable)")
    p.add_argument("--slice-thickness", metavar="LOW:HIGH", help="mm, either end open: 0.5:1.5, :2, 1.25")
    p.add_argument("--qc-clean", action="store_true", help="built and no QC flag")
    p.add_argument("--qc-flagged", action="store_true", help="at least one QC flag or refused")
    p.add_argument("--qc-flag", action="append", help="has this QC flag (repeatable)")
    p.add_argument("--status", choices=["built", "refused"])
    p.add_argument("--patient", action="append", help="patient pseudo-id (repeatable)")
    p.add_argument("--min-nodule-mm", type=float, help="has a nodule at least this large (mm)")
    p.add_argument("--min-malignancy", type=float, help="... with at least this malignancy rating")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", metavar="FILE", help="write a cohort file (.json or text)")
    p.add_argument("--format", choices=["table", "json", "uids"], default="table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dashboards", help="Kibana saved objects: export the NDJSON or import it into a Kibana",
                       description="export: write the data views, visualizations and five dashboards as NDJSON "
                                   "(default infra/kibana/). import: post them to a Kibana's saved-objects API.")
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("--out", help="export: folder (default index.kibana_dir)")
    p.add_argument("--file", help="import: an NDJSON file (default: generated now for the profile)")
    p.add_argument("--kibana", help="import: Kibana base URL, e.g. https://kibana.example.org:5601")
    p.add_argument("--user", help="basic auth user (password from --password or $KIBANA_PASSWORD)")
    p.add_argument("--password")
    p.add_argument("--api-key", help="Kibana API key (or $KIBANA_API_KEY)")
    p.add_argument("--space", help="Kibana space id (default: the default space)")
    p.set_defaults(func=cmd_dashboards)
