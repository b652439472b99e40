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


@dataclass(frozen=True)
class ImagingConfig:
    """Series QC policies, volumes, lung masks, nodules and patches (issue 4; DESIGN §5)."""


@dataclass(frozen=True)
class RadiomicsConfig:
    """Radiomics extraction over the lake (issue 5)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training, evaluation and the model registry (issue 6)."""


@dataclass(frozen=True)
class IndexConfig:
    """Search indexing and dashboards (issue 9)."""


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
class ServicesConfig:
    state_dir: str = "./.ctlake"
    start_timeout_s: float = 120.0
    kafka: KafkaServiceConfig = field(default_factory=KafkaServiceConfig)
    mlflow: MlflowServiceConfig = field(default_factory=MlflowServiceConfig)
    elasticsearch: ElasticsearchServiceConfig = field(default_factory=ElasticsearchServiceConfig)
    spark: SparkServiceConfig = field(default_factory=SparkServiceConfig)

    def __post_init__(self) -> None:
        ports = {
            "kafka.port": self.kafka.port,
            "kafka.controller_port": self.kafka.controller_port,
            "mlflow.port": self.mlflow.port,
            "elasticsearch.http_port": self.elasticsearch.http_port,
            "elasticsearch.transport_port": self.elasticsearch.transport_port,
            "spark.master_port": self.spark.master_port,
            "spark.master_webui_port": self.spark.master_webui_port,
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
