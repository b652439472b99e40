"""spark-submit entry point: train a classifier on --np Horovod workers (`ctlake train`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["train", *sys.argv[1:]]))
