"""``ctlake notebooks export --zeppelin DIR``: the Jupyter notebooks of notebooks/ as Zeppelin notes."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctlake.cli import config_of, say
    from ctlake.notebooks import export_zeppelin

    source = Path(args.source) if args.source else config_of(args).project_root / "notebooks"
    written = export_zeppelin(source, Path(args.zeppelin))
    for path in written:
        print(path)
    say(f"wrote {len(written)} Zeppelin note(s) (%spark.pyspark / %md paragraphs) to {args.zeppelin}")
    return 0


def register(sub, process) -> None:  # noqa: ARG001 - no `process` steps here
    p = sub.add_parser("notebooks", help="work with the Jupyter notebooks (export them as Zeppelin notes)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser(
        "export", help="write each notebook as a Zeppelin note <name>_<noteId>.zpln",
        description="Write every Jupyter notebook of notebooks/ (or --source) as a Zeppelin 0.10 note: one "
                    "paragraph per cell, code as %spark.pyspark, markdown as %md, outputs left out. Copy the "
                    "files into Zeppelin's notebook folder (zeppelin.notebook.dir) and reload the notes.")
    q.add_argument("--zeppelin", required=True, metavar="DIR", help="output folder (created)")
    q.add_argument("--source", metavar="PATH", help="a folder of notebooks or one .ipynb (default: notebooks/)")
    q.set_defaults(func=cmd_export)
