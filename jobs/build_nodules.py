"""spark-submit entry point: annotations + silver volumes/lung masks → gold.nodules (`ctlake process nodules`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["process", "nodules", *sys.argv[1:]]))
