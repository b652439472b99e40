"""``ctlake demo`` / ``make demo``: the whole local stack exercised once, end to end.

infra up → a small synthetic cohort → de-identified at the edge and sent through Kafka → streamed
into ``bronze.dicom_instances`` (and ``ops.pipeline_runs``) with Spark and Delta → the series view
→ HU volumes, lung masks, nodules and patches → radiomics → a candidate classifier trained with two
Horovod workers, evaluated with bootstrap CIs, registered in MLflow, and its predictions in gold →
an MLflow run with a preview image → every table indexed in Elasticsearch → where to look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ctlake.config import Config


def _preview_png(series_dir: Path, nodule: dict | None, out: Path) -> Path:
    """Axial slice through the largest nodule (or the middle), lung window W1600/L-500."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    files = sorted(series_dir.glob("*.dcm"))
    slices = [pydicom.dcmread(f) for f in files]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    z = [float(d.ImagePositionPatient[2]) for d in slices]
    k = int(np.argmin(np.abs(np.asarray(z) - nodule["coordZ"]))) if nodule else len(slices) // 2
    ds = slices[k]
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.imshow(hu, cmap="gray", vmin=-1300, vmax=300)
    if nodule:
        x0, y0 = (float(v) for v in ds.ImagePositionPatient[:2])
        dy, dx = (float(v) for v in ds.PixelSpacing)
        col, row = (nodule["coordX"] - x0) / dx, (nodule["coordY"] - y0) / dy
        r = nodule["diameter_mm"] / dx / 2 + 2
        ax.add_patch(plt.Circle((col, row), r, fill=False, color="tab:red", lw=1.5))
        ax.set_title(f"nodule {nodule['diameter_mm']:.1f} mm, malignancy {nodule['malignancy']}")
    else:
        ax.set_title("middle slice")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _train_evaluate_predict(spark, cfg: Config, *, np: int, epochs: int, progress: Callable[[str], None]) -> dict:
    """Train the candidate classifier (nodule patch vs. negative) with ``np`` Horovod workers on the
    Spark executors from a petastorm snapshot of gold.nodule_patches, evaluate it with patient-bootstrap
    CIs on the first split holding both classes, register it (alias ``candidate``) and score every
    patch into gold.predictions."""
    import dataclasses

    from ctlake.train import pipeline as tp

    tcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs, batch_size=4 * np,
                                                              threads_per_worker=1))
    tr = tp.train(spark, tcfg, model="candidate", np=np, launcher="spark", loader="petastorm", progress=progress)
    counts = tr.snapshot.counts
    split = next((s for s in ("test", "validation", "train")
                  if 0 < counts.get(s, {}).get("positives", 0) < counts.get(s, {}).get("rows", 0)), "train")
    ev = tp.evaluate(spark, tcfg, tr.run_id, split=split, resamples=200, progress=progress)
    name, version = tp.register(tcfg, tr.run_id, progress=progress)
    pr = tp.predict(spark, tcfg, kind="candidate", progress=progress)
    auc = ev.metric("auc")
    return {"train_run": tr.run_url, "ranks_identical": tr.summary()["ranks_identical"], "eval_split": split,
            "auc": f"{auc.estimate:.3f} [{auc.ci_low:.3f}, {auc.ci_high:.3f}]",
            "model": f"{name} v{version} @candidate", "predictions": pr.rows}


def run_demo(cfg: Config, *, patients: int = 3, seed: int = 7, train_np: int = 2, train_epochs: int = 3,
             progress: Callable[[str], None] = print) -> dict:
    """Run the demo against the profile's services; return a summary (also printed)."""
    from ctlake.infra import services
    from ctlake.synth import SynthConfig, generate_cohort

    t0 = time.monotonic()
    progress("1/9 starting local services (Kafka, MLflow, Elasticsearch)")
    services.up(cfg, None, progress=progress)

    progress(f"2/9 synthesizing {patients} patients")
    out = cfg.state_dir / "demo" / "cohort"
    manifest = generate_cohort(out, SynthConfig(patients=patients, seed=seed, size=96),
                               overwrite=True)

    progress("3/9 Kafka: de-identifying at the edge and sending every instance")
    from ctlake.ingest import bronze
    from ctlake.ingest.producer import send
    from ctlake.lake import delta
    from ctlake.spark import get_spark

    topic = f"{cfg.kafka.topic}.demo"
    sent = n_refused = 0
    patient_dirs = sorted(p for p in out.iterdir() if p.is_dir())
    for pdir in patient_dirs:   # the patient folders: annotations.csv and manifest.json are not DICOM
        rep = send(cfg, pdir, topic=topic, progress=False)
        sent += rep.sent
        n_refused += sum(rep.refused.values())

    progress("4/9 Spark: Kafka → bronze.dicom_instances (checkpointed stream, drained)")
    spark = get_spark(cfg, app_name="ctlake-demo")
    bronze.stream(spark, cfg, topic=topic, available_now=True)
    from ctlake.ingest import views

    series_rows = [r.asDict() for r in views.series_view(spark, cfg).collect()]
    n_bronze = delta.read(spark, cfg, "bronze.dicom_instances").count()
    n_quarantine = delta.read(spark, cfg, "bronze.quarantine").count() \
        if delta.exists(spark, cfg.table_path("bronze.quarantine")) else 0
    bronze_version = delta.version(spark, cfg.table_path("bronze.dicom_instances"))
    rows = [{"series_instance_uid": r["series_instance_uid"], "patient_pseudo_id": r["patient_pseudo_id"],
             "manufacturer": r["manufacturer"], "kernel": r["convolution_kernel"], "instances": r["instances"],
             "slice_thickness_mm": r["slice_thickness_mm"], "modalities": r["modalities"]} for r in series_rows]

    progress("5/9 Spark: bronze → silver.ct_series / silver.ct_volumes (QC, HU, clip, 1 mm)")
    from ctlake.process.lungs import build_lung_masks
    from ctlake.process.nodules import build_nodules
    from ctlake.process.patches import build_patches
    from ctlake.process.volumes import build_volumes

    volumes = build_volumes(spark, cfg)
    built = delta.read(spark, cfg, "silver.ct_series").filter("status = 'built'").count()
    progress("   silver.lung_masks → gold.nodules (annotations.csv) → gold.nodule_patches")
    lungs = build_lung_masks(spark, cfg)
    nodules = build_nodules(spark, cfg, luna16=[out / "annotations.csv"])
    patches = build_patches(spark, cfg)
    n_nodules_ok = delta.read(spark, cfg, "gold.nodules").filter("status = 'ok'").count()
    n_patches = delta.read(spark, cfg, "gold.nodule_patches").count()

    progress("6/9 Spark: gold.nodules + silver.ct_volumes → gold.radiomics_features (IBSI / PyRadiomics names)")
    from ctlake.process.radiomics import extract_radiomics

    radiomics = extract_radiomics(spark, cfg)
    n_features_ok = delta.read(spark, cfg, "gold.radiomics_features").filter("status = 'ok'").count()

    progress(f"7/9 Horovod: training the candidate classifier on {train_np} workers → evaluate → register → "
             "gold.predictions")
    trained = _train_evaluate_predict(spark, cfg, np=train_np, epochs=train_epochs, progress=progress)

    progress("8/9 MLflow: logging a run with a preview image")
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    biggest = max(manifest.annotations, key=lambda a: a.diameter_mm, default=None)
    series = next(s for s in manifest.ct_series()
                  if biggest is None or s.series_uid == biggest.seriesuid)
    png = _preview_png(out / series.directory if not Path(series.directory).is_absolute()
                       else Path(series.directory), biggest.__dict__ if biggest else None,
                       cfg.state_dir / "demo" / "preview.png")
    with mlflow.start_run(run_name="demo") as mlrun:
        mlflow.log_params({"patients": patients, "seed": seed, "bronze_version": bronze_version})
        mlflow.log_metrics({"series": len(rows), "instances": n_bronze, "quarantined": n_quarantine,
                            "nodules": len(manifest.annotations)})
        mlflow.log_artifact(str(png))
        mlflow.set_tags({"ctlake.table": "bronze.dicom_instances", "ctlake.topic": topic})

    progress("9/9 Elasticsearch: indexing every table (change data feed → versioned indices behind aliases)")
    from ctlake.index import kibana
    from ctlake.index.indexer import index_after
    from ctlake.index.model import alias_of

    indexed = index_after(spark, cfg, progress=progress)
    es_docs = {e["entity"]: e.get("docs", 0) for e in indexed.get("entities", [])}
    ndjson = kibana.export(cfg, cfg.state_dir / "demo" / "kibana")

    mlflow_url = f"{cfg.mlflow.tracking_uri}/#/experiments/{mlrun.info.experiment_id}/runs/{mlrun.info.run_id}"
    summary = {
        "series": len(rows), "nodules": len(manifest.annotations), "instances_sent": sent,
        "bronze_instances": n_bronze, "quarantined": n_quarantine, "bronze_version": bronze_version,
        "volumes_built": built, "volumes_this_run": volumes["built"], "lung_masks_ok": lungs.get("ok"),
        "nodules_ok": n_nodules_ok, "nodules_failed_this_run": nodules.get("failed"), "patches": n_patches,
        "patches_this_run": patches.get("written"), "radiomics_ok": n_features_ok,
        "radiomics_failed_this_run": radiomics.get("failed"), **trained,
        "index": indexed.get("status"), "es_docs": es_docs, "lake": cfg.lake_root,
        "tables": [cfg.table_path(t) for t in ("bronze.dicom_instances", "bronze.quarantine", "silver.ct_series",
                                               "silver.ct_volumes", "silver.lung_masks", "gold.nodules",
                                               "gold.nodule_patches", "gold.radiomics_features", "gold.predictions",
                                               "ops.pipeline_runs")],
        "cohort": str(out), "preview": str(png), "mlflow_run": mlflow_url,
        "elasticsearch": f"{cfg.elasticsearch.url}/{alias_of(cfg, 'series')}/_search", "kibana_ndjson": str(ndjson),
        "dashboard": f"http://{cfg.index.dashboard_host}:{cfg.index.dashboard_port}/  (start it: ctlake dashboard)",
        "seconds": round(time.monotonic() - t0, 1),
    }
    width = max(len(k) for k in summary)
    print("\nctlake demo: done")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    print("\nStop the services with: make infra-down   (or: .venv/bin/ctlake infra down)")
    return summary
