"""Synthetic chest CT cohorts: an analytic HU phantom with lung nodules, written as real DICOM
series with LUNA16-style ground truth and opt-in edge cases (see :mod:`ctlake.synth.cohort`)."""

from ctlake.synth.cohort import (
    EDGE_CASES,
    Annotation,
    FileRecord,
    Manifest,
    SeriesRecord,
    SynthConfig,
    SynthConfigError,
    SynthOutputError,
    cohort_annotations,
    generate_cohort,
    plan_patient,
)
from ctlake.synth.dicomio import COMPRESSED_SYNTAXES, syntax_support
from ctlake.synth.phantom import (
    Geometry,
    Nodule,
    Phantom,
    malignancy_rating,
    nodule_sphere_mask,
    phantom_volume,
    render_phantom,
)

__all__ = [
    "COMPRESSED_SYNTAXES",
    "EDGE_CASES",
    "Annotation",
    "FileRecord",
    "Geometry",
    "Manifest",
    "Nodule",
    "Phantom",
    "SeriesRecord",
    "SynthConfig",
    "SynthConfigError",
    "SynthOutputError",
    "cohort_annotations",
    "generate_cohort",
    "malignancy_rating",
    "nodule_sphere_mask",
    "phantom_volume",
    "plan_patient",
    "render_phantom",
    "syntax_support",
]
