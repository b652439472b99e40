"""spark-submit entry point: Delta change data feed → Elasticsearch (`ctlake index [TARGET …] [--full]`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["index", *sys.argv[1:]]))
