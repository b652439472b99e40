"""spark-submit entry point: a folder of DICOM → bronze (`ctlake ingest folder DIR`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["ingest", "folder", *sys.argv[1:]]))
