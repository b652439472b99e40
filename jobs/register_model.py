"""spark-submit / pipeline entry point: register a run's model and set an alias (`ctlake register`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["register", *sys.argv[1:]]))
