"""spark-submit entry point for the demo: `spark-submit $(ctlake spark-conf) jobs/demo.py [--patients N]`."""

import sys

from ctlake.cli import main

raise SystemExit(main(["demo", *sys.argv[1:]]))
