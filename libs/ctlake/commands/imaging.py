"""``ctlake process lungs | nodules | patches`` (silver.lung_masks, gold.nodules, gold.nodule_patches).

Each step prints a JSON summary on stdout and records its run in ``ops.pipeline_runs``. Settings
come from the profile's ``imaging`` section (conf/base.yaml).
"""

from __future__ import annotations

import argparse
import json


def cmd_process_lungs(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.process.lungs import build_lung_masks
    from ctlake.spark import get_spark

    cfg = config_of(args)
    spark = get_spark(cfg, app_name="ctlake-process-lungs")
    summary = build_lung_masks(spark, cfg)
    say(f"lung masks: {summary['series']} series → {summary['ok']} ok, {summary['failed']} failed "
        f"in {summary['seconds']} s")
    print(json.dumps(summary))
    return 0


def cmd_process_nodules(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.process.nodules import build_nodules
    from ctlake.spark import get_spark

    cfg = config_of(args)
    spark = get_spark(cfg, app_name="ctlake-process-nodules")
    summary = build_nodules(spark, cfg, luna16=args.luna16 or (), voc=args.voc or (),
                            dicom_objects=not args.no_dicom_objects)
    say(f"nodules: {summary['annotations']} annotations ({summary['skipped_existing']} already done) → "
        f"{summary['ok']} ok, {summary['failed']} failed {summary['failed_by_code'] or ''} in {summary['seconds']} s")
    print(json.dumps(summary))
    return 0


def cmd_process_patches(args: argparse.Namespace) -> int:
    from ctlake.cli import config_of, say
    from ctlake.process.patches import build_patches
    from ctlake.spark import get_spark

    cfg = config_of(args)
    spark = get_spark(cfg, app_name="ctlake-process-patches")
    summary = build_patches(spark, cfg)
    say(f"patches: {summary['series']} series → {summary['nodule_patches']} nodule and "
        f"{summary['negative_patches']} negative patches ({summary['written']} new) in {summary['seconds']} s")
    for err in summary["errors"]:
        say(f"  failed series {err}")
    print(json.dumps(summary))
    return 0 if not summary["errors"] else 1


def register(sub, process) -> None:
    q = process.add_parser(
        "lungs", help="silver.ct_volumes → silver.lung_masks",
        description="Lung masks (threshold, largest components, closing, hole filling; imaging.lung) of every "
                    "series in silver.ct_volumes that silver.lung_masks does not have yet, in the volume's z slabs. "
                    "A series without a lung (NO_LUNG_FOUND ...) gets one row with status failed and the code.")
    q.set_defaults(func=cmd_process_lungs)

    q = process.add_parser(
        "nodules", help="annotations + volumes + lung masks → gold.nodules",
        description="Nodule masks and sizes (imaging.nodules) from LUNA16-style CSVs (world mm), PASCAL VOC "
                    "folders (<SOPInstanceUID>.xml boxes) and the RTSTRUCT/SEG instances in bronze. UIDs of "
                    "annotations made on the original (not de-identified) files are mapped with the site key. "
                    "Nodules already in gold.nodules are skipped; an annotation that cannot be placed or "
                    "segmented gets a row with status failed and the reason.")
    q.add_argument("--luna16", action="append", metavar="CSV",
                   help="LUNA16-style annotations.csv (seriesuid, coordX, coordY, coordZ, diameter_mm; repeatable)")
    q.add_argument("--voc", action="append", metavar="DIR",
                   help="folder of PASCAL VOC <SOPInstanceUID>.xml files, searched recursively (repeatable)")
    q.add_argument("--no-dicom-objects", action="store_true",
                   help="do not read RTSTRUCT / SEG instances from bronze")
    q.set_defaults(func=cmd_process_nodules)

    q = process.add_parser(
        "patches", help="gold.nodules + volumes + lung masks → gold.nodule_patches",
        description="Fixed-size int16 cubes (+ uint8 mask) around every ok nodule and around sampled negatives "
                    "of every annotated series (imaging.patches: sizes, negatives, patient split, malignancy "
                    "threshold). Patches already in gold.nodule_patches are not written again.")
    q.set_defaults(func=cmd_process_patches)
