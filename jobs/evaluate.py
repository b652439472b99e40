"""spark-submit entry point: test-split metrics with CIs for a run or registered model (`ctlake evaluate`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["evaluate", *sys.argv[1:]]))
