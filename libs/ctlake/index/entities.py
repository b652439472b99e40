"""What is indexed: one Elasticsearch index per entity, each fed by one lake table (plus lookups).

An :class:`Entity` names its primary Delta table (whose key is the document ``_id``), the tables it
joins for extra columns (:class:`Lookup`: e.g. the first DICOM instance of a series for its kVp and
slice thickness), and columns computed at indexing time. The document schema -- and so the mapping
-- is the primary table's declared schema (``ctlake.lake.schemas``) + the looked-up columns with
their declared types + the computed ones: add a column to a table there and it is in the next
mapping (which then has a new hash, so the next run builds a new index and swaps the alias).

Training runs come from MLflow, not from a Delta table; their document schema is declared here in
the same form (:data:`TRAINING_RUNS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark.sql import types as T

from ctlake.config import Config
from ctlake.index.mapping import build_mapping, mapping_hash

# every document carries the version of the table it was read from and when it was indexed
COMMON_FIELDS = (
    T.StructField("lake_version", T.LongType(), True),    # Delta version of the primary table read
    T.StructField("indexed_at", T.TimestampType(), True),
)

# the evaluation metrics the training job logs, each with its CI (ctlake.train.metrics)
EVAL_METRICS = ("auc", "sensitivity", "specificity", "precision", "npv", "f1", "balanced_accuracy")
METRIC_PREFIXES = ("", "test_", "val_", "baseline_diameter_")   # as ctlake.train logs them
METRIC_SUFFIXES = ("", "_ci_low", "_ci_high")


@dataclass(frozen=True)
class Lookup:
    """Columns of another table joined to each primary row: ``primary.on = table.key_column``.
    ``first_by`` orders the lookup rows of one key when there are several (the first one is used)."""

    table: str
    on: str
    key_column: str
    columns: tuple[tuple[str, str], ...]        # (column in the lookup table, field in the document)
    first_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entity:
    name: str                                   # index alias: <prefix>-<name>
    table: str | None                           # primary Delta table (None: not from the lake)
    time_field: str | None                      # the data view's time field
    description: str
    lookups: tuple[Lookup, ...] = ()
    derived: tuple[T.StructField, ...] = ()     # computed when indexing (see indexer._derive)
    known_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # numeric map column -> keys

    @property
    def tables(self) -> tuple[str, ...]:
        """Every Delta table this entity reads (primary first)."""
        return ((self.table,) if self.table else ()) + tuple(lk.table for lk in self.lookups)


def radiomics_feature_names() -> tuple[str, ...]:
    """The PyRadiomics names ctlake's engine computes on the original image (``original_<class>_<Feature>``)."""
    from ctlake.radiomics.extract import FAMILIES

    return tuple(f"original_{cls}_{name}" for cls, features in FAMILIES.items() for name in features)


def metric_names() -> tuple[str, ...]:
    return tuple(f"{p}{m}{s}" for p in METRIC_PREFIXES for m in EVAL_METRICS for s in METRIC_SUFFIXES)


_FIRST_INSTANCE = ("manufacturer_model_name", "kvp", "slice_thickness_mm", "pixel_spacing_mm", "modality",
                   "sop_class_uid", "rows", "columns", "transfer_syntax_uid", "study_date", "series_date",
                   "ingested_at")

ENTITIES: dict[str, Entity] = {e.name: e for e in (
    Entity("series", "silver.ct_series", "built_at",
           "one document per series: ids, scanner, kernel, kVp, slice thickness, spacing, QC flags",
           lookups=(Lookup("bronze.dicom_instances", on="series_instance_uid", key_column="series_instance_uid",
                           columns=tuple((c, c) for c in _FIRST_INSTANCE),
                           first_by=("instance_number", "sop_instance_uid")),),
           derived=(T.StructField("qc_clean", T.BooleanType(), True),      # built, no QC flag
                    T.StructField("qc_flag_count", T.IntegerType(), True))),
    Entity("nodules", "gold.nodules", "built_at", "one document per annotated nodule (no mask bytes)"),
    Entity("features", "gold.radiomics_features", "extracted_at",
           "one document per ROI and parameter set; features.<PyRadiomics name> are numbers",
           lookups=(Lookup("gold.nodules", on="roi_id", key_column="nodule_id",
                           columns=(("malignancy", "nodule_malignancy"), ("diameter_mm", "nodule_diameter_mm"),
                                    ("source", "nodule_source"))),),
           known_keys={"features": ()}),        # filled from the radiomics engine (entity_known_keys)
    Entity("quarantine", "bronze.quarantine", "ingested_at", "what the lake refused: stage, code, message"),
    Entity("pipeline_runs", "ops.pipeline_runs", "started_at", "one document per job run"),
    Entity("predictions", "gold.predictions", "predicted_at", "one score per patch and model version"),
    Entity("training_runs", None, "start_time", "MLflow runs of the profile's experiment: params, final "
           "metrics with CIs, registered model versions"),
)}

TRAINING_RUNS = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("run_name", T.StringType(), True),
    T.StructField("experiment_id", T.StringType(), True),
    T.StructField("experiment", T.StringType(), True),
    T.StructField("status", T.StringType(), True),            # FINISHED | FAILED | RUNNING | KILLED
    T.StructField("start_time", T.TimestampType(), True),
    T.StructField("end_time", T.TimestampType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("params", T.MapType(T.StringType(), T.StringType()), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),   # final (latest) values
    T.StructField("tags", T.MapType(T.StringType(), T.StringType()), True),      # not mlflow.* internals
    T.StructField("model_name", T.ArrayType(T.StringType()), True),              # registered versions of the run
    T.StructField("model_version", T.ArrayType(T.LongType()), True),
    T.StructField("model", T.ArrayType(T.StringType()), True),                   # "name/version"
    T.StructField("model_aliases", T.ArrayType(T.StringType()), True),
    T.StructField("artifact_uri", T.StringType(), True),
])


def entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown index entity {name!r}; entities: {sorted(ENTITIES)}") from None


def entity_known_keys(ent: Entity) -> dict[str, tuple[str, ...]]:
    keys = dict(ent.known_keys)
    if ent.name == "features":
        keys["features"] = radiomics_feature_names()
    if ent.name == "training_runs":
        keys["metrics"] = metric_names()
    return keys


def declared(ent: Entity, decls: Mapping) -> tuple[bool, str]:
    """Whether every table of ``ent`` is declared in ``decls`` (``ctlake.lake.schemas.TABLES``), and why not."""
    missing = [t for t in ent.tables if t not in decls]
    if missing:
        return False, (f"index entity {ent.name!r} skipped: table(s) {', '.join(missing)} not declared in "
                       "ctlake.lake.schemas yet")
    return True, ""


def doc_fields(ent: Entity, decls: Mapping) -> list[T.StructField]:
    """The document schema of ``ent``: primary columns, looked-up columns, derived, common fields."""
    if ent.table is None:
        base = list(TRAINING_RUNS.fields)
    else:
        base = list(decls[ent.table].schema.fields)
        for lk in ent.lookups:
            by_name = {f.name: f for f in decls[lk.table].schema.fields}
            have = {f.name for f in base}
            for col, as_name in lk.columns:
                if col in by_name and as_name not in have:
                    base.append(T.StructField(as_name, by_name[col].dataType, True))
        base += list(ent.derived)
    return base + list(COMMON_FIELDS)


def index_settings(cfg: Config) -> dict:
    ic = cfg.index
    return {"number_of_shards": ic.shards, "number_of_replicas": ic.replicas,
            "refresh_interval": ic.refresh_interval, "mapping.total_fields.limit": ic.total_fields_limit}


def entity_mapping(ent: Entity, decls: Mapping, cfg: Config) -> tuple[dict, str]:
    """(mapping, hash) of ``ent``; the hash covers the mapping and the shard count (what needs a new index)."""
    fields = doc_fields(ent, decls)
    mapping = build_mapping(fields, known_keys=entity_known_keys(ent))
    h = mapping_hash(mapping, {"number_of_shards": cfg.index.shards})   # the rest can change in place
    mapping["_meta"] = {"ctlake_entity": ent.name, "mapping_hash": h,
                        "source_tables": list(ent.tables) or ["mlflow"],
                        "key": list(decls[ent.table].key) if ent.table else ["run_id"]}
    return mapping, h
