"""spark-submit entry point: batch inference with a registered model -> gold.predictions (`ctlake predict`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["predict", *sys.argv[1:]]))
