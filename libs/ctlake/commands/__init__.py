"""Sub-commands that live beside their feature, discovered by :func:`ctlake.cli.build_parser`.

A module here defines ``register(sub, process)`` and adds its parsers: ``sub.add_parser(...)`` for a
top-level ``ctlake NAME`` command, ``process.add_parser(...)`` for a ``ctlake process NAME`` batch step.
Each parser sets ``func`` to a function ``(args) -> int`` (the exit code). Keep imports of Spark, torch
and the like inside those functions.
"""
