r"""Training data from the lake: ``gold.nodule_patches`` at one pinned Delta version -> torch batches.

Rows of a model kind (``train.<kind>.size_name`` selects the patch size):
    candidate            every patch; target ``label`` (1 nodule, 0 negative)
    malignancy, hybrid   nodule patches with a known ``malignant``; target ``malignant``
    hybrid               + ``gold.radiomics_features`` (status ok, one ``params_hash``) joined on
                         roi_id = nodule_id, the map ``features`` turned into a float vector in a fixed
                         name order; nodules without every feature are left out (and counted)
Splits are the table's ``split`` column (train | validation -- or val -- | test, by patient); a
patient found in two splits is an error (SPLIT_LEAK), never silently used.

Version pinning: :func:`select_rows` reads ``train.data_version`` or, when null, the latest version
at that moment, and returns it in the :class:`Snapshot` (logged to MLflow as dataset inputs and
params), so a run can be reproduced from exactly the rows it saw (``versionAsOf``).

Two loaders give the same tensors (:class:`TrainData`):
    petastorm  ``make_spark_converter`` materialises the snapshot (sample_key, image bytes, y,
               features) as Parquet with ``row_group_mb`` row groups; each Horovod worker reads its
               shard (cur_shard = rank) through ``make_torch_dataloader`` with a reader pool that
               reads and converts row groups; :class:`PatchLoader` shuffles rows in a pool and
               decodes each batch's int16 bytes with one join; the loop turns them into float,
               normalises and augments on whole batches. The training stream is
               infinite and each epoch takes rows // batch_size steps on every worker, so workers
               whose shards differ in size still take the same number of steps.
    memory     the same columns collected to numpy once; global batches from a permutation seeded
               by (seed, epoch), worker r taking rows r, r + N, ... of each (so N workers see
               exactly the global batches of one process -- the loader of the equivalence test).
Class balance: ``weighted_loss`` weights class c by n / (2 n_c) (train split); ``oversample``
repeats each minority-class row round(n_major / n_minor) times (in Spark for petastorm, in numpy
for memory), each copy with its own augmentation key.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.lake import delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ctlake.train.loop import Batch

__all__ = ["MemoryArrays", "Snapshot", "TrainData", "class_weights", "collect_arrays", "make_converter",
           "select_rows", "write_synthetic"]

SPLITS = ("train", "validation", "test")
# petastorm 0.13 calls pyarrow APIs deprecated since pyarrow 2-11 (the pinned stack, DESIGN 3): not ours to fix
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}


class DataError(CtlakeError):
    """The training table cannot be used as it is. ``code``: NO_PATCHES, NO_ROWS, SPLIT_LEAK,
    ONE_CLASS, NO_FEATURES, AMBIGUOUS_PARAMS, BAD_PATCH."""

    code = "TRAIN_DATA"


@dataclass(frozen=True)
class Snapshot:
    """What a training run reads (all of it goes to MLflow)."""

    kind: str
    table: str
    path: str
    version: int
    size_name: str
    shape_zyx: tuple[int, int, int]
    label_column: str
    counts: dict = field(default_factory=dict)     # split -> {rows, positives, patients}
    features_table: str | None = None
    features_path: str | None = None
    features_version: int | None = None
    params_hash: str | None = None
    feature_names: tuple[str, ...] = ()
    dropped_without_features: int = 0

    def params(self) -> dict[str, object]:
        """Flat MLflow params."""
        out: dict[str, object] = {"data.table": self.table, "data.version": self.version,
                                  "data.size_name": self.size_name, "data.label": self.label_column}
        for split, c in self.counts.items():
            for k, v in c.items():
                out[f"data.{split}.{k}"] = v
        if self.features_table:
            out.update({"features.table": self.features_table, "features.version": self.features_version,
                        "features.params_hash": self.params_hash, "features.count": len(self.feature_names),
                        "features.dropped_rows": self.dropped_without_features})
        return out


def parse_size_name(size_name: str) -> tuple[int, int, int]:
    z, y, x = (int(p) for p in size_name.split("x"))
    return z, y, x


def _pinned(spark: SparkSession, cfg: Config, table: str, version: int | None) -> int:
    path = cfg.table_path(table)
    latest = delta.version(spark, path)
    if latest < 0:
        raise DataError(f"{table} does not exist at {path}", code="NO_PATCHES",
                        hint="build it first (`ctlake process patches`), or point lake.root at a lake that has it")
    if version is not None and not 0 <= version <= latest:
        raise DataError(f"{table}: version {version} requested, the table has 0..{latest}", code="NO_PATCHES")
    return latest if version is None else int(version)


def select_rows(spark: SparkSession, cfg: Config, kind: str, *, version: int | None = None,
                features_version: int | None = None, for_training: bool = True) -> tuple[DataFrame, Snapshot]:
    """The rows model ``kind`` trains and is evaluated on (module docstring), with columns
    sample_key, patch_id, nodule_id, series_instance_uid, patient_pseudo_id, split, y, diameter_mm,
    image (+ features for the hybrid), and the :class:`Snapshot` describing them.
    ``for_training=False`` (batch inference): also nodules of unknown malignancy (y null), and no
    checks of the training split."""
    from pyspark.sql import functions as F  # noqa: N812

    tc = cfg.train
    mc = tc.model_config(kind)
    version = _pinned(spark, cfg, tc.patches_table, tc.data_version if version is None else version)
    df = delta.read(spark, cfg, tc.patches_table, as_of=version).filter(F.col("size_name") == mc.size_name)
    label = "label" if kind == "candidate" else "malignant"
    if kind != "candidate":
        df = df.filter(F.col("kind") == "nodule")
        if for_training:
            df = df.filter(F.col("malignant").isNotNull())
    split = F.lower(F.trim(F.col("split")))
    for alias, name in _SPLIT_ALIASES.items():
        split = F.when(split == alias, F.lit(name)).otherwise(split)
    df = df.select(F.xxhash64("patch_id").alias("sample_key"), "patch_id", "nodule_id", "series_instance_uid",
                   "patient_pseudo_id", split.alias("split"), F.col(label).cast("int").alias("y"),
                   "diameter_mm", "image", "shape_zyx")
    snap = dict(kind=kind, table=tc.patches_table, path=cfg.table_path(tc.patches_table), version=version,
                size_name=mc.size_name, shape_zyx=parse_size_name(mc.size_name), label_column=label)
    if kind == "hybrid":
        df, extra = _join_features(spark, cfg, df, features_version)
        snap.update(extra)
    # one small query: per (patient, split) rows, positives and wrong-shape rows
    want = F.array(*[F.lit(v) for v in snap["shape_zyx"]])
    per = (df.groupBy("patient_pseudo_id", "split")
           .agg(F.count("*").alias("rows"), F.sum("y").alias("positives"),
                F.sum(F.when(F.col("shape_zyx") != want, 1).otherwise(0)).alias("bad_shape")).collect())
    counts: dict[str, dict] = {}
    splits_of: dict[str, set] = {}
    bad = 0
    for r in per:
        c = counts.setdefault(r["split"], {"rows": 0, "positives": 0, "patients": 0})
        c["rows"] += int(r["rows"])
        c["positives"] += int(r["positives"] or 0)
        c["patients"] += 1
        bad += int(r["bad_shape"])
        splits_of.setdefault(r["patient_pseudo_id"], set()).add(r["split"])
    if kind == "hybrid":      # _join_features left the row count before the join there
        snap["dropped_without_features"] -= sum(c["rows"] for c in counts.values())
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise DataError(f"{tc.patches_table}@{version}: unknown split values {unknown}", code="NO_ROWS",
                        hint="splits are train, validation (or val) and test")
    if bad:
        raise DataError(f"{bad} rows of size_name {mc.size_name} have another shape_zyx", code="BAD_PATCH")
    if not for_training:
        return df.drop("shape_zyx"), Snapshot(counts=counts, **snap)
    leak = sorted(str(p) for p, s in splits_of.items() if len(s) > 1)
    if leak:
        raise DataError(f"{tc.patches_table}@{version}: {len(leak)} patients in more than one split, e.g. "
                        f"{leak[:5]}", code="SPLIT_LEAK",
                        hint="splits must be by patient; rebuild the patches with a patient split")
    train = counts.get("train", {"rows": 0, "positives": 0})
    if train["rows"] == 0:
        raise DataError(f"{tc.patches_table}@{version}: no {kind} training rows of size {mc.size_name}",
                        code="NO_ROWS", hint=f"check train.{kind}.size_name and the table's split column")
    if train["positives"] in (0, train["rows"]):
        raise DataError(f"{kind}: the training split has one class only ({train['rows']} rows, "
                        f"{train['positives']} positive)", code="ONE_CLASS")
    return df.drop("shape_zyx"), Snapshot(counts=counts, **snap)


def _join_features(spark: SparkSession, cfg: Config, df: DataFrame, features_version: int | None):
    from pyspark.sql import functions as F  # noqa: N812

    tc = cfg.train
    mc = tc.hybrid
    fv = _pinned(spark, cfg, tc.features_table, features_version)
    feats = delta.read(spark, cfg, tc.features_table, as_of=fv)
    if "status" in feats.columns:
        feats = feats.filter(F.col("status") == "ok")
    hashes = sorted(r[0] for r in feats.select("params_hash").distinct().collect())
    params_hash = mc.params_hash
    if params_hash is None:
        if len(hashes) != 1:
            raise DataError(f"{tc.features_table}@{fv} holds {len(hashes)} parameter sets", code="AMBIGUOUS_PARAMS",
                            hint=f"set train.hybrid.params_hash to one of {hashes[:10]}")
        params_hash = hashes[0]
    elif params_hash not in hashes:
        raise DataError(f"{tc.features_table}@{fv}: no params_hash {params_hash!r}", code="NO_FEATURES",
                        hint=f"present: {hashes[:10]}")
    feats = feats.filter(F.col("params_hash") == params_hash).select(
        F.col("roi_id").alias("nodule_id"), F.col("features").alias("feature_map"))
    joined = df.join(feats, on="nodule_id", how="inner")
    names = tuple(mc.features)
    if not names:
        train = joined.filter(F.col("split") == "train")
        n_train = train.count()
        keys = (train.select(F.explode(F.map_keys("feature_map")).alias("k")).groupBy("k").count()
                .filter(F.col("count") == n_train).collect())
        names = tuple(sorted(r["k"] for r in keys))
    if not names:
        raise DataError(f"no radiomics feature is present for every training nodule in {tc.features_table}@{fv}",
                        code="NO_FEATURES", hint="run `ctlake process radiomics` or list train.hybrid.features")
    vec = F.array(*[F.col("feature_map").getItem(n).cast("float") for n in names])
    complete = F.aggregate(F.transform(vec, lambda v: F.when(v.isNull() | F.isnan(v), 1).otherwise(0)),
                           F.lit(0), lambda a, b: a + b) == 0
    before = df.count()       # the rows left out = before - the rows select_rows counts after the join
    out = joined.withColumn("features", vec).filter(complete).drop("feature_map")
    return out, {"features_table": tc.features_table, "features_path": cfg.table_path(tc.features_table),
                 "features_version": fv, "params_hash": params_hash, "feature_names": names,
                 "dropped_without_features": before}


def class_weights(counts: dict, balance: str) -> tuple[float, float]:
    """Loss weights (w0, w1): n / (2 n_c) of the training split for ``weighted_loss``, else (1, 1)."""
    if balance != "weighted_loss":
        return 1.0, 1.0
    n, pos = counts["train"]["rows"], counts["train"]["positives"]
    return n / (2.0 * (n - pos)), n / (2.0 * pos)


def oversample_factor(counts: dict) -> tuple[int, int]:
    """(minority class, copies per minority row) = round(n_major / n_minor)."""
    n, pos = counts["train"]["rows"], counts["train"]["positives"]
    minority = 1 if pos <= n - pos else 0
    n_min = pos if minority == 1 else n - pos
    return minority, max(1, int(round((n - n_min) / n_min)))


# --- memory ---------------------------------------------------------------------------------
@dataclass
class MemoryArrays:
    """One split in RAM: images (n, Z, Y, X) int16 HU, y (n,) int64, keys (n,) int64 and
    per-row metadata; features (n, F) float32 for the hybrid."""

    images: np.ndarray
    y: np.ndarray
    keys: np.ndarray
    patients: np.ndarray
    patch_ids: np.ndarray
    nodule_ids: np.ndarray
    series: np.ndarray
    diameters: np.ndarray
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> MemoryArrays:
        return MemoryArrays(*(None if a is None else a[idx] for a in (
            self.images, self.y, self.keys, self.patients, self.patch_ids, self.nodule_ids, self.series,
            self.diameters, self.features)))


def collect_arrays(df: DataFrame, shape_zyx: tuple[int, int, int], split: str | None = None) -> MemoryArrays:
    """Collect rows of ``split`` (all when None) of a :func:`select_rows` frame into numpy, in
    patch_id order."""
    from pyspark.sql import functions as F  # noqa: N812

    from ctlake.train.transforms import decode_images

    if split is not None:
        df = df.filter(F.col("split") == split)
    pdf = df.orderBy("patch_id").toPandas()
    feats = None
    if "features" in pdf.columns:
        feats = np.asarray([np.asarray(v, np.float32) for v in pdf["features"]], np.float32).reshape(len(pdf), -1)
    return MemoryArrays(
        images=decode_images([bytes(b) for b in pdf["image"]], shape_zyx),
        y=pdf["y"].to_numpy(np.int64),
        keys=pdf["sample_key"].to_numpy(np.int64),
        patients=pdf["patient_pseudo_id"].astype(str).to_numpy(),
        patch_ids=pdf["patch_id"].astype(str).to_numpy(),
        nodule_ids=pdf["nodule_id"].astype(object).to_numpy(),
        series=pdf["series_instance_uid"].astype(str).to_numpy(),
        diameters=pdf["diameter_mm"].astype(float).to_numpy(),
        features=feats,
    )


def _oversample_arrays(arr: MemoryArrays, counts: dict) -> MemoryArrays:
    minority, copies = oversample_factor(counts)
    idx, copy_no = [], []
    for i, y in enumerate(arr.y):
        k = copies if y == minority else 1
        idx += [i] * k
        copy_no += list(range(k))
    out = arr.take(np.asarray(idx))
    salt = np.asarray(copy_no, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    out.keys = (out.keys.astype(np.uint64) ^ salt).astype(np.int64)
    return out


# --- petastorm ------------------------------------------------------------------------------
class PatchLoader:
    """petastorm reader -> torch batches of exactly ``batch_size`` rows (the last one of a finite
    reader may be shorter), used as ``make_torch_dataloader(data_loader_fn=...)``.

    The reader's pool threads read Parquet row groups and convert them to numpy (image = an object
    array of bytes); rows go to a shuffling pool of ``shuffling_queue_capacity`` rows from which
    each batch is drawn at random (numpy RNG of ``seed``); a batch's images are decoded with ONE
    ``bytearray.join`` + ``np.frombuffer`` into an (n, voxels) int16 tensor -- no per-row Python
    work beyond the join, no TransformSpec round trip through pandas and Arrow.
    """

    def __init__(self, reader, batch_size: int, shuffling_queue_capacity: int = 0, seed: int = 0) -> None:
        self.reader = reader
        self.batch_size = int(batch_size)
        self.capacity = max(int(shuffling_queue_capacity), self.batch_size)
        self.rng = np.random.default_rng(seed)

    def _emit(self, pool: dict, take: np.ndarray) -> dict:
        import torch

        out = {}
        for k, v in pool.items():
            part = v[take]
            if k == "image":
                buf = bytearray().join(part.tolist())
                out[k] = torch.frombuffer(buf, dtype=torch.int16).reshape(len(take), -1)
            else:
                out[k] = torch.from_numpy(np.ascontiguousarray(part))
        return out

    def __iter__(self):
        pool: dict[str, np.ndarray] | None = None
        for group in self.reader:
            cols = group._asdict()
            if pool is None:
                pool = {k: np.asarray(v) for k, v in cols.items()}
            else:
                pool = {k: np.concatenate([pool[k], np.asarray(cols[k])]) for k in pool}
            while len(pool["y"]) >= self.capacity:
                take = self.rng.choice(len(pool["y"]), self.batch_size, replace=False)
                batch = self._emit(pool, take)
                keep = np.ones(len(pool["y"]), bool)
                keep[take] = False
                pool = {k: v[keep] for k, v in pool.items()}
                yield batch
        if pool is not None and len(pool["y"]):
            order = self.rng.permutation(len(pool["y"]))
            for i in range(0, len(order), self.batch_size):
                yield self._emit(pool, order[i:i + self.batch_size])

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.reader.stop()
        self.reader.join()


def _loader_fn(seed: int):
    import functools

    return functools.partial(_make_patch_loader, seed=seed)


def _make_patch_loader(reader, batch_size, shuffling_queue_capacity, seed):
    return PatchLoader(reader, batch_size, shuffling_queue_capacity, seed)


def make_converter(spark: SparkSession, cfg: Config, df: DataFrame, *, partitions: int):
    """petastorm converter over the training columns of ``df`` (materialised once per plan: a
    second run on the same snapshot reuses the Parquet cache)."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter
    from pyspark.sql import functions as F  # noqa: N812

    cache = cfg.train.petastorm.cache_dir or f"{cfg.lake_root.rstrip('/')}/_petastorm"
    if "://" not in cache:
        cache = f"file://{cache}"
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache)
    cols = ["sample_key", "image", "y"] + (["features"] if "features" in df.columns else [])
    # round-robin, not by a hash: every file (row group) gets rows whenever rows >= partitions, so each
    # of N shards has data and the shards' sizes differ by at most one row group's share
    df = df.select(*cols).withColumn("y", F.col("y").cast("int")).repartition(partitions)
    return make_spark_converter(df, parquet_row_group_size_bytes=cfg.train.petastorm.row_group_mb * 2**20)


def _oversample_frame(df: DataFrame, counts: dict) -> DataFrame:
    from pyspark.sql import functions as F  # noqa: N812

    minority, copies = oversample_factor(counts)
    n = F.when(F.col("y") == minority, F.lit(copies)).otherwise(F.lit(1))
    return (df.withColumn("copy", F.explode(F.sequence(F.lit(0), n - 1)))
            .withColumn("sample_key", F.xxhash64("patch_id", "copy")).drop("copy"))


# --- the data of one training run ------------------------------------------------------------
@dataclass
class TrainData:
    """Everything a worker needs to build its batches; picklable (sent to Horovod workers)."""

    loader: str
    shape_zyx: tuple[int, int, int]
    train_rows: int                               # after oversampling
    batch_size: int                               # global
    memory_train: MemoryArrays | None = None
    memory_val: MemoryArrays | None = None
    petastorm_train: object | None = None         # SparkDatasetConverter
    petastorm_val: object | None = None
    petastorm_workers: int = 2
    petastorm_pool: str = "thread"
    _open: list = field(default_factory=list, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return self.train_rows // self.batch_size

    def batches(self, rank: int, size: int, cfg) -> Callable[[int], Iterator[Batch]]:
        """``batches(epoch)``: this worker's part of every global batch of the epoch."""
        from ctlake.train.transforms import Normaliser

        if self.batch_size % size:
            raise DataError(f"train.batch_size {self.batch_size} is not a multiple of np={size}", code="NO_ROWS")
        if self.steps_per_epoch < 1:
            raise DataError(f"{self.train_rows} training rows < one global batch of {self.batch_size}",
                            code="NO_ROWS", hint="lower train.batch_size")
        norm = Normaliser(cfg.normalisation, cfg.window_hu, cfg.zscore_hu)
        if self.loader == "memory":
            return lambda epoch: self._memory_batches(epoch, rank, size, cfg, norm)
        return lambda epoch: self._petastorm_batches(epoch, rank, size, cfg, norm)

    def _finish(self, images, y, keys, features, epoch: int, cfg, norm) -> Batch:
        from ctlake.train.loop import Batch
        from ctlake.train.transforms import augment_batch

        x = norm(images).reshape(-1, 1, *self.shape_zyx)
        a = cfg.augment
        if a.enabled:
            x = augment_batch(x, keys.tolist(), epoch=epoch, seed=cfg.seed, flip_axes=a.flip_axes, rot90=a.rot90,
                              scale=a.scale, offset_vox=a.offset_vox, noise_sd=a.noise_sd)
        return Batch(x=x, y=y, features=features, keys=keys)

    def _memory_batches(self, epoch: int, rank: int, size: int, cfg, norm) -> Iterator[Batch]:
        import torch

        arr = self.memory_train
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(arr))
        b = self.batch_size
        for step in range(self.steps_per_epoch):
            idx = np.sort(order[step * b:(step + 1) * b][rank::size])
            f = None if arr.features is None else torch.from_numpy(arr.features[idx])
            yield self._finish(arr.images[idx], torch.from_numpy(arr.y[idx]), torch.from_numpy(arr.keys[idx]),
                               f, epoch, cfg, norm)

    def _petastorm_batches(self, epoch: int, rank: int, size: int, cfg, norm) -> Iterator[Batch]:
        it = self._stream(rank, size, cfg)
        for _ in range(self.steps_per_epoch):
            batch = next(it)
            f = batch["features"].float() if "features" in batch else None
            yield self._finish(batch["image"], batch["y"].long(), batch["sample_key"].long(), f, epoch, cfg, norm)

    def _stream(self, rank: int, size: int, cfg):
        if self._open:
            return self._open[0][1]
        local = self.batch_size // size
        ctx = self.petastorm_train.make_torch_dataloader(
            batch_size=local, num_epochs=None, workers_count=self.petastorm_workers,
            reader_pool_type=self.petastorm_pool, cur_shard=rank, shard_count=size,
            shuffle_row_groups=True, shuffle_rows=True, seed=cfg.seed + 1 + rank, convert_early_to_numpy=True,
            shuffling_queue_capacity=max(4 * local, 64), data_loader_fn=_loader_fn(cfg.seed + 1 + rank))
        loader = ctx.__enter__()
        stream = iter(loader)
        self._open.append((ctx, stream))
        return stream

    def validation(self, rank: int, size: int, cfg) -> Batch | None:
        """This worker's share of the validation split (rows rank, rank + N, ... in memory; its
        petastorm shard otherwise), normalised, not augmented; None without validation rows."""
        import torch

        from ctlake.train.loop import Batch
        from ctlake.train.transforms import Normaliser

        norm = Normaliser(cfg.normalisation, cfg.window_hu, cfg.zscore_hu)
        if self.loader == "memory" or self.memory_val is not None:
            arr = self.memory_val
            if arr is None or not len(arr):
                return None
            idx = np.arange(rank, len(arr), size)
            f = None if arr.features is None else torch.from_numpy(arr.features[idx])
            return Batch(norm(arr.images[idx]).reshape(-1, 1, *self.shape_zyx), torch.from_numpy(arr.y[idx]), f,
                         torch.from_numpy(arr.keys[idx]))
        if self.petastorm_val is None:
            return None
        parts: dict[str, list] = {}
        with self.petastorm_val.make_torch_dataloader(
                batch_size=256, num_epochs=1, workers_count=self.petastorm_workers,
                reader_pool_type=self.petastorm_pool, cur_shard=rank, shard_count=size, convert_early_to_numpy=True,
                shuffle_row_groups=False, data_loader_fn=_loader_fn(0)) as loader:
            for batch in loader:
                for k, v in batch.items():
                    parts.setdefault(k, []).append(v)
        if not parts:
            return Batch(torch.zeros((0, 1, *self.shape_zyx)), torch.zeros(0, dtype=torch.long))
        cat = {k: torch.cat(v) for k, v in parts.items()}
        f = cat["features"].float() if "features" in cat else None
        return Batch(norm(cat["image"]).reshape(-1, 1, *self.shape_zyx), cat["y"].long(), f,
                     cat["sample_key"].long())

    def close(self) -> None:
        while self._open:
            ctx, _ = self._open.pop()
            ctx.__exit__(None, None, None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = []
        return state


def build_train_data(spark: SparkSession, cfg: Config, df: DataFrame, snap: Snapshot, *,
                     loader: str | None = None, np_workers: int = 1) -> TrainData:
    """The :class:`TrainData` of a :func:`select_rows` frame (oversampled when configured)."""
    tc = cfg.train
    loader = loader or tc.loader
    counts = snap.counts
    train_rows = counts["train"]["rows"]
    has_val = counts.get("validation", {}).get("rows", 0) > 0
    if tc.balance == "oversample":
        minority, copies = oversample_factor(counts)
        n_min = counts["train"]["positives"] if minority == 1 else train_rows - counts["train"]["positives"]
        train_rows += n_min * (copies - 1)
    data = TrainData(loader=loader, shape_zyx=snap.shape_zyx, train_rows=train_rows, batch_size=tc.batch_size,
                     petastorm_workers=tc.petastorm.workers, petastorm_pool=tc.petastorm.pool)
    if loader == "memory":
        arr = collect_arrays(df, snap.shape_zyx, "train")
        data.memory_train = _oversample_arrays(arr, counts) if tc.balance == "oversample" else arr
        data.memory_val = collect_arrays(df, snap.shape_zyx, "validation") if has_val else None
        return data
    from pyspark.sql import functions as F  # noqa: N812

    train = df.filter(F.col("split") == "train")
    if tc.balance == "oversample":
        train = _oversample_frame(train, counts)
    row_bytes = 2 * math.prod(snap.shape_zyx) + 64
    parts = max(4 * np_workers, math.ceil(train_rows * row_bytes / (tc.petastorm.row_group_mb * 2**20)))
    data.petastorm_train = make_converter(spark, cfg, train, partitions=parts)
    val_rows = counts.get("validation", {}).get("rows", 0)
    if has_val and val_rows >= np_workers:
        data.petastorm_val = make_converter(spark, cfg, df.filter(F.col("split") == "validation"),
                                            partitions=max(np_workers, 1))
    elif has_val:       # fewer rows than workers: petastorm cannot give every worker a shard; RAM it is
        data.memory_val = collect_arrays(df, snap.shape_zyx, "validation")
    return data


# --- synthetic tables (tests, benchmarks) ------------------------------------------------------
def write_synthetic(spark: SparkSession, cfg: Config, cohort, *, features: bool = True,
                    mode: str = "merge") -> dict[str, int]:
    """Write a :class:`ctlake.train.synthetic.SyntheticCohort` to ``train.patches_table`` (and its
    radiomics features to ``train.features_table``) with the declared schemas; returns the versions."""
    import datetime as dt

    from ctlake.lake.schemas import rows_frame
    from ctlake.lake.schemas import table as table_decl

    decl = table_decl("gold.nodule_patches")
    pdf = rows_frame(cohort.patch_rows, [f.name for f in decl.schema.fields])   # object columns: None stays null
    versions = {cfg.train.patches_table: delta.write(
        spark, cfg, spark.createDataFrame(pdf, decl.schema), cfg.train.patches_table, mode=mode).version}
    if features and cohort.feature_rows:
        fdecl = table_decl("gold.radiomics_features")
        now = dt.datetime(2024, 1, 1)
        series = {r["nodule_id"]: (r["series_instance_uid"], r["patient_pseudo_id"])
                  for r in cohort.patch_rows if r["nodule_id"]}
        frows = []
        for f in cohort.feature_rows:
            s, p = series[f["roi_id"]]
            row = {"roi_id": f["roi_id"], "params_hash": f["params_hash"], "series_instance_uid": s,
                   "patient_pseudo_id": p, "status": "ok", "features": f["features"],
                   "feature_count": len(f["features"]), "params_json": "{}", "engine": "synthetic",
                   "run_id": "synthetic", "extracted_at": now}
            frows.append(row)
        fpdf = rows_frame(frows, [c.name for c in fdecl.schema.fields])
        versions[cfg.train.features_table] = delta.write(
            spark, cfg, spark.createDataFrame(fpdf, fdecl.schema), cfg.train.features_table, mode=mode).version
    return versions
