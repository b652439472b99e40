"""``ctlake …`` sub-commands. Each parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ctlake import __version__
from ctlake.errors import CtlakeError


def say(msg: str) -> None:
    """Progress and notes for people: ``[ctlake] msg`` on stderr (stdout stays for results)."""
    print(f"[ctlake] {msg}", file=sys.stderr, flush=True)


def config_of(args: argparse.Namespace):
    """The configuration of ``--profile`` (for command modules)."""
    return _config(args)


def _say(msg: str) -> None:
    print(f"[ctlake] {msg}", file=sys.stderr, flush=True)


def _config(args: argparse.Namespace):
    from ctlake.config import load_config

    return load_config(args.profile)


# --- infra -------------------------------------------------------------------------------
def cmd_infra(args: argparse.Namespace) -> int:
    from ctlake.infra import services

    cfg = _config(args)
    if args.action == "prepare":
        services.prepare(cfg, args.services, progress=_say)
        return 0
    if args.action == "up":
        services.up(cfg, args.services, progress=_say)
        _print_status(services.status(cfg, args.services or list(services.DEFAULT_SERVICES)))
    elif args.action == "down":
        services.down(cfg, args.services, purge=args.purge)
        _say("stopped" + (" and purged" if args.purge else ""))
    else:
        states = services.status(cfg, args.services)
        _print_status(states)
        wanted = args.services or list(services.DEFAULT_SERVICES)
        return 0 if all(s.healthy for s in states if s.name in wanted) else 3
    return 0


def _print_status(states) -> None:
    print(f"{'service':<15}{'state':<10}{'pid':<18}endpoint")
    for s in states:
        state = "healthy" if s.healthy else ("starting" if s.running else s.detail or "stopped")
        pids = ",".join(map(str, s.pids)) or "-"
        print(f"{s.name:<15}{state:<10}{pids:<18}{s.endpoint}")


# --- synth -------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from ctlake.synth import SynthConfig, generate_cohort

    cfg = SynthConfig(patients=args.patients, seed=args.seed, size=args.size, slices=args.slices,
                      edge_cases=tuple(args.edge_case or ()))

    def progress(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        print(f"\r[ctlake] synth [{'#' * filled}{'.' * (width - filled)}] {done}/{total} patients",
              end="" if done < total else "\n", file=sys.stderr, flush=True)

    manifest = generate_cohort(Path(args.out), cfg, progress=None if args.quiet else progress,
                               overwrite=args.overwrite)
    n_files = sum(len(s.files) for s in manifest.series)
    _say(f"wrote {len(manifest.series)} series ({n_files} files) and {len(manifest.annotations)} "
         f"nodules to {args.out} (annotations.csv, manifest.json)")
    return 0


# --- ingest / deid -----------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.action == "send":
        from ctlake.ingest.producer import send

        rep = send(cfg, Path(args.source), topic=args.topic, deidentify=not args.no_deidentify,
                   progress=not args.quiet)
        print(json.dumps(rep.to_dict()))
        return 0
    from ctlake.ingest import bronze
    from ctlake.spark import get_spark

    spark = get_spark(cfg, app_name=f"ctlake-ingest-{args.action}")
    if args.action == "folder":
        if not args.source:
            raise CtlakeError("ingest folder needs a DIR", code="USAGE")
        summary = bronze.ingest_folder(spark, cfg, str(Path(args.source).resolve()),
                                       deidentify=not args.no_deidentify)
        print(json.dumps(summary))
    else:
        bronze.stream(spark, cfg, topic=args.topic, available_now=not args.continuous,
                      processing_time=args.trigger, timeout_s=args.timeout)
    return 0


def cmd_deid(args: argparse.Namespace) -> int:
    from ctlake.dicom.deid import DeidProfile, deidentify_bytes
    from ctlake.ingest.keys import site_key
    from ctlake.ingest.sources import SourceFile, iter_source

    cfg = _config(args)
    profile = DeidProfile(site_key=site_key(cfg))
    out = Path(args.out)
    done = refused = 0
    for item in iter_source(Path(args.source), max_file_bytes=cfg.ingest.max_file_bytes):
        if not isinstance(item, SourceFile):
            _say(f"skipped (too large): {item.relpath}")
            refused += 1
            continue
        try:
            data, audit = deidentify_bytes(item.data, profile, allow_secondary=args.allow_secondary)
        except CtlakeError as exc:
            _say(f"refused [{exc.code}]: {item.relpath}: {exc}")
            refused += 1
            continue
        target = out / f"{done:06d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if args.audit:
            with open(args.audit, "a") as fh:
                fh.write(json.dumps({"file": target.name, "audit": _audit_dict(audit)}) + "\n")
        done += 1
    _say(f"de-identified {done} files into {out}, refused {refused}")
    return 0 if refused == 0 else 1


def _audit_dict(audit) -> object:
    import dataclasses

    return dataclasses.asdict(audit) if dataclasses.is_dataclass(audit) else audit


# --- process ------------------------------------------------------------------------------
def _spacing(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) <= 0:
        raise CtlakeError("--spacing takes 1 or 3 positive numbers (z,y,x mm)", code="USAGE")
    return values


def _window(text: str) -> tuple[float, float] | None:
    if text == "none":
        return None
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 2 or values[0] >= values[1]:
        raise CtlakeError("--window takes LOW,HIGH HU with LOW < HIGH, or 'none'", code="USAGE")
    return values


# --- volumes -----------------------------------------------------------------------------
def volume_settings(cfg, args: argparse.Namespace):
    """The :class:`~ctlake.process.volumes.VolumeSettings` of ``ctlake process volumes``: the
    profile's ``imaging.volume`` and ``imaging.series``, with ``--spacing / --window / --order`` winning."""
    import dataclasses

    from ctlake.process.volumes import VolumeSettings

    settings = VolumeSettings.from_config(cfg, spacing_zyx_mm=_spacing(args.spacing) if args.spacing else None,
                                          order=args.order)
    if args.window is not None:     # "none" is a value (no clipping), so None means "not given"
        settings = dataclasses.replace(settings, window_hu=_window(args.window))
    return settings


def cmd_process_volumes(args: argparse.Namespace) -> int:
    """``ctlake process volumes`` with ``imaging.volume`` defaults (flags win) and ``imaging.series`` policies."""
    from ctlake.process.volumes import build_volumes
    from ctlake.spark import get_spark

    cfg = _config(args)
    settings = volume_settings(cfg, args)
    spark = get_spark(cfg, app_name="ctlake-process-volumes")
    summary = build_volumes(spark, cfg, settings=settings)
    _say(f"volumes: {summary['series']} series → {summary['built']} built, {summary['refused']} refused "
         f"in {summary['seconds']} s")
    print(json.dumps(summary))
    return 0


def cmd_volume(args: argparse.Namespace) -> int:
    """``ctlake volume`` with ``imaging.volume`` defaults (flags win) and ``imaging.series`` policies."""
    from pathlib import Path

    from ctlake.imaging.series import SeriesRejected
    from ctlake.imaging.volume import build_volume, read_series_folder, write_volume

    cfg = _config(args)
    v, s = cfg.imaging.volume, cfg.imaging.series
    spacing = _spacing(args.spacing) if args.spacing else v.spacing_zyx_mm
    window = _window(args.window) if args.window is not None else v.window_hu
    order = args.order if args.order is not None else v.order
    datasets = read_series_folder(Path(args.dicom_dir))
    if not datasets:
        raise CtlakeError(f"no DICOM files under {args.dicom_dir}", code="NO_DICOM")
    try:
        vol = build_volume(datasets, spacing_zyx_mm=spacing, window_hu=window, order=order,
                           policy=s.series_policy(), tolerances=s.tolerances())
    except SeriesRejected as exc:
        raise CtlakeError(str(exc), code=exc.code) from None
    out = write_volume(vol, Path(args.out))
    flags = ", ".join(vol.series.qc.flags) or "none"
    _say(f"{len(vol.series.slices)} slices → {vol.array.shape} (z, y, x) at {vol.grid.spacing_zyx_mm} mm; "
         f"QC flags: {flags}; wrote {out}")
    return 0


# --- features ----------------------------------------------------------------------------
def cmd_features(args: argparse.Namespace) -> int:
    import csv

    from ctlake.radiomics import extract, load_params, params_from_mapping
    from ctlake.radiomics.io import load_case

    params = load_params(args.params) if args.params else params_from_mapping(None)
    case = load_case(args.image, args.mask, label=args.label)
    features = extract(case.image_zyx, case.mask_zyx, case.spacing_zyx_mm, params)
    if args.format == "json":
        print(json.dumps(features, indent=2))
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(["feature", "value"])
        writer.writerows(features.items())
    return 0


# --- config ------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    import dataclasses

    cfg = _config(args)
    tree = dataclasses.asdict(cfg)
    tree["project_root"] = str(cfg.project_root)
    tree["resolved"] = {"lake_root": cfg.lake_root, "state_dir": str(cfg.state_dir)}
    print(json.dumps(tree, indent=2, default=str))
    return 0


# --- spark-conf ------------------------------------------------------------------------------
def cmd_spark_conf(args: argparse.Namespace) -> int:
    import shlex

    from ctlake.spark import spark_conf, submit_args

    cfg = _config(args)
    if args.format == "json":
        print(json.dumps(spark_conf(cfg), indent=2))
    else:
        print(" ".join(shlex.quote(a) for a in submit_args(cfg)))
    return 0


# --- demo --------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from ctlake.demo import run_demo

    summary = run_demo(_config(args), patients=args.patients, train_np=args.np, train_epochs=args.epochs,
                       progress=_say)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def _add_volume_args(p: argparse.ArgumentParser) -> None:
    """--spacing / --window / --order, shared by `volume` and `process volumes`."""
    p.add_argument("--spacing", default=None,
                   help="target spacing in mm: one number or z,y,x (default: imaging.volume of the profile, 1 mm)")
    p.add_argument("--window", default=None,
                   help="HU clip window LOW,HIGH or 'none' (default: imaging.volume, -1000,400; "
                        "write --window=-1100,300)")
    p.add_argument("--order", type=int, choices=[0, 1], default=None,
                   help="interpolation: 1 linear, 0 nearest (default: imaging.volume, 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctlake",
        description="ctlake: an open lakehouse for chest CT (DICOM → Delta → radiomics → 3D CNNs).",
    )
    parser.add_argument("--version", action="version", version=f"ctlake {__version__}")
    parser.add_argument("--profile", default=None,
                        help="config profile in conf/ (default: $CTLAKE_PROFILE or 'local')")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("infra", help="start, stop or report the local services",
                       description="Start, stop or report the local services on 127.0.0.1 "
                                   "(default: kafka, mlflow, elasticsearch; 'spark' starts a "
                                   "standalone master with two workers on request).")
    p.add_argument("action", choices=["up", "down", "status", "prepare"],
                   help="prepare = fetch jars and build launchers without starting anything")
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help="kafka, mlflow, elasticsearch, spark (default: kafka mlflow elasticsearch; "
                        "'down'/'status' without names act on all)")
    p.add_argument("--purge", action="store_true", help="with 'down': delete the services' data too")
    p.set_defaults(func=cmd_infra)

    p = sub.add_parser("synth", help="generate a synthetic chest CT cohort (DICOM + annotations)",
                       description="Write a deterministic synthetic chest CT cohort: DICOM series, "
                                   "a LUNA16-style annotations.csv and a manifest.json.")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--patients", type=int, default=4, help="number of patients (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="rows = columns per slice (default 64; 512 for real size)")
    p.add_argument("--slices", type=int, default=None, help="slices per series (default: cover the chest)")
    p.add_argument("--edge-case", action="append", metavar="NAME",
                   help="plant an edge case (repeatable): missing_slice, duplicate_slice, gantry_tilt, "
                        "uneven_spacing, compressed, non_ct, truncated, corrupt, phi, burned_in")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier cohort in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="DICOM → Kafka → bronze: send, stream, or ingest a folder",
                       description="send: de-identify a folder or zip and publish it to Kafka. "
                                   "stream: Kafka → bronze.dicom_instances / bronze.quarantine with a "
                                   "checkpoint (drains and exits unless --continuous). folder: the same "
                                   "as a batch job over a folder (Spark binaryFile), for users without Kafka.")
    p.add_argument("action", choices=["send", "stream", "folder"])
    p.add_argument("source", nargs="?", help="DIR or ZIP (send, folder)")
    p.add_argument("--topic", default=None, help="Kafka topic (default: kafka.topic of the profile)")
    p.add_argument("--no-deidentify", action="store_true",
                   help="send/ingest files as they are (only for data de-identified elsewhere; "
                        "the lake's gate still refuses anything identifying)")
    p.add_argument("--continuous", action="store_true", help="stream: keep running (processing-time trigger)")
    p.add_argument("--trigger", default="5 seconds", help="stream --continuous: trigger interval")
    p.add_argument("--timeout", type=float, default=None, help="stream: stop after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("deid", help="de-identify DICOM files (PS3.15 basic profile, modified dates)",
                       description="De-identify every file of a folder or zip into OUT with the site key "
                                   "of the profile; refused files are reported, never copied.")
    p.add_argument("source", help="DIR, ZIP or one file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--audit", help="append per-file audit records (tag, action; no values) to this JSONL file")
    p.add_argument("--allow-secondary", action="store_true",
                   help="an operator has cleared secondary captures / screen saves")
    p.set_defaults(func=cmd_deid)

    p = sub.add_parser("volume", help="one DICOM series → a resampled HU volume (.nii.gz or .nrrd)",
                       description="Assemble one CT series (QC flags, policies), convert to HU, clip to "
                                   "the window and resample; writes NIfTI or NRRD with the full geometry.")
    p.add_argument("dicom_dir", help="folder with the series' DICOM files")
    p.add_argument("--out", required=True, help="FILE.nii.gz, FILE.nii or FILE.nrrd")
    _add_volume_args(p)
    p.set_defaults(func=cmd_volume)

    p = sub.add_parser("process", help="batch jobs over the lake (volumes, lungs, nodules, patches, radiomics …)",
                       description="Batch jobs over the lake. Each step is incremental: it takes only what "
                                   "its output table does not have yet. Run `ctlake process STEP --help`.")
    process = p.add_subparsers(dest="step", required=True, metavar="STEP")
    q = process.add_parser("volumes", help="bronze → silver.ct_series + silver.ct_volumes",
                           description="Every bronze series not yet in silver.ct_series → QC, HU, clip, resample "
                                       "→ silver.ct_series + silver.ct_volumes (refusals quarantined).")
    _add_volume_args(q)
    q.set_defaults(func=cmd_process_volumes)

    p = sub.add_parser("features", help="radiomics features of one case (IBSI definitions, PyRadiomics names)",
                       description="Like pyradiomics' command line: IMAGE (NIfTI, NRRD or a DICOM series "
                                   "folder) and MASK (NIfTI or NRRD on the same grid) → features named "
                                   "original_<class>_<Feature>, with a PyRadiomics parameter file as it is.")
    p.add_argument("image", help="image: .nii/.nii.gz/.nrrd or a DICOM series folder")
    p.add_argument("mask", help="mask: .nii/.nii.gz/.nrrd on the image's grid")
    p.add_argument("--params", help="PyRadiomics parameter YAML (default: PyRadiomics defaults, every class)")
    p.add_argument("--label", type=int, default=1, help="mask label of the ROI (default 1)")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("config", help="print the resolved configuration of a profile")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("spark-conf", help="print the profile's Spark settings (spark-submit arguments or JSON)",
                       description="Print the Spark settings ctlake applies for the profile, as "
                                   "spark-submit arguments (default) or JSON. Example: "
                                   "spark-submit $(ctlake --profile cluster spark-conf) --py-files "
                                   "dist/ctlake-0.1.0-py3-none-any.whl jobs/demo.py")
    p.add_argument("--format", choices=["submit", "json"], default="submit")
    p.set_defaults(func=cmd_spark_conf)

    p = sub.add_parser("demo", help="run the end-to-end demo on the local services")
    p.add_argument("--patients", type=int, default=3, help="synthetic patients (default 3)")
    p.add_argument("--np", type=int, default=2, help="Horovod workers for the training step (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    p.set_defaults(func=cmd_demo)

    for module in _command_modules():
        module.register(sub, process)
    return parser


def _command_modules() -> list:
    """The modules of :mod:`ctlake.commands`, in name order. Each defines ``register(sub, process)``:
    ``sub`` adds top-level commands (``ctlake NAME``), ``process`` adds steps (``ctlake process NAME``).
    Heavy imports belong inside the command functions, so ``ctlake --help`` stays fast."""
    import importlib
    import pkgutil

    import ctlake.commands as pkg

    return [importlib.import_module(f"ctlake.commands.{m.name}")
            for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name) if not m.name.startswith("_")]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CtlakeError as exc:
        print(f"ctlake: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
