"""spark-submit entry point: gold.nodules + volumes + lung masks → gold.nodule_patches (`ctlake process patches`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["process", "patches", *sys.argv[1:]]))
