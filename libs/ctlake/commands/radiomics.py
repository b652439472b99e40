"""``ctlake process radiomics``: gold.nodules + silver.ct_volumes → gold.radiomics_features."""

from __future__ import annotations

import argparse
import json


def cmd_process_radiomics(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.process.radiomics import extract_radiomics
    from ctlake.spark import get_spark

    cfg = config_of(args)
    spark = get_spark(cfg, app_name="ctlake-process-radiomics")
    summary = extract_radiomics(spark, cfg, params_file=args.params, strict=False if args.no_strict else None,
                                retry_failed=True if args.retry_failed else None, partitions=args.partitions)
    say(f"radiomics ({summary['params_source']}, params_hash {summary['params_hash'][:12]}): "
        f"{summary['rois']} ROIs to do → {summary['ok']} ok, {summary['failed']} failed "
        f"in {summary['seconds']} s")
    print(json.dumps(summary))
    return 0


def register(sub, process) -> None:
    q = process.add_parser(
        "radiomics", help="gold.nodules + silver.ct_volumes → gold.radiomics_features",
        description="Radiomics features (IBSI definitions, PyRadiomics names) of every gold.nodules ROI with "
                    "status ok that gold.radiomics_features does not have yet for this parameter set: one row "
                    "per (ROI, params_hash); a ROI that cannot be extracted gets a row with status failed and "
                    "the reason. The long (feature, value) form is ctlake.process.radiomics.features_long.")
    q.add_argument("--params", metavar="YAML",
                   help="PyRadiomics parameter file, as it is (default: radiomics.params_file of the profile, "
                        "else PyRadiomics defaults: every class, binWidth 25)")
    q.add_argument("--no-strict", action="store_true",
                   help="compute the supported part of a parameter file with settings not implemented here "
                        "(default: refuse it)")
    q.add_argument("--retry-failed", action="store_true", help="extract again the ROIs whose row has status failed")
    q.add_argument("--partitions", type=int, default=None,
                   help="Spark tasks, each a cost-balanced set of series (default radiomics.partitions; "
                        "0 = twice Spark's default parallelism)")
    q.set_defaults(func=cmd_process_radiomics)
