"""spark-submit entry point: gold.nodules + silver.ct_volumes → gold.radiomics_features (`ctlake process radiomics`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["process", "radiomics", *sys.argv[1:]]))
