"""Every ctlake table, declared once. Writers look tables up here by name.

Later issues add the bronze/silver/gold tables; the schema of each lives only in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T


@dataclass(frozen=True)
class Table:
    name: str
    schema: T.StructType
    key: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    properties: tuple[tuple[str, str], ...] = ()   # Delta table properties set at creation


# --- silver --------------------------------------------------------------------------------
CT_SERIES = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("study_instance_uid", T.StringType(), True),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("status", T.StringType(), False),                       # built | refused
    T.StructField("refusal_code", T.StringType(), True),
    T.StructField("refusal_detail", T.StringType(), True),
    T.StructField("qc_flags", T.ArrayType(T.StringType()), True),
    T.StructField("qc_json", T.StringType(), True),                       # measured facts (steps, gaps, tilt …)
    T.StructField("decisions", T.MapType(T.StringType(), T.StringType()), True),  # flag -> policy applied
    T.StructField("slices", T.IntegerType(), True),
    T.StructField("manufacturer", T.StringType(), True),
    T.StructField("convolution_kernel", T.StringType(), True),
    T.StructField("source_spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("source_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("target_spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("shape_zyx", T.ArrayType(T.IntegerType()), True),       # of the resampled volume
    T.StructField("origin_xyz_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("direction", T.ArrayType(T.DoubleType()), True),        # 9, row-major, SimpleITK convention
    T.StructField("window_hu", T.ArrayType(T.DoubleType()), True),
    T.StructField("interpolation_order", T.IntegerType(), True),
    T.StructField("slabs", T.IntegerType(), True),
    T.StructField("bronze_version", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("built_at", T.TimestampType(), False),
])

CT_VOLUMES = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("slab_index", T.IntegerType(), False),
    T.StructField("z0", T.IntegerType(), False),                          # [z0, z1) of the volume
    T.StructField("z1", T.IntegerType(), False),
    T.StructField("dtype", T.StringType(), False),
    T.StructField("slab_shape_zyx", T.ArrayType(T.IntegerType()), False),
    T.StructField("codec", T.StringType(), False),                        # ctlake.lake.codec (CTT1)
    T.StructField("data", T.BinaryType(), False),
    T.StructField("volume_shape_zyx", T.ArrayType(T.IntegerType()), False),
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), False),
    T.StructField("origin_xyz_mm", T.ArrayType(T.DoubleType()), False),
    T.StructField("direction", T.ArrayType(T.DoubleType()), False),
    T.StructField("run_id", T.StringType(), False),
])

# Lung masks on the silver.ct_volumes grid, in the same z slabs as the volume (slab i of the mask
# covers the z range of slab i of the volume): CTT1 (ctlake.lake.codec) of uint8 0/1. Per-series
# values (lung_volume_ml, components, status ...) repeat on every slab row. A series whose mask
# failed has one row: slab_index -1, status failed, error_code (e.g. NO_LUNG_FOUND), no data.
LUNG_MASKS = T.StructType([
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("slab_index", T.IntegerType(), False),                  # -1: the row of a failed series
    T.StructField("z0", T.IntegerType(), True),                           # [z0, z1) of the volume
    T.StructField("z1", T.IntegerType(), True),
    T.StructField("dtype", T.StringType(), True),                         # uint8
    T.StructField("slab_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("codec", T.StringType(), True),                         # CTT1
    T.StructField("data", T.BinaryType(), True),
    T.StructField("volume_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("origin_xyz_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("direction", T.ArrayType(T.DoubleType()), True),
    T.StructField("lung_volume_ml", T.DoubleType(), True),                # whole mask, per series
    T.StructField("components", T.IntegerType(), True),                   # 6-connected components of the mask
    T.StructField("status", T.StringType(), False),                       # ok | failed
    T.StructField("error_code", T.StringType(), True),
    T.StructField("error_detail", T.StringType(), True),
    T.StructField("params_json", T.StringType(), True),                   # imaging.lung settings used
    T.StructField("volumes_version", T.LongType(), True),                 # silver.ct_volumes version read
    T.StructField("run_id", T.StringType(), False),
    T.StructField("built_at", T.TimestampType(), False),
])

# --- gold ----------------------------------------------------------------------------------
# One row per annotated nodule (or per annotation that failed to give a mask, with the reason).
# The mask is a crop of the silver.ct_volumes grid: voxel [z, y, x] of the crop is voxel
# mask_origin_zyx + [z, y, x] of the series' resampled volume.
NODULES = T.StructType([
    T.StructField("nodule_id", T.StringType(), False),        # sha256(series uid | source | source_ref)[:32]
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("source", T.StringType(), False),           # luna16 | voc | seg | rtstruct
    T.StructField("source_ref", T.StringType(), True),        # csv row, xml file, or SEG/RTSTRUCT SOP UID + ROI
    T.StructField("status", T.StringType(), False),           # ok | failed
    T.StructField("error_code", T.StringType(), True),
    T.StructField("error_detail", T.StringType(), True),
    T.StructField("centre_xyz_mm", T.ArrayType(T.DoubleType()), True),      # world (LPS), annotated
    T.StructField("centre_zyx_vox", T.ArrayType(T.DoubleType()), True),     # on the silver grid (continuous index)
    T.StructField("annotated_diameter_mm", T.DoubleType(), True),
    T.StructField("diameter_mm", T.DoubleType(), True),                     # measured from the mask
    T.StructField("volume_mm3", T.DoubleType(), True),                      # measured from the mask
    T.StructField("mask_voxels", T.LongType(), True),
    T.StructField("mask_method", T.StringType(), True),                     # otsu | region_growing | contour | seg
    T.StructField("mask_origin_zyx", T.ArrayType(T.IntegerType()), True),   # crop start on the silver grid (voxels)
    T.StructField("mask_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("mask_codec", T.StringType(), True),                      # CTT1 (ctlake.lake.codec), uint8 0/1
    T.StructField("mask_data", T.BinaryType(), True),
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),     # of the silver grid
    T.StructField("malignancy", T.DoubleType(), True),                      # e.g. mean LIDC rating 1..5, if given
    T.StructField("attributes", T.MapType(T.StringType(), T.StringType()), True),  # other annotation columns
    # added by the nodules job (ctlake.process.nodules): the measured centroid, the annotated centre on
    # the grid, the box of a box annotation, the largest extent and the mask's HU cut
    T.StructField("measured_centre_xyz_mm", T.ArrayType(T.DoubleType()), True),   # centroid of the mask, world
    T.StructField("annotated_centre_zyx_vox", T.ArrayType(T.DoubleType()), True),  # annotated centre on the grid
    T.StructField("annotated_box_lo_xyz_mm", T.ArrayType(T.DoubleType()), True),   # box annotations (VOC)
    T.StructField("annotated_box_hi_xyz_mm", T.ArrayType(T.DoubleType()), True),
    T.StructField("max_diameter_mm", T.DoubleType(), True),                 # 3D Feret diameter of the mask
    T.StructField("mask_threshold_hu", T.DoubleType(), True),
    T.StructField("touches_roi_border", T.BooleanType(), True),             # mask reaches the enlarged ROI's edge
    T.StructField("volumes_version", T.LongType(), True),                   # silver.ct_volumes version read
    T.StructField("run_id", T.StringType(), False),
    T.StructField("built_at", T.TimestampType(), False),
])

# Fixed-size training cubes around nodules and sampled negatives. ``image`` is raw little-endian
# int16 HU in C order (z, y, x) and ``mask`` raw uint8, so a reader needs only np.frombuffer:
# no codec on the training path.
NODULE_PATCHES = T.StructType([
    T.StructField("patch_id", T.StringType(), False),          # sha256(series uid | kind | centre | size)[:32]
    T.StructField("nodule_id", T.StringType(), True),          # null for negatives
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("kind", T.StringType(), False),              # nodule | negative
    T.StructField("label", T.IntegerType(), False),            # 1 nodule, 0 negative
    T.StructField("malignancy", T.DoubleType(), True),
    T.StructField("malignant", T.IntegerType(), True),         # 1/0 from malignancy (>= 3 by default), null if unknown
    T.StructField("diameter_mm", T.DoubleType(), True),
    T.StructField("size_name", T.StringType(), False),         # e.g. 32x48x48, 32x32x32, 64x64x64
    T.StructField("shape_zyx", T.ArrayType(T.IntegerType()), False),
    T.StructField("centre_zyx_vox", T.ArrayType(T.IntegerType()), False),
    T.StructField("image", T.BinaryType(), False),             # int16 HU, C order
    T.StructField("mask", T.BinaryType(), True),               # uint8 0/1, C order
    T.StructField("padded_voxels", T.IntegerType(), True),     # voxels outside the volume (padding)
    T.StructField("split", T.StringType(), False),             # train | validation | test (by patient)
    T.StructField("run_id", T.StringType(), False),
])

# Radiomics per ROI (gold.nodules row with status ok) and parameter set (ctlake.process.radiomics).
# ``params_hash`` = sha256 of ``params_json``, the canonical JSON of the settings that change the
# values (PyRadiomics YAML read by ctlake.radiomics; ignored settings left out), so the same settings
# written two ways share one hash. ``features`` maps PyRadiomics names (original_glcm_JointEntropy)
# to values; ``ibsi_codes`` maps those names to the IBSI code whose definition the value equals.
# The long form (one row per feature) is ctlake.process.radiomics.features_long.
RADIOMICS_FEATURES = T.StructType([
    T.StructField("roi_id", T.StringType(), False),                 # = gold.nodules.nodule_id
    T.StructField("params_hash", T.StringType(), False),
    T.StructField("series_instance_uid", T.StringType(), False),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("status", T.StringType(), False),                 # ok | failed
    T.StructField("error_code", T.StringType(), True),              # e.g. EMPTY_ROI, MASK_CORRUPT, VOLUME_MISSING
    T.StructField("error_detail", T.StringType(), True),
    T.StructField("features", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("ibsi_codes", T.MapType(T.StringType(), T.StringType()), True),  # feature -> IBSI code
    T.StructField("feature_count", T.IntegerType(), True),
    T.StructField("params_json", T.StringType(), False),
    T.StructField("params_source", T.StringType(), True),           # the YAML path, or "defaults"
    T.StructField("roi_voxels", T.LongType(), True),                # voxels with the label in the mask
    T.StructField("spacing_zyx_mm", T.ArrayType(T.DoubleType()), True),   # of the silver grid
    T.StructField("crop_origin_zyx", T.ArrayType(T.IntegerType()), True),  # image crop given to the engine
    T.StructField("crop_shape_zyx", T.ArrayType(T.IntegerType()), True),
    T.StructField("extract_ms", T.DoubleType(), True),              # engine time for this ROI
    T.StructField("engine", T.StringType(), False),                 # e.g. ctlake.radiomics 0.1.0
    T.StructField("nodule_run_id", T.StringType(), True),           # run that wrote the gold.nodules row
    T.StructField("nodules_version", T.LongType(), True),           # gold.nodules version read
    T.StructField("volumes_version", T.LongType(), True),           # silver.ct_volumes version read
    T.StructField("run_id", T.StringType(), False),
    T.StructField("extracted_at", T.TimestampType(), False),
])

# Batch inference (ctlake predict): one score per patch and registered model version.
PREDICTIONS = T.StructType([
    T.StructField("patch_id", T.StringType(), False),
    T.StructField("nodule_id", T.StringType(), True),
    T.StructField("series_instance_uid", T.StringType(), True),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("split", T.StringType(), True),
    T.StructField("model_name", T.StringType(), False),        # registered MLflow model, e.g. ctlake-malignancy
    T.StructField("model_version", T.StringType(), False),     # its registry version
    T.StructField("model_kind", T.StringType(), True),         # candidate | malignancy | hybrid
    T.StructField("score", T.DoubleType(), False),             # P(positive class), 0..1
    T.StructField("predicted_label", T.IntegerType(), False),  # score >= threshold
    T.StructField("threshold", T.DoubleType(), False),
    T.StructField("label", T.IntegerType(), True),             # ground truth of the patch, if known
    T.StructField("mlflow_run_id", T.StringType(), True),      # the training run of the model version
    T.StructField("patches_version", T.LongType(), True),      # gold.nodule_patches version scored
    T.StructField("run_id", T.StringType(), False),            # this prediction job (ops.pipeline_runs)
    T.StructField("predicted_at", T.TimestampType(), False),
])

PIPELINE_RUNS = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("status", T.StringType(), False),          # succeeded | failed
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType()), True),  # table -> Delta version
    T.StructField("output_versions", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("params_json", T.StringType(), True),
    T.StructField("error", T.StringType(), True),
    T.StructField("profile", T.StringType(), True),
])

# --- ops: the search index (ctlake.index) -------------------------------------------------
# The Delta version each (index entity, source table) has caught up with: appended only after the
# bulk for that version succeeded, so a re-run converges; the latest row per (entity, table) is in force.
INDEX_STATE = T.StructType([
    T.StructField("entity", T.StringType(), False),           # series | nodules | features | ...
    T.StructField("table", T.StringType(), False),            # layer.table read (primary or joined)
    T.StructField("version", T.LongType(), False),            # last Delta version indexed
    T.StructField("index_name", T.StringType(), False),       # concrete index behind the alias
    T.StructField("mapping_hash", T.StringType(), False),
    T.StructField("mode", T.StringType(), False),             # full | incremental
    T.StructField("docs", T.LongType(), True),                # upserted by that run
    T.StructField("deleted", T.LongType(), True),
    T.StructField("rejected", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("updated_at", T.TimestampType(), False),
])

# Documents Elasticsearch refused (mapping conflicts, bad field names ...), with its reason.
INDEX_REJECTIONS = T.StructType([
    T.StructField("entity", T.StringType(), False),
    T.StructField("doc_id", T.StringType(), False),
    T.StructField("table", T.StringType(), False),
    T.StructField("table_version", T.LongType(), False),
    T.StructField("index_name", T.StringType(), False),
    T.StructField("status", T.IntegerType(), True),           # HTTP status of the bulk item
    T.StructField("error_type", T.StringType(), True),        # e.g. document_parsing_exception
    T.StructField("reason", T.StringType(), False),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("rejected_at", T.TimestampType(), False),
])

# --- bronze --------------------------------------------------------------------------------
_SOURCE_FIELDS = [
    T.StructField("source_kind", T.StringType(), False),          # kafka | file
    T.StructField("source_topic", T.StringType(), True),
    T.StructField("source_partition", T.IntegerType(), True),
    T.StructField("source_offset", T.LongType(), True),
    T.StructField("source_ref", T.StringType(), True),            # keyed hash of the edge path (paths can carry PHI)
    T.StructField("ingest_run_id", T.StringType(), False),
    T.StructField("ingested_at", T.TimestampType(), False),
]

DICOM_INSTANCES = T.StructType([
    T.StructField("sop_instance_uid", T.StringType(), False),
    T.StructField("series_instance_uid", T.StringType(), True),
    T.StructField("study_instance_uid", T.StringType(), True),
    T.StructField("patient_pseudo_id", T.StringType(), True),
    T.StructField("sop_class_uid", T.StringType(), True),
    T.StructField("modality", T.StringType(), True),
    T.StructField("instance_number", T.LongType(), True),
    T.StructField("rows", T.IntegerType(), True),
    T.StructField("columns", T.IntegerType(), True),
    T.StructField("number_of_frames", T.IntegerType(), True),
    T.StructField("pixel_spacing_mm", T.ArrayType(T.DoubleType()), True),          # (row, col)
    T.StructField("slice_thickness_mm", T.DoubleType(), True),
    T.StructField("image_position_patient_mm", T.ArrayType(T.DoubleType()), True),  # (x, y, z) LPS
    T.StructField("image_orientation_patient", T.ArrayType(T.DoubleType()), True),  # row then column cosines
    T.StructField("rescale_slope", T.DoubleType(), True),
    T.StructField("rescale_intercept", T.DoubleType(), True),
    T.StructField("manufacturer", T.StringType(), True),
    T.StructField("manufacturer_model_name", T.StringType(), True),
    T.StructField("convolution_kernel", T.StringType(), True),
    T.StructField("kvp", T.DoubleType(), True),
    T.StructField("transfer_syntax_uid", T.StringType(), True),
    T.StructField("study_date", T.DateType(), True),                               # shifted per patient
    T.StructField("series_date", T.DateType(), True),
    T.StructField("header_json", T.StringType(), False),                           # DICOM JSON model, no bulk data
    T.StructField("dicom_bytes", T.BinaryType(), True),                            # de-identified Part-10 bytes ...
    T.StructField("claim_check_uri", T.StringType(), True),                        # ... or where they are
    T.StructField("content_sha256", T.StringType(), False),
    T.StructField("size_bytes", T.LongType(), False),
    T.StructField("deid_profile", T.StringType(), True),
    *_SOURCE_FIELDS,
])

QUARANTINE = T.StructType([
    # sha256 of (content or source ref, stage, code): a replay adds nothing
    T.StructField("quarantine_id", T.StringType(), False),
    T.StructField("stage", T.StringType(), False),           # edge | parse | deid_gate | decode | claim_check
    T.StructField("error_code", T.StringType(), False),
    T.StructField("error_message", T.StringType(), False),
    T.StructField("content_sha256", T.StringType(), True),
    T.StructField("size_bytes", T.LongType(), True),
    # Bytes are kept only when they passed the de-identification gate; otherwise they may carry
    # PHI and stay at the source (topic/offset or the edge's report names them).
    T.StructField("dicom_bytes", T.BinaryType(), True),
    T.StructField("claim_check_uri", T.StringType(), True),
    T.StructField("bytes_withheld_reason", T.StringType(), True),
    *_SOURCE_FIELDS,
])


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("bronze.dicom_instances", DICOM_INSTANCES, key=("sop_instance_uid",),
              description="one row per de-identified DICOM instance; the same instance twice is one row",
              # statistics only where queries filter: not on the bytes or the JSON header
              properties=(("delta.dataSkippingStatsColumns",
                           "sop_instance_uid,series_instance_uid,study_instance_uid,patient_pseudo_id,"
                           "modality,ingested_at,ingest_run_id"),)),
        Table("bronze.quarantine", QUARANTINE, key=("quarantine_id",),
              description="everything that could not be taken, with stage, code and message",
              properties=(("delta.dataSkippingStatsColumns",
                           "quarantine_id,stage,error_code,content_sha256,ingested_at,ingest_run_id"),)),
        Table("silver.ct_series", CT_SERIES, key=("series_instance_uid",),
              description="one row per series: QC flags, policy decisions, source and target geometry"),
        Table("silver.ct_volumes", CT_VOLUMES, key=("series_instance_uid", "slab_index"),
              description="resampled, clipped HU volumes in z slabs of codec-compressed int16",
              properties=(("delta.dataSkippingStatsColumns", "series_instance_uid,slab_index,z0,z1,run_id"),)),
        Table("silver.lung_masks", LUNG_MASKS, key=("series_instance_uid", "slab_index"),
              description="lung masks on the silver.ct_volumes grid, same z slabs, CTT1 uint8; failed series: one row",
              properties=(("delta.dataSkippingStatsColumns", "series_instance_uid,slab_index,z0,z1,status,run_id"),)),
        Table("gold.nodules", NODULES, key=("nodule_id",),
              description="one row per annotated nodule: centre, measured size, mask crop on the silver grid",
              properties=(("delta.dataSkippingStatsColumns", "nodule_id,series_instance_uid,patient_pseudo_id,"
                           "source,status,diameter_mm,malignancy"),)),
        Table("gold.nodule_patches", NODULE_PATCHES, key=("patch_id",),
              description="fixed-size int16 cubes (+ mask) around nodules and negatives, with a patient split",
              properties=(("delta.dataSkippingStatsColumns",
                           "patch_id,nodule_id,series_instance_uid,patient_pseudo_id,kind,label,size_name,split"),)),
        Table("gold.radiomics_features", RADIOMICS_FEATURES, key=("roi_id", "params_hash"),
              description="radiomics features per nodule ROI and parameter set (PyRadiomics names, IBSI codes)",
              properties=(("delta.dataSkippingStatsColumns", "roi_id,params_hash,series_instance_uid,"
                           "patient_pseudo_id,status,error_code,run_id,extracted_at"),)),
        Table("gold.predictions", PREDICTIONS, key=("patch_id", "model_name", "model_version"),
              description="model scores per patch and registered model version (batch inference)"),
        Table("ops.pipeline_runs", PIPELINE_RUNS, key=("run_id",),
              description="one row per job run: inputs' Delta versions, rows in/out, status, duration"),
        Table("ops.index_state", INDEX_STATE, key=("entity", "table", "run_id"),
              description="search index: the Delta version each index entity has caught up with, per table; "
                          "appended by each run that advanced it, the latest row per (entity, table) is in force"),
        Table("ops.index_rejections", INDEX_REJECTIONS, key=("entity", "doc_id", "run_id"),
              description="search index: documents Elasticsearch refused, with the reason (appended per run)"),
    )
}


def table(name: str) -> Table:
    """The declaration of ``name`` (``layer.table``); a clear error for a typo."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; declared tables: {sorted(TABLES)}") from None


def union_schema(*schemas: T.StructType) -> T.StructType:
    """A ``target`` column (the table a row is for) plus every field of ``schemas``, nullable, in
    order, first definition wins: one Spark output schema for a step that feeds several tables."""
    fields = {"target": T.StructField("target", T.StringType(), False)}
    for schema in schemas:
        for f in schema.fields:
            fields.setdefault(f.name, T.StructField(f.name, f.dataType, True))
    return T.StructType(list(fields.values()))


def rows_frame(rows: list[dict], names: list[str]):
    """A pandas frame of ``rows`` for ``mapInPandas``/``applyInPandas`` output with the columns
    ``names``: object columns, so None stays None (a NaN in an array or binary column breaks Arrow)."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in names})
