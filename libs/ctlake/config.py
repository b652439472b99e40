"""Configuration: ``conf/base.yaml``, then one profile on top, then environment overrides.

The profile (``--profile``, ``CTLAKE_PROFILE``, default ``local``) is laid over the base key by
key; then every ``CTLAKE__SECTION__KEY=value`` environment variable wins (the value is read as a
YAML scalar, so ``CTLAKE__SPARK__SHUFFLE_PARTITIONS=8`` is an int). The merged tree is turned into
frozen dataclasses and checked: an unknown key, a wrong type or a bad value is a
:class:`ConfigError` that names the key and the file it came from.

Relative paths (``lake.root``, ``services.state_dir``) are resolved against the project root, the
folder that holds ``conf/``, so a job behaves the same from any working directory.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctlake.errors import ConfigError

ENV_PREFIX = "CTLAKE__"


@dataclass(frozen=True)
class LakeConfig:
    root: str = "./lake"

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError("lake.root: must not be empty")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "ctlake"
    driver_memory: str = "2g"
    executor_memory: str = "1g"
    shuffle_partitions: int = 4
    delta_snapshot_partitions: int = 2
    ui_enabled: bool = True
    local_ip: str | None = "127.0.0.1"
    conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("shuffle_partitions", "delta_snapshot_partitions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"spark.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "ctlake.dicom"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        allowed = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
        if self.security_protocol not in allowed:
            raise ConfigError(
                f"kafka.security_protocol: {self.security_protocol!r} is not one of {sorted(allowed)}"
            )


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = "http://127.0.0.1:5000"
    experiment: str = "ctlake"


@dataclass(frozen=True)
class ElasticsearchConfig:
    url: str = "http://127.0.0.1:9200"
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    index_prefix: str = "ctlake"


@dataclass(frozen=True)
class IngestConfig:
    claim_check_bytes: int = 8 * 1024 * 1024
    landing: str | None = None
    checkpoint: str | None = None
    max_offsets_per_trigger: int = 2000
    max_file_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if not 1024 <= self.claim_check_bytes <= 15 * 1024 * 1024:
            raise ConfigError(
                f"ingest.claim_check_bytes: {self.claim_check_bytes} must be in 1 KiB..15 MiB "
                "(Kafka messages are capped at 16 MiB; bigger objects go by claim-check)")
        if self.max_offsets_per_trigger < 1:
            raise ConfigError("ingest.max_offsets_per_trigger: must be >= 1")


@dataclass(frozen=True)
class DeidConfig:
    site_key_env: str = "CTLAKE_DEID_SITE_KEY"
    site_key_file: str | None = None
    generate_local_key: bool = False
    allow_secondary: bool = False


def _numbers(key: str, value: Any, n: int, *, integer: bool = False, positive: bool = False) -> tuple:
    """``value`` (a YAML list; one number is repeated) as a tuple of ``n`` numbers, or a ConfigError naming ``key``."""
    values = [value] * n if isinstance(value, int | float) and not isinstance(value, bool) else value
    kind = int if integer else (int, float)
    if not isinstance(values, list | tuple) or len(values) != n or any(
            isinstance(v, bool) or not isinstance(v, kind) for v in values):
        raise ConfigError(f"{key}: expected {n} {'integers' if integer else 'numbers'}, got {value!r}")
    out = tuple(int(v) if integer else float(v) for v in values)
    if positive and min(out) <= 0:
        raise ConfigError(f"{key}: every value must be > 0, got {value!r}")
    return out


@dataclass(frozen=True)
class SeriesQcConfig:
    """``imaging.series``: what to do about each QC flag and the tolerances that raise the flags
    (:class:`ctlake.imaging.series.SeriesPolicy` / ``SeriesTolerances``; their docs explain each)."""

    policy: dict[str, str] = field(default_factory=dict)   # flag in lower case -> action; unset: the safe default
    position_atol_mm: float = 0.01
    spacing_rtol: float = 0.1
    orientation_atol: float = 1e-4
    pixel_spacing_atol_mm: float = 1e-3
    tilt_atol_deg: float = 0.01
    axial_max_angle_deg: float = 30.0
    min_slices: int = 3

    def __post_init__(self) -> None:
        self.series_policy()                 # both raise ConfigError naming imaging.series.<key>
        self.series_tolerances()

    def series_policy(self):
        """The :class:`~ctlake.imaging.series.SeriesPolicy` (imports the imaging code lazily)."""
        from ctlake.imaging.series import SeriesPolicy

        return SeriesPolicy.from_mapping(self.policy)

    def tolerances(self) -> dict[str, float]:
        """Keyword arguments for ``assemble_series`` / ``build_volume(tolerances=...)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "policy"}

    def series_tolerances(self):
        from ctlake.imaging.series import SeriesTolerances

        return SeriesTolerances(**self.tolerances())


@dataclass(frozen=True)
class VolumeDefaultsConfig:
    """``imaging.volume``: how silver.ct_volumes are built (``ctlake process volumes`` flags win)."""

    spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    window_hu: tuple[float, float] | None = (-1000.0, 400.0)
    order: int = 1
    slab_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_zyx_mm",
                           _numbers("imaging.volume.spacing_zyx_mm", self.spacing_zyx_mm, 3, positive=True))
        if self.window_hu is not None:
            w = _numbers("imaging.volume.window_hu", self.window_hu, 2)
            if not w[0] < w[1]:
                raise ConfigError(f"imaging.volume.window_hu: low {w[0]} must be < high {w[1]}")
            object.__setattr__(self, "window_hu", w)
        if self.order not in (0, 1):
            raise ConfigError(f"imaging.volume.order: {self.order!r} must be 0 (nearest) or 1 (linear)")
        if not 64 * 1024 <= self.slab_bytes <= 256 * 1024 * 1024:
            raise ConfigError(f"imaging.volume.slab_bytes: {self.slab_bytes} must be in 64 KiB..256 MiB")


@dataclass(frozen=True)
class LungConfig:
    """``imaging.lung``: :func:`ctlake.imaging.lung.lung_mask` settings (HU, voxels, ml, mm²)."""

    low_hu: float = -950.0
    high_hu: float = -300.0
    closing_radius_vox: int = 2
    body_opening_radius_vox: int = 2
    max_components: int = 2
    min_component_fraction: float = 0.1
    min_volume_ml: float = 10.0
    max_hole_area_mm2: float = 2000.0

    def __post_init__(self) -> None:
        if not self.low_hu < self.high_hu:
            raise ConfigError(f"imaging.lung: low_hu {self.low_hu} must be < high_hu {self.high_hu}")
        for name in ("closing_radius_vox", "body_opening_radius_vox"):
            if getattr(self, name) < 0:
                raise ConfigError(f"imaging.lung.{name}: must be >= 0")
        if self.max_components < 1:
            raise ConfigError("imaging.lung.max_components: must be >= 1")

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NoduleConfig:
    """``imaging.nodules``: :func:`ctlake.imaging.nodules.nodule_mask` and VOC reading settings."""

    enlarge: float = 0.15
    method: str = "otsu"
    pleura: str = "rolling_ball"
    pleura_ball_factor: float = 2.0
    pleura_ball_max_mm: float = 30.0
    pleura_margin_mm: float = 2.0
    min_contrast_hu: float = 100.0
    voc_index_base: int = 0
    voc_max_gap_slices: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("otsu", "region_growing"):
            raise ConfigError(f"imaging.nodules.method: {self.method!r} is not one of otsu, region_growing")
        if self.pleura not in ("rolling_ball", "dilate", "none"):
            raise ConfigError(f"imaging.nodules.pleura: {self.pleura!r} is not one of rolling_ball, dilate, none")
        if not 0.0 <= self.enlarge <= 2.0:
            raise ConfigError(f"imaging.nodules.enlarge: {self.enlarge} must be in 0..2 (0.15 = 15 %)")
        if self.voc_index_base not in (0, 1):
            raise ConfigError(f"imaging.nodules.voc_index_base: {self.voc_index_base!r} must be 0 or 1")

    def mask_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("voc_")}


@dataclass(frozen=True)
class PatchConfig:
    """``imaging.patches``: gold.nodule_patches sizes, negatives and the patient split."""

    sizes_zyx: tuple[tuple[int, int, int], ...] = ((32, 48, 48), (32, 32, 32), (64, 64, 64))
    negatives_per_series: int = 10
    negative_min_distance_mm: float = 10.0
    seed: int = 0
    split_names: tuple[str, ...] = ("train", "validation", "test")
    split_fractions: tuple[float, ...] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    malignancy_threshold: float = 3.0

    def __post_init__(self) -> None:
        sizes = self.sizes_zyx
        if not isinstance(sizes, list | tuple) or not sizes:
            raise ConfigError(f"imaging.patches.sizes_zyx: expected a list of [z, y, x] sizes, got {sizes!r}")
        object.__setattr__(self, "sizes_zyx", tuple(_numbers(f"imaging.patches.sizes_zyx[{i}]", s, 3, integer=True,
                                                             positive=True) for i, s in enumerate(sizes)))
        if self.negatives_per_series < 0 or self.negative_min_distance_mm < 0:
            raise ConfigError("imaging.patches: negatives_per_series and negative_min_distance_mm must be >= 0")
        names = tuple(str(n) for n in self.split_names) if isinstance(self.split_names, list | tuple) else ()
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"imaging.patches.split_names: expected distinct names, got {self.split_names!r}")
        object.__setattr__(self, "split_names", names)
        fr = _numbers("imaging.patches.split_fractions", self.split_fractions, len(names))
        if min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"imaging.patches.split_fractions: {fr} must be >= 0 and sum to 1 "
                              f"(one per split name {names})")
        object.__setattr__(self, "split_fractions", fr)

    @property
    def size_names(self) -> tuple[str, ...]:
        """``32x48x48`` style names of :attr:`sizes_zyx` (gold.nodule_patches.size_name)."""
        return tuple("x".join(str(v) for v in s) for s in self.sizes_zyx)


@dataclass(frozen=True)
class ImagingConfig:
    """Series QC policies, volumes, lung masks, nodules and patches (issue 4; DESIGN §5)."""

    series: SeriesQcConfig = field(default_factory=SeriesQcConfig)
    volume: VolumeDefaultsConfig = field(default_factory=VolumeDefaultsConfig)
    lung: LungConfig = field(default_factory=LungConfig)
    nodules: NoduleConfig = field(default_factory=NoduleConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)


@dataclass(frozen=True)
class RadiomicsConfig:
    """Radiomics extraction over the lake (issue 5): ``ctlake process radiomics``.

    params_file: a PyRadiomics parameter YAML, read as it is (None: PyRadiomics defaults, every
    class, binWidth 25); a relative path is taken from the project root. strict: refuse a file with
    settings the engine does not implement (False: compute the supported part, the rest is recorded
    in ops.pipeline_runs). pad_voxels: image margin around each mask crop, voxels per side
    (PyRadiomics' padDistance; the features do not depend on it). partitions: Spark tasks for the
    extraction, each a cost-balanced set of whole series (0: twice Spark's default parallelism, which
    ctlake sets to spark.shuffle_partitions; never more than the series to do). retry_failed:
    extract again the ROIs whose earlier row has status failed."""

    params_file: str | None = None
    strict: bool = True
    pad_voxels: int = 5
    partitions: int = 0
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if self.pad_voxels < 0:
            raise ConfigError(f"radiomics.pad_voxels: must be >= 0, got {self.pad_voxels}")
        if self.partitions < 0:
            raise ConfigError(f"radiomics.partitions: must be >= 0 (0 = automatic), got {self.partitions}")


@dataclass(frozen=True)
class TrainAugmentConfig:
    """Augmentation of the training split (never validation/test); see ctlake.train.transforms."""

    enabled: bool = True
    flip_axes: str = "zyx"          # axes that may be mirrored, each with p = 0.5
    rot90: bool = True              # k x 90 degrees in the (y, x) plane, k uniform in 0..3 (square planes)
    scale: float = 0.1              # isotropic zoom factor uniform in [1 - scale, 1 + scale]
    offset_vox: float = 2.0         # shift uniform in +-offset_vox voxels per axis
    noise_sd: float = 0.02          # additive Gaussian noise, normalised intensity units

    def __post_init__(self) -> None:
        if set(self.flip_axes) - set("zyx"):
            raise ConfigError(f"train.augment.flip_axes: {self.flip_axes!r} may only hold z, y, x")
        for name in ("scale", "offset_vox", "noise_sd"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.augment.{name}: must be >= 0, got {getattr(self, name)}")
        if self.scale >= 1:
            raise ConfigError(f"train.augment.scale: {self.scale} must be < 1")


@dataclass(frozen=True)
class TrainPetastormConfig:
    """petastorm: the Delta snapshot materialised as Parquet, read by a reader pool per worker."""

    cache_dir: str | None = None    # default <lake>/_petastorm (must be reachable by every executor)
    workers: int = 2                # reader threads/processes per Horovod worker
    pool: str = "thread"            # thread | process | dummy
    row_group_mb: int = 32          # Parquet row-group size of the materialised snapshot

    def __post_init__(self) -> None:
        if self.pool not in ("thread", "process", "dummy"):
            raise ConfigError(f"train.petastorm.pool: {self.pool!r} is not one of thread, process, dummy")
        if self.workers < 1 or self.row_group_mb < 1:
            raise ConfigError("train.petastorm: workers and row_group_mb must be >= 1")


@dataclass(frozen=True)
class TrainModelConfig:
    """One model kind (candidate | malignancy | hybrid): its patches and architecture."""

    size_name: str = "32x48x48"     # gold.nodule_patches.size_name of the rows it trains on
    conv_channels: int = 8          # channels of block 1, doubled by each of the 4 blocks
    hidden: int = 32                # hybrid: width of the radiomics-feature MLP
    dropout: float = 0.0            # before the head (0: none; keeps Horovod runs bit-comparable)
    init_from: str | None = None    # MLflow model URI (e.g. models:/ctlake-candidate@candidate) to fine-tune
    freeze_blocks: int = 0          # fine-tuning: freeze the input batch-norm and this many leading blocks
    features: tuple[str, ...] = ()  # hybrid: radiomics feature names (empty: every name all rows have)
    params_hash: str | None = None  # hybrid: which radiomics parameter set (null: the only one there)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features or ()))
        parts = self.size_name.split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) >= 16 and int(p) % 16 == 0 for p in parts):
            raise ConfigError(f"train model size_name {self.size_name!r}: expected ZxYxX voxels, each a "
                              "multiple of 16 (four 2x max-pools)")
        if self.conv_channels < 1 or self.hidden < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("train model: conv_channels and hidden must be >= 1, dropout in [0, 1)")
        if not 0 <= self.freeze_blocks <= 4:
            raise ConfigError(f"train model freeze_blocks: {self.freeze_blocks} must be in 0..4")


@dataclass(frozen=True)
class TrainConfig:
    """Training, evaluation and the model registry (issue 6); conf/base.yaml documents each key."""

    model: str = "malignancy"
    patches_table: str = "gold.nodule_patches"
    features_table: str = "gold.radiomics_features"
    data_version: int | None = None
    loader: str = "petastorm"
    normalisation: str = "window"
    window_hu: tuple[float, float] = (-1000.0, 400.0)
    zscore_hu: tuple[float, float] = (-700.0, 300.0)
    launcher: str = "spark"
    np: int = 1
    network_interface: str | None = None
    start_timeout_s: int = 120
    threads_per_worker: int = 0
    seed: int = 0
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    warmup_epochs: int = 0
    early_stopping_patience: int = 5
    early_stopping_metric: str = "val_auc"
    restore_best: bool = True
    balance: str = "weighted_loss"
    sync_batchnorm: bool = True
    device: str = "auto"
    bf16: bool = True
    threshold: float | None = None
    bootstrap_resamples: int = 1000
    ci_level: float = 0.95
    registry_prefix: str = "ctlake-"
    augment: TrainAugmentConfig = field(default_factory=TrainAugmentConfig)
    petastorm: TrainPetastormConfig = field(default_factory=TrainPetastormConfig)
    candidate: TrainModelConfig = field(default_factory=TrainModelConfig)
    malignancy: TrainModelConfig = field(default_factory=lambda: TrainModelConfig(size_name="32x32x32"))
    hybrid: TrainModelConfig = field(default_factory=lambda: TrainModelConfig(size_name="32x32x32"))

    def __post_init__(self) -> None:
        for name in ("window_hu", "zscore_hu"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2:
                raise ConfigError(f"train.{name}: expected two numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        choices = {"model": ("candidate", "malignancy", "hybrid"), "loader": ("petastorm", "memory"),
                   "normalisation": ("window", "zscore"), "launcher": ("spark", "horovodrun"),
                   "optimizer": ("adam", "adamw", "sgd"), "lr_schedule": ("none", "cosine", "step", "plateau"),
                   "early_stopping_metric": ("val_auc", "val_loss"),
                   "balance": ("none", "weighted_loss", "oversample"), "device": ("auto", "cpu", "cuda")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        if self.window_hu[0] >= self.window_hu[1]:
            raise ConfigError(f"train.window_hu: low {self.window_hu[0]} must be < high {self.window_hu[1]}")
        if self.zscore_hu[1] <= 0:
            raise ConfigError(f"train.zscore_hu: the SD {self.zscore_hu[1]} HU must be > 0")
        for name in ("np", "epochs", "batch_size", "eval_batch_size", "lr_step_epochs", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "early_stopping_patience", "threads_per_worker", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.lr_gamma <= 1:
            raise ConfigError("train: lr must be > 0 and lr_gamma in (0, 1]")
        if (self.threshold is not None and not 0 < self.threshold < 1) or not 0 < self.ci_level < 1:
            raise ConfigError("train: threshold (or null) and ci_level must lie in (0, 1)")

    def model_config(self, kind: str) -> TrainModelConfig:
        """The section of model ``kind`` (candidate | malignancy | hybrid)."""
        if kind not in ("candidate", "malignancy", "hybrid"):
            raise ConfigError(f"unknown model kind {kind!r}; one of candidate, malignancy, hybrid")
        return getattr(self, kind)


@dataclass(frozen=True)
class IndexConfig:
    """Search indexing and dashboards (issue 9): bulk sizes, retries, index settings (ctlake.index)."""

    chunk_docs: int = 1000             # documents per bulk request
    chunk_mb: int = 16                 # ... and at most this many MB per request
    parallelism: int = 2               # Spark partitions bulking at once (each a connection)
    max_retries: int = 6               # per bulk request: 429 / connection errors, exponential backoff
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    request_timeout_s: float = 120.0
    shards: int = 1
    replicas: int = 0
    refresh_interval: str = "1s"
    refresh_after: bool = True         # refresh after each run: its rows are searchable when it returns
    total_fields_limit: int = 5000     # radiomics features are one field each
    keep_old_indices: bool = False     # after an alias swap, keep the previous index (else deleted)
    kibana_dir: str = "infra/kibana"   # where `ctlake dashboards export` writes the NDJSON
    dashboard_host: str = "127.0.0.1"  # `ctlake dashboard` (no login: keep it on loopback)
    dashboard_port: int = 8050

    def __post_init__(self) -> None:
        for name in ("chunk_docs", "chunk_mb", "parallelism", "shards", "total_fields_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index.{name}: must be >= 1, got {getattr(self, name)}")
        if self.replicas < 0 or self.max_retries < 0:
            raise ConfigError("index.replicas and index.max_retries: must be >= 0")
        if not 1 <= self.dashboard_port <= 65535:
            raise ConfigError(f"index.dashboard_port: {self.dashboard_port} is outside 1..65535")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(f"index.initial_backoff_s ({self.initial_backoff_s}) must be > 0 and <= "
                              f"index.max_backoff_s ({self.max_backoff_s})")


@dataclass(frozen=True)
class KafkaServiceConfig:
    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512


@dataclass(frozen=True)
class MlflowServiceConfig:
    port: int = 5000


@dataclass(frozen=True)
class ElasticsearchServiceConfig:
    http_port: int = 9200
    transport_port: int = 9300
    heap_mb: int = 512


@dataclass(frozen=True)
class SparkServiceConfig:
    master_port: int = 7077
    master_webui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    worker_webui_port: int = 8081

    def __post_init__(self) -> None:
        if self.workers < 1 or self.worker_cores < 1:
            raise ConfigError("services.spark: workers and worker_cores must be >= 1")


@dataclass(frozen=True)
class HdfsServiceConfig:
    """The optional single-node HDFS (MiniDFSCluster) of `ctlake infra up hdfs`: NameNode RPC and web ports."""

    port: int = 8020
    http_port: int = 9870
    heap_mb: int = 512


@dataclass(frozen=True)
class ServicesConfig:
    state_dir: str = "./.ctlake"
    start_timeout_s: float = 120.0
    kafka: KafkaServiceConfig = field(default_factory=KafkaServiceConfig)
    mlflow: MlflowServiceConfig = field(default_factory=MlflowServiceConfig)
    elasticsearch: ElasticsearchServiceConfig = field(default_factory=ElasticsearchServiceConfig)
    spark: SparkServiceConfig = field(default_factory=SparkServiceConfig)
    hdfs: HdfsServiceConfig = field(default_factory=HdfsServiceConfig)

    def __post_init__(self) -> None:
        ports = {
            "kafka.port": self.kafka.port,
            "kafka.controller_port": self.kafka.controller_port,
            "mlflow.port": self.mlflow.port,
            "elasticsearch.http_port": self.elasticsearch.http_port,
            "elasticsearch.transport_port": self.elasticsearch.transport_port,
            "spark.master_port": self.spark.master_port,
            "spark.master_webui_port": self.spark.master_webui_port,
            "hdfs.port": self.hdfs.port,
            "hdfs.http_port": self.hdfs.http_port,
        }
        for i in range(self.spark.workers):
            ports[f"spark.worker_webui_port+{i}"] = self.spark.worker_webui_port + i
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise ConfigError(f"services.{name}: port {port} is outside 1..65535")
            if port in seen:
                raise ConfigError(f"services.{name}: port {port} is also used by services.{seen[port]}")
            seen[port] = name


@dataclass(frozen=True)
class Config:
    """The whole validated configuration of one profile."""

    profile: str
    project_root: Path
    lake: LakeConfig = field(default_factory=LakeConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    deid: DeidConfig = field(default_factory=DeidConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    radiomics: RadiomicsConfig = field(default_factory=RadiomicsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)

    @property
    def lake_root(self) -> str:
        """The lake root as a URI or absolute path (relative paths resolved at the project root)."""
        return _resolve_path(self.lake.root, self.project_root)

    @property
    def state_dir(self) -> Path:
        """Folder for the local services' pids, logs and data."""
        return Path(_resolve_path(self.services.state_dir, self.project_root))

    @property
    def landing_root(self) -> str:
        """Where claim-checked objects land: ``ingest.landing`` or ``<lake>/_landing``."""
        return _resolve_path(self.ingest.landing, self.project_root) if self.ingest.landing else \
            f"{self.lake_root.rstrip('/')}/_landing"

    def checkpoint_path(self, name: str) -> str:
        """Streaming checkpoint folder for ``name``: under ``ingest.checkpoint`` or ``<lake>/_checkpoints``."""
        base = _resolve_path(self.ingest.checkpoint, self.project_root) if self.ingest.checkpoint else \
            f"{self.lake_root.rstrip('/')}/_checkpoints"
        return f"{base.rstrip('/')}/{name}"

    def table_path(self, table: str) -> str:
        """Location of a table such as ``bronze.dicom_instances``: ``<lake>/bronze/dicom_instances``."""
        layer, _, name = table.partition(".")
        if not name:
            raise ValueError(f"table names are <layer>.<name>, got {table!r}")
        return f"{self.lake_root.rstrip('/')}/{layer}/{name}"


_SECTIONS = {
    name: tp for name, tp in typing.get_type_hints(Config).items() if name not in ("profile", "project_root")
}


def _resolve_path(value: str, root: Path) -> str:
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def find_conf_dir(start: Path | None = None) -> Path:
    """The ``conf/`` folder: ``$CTLAKE_CONF_DIR``, else the nearest ``conf/base.yaml`` upwards
    from ``start`` (default: the working directory), else the one beside this package's source."""
    env = os.environ.get("CTLAKE_CONF_DIR")
    if env:
        path = Path(env).expanduser().resolve()
        if not (path / "base.yaml").is_file():
            raise ConfigError(f"CTLAKE_CONF_DIR={env}: no base.yaml there")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "base.yaml").is_file():
            return folder / "conf"
    source_tree = Path(__file__).resolve().parents[2] / "conf"
    if (source_tree / "base.yaml").is_file():
        return source_tree
    raise ConfigError(
        "no conf/base.yaml found: run from the ctlake project folder or set CTLAKE_CONF_DIR"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, origins: dict, source: str, prefix: str = "") -> dict:
    """Merge ``over`` into a copy of ``base``, recording where each leaf came from."""
    out = dict(base)
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "conf":
            below = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = _merge(below, value, origins, source, dotted + ".")
        else:
            out[key] = value
            origins[dotted] = source
    return out


def _env_overrides(environ: typing.Mapping[str, str]) -> tuple[dict, dict]:
    tree: dict = {}
    origins: dict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
        origins[".".join(parts)] = f"environment variable {name}"
    return tree, origins


def _coerce(value: Any, tp: Any, key: str, origins: dict) -> Any:
    where = origins.get(key, "defaults")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, origins)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} (from {where})")
        return _build(tp, value, key + ".", origins)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} (from {where})")
        return {str(k): str(v) if not isinstance(v, str) else v for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r} (from {where})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r} (from {where})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r} (from {where})")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r} (from {where})")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str, origins: dict) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = origins.get(f"{prefix}{key}") or _first_origin(origins, f"{prefix}{key}.")
            raise ConfigError(
                f"unknown key {prefix}{key} (from {where}); known keys here: {sorted(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}", origins) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (check {_first_origin(origins, prefix) or 'the defaults'})") from None


def _first_origin(origins: dict, prefix: str) -> str:
    found = sorted({v for k, v in origins.items() if k.startswith(prefix)})
    return ", ".join(found)


def load_config(
    profile: str | None = None,
    *,
    conf_dir: Path | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Load and validate ``base.yaml`` + ``<profile>.yaml`` + ``CTLAKE__*`` overrides."""
    environ = os.environ if environ is None else environ
    profile = profile or environ.get("CTLAKE_PROFILE") or "local"
    conf_dir = Path(conf_dir) if conf_dir else find_conf_dir()
    base_path = conf_dir / "base.yaml"
    profile_path = conf_dir / f"{profile}.yaml"
    if not profile_path.is_file():
        known = sorted(p.stem for p in conf_dir.glob("*.yaml") if p.stem != "base")
        raise ConfigError(f"profile {profile!r}: no {profile_path}; profiles here: {known}")
    origins: dict[str, str] = {}
    tree = _merge({}, _read_yaml(base_path), origins, str(base_path))
    tree = _merge(tree, _read_yaml(profile_path), origins, str(profile_path))
    env_tree, env_origins = _env_overrides(environ)
    env_src: dict[str, str] = {}
    tree = _merge(tree, env_tree, env_src, "env")
    origins.update({k: env_origins.get(k, v) for k, v in env_src.items()})
    for key in tree:
        if key not in _SECTIONS:
            where = origins.get(key) or _first_origin(origins, f"{key}.")
            raise ConfigError(f"unknown section {key!r} (from {where}); sections: {sorted(_SECTIONS)}")
    sections = {name: _coerce(tree.get(name, {}), tp, name, origins) for name, tp in _SECTIONS.items()}
    return Config(profile=profile, project_root=conf_dir.parent.resolve(), **sections)
