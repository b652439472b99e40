"""Training input: one epoch fed by petastorm from Delta vs. the same tensors held in memory.
Writes bench/results/train_input.json.

    .venv/bin/python bench/train_input.py [--patients 30 --size 32x48x48 --batch 32 --epochs 2 --threads 1]

Data: a synthetic gold.nodule_patches table (ctlake.train.synthetic, every patient in the training
split) in a fresh lake, read at one pinned Delta version by ctlake.train.data.select_rows.
Both sides run the same training loop (ctlake.train.loop.fit, one process): the candidate
classifier of the source study on the patches, AdamW, batch --batch, augmentation on, --threads
torch threads; only the source of the batches differs:
  petastorm: build_train_data(loader="petastorm"): make_spark_converter materialises the snapshot
             (timed apart as materialize_s), then make_torch_dataloader with a 2-thread reader pool,
             int16 decoding in the pool, float + normalisation + augmentation per batch;
  memory:    build_train_data(loader="memory"): the same rows collected once into an int16 numpy
             array; batches are slices of it, then the same float + normalisation + augmentation.
samples/s = samples of the LAST epoch / its wall time, fastest of --repeats runs per side, the
sides alternating (the first epoch also pays the reader's start: *_first_epoch_sps).
Also measured, without the model: *_loader_only_sps (batches with augmentation) and
*_input_only_sps (decode + normalise only), what the input path alone could feed an accelerator.
Not a test: nothing passes or fails on these numbers. Needs only the local Spark (no services).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

from _common import machine, versions  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def _epochs(data, cfg, epochs: int, *, with_model: bool) -> list[float]:
    """Seconds per epoch of ``data`` (one process); with_model=False only draws the batches."""
    import torch
    from ctlake.train.loop import LocalComm, fit
    from ctlake.train.models import build_model

    batches = data.batches(0, 1, cfg)
    times: list[float] = []
    if not with_model:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            for _ in batches(epoch):
                pass
            times.append(time.perf_counter() - t0)
        return times
    torch.manual_seed(cfg.seed)
    model = build_model({"kind": "candidate", "patch_zyx": list(data.shape_zyx), "conv_channels": 8})
    out = fit(model, batches, None, cfg, class_weights=(1.0, 1.0), comm=LocalComm(), epochs=epochs)
    return [h["seconds"] for h in out.history]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--size", default="32x48x48", help="patch size ZxYxX (the candidate classifier's)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the fastest counts")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_input.json"))
    args = ap.parse_args(argv)

    import torch
    from ctlake.config import LakeConfig, load_config
    from ctlake.spark import get_spark
    from ctlake.train import data as tdata
    from ctlake.train.synthetic import SyntheticPatchConfig, make_cohort

    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.size.split("x"))
    cfg = load_config("test", conf_dir=ROOT / "conf")
    lake = ROOT / ".ctlake-test" / "bench-train-input"
    shutil.rmtree(lake, ignore_errors=True)
    tc = dataclasses.replace(cfg.train, batch_size=args.batch, threads_per_worker=args.threads, lr_schedule="none",
                             early_stopping_patience=0, candidate=dataclasses.replace(cfg.train.candidate,
                                                                                      size_name=args.size))
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(lake / "lake")), train=tc)
    spark = get_spark(cfg, app_name="bench-train-input")
    cohort = make_cohort(SyntheticPatchConfig(patients=args.patients, shape_zyx=shape, splits=(1.0, 0.0, 0.0),
                                              seed=5))
    print(f"[bench] writing {len(cohort.patch_rows)} patches of {args.size} to Delta", file=sys.stderr)
    version = tdata.write_synthetic(spark, cfg, cohort, features=False, mode="append")["gold.nodule_patches"]
    df, snap = tdata.select_rows(spark, cfg, "candidate", version=version)

    t0 = time.perf_counter()
    pet = tdata.build_train_data(spark, cfg, df, snap, loader="petastorm")
    materialize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mem = tdata.build_train_data(spark, cfg, df, snap, loader="memory")
    collect_s = time.perf_counter() - t0
    samples = pet.steps_per_epoch * args.batch
    print(f"[bench] {pet.train_rows} rows, {pet.steps_per_epoch} steps of {args.batch} per epoch", file=sys.stderr)

    raw = dataclasses.replace(tc, augment=dataclasses.replace(tc.augment, enabled=False))
    results: dict[str, dict[str, list]] = {side: {"train": [], "loader_only": [], "input_only": []}
                                           for side in ("memory", "petastorm")}
    for rep in range(args.repeats):          # alternate the sides: the machine's load drifts
        for name, data in (("memory", mem), ("petastorm", pet)) if rep % 2 == 0 else \
                (("petastorm", pet), ("memory", mem)):
            try:
                input_only = _epochs(data, raw, args.epochs, with_model=False)
            finally:
                data.close()
            try:
                loader_only = _epochs(data, tc, args.epochs, with_model=False)
            finally:
                data.close()
            try:
                train = _epochs(data, tc, args.epochs, with_model=True)
            finally:
                data.close()
            results[name]["train"].append(train)
            results[name]["loader_only"].append(loader_only)
            results[name]["input_only"].append(input_only)
            print(f"[bench] {name}: epochs {[round(t, 1) for t in train]} s with the model, "
                  f"{[round(t, 2) for t in loader_only]} s loader only, {[round(t, 2) for t in input_only]} s "
                  "without augmentation", file=sys.stderr)
    spark.stop()

    def sps(seconds: float) -> float:
        return round(samples / seconds, 2)

    def best(name: str, kind: str, epoch: int = -1) -> float:
        """Fastest repeat of one epoch (-1: the last, steady state; 0: the first, with reader start)."""
        return min(run[epoch] for run in results[name][kind])

    out = {
        "petastorm_sps": sps(best("petastorm", "train")),
        "memory_sps": sps(best("memory", "train")),
        "ratio": round(best("memory", "train") / best("petastorm", "train"), 3),
        "goal_ratio": 0.8,
        "petastorm_first_epoch_sps": sps(best("petastorm", "train", 0)),
        "memory_first_epoch_sps": sps(best("memory", "train", 0)),
        "petastorm_loader_only_sps": sps(best("petastorm", "loader_only")),
        "memory_loader_only_sps": sps(best("memory", "loader_only")),
        "petastorm_input_only_sps": sps(best("petastorm", "input_only")),
        "memory_input_only_sps": sps(best("memory", "input_only")),
        "epoch_seconds": results,
        "materialize_s": round(materialize_s, 2),
        "collect_to_memory_s": round(collect_s, 2),
        "sizes": {"patches": pet.train_rows, "samples_per_epoch": samples, "patch_zyx": list(shape),
                  "bytes_per_patch_int16": 2 * int(torch.tensor(shape).prod()), "batch": args.batch,
                  "epochs": args.epochs, "repeats": args.repeats, "model": "candidate (conv_channels 8)",
                  "torch_threads": args.threads,
                  "petastorm_reader": f"{tc.petastorm.pool} x {tc.petastorm.workers}",
                  "augmentation": tc.augment.enabled},
        "data": {"table": "gold.nodule_patches", "version": version},
        "gpu": "not measured: this task was not lent a GPU machine (train_gpu.json not written)",
        "versions": versions("torch", "petastorm", "pyarrow", "pyspark", "delta-spark", "numpy"),
        "machine": {**machine(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    shutil.rmtree(lake, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
