"""``ctlake train | evaluate | register | promote | predict``: the model life cycle (ctlake.train.pipeline).

    ctlake train --np 2 --model malignancy --epochs 10 [--evaluate] [--register [ALIAS]]
    ctlake evaluate --run-id RUN            (or --model ctlake-malignancy@malignancy)
    ctlake register --run-id RUN [--alias candidate] [--name NAME]
    ctlake promote --model malignancy [--challenger challenger --champion champion --by ci_low]
    ctlake predict --model ctlake-malignancy [--alias malignancy | --version 3]

Each prints a JSON summary on stdout (progress on stderr). Training settings come from the
profile's ``train`` section; the flags override the most used ones for one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

KINDS = ("candidate", "malignancy", "hybrid")


def _emit(summary: dict, path: str | None) -> None:
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if path:
        Path(path).write_text(text)


def _config(args: argparse.Namespace):
    from ctlake.cli import config_of

    cfg = config_of(args)
    over = {k: v for k, v in {"batch_size": getattr(args, "batch_size", None), "lr": getattr(args, "lr", None),
                              "seed": getattr(args, "seed", None)}.items() if v is not None}
    if over:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **over))
    return cfg


def _quiet_mlflow() -> None:
    """stdout carries the JSON result only: MLflow would print its run URLs there."""
    import os

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _spark(cfg, name: str):
    from ctlake.spark import get_spark

    return get_spark(cfg, app_name=name)


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_mlflow()
    from ctlake.cli import say
    from ctlake.train import pipeline

    cfg = _config(args)
    spark = _spark(cfg, "ctlake-train")
    res = pipeline.train(spark, cfg, model=args.model, np=args.np, epochs=args.epochs, launcher=args.launcher,
                         loader=args.loader, data_version=args.data_version, run_name=args.run_name, progress=say)
    summary = res.summary()
    if args.evaluate or args.register is not None:
        ev = pipeline.evaluate(spark, cfg, res.run_id, progress=say)
        summary["evaluation"] = ev.table()
        summary["auc_difference"] = ev.auc_difference
    if args.register is not None:
        name, version = pipeline.register(cfg, res.run_id, alias=args.register or None, progress=say)
        summary["registered"] = {"name": name, "version": version, "alias": args.register or res.kind}
    _emit(summary, args.json)
    return 0


def _run_id(cfg, args) -> str:
    from ctlake.errors import CtlakeError
    from ctlake.train.pipeline import _resolve_version

    if args.run_id:
        return args.run_id
    if not args.model:
        raise CtlakeError("give --run-id RUN or --model NAME[@ALIAS | /VERSION]", code="USAGE")
    text = args.model
    if "@" in text:
        name, alias = text.split("@", 1)
        return _resolve_version(cfg, name, alias, None).run_id
    if "/" in text:
        name, version = text.split("/", 1)
        return _resolve_version(cfg, name, None, version).run_id
    raise CtlakeError(f"--model {text!r}: write NAME@ALIAS or NAME/VERSION", code="USAGE")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_mlflow()
    from ctlake.cli import say
    from ctlake.train import pipeline

    cfg = _config(args)
    run_id = _run_id(cfg, args)
    ev = pipeline.evaluate(_spark(cfg, "ctlake-evaluate"), cfg, run_id, threshold=args.threshold,
                           resamples=args.resamples, split=args.split, progress=say)
    _emit({"run_id": run_id, "model": ev.kind, "split": args.split, "threshold": ev.threshold, "rows": ev.n_test,
           "patients": ev.patients, "data_version": ev.data_version, "metrics": ev.table(),
           "auc_difference": ev.auc_difference}, args.json)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    _quiet_mlflow()
    from ctlake.cli import say
    from ctlake.train import pipeline

    cfg = _config(args)
    name, version = pipeline.register(cfg, args.run_id, alias=args.alias, name=args.name, progress=say)
    _emit({"name": name, "version": version, "alias": args.alias, "run_id": args.run_id}, args.json)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    _quiet_mlflow()
    from ctlake.cli import say
    from ctlake.train.registry import promote_if_better

    cfg = _config(args)
    res = promote_if_better(cfg, model=args.model, name=args.name, challenger=args.challenger,
                            champion=args.champion, metric=args.metric, by=args.by)
    say(f"promote: {res.name} {'@' + args.champion + ' -> v' + res.challenger_version if res.promoted else 'unchanged'}"
        f" ({res.reason})")
    _emit(res.as_dict(), args.json)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_mlflow()
    from ctlake.cli import say
    from ctlake.train import pipeline

    cfg = _config(args)
    res = pipeline.predict(_spark(cfg, "ctlake-predict"), cfg, model_name=args.model, alias=args.alias,
                           version=args.version, kind=args.kind, patches_version=args.patches_version, progress=say)
    _emit(dataclasses.asdict(res), args.json)
    return 0


_TRAIN_EPILOG = """\
examples:
  ctlake train --model malignancy --epochs 10                 # one process, train.loader
  ctlake train --np 2 --epochs 3 --register                   # 2 Horovod workers (horovod.spark.run),
                                                              # then evaluate + register @malignancy
  ctlake train --np 2 --launcher horovodrun --model hybrid --loader petastorm --evaluate
  spark-submit jobs/train.py --np 4 --model candidate         # the same flags on a cluster

output: a JSON summary on stdout (run_id, epochs, best_epoch, val_auc, data_version, ranks_identical,
mlflow URL; with --evaluate/--register also the metrics table and the registered name/version);
progress goes to stderr. Every other setting comes from the profile's `train` section
(conf/base.yaml), e.g. CTLAKE__TRAIN__LR_SCHEDULE=step.
"""

_EVALUATE_EPILOG = """\
examples:
  ctlake evaluate --run-id 5055113beb1f46af8121920487dd7713
  ctlake evaluate --model ctlake-malignancy@malignancy --resamples 2000
  ctlake evaluate --model ctlake-hybrid/3 --split validation --threshold 0.4

The data are the run's own snapshot: gold.nodule_patches at the Delta version the run trained on.
Metrics go to the run as test_<metric>, test_<metric>_ci_low/_ci_high, baseline_diameter_<metric>...,
eval_threshold (the threshold `ctlake predict` uses); artifacts under evaluation/.
output: a JSON summary on stdout.
"""

_PREDICT_EPILOG = """\
examples:
  ctlake predict                                  # <registry_prefix><train.model> @<train.model>
  ctlake predict --kind hybrid                    # ctlake-hybrid@hybrid
  ctlake predict --model ctlake-malignancy --version 3 --patches-version 12

Threshold: the evaluation's eval_threshold of the model's run (else train.threshold, else 0.5).
Re-running the same model version on the same patches adds no rows (MERGE on the key).
output: JSON {model_name, model_version, rows, table_version, patches_version, run_id} on stdout.
"""


def register(sub, process) -> None:
    """`ctlake train | evaluate | register | predict` (no `ctlake process` step here)."""
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train", help="train a nodule classifier (petastorm -> torch, Horovod) and track it in MLflow",
        formatter_class=raw, epilog=_TRAIN_EPILOG,
        description="Train the candidate, malignancy or hybrid classifier on gold.nodule_patches at one\n"
                    "Delta version, on --np Horovod workers (horovod.spark.run on the Spark executors, or\n"
                    "horovodrun; gloo on CPU, NCCL on GPUs), logging params, per-epoch metrics, dataset\n"
                    "inputs (Delta table + version) and the model (signature, input example) to MLflow.")
    p.add_argument("--np", type=int, default=None, help="Horovod workers (default train.np; 1 = in-process)")
    p.add_argument("--model", choices=KINDS, default=None,
                   help="model kind (default train.model): candidate = nodule vs negative on 32x48x48 patches, "
                        "malignancy = malignant vs benign nodule, hybrid = image + radiomics features")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default train.epochs; "
                   "early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="GLOBAL batch size, split over the workers (a multiple of --np)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default train.lr)")
    p.add_argument("--seed", type=int, default=None, help="init, data order and augmentation seed")
    p.add_argument("--loader", choices=["petastorm", "memory"], default=None,
                   help="petastorm (make_spark_converter over the snapshot) or memory (tensors in RAM); "
                        "default train.loader")
    p.add_argument("--launcher", choices=["spark", "horovodrun"], default=None,
                   help="how --np > 1 workers start (default train.launcher)")
    p.add_argument("--data-version", type=int, default=None, help="Delta version of the patch table (default latest)")
    p.add_argument("--run-name", default=None, help="MLflow run name (default <model>-np<N>-v<version>)")
    p.add_argument("--evaluate", action="store_true", help="then evaluate on the test split (as `ctlake evaluate`)")
    p.add_argument("--register", nargs="?", const="", default=None, metavar="ALIAS",
                   help="then evaluate and register the model as <train.registry_prefix><model> with ALIAS "
                        "(default: the model kind)")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="test-split metrics with patient-bootstrap 95%% CIs and the diameter baseline",
        formatter_class=raw, epilog=_EVALUATE_EPILOG,
        description="Score the test split of the run's own data snapshot: AUC, sensitivity, specificity,\n"
                    "PPV, NPV, F1, balanced accuracy with bootstrap CIs over patients, and the nodule-diameter\n"
                    "baseline side by side; ROC, confusion matrix and the metrics table go to the MLflow run.")
    p.add_argument("--run-id", default=None, help="MLflow run of the model (or --model)")
    p.add_argument("--model", default=None, metavar="NAME@ALIAS|NAME/VERSION",
                   help="a registered model version instead of --run-id, e.g. ctlake-malignancy@malignancy")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the run's train.threshold, or when that is null the "
                        "one maximising Youden's J on the validation split)")
    p.add_argument("--resamples", type=int, default=None,
                   help="bootstrap resamples over patients (default train.bootstrap_resamples = 1000)")
    p.add_argument("--split", choices=["test", "validation", "train"], default="test",
                   help="the split to score (default test; validation for cohorts too small for a test split)")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("register", help="register a run's model in the MLflow registry and set an alias",
                       description="New version of <train.registry_prefix><kind> (or --name) from the run's model; "
                                   "--alias (default: the model kind) points at it. The version is tagged with "
                                   "the data snapshot, the test AUC and the evaluation threshold when known.")
    p.add_argument("--run-id", required=True, help="MLflow run of the model")
    p.add_argument("--alias", default=None, help="alias to point at the new version (default: the model kind)")
    p.add_argument("--name", default=None, help="registered model name (default <train.registry_prefix><kind>)")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("promote", help="move the champion alias to the challenger only if it is better",
                       description="Compare the runs behind <name>@CHALLENGER and <name>@CHAMPION on an evaluation "
                                   "metric (by default the lower bound of test_auc's 95 % CI, logged by `ctlake "
                                   "evaluate`) and point CHAMPION at the challenger's version only when it is "
                                   "strictly greater, or when there is no champion yet. Exit code 0 either way; "
                                   "the JSON says whether it promoted and why.")
    p.add_argument("--model", choices=KINDS, default=None, help="model kind (name <train.registry_prefix><kind>)")
    p.add_argument("--name", default=None, help="registered model name (overrides --model)")
    p.add_argument("--challenger", default="challenger", help="alias of the new model (default challenger)")
    p.add_argument("--champion", default="champion", help="alias of the model in use (default champion)")
    p.add_argument("--metric", default="test_auc", help="run metric to compare (default test_auc)")
    p.add_argument("--by", choices=["ci_low", "estimate"], default="ci_low",
                   help="ci_low: compare <metric>_ci_low (default); estimate: the metric itself")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("predict", help="batch inference with a registered model -> gold.predictions",
                       formatter_class=raw, epilog=_PREDICT_EPILOG,
                       description="Score the patches of the model's kind and size on the Spark executors and\n"
                                   "merge the scores into gold.predictions (key: patch, model name, version).")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="registered model name (default <train.registry_prefix><kind>)")
    p.add_argument("--kind", choices=KINDS, default=None, help="model kind (default train.model)")
    p.add_argument("--alias", default=None, help="registry alias (default: the kind)")
    p.add_argument("--version", default=None, help="registry version (instead of an alias)")
    p.add_argument("--patches-version", type=int, default=None, help="Delta version to score (default latest)")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.set_defaults(func=cmd_predict)
