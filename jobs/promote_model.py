"""Pipeline entry point: promote the challenger to champion only if it is better (`ctlake promote`)."""

import sys

from ctlake.cli import main

raise SystemExit(main(["promote", *sys.argv[1:]]))
