"""``ctlake demo`` / ``make demo``: the whole local stack exercised once, end to end.

infra up → a small synthetic cohort → its series summary through Kafka → a Delta table written
and read back with Spark (plus an ``ops.pipeline_runs`` row) → an MLflow run with a preview
image → the series indexed in Elasticsearch → where to look. Later issues grow this into the
whole pipeline (ingest, volumes, radiomics, training).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
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


def run_demo(cfg: Config, *, patients: int = 3, seed: int = 7,
             progress: Callable[[str], None] = print) -> dict:
    """Run the demo against the profile's services; return a summary (also printed)."""
    from ctlake.infra import services
    from ctlake.synth import SynthConfig, generate_cohort

    t0 = time.monotonic()
    progress("1/6 starting local services (Kafka, MLflow, Elasticsearch)")
    services.up(cfg, None, progress=progress)

    progress(f"2/6 synthesizing {patients} patients")
    out = cfg.state_dir / "demo" / "cohort"
    manifest = generate_cohort(out, SynthConfig(patients=patients, seed=seed, size=96),
                               overwrite=True)
    by_series: dict[str, list[dict]] = {}
    for a in manifest.annotations:
        by_series.setdefault(a.seriesuid, []).append(a.__dict__)
    rows = []
    for s in manifest.ct_series():
        nods = by_series.get(s.series_uid, [])
        rows.append({"series_instance_uid": s.series_uid, "patient_id": s.patient_id,
                     "manufacturer": s.manufacturer, "kernel": s.kernel,
                     "slices": len(s.files), "spacing_zyx_mm": list(s.spacing_zyx_mm),
                     "nodules": len(nods),
                     "max_diameter_mm": max((n["diameter_mm"] for n in nods), default=0.0)})

    progress("3/6 Kafka: sending the series summaries and reading them back")
    from kafka import KafkaConsumer, KafkaProducer

    from ctlake.infra.kafka_admin import client_config, ensure_topic

    topic = ensure_topic(cfg, "ctlake.demo", partitions=1)
    producer = KafkaProducer(acks="all", **client_config(cfg))
    run_id = uuid.uuid4().hex
    for r in rows:
        producer.send(topic, key=r["series_instance_uid"].encode(),
                      value=json.dumps(r).encode(), headers=[("run_id", run_id.encode())])
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             enable_auto_commit=False, **client_config(cfg))
    received = [json.loads(m.value) for m in consumer if dict(m.headers).get("run_id") == run_id.encode()]
    consumer.close()
    if len(received) != len(rows):
        raise RuntimeError(f"Kafka round trip lost messages: sent {len(rows)}, got {len(received)}")

    progress("4/6 Spark + Delta: writing ops.demo_cohort and ops.pipeline_runs")
    from ctlake.lake import delta
    from ctlake.lake.schemas import DEMO_COHORT, PIPELINE_RUNS
    from ctlake.spark import get_spark

    spark = get_spark(cfg, app_name="ctlake-demo")
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    df = spark.createDataFrame([tuple(r[f.name] for f in DEMO_COHORT.fields) for r in received], DEMO_COHORT)
    written = delta.write(spark, cfg, df, "ops.demo_cohort")
    back = delta.read(spark, cfg, "ops.demo_cohort")
    n_back = back.filter(back.series_instance_uid.isin([r["series_instance_uid"] for r in rows])).count()
    ended = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    run_row = [(run_id, "demo", "succeeded", started, ended, (ended - started).total_seconds(),
                len(received), n_back, {}, {"ops.demo_cohort": written.version},
                json.dumps({"patients": patients, "seed": seed}), None, cfg.profile)]
    delta.write(spark, cfg, spark.createDataFrame(run_row, PIPELINE_RUNS), "ops.pipeline_runs")

    progress("5/6 MLflow: logging a run with a preview image")
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
        mlflow.log_params({"patients": patients, "seed": seed, "delta_version": written.version})
        mlflow.log_metrics({"series": len(rows), "nodules": len(manifest.annotations)})
        mlflow.log_artifact(str(png))
        mlflow.set_tags({"ctlake.run_id": run_id, "ctlake.table": "ops.demo_cohort"})

    progress("6/6 Elasticsearch: indexing the series")
    from elasticsearch import helpers

    from ctlake.index.client import es_client, index_name

    es = es_client(cfg)
    index = index_name(cfg, "demo-series")
    if not es.indices.exists(index=index):
        es.indices.create(index=index, settings={"number_of_replicas": 0}, mappings={
            "dynamic": "strict", "properties": {
                "series_instance_uid": {"type": "keyword"}, "patient_id": {"type": "keyword"},
                "manufacturer": {"type": "keyword"}, "kernel": {"type": "keyword"},
                "slices": {"type": "integer"}, "spacing_zyx_mm": {"type": "float"},
                "nodules": {"type": "integer"}, "max_diameter_mm": {"type": "float"}}})
    helpers.bulk(es, ({"_index": index, "_id": r["series_instance_uid"], "_source": r} for r in rows))
    es.indices.refresh(index=index)
    indexed = es.count(index=index, query={"ids": {"values": [r["series_instance_uid"] for r in rows]}})["count"]

    mlflow_url = f"{cfg.mlflow.tracking_uri}/#/experiments/{mlrun.info.experiment_id}/runs/{mlrun.info.run_id}"
    summary = {
        "series": len(rows), "nodules": len(manifest.annotations), "kafka_round_trip": len(received),
        "delta_rows_read_back": n_back, "delta_version": written.version, "es_docs": indexed,
        "lake": cfg.lake_root, "tables": [cfg.table_path("ops.demo_cohort"), cfg.table_path("ops.pipeline_runs")],
        "cohort": str(out), "preview": str(png), "mlflow_run": mlflow_url,
        "elasticsearch": f"{cfg.elasticsearch.url}/{index}/_search", "seconds": round(time.monotonic() - t0, 1),
    }
    width = max(len(k) for k in summary)
    print("\nctlake demo: done")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    print("\nStop the services with: make infra-down   (or: .venv/bin/ctlake infra down)")
    return summary
