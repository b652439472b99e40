"""spark-submit entry point: bronze → silver.ct_series + silver.ct_volumes (`ctlake process volumes`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["process", "volumes", *sys.argv[1:]]))
