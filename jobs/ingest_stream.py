"""spark-submit entry point: Kafka → bronze (`ctlake ingest stream`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["ingest", "stream", *sys.argv[1:]]))
