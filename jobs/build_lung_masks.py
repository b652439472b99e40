"""spark-submit entry point: silver.ct_volumes → silver.lung_masks (`ctlake process lungs`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["process", "lungs", *sys.argv[1:]]))
