"""Feature extraction with PyRadiomics parameter files and PyRadiomics feature names.

``load_params(path)`` reads a PyRadiomics parameter YAML as it is (top-level keys ``setting``,
``imageType``, ``featureClass``, ``voxelSetting``) into :class:`Params`; every setting is either
used, ignored because it cannot change the features computed here (``Params.ignored``, with the
reason), or unsupported (``Params.unsupported``, with the reason). ``extract`` refuses a Params with
unsupported entries unless ``strict=False``, in which case it computes what it supports and the
caller has the list.

``extract(image_zyx, mask_zyx, spacing_zyx_mm, params)`` returns ``original_<class>_<Feature>``.
It computes them with the compiled kernels of :mod:`.engine` (numba; the first call in a process
compiles them or loads them from numba's disk cache) and, where numba is missing, with the numpy code of
the family modules; ``extract_ibsi`` always uses the numpy code. Both give the same values within
round-off (tests/unit/test_radiomics_kernels.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ctlake.errors import CtlakeError

from . import engine, firstorder, glcm, gldm, glrlm, glszm, ngtdm, shape
from ._kernels import gather_roi
from ._table import Feature
from .discretise import discretise

_MODULES = {"firstorder": firstorder, "shape": shape, "glcm": glcm, "glrlm": glrlm, "glszm": glszm,
            "gldm": gldm, "ngtdm": ngtdm}
FAMILIES: dict[str, dict[str, Feature]] = {cls: module.FEATURES for cls, module in _MODULES.items()}
# IBSI features without a PyRadiomics name (or with a different PyRadiomics definition), per class
IBSI_ONLY: dict[str, dict[str, Feature]] = {cls: module.IBSI_ONLY for cls, module in _MODULES.items()}
# classes whose features are computed per direction and then averaged (weightingNorm None)
_PER_DIRECTION = {"glcm": glcm.aggregate, "glrlm": glrlm.aggregate}
NOT_IMPLEMENTED_CLASSES = ("shape2D",)

# settings used by this engine, with PyRadiomics defaults
DEFAULTS: dict[str, Any] = {
    "binWidth": 25,
    "binCount": None,
    "label": 1,
    "distances": [1],
    "force2D": False,
    "force2Ddimension": 0,
    "voxelArrayShift": 0,
    "weightingNorm": None,
    "symmetricalGLCM": True,
    "gldm_a": 0,
}
# settings with no effect here (they act on logging, diagnostics, cropping or unimplemented classes)
_IGNORED = {
    "additionalInfo": "diagnostics output only",
    "enableCExtensions": "no C extensions in ctlake",
    "preCrop": "cropping does not change these features",
    "padDistance": "cropping does not change these features",
    "geometryTolerance": "image and mask are arrays on one grid here",
    "correctMask": "image and mask are arrays on one grid here",
    "minimumROIDimensions": "ROI size checks not implemented; an empty ROI is refused",
    "minimumROISize": "ROI size checks not implemented; an empty ROI is refused",
    "label_channel": "single-channel masks only",
    "normalizeScale": "only used with normalize",
    "resegmentMode": "only used with resegmentRange",
    "resegmentShape": "only used with resegmentRange",
    "resampledPixelSpacing": "None: no resampling",
    "interpolator": "only used with resampling",
}
# settings that would change results; supported only at the value that means "off"
_OFF_VALUES = {
    "resampledPixelSpacing": None,
    "normalize": False,
    "removeOutliers": None,
    "resegmentRange": None,
}


class RadiomicsSettingsError(CtlakeError):
    """A radiomics parameter file or settings mapping that ctlake cannot honour."""

    code = "RADIOMICS_SETTINGS"


@dataclass(frozen=True)
class Params:
    """Validated extraction parameters.

    settings: the used settings (defaults filled in); image_types: enabled image types;
    feature_classes: class -> list of feature names (None = the class's default features);
    ignored / unsupported: setting or class -> reason; source: where the parameters came from."""

    settings: dict[str, Any]
    image_types: dict[str, Any] = field(default_factory=lambda: {"Original": {}})
    feature_classes: dict[str, list[str] | None] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    source: str = "<mapping>"


def params_from_mapping(doc: Mapping[str, Any] | None, *, source: str = "<mapping>") -> Params:
    """Params from a PyRadiomics parameter mapping (the parsed YAML). No ``featureClass`` key means
    every implemented class with its default features, as PyRadiomics."""
    doc = dict(doc or {})
    unknown_top = set(doc) - {"setting", "imageType", "featureClass", "voxelSetting"}
    if unknown_top:
        raise RadiomicsSettingsError(f"{source}: unknown top-level keys {sorted(unknown_top)}",
                                     hint="PyRadiomics files have setting, imageType, featureClass, voxelSetting")
    settings = dict(DEFAULTS)
    ignored: dict[str, str] = {}
    unsupported: dict[str, str] = {}
    for key, value in (doc.get("setting") or {}).items():
        if key in _OFF_VALUES:
            if value == _OFF_VALUES[key] or (key == "resampledPixelSpacing" and not value):
                ignored[key] = f"{value!r}: off"
            else:
                unsupported[key] = f"{value!r}: {key} not implemented yet"
        elif key in DEFAULTS:
            settings[key] = value
        elif key in _IGNORED:
            ignored[key] = _IGNORED[key]
        else:
            unsupported[key] = f"{value!r}: unknown setting"
    if doc.get("voxelSetting"):
        unsupported["voxelSetting"] = "voxel-based extraction not implemented"
    if settings["weightingNorm"] not in glcm.WEIGHTING_NORMS:
        raise RadiomicsSettingsError(f"{source}: weightingNorm {settings['weightingNorm']!r} unknown",
                                     hint=f"use one of {glcm.WEIGHTING_NORMS}")
    if settings["binCount"] is None and not (settings["binWidth"] or 0) > 0:
        raise RadiomicsSettingsError(f"{source}: binWidth must be > 0, got {settings['binWidth']!r}")
    if not (isinstance(settings["gldm_a"], int | float) and settings["gldm_a"] >= 0):
        raise RadiomicsSettingsError(f"{source}: gldm_a must be a number >= 0, got {settings['gldm_a']!r}")
    distances = settings["distances"]
    if not distances or any(int(d) != d or d < 1 for d in distances):
        raise RadiomicsSettingsError(f"{source}: distances must be positive integers, got {distances!r}")

    image_types = dict(doc.get("imageType") or {"Original": {}})
    for name in list(image_types):
        if name != "Original":
            unsupported[f"imageType.{name}"] = "filtered image types not implemented yet"
            del image_types[name]

    classes_doc = doc.get("featureClass")
    if classes_doc is None:
        classes_doc = {name: None for name in FAMILIES}
    classes: dict[str, list[str] | None] = {}
    for cls, names in classes_doc.items():
        if cls in FAMILIES:
            for name in names or []:
                if name not in FAMILIES[cls]:
                    raise RadiomicsSettingsError(f"{source}: feature {cls}.{name} unknown",
                                                 hint=f"known: {sorted(FAMILIES[cls])}")
            classes[cls] = list(names) if names else None
        elif cls in NOT_IMPLEMENTED_CLASSES:
            unsupported[f"featureClass.{cls}"] = "feature class not implemented yet"
        else:
            raise RadiomicsSettingsError(f"{source}: feature class {cls!r} unknown")
    return Params(settings, image_types, classes, ignored, unsupported, source)


def load_params(path: str | Path) -> Params:
    """Params from a PyRadiomics parameter YAML file, read as it is."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RadiomicsSettingsError(f"parameter file {path} not found") from None
    return params_from_mapping(doc, source=str(path))


_DEFAULT_FEATURES = {cls: [n for n, f in table.items() if f.default] for cls, table in FAMILIES.items()}


def enabled_features(params: Params, cls: str) -> list[str]:
    """Feature names of ``cls`` that ``params`` enables (listed ones, else the default ones)."""
    names = params.feature_classes.get(cls)
    if names is None:
        return list(_DEFAULT_FEATURES[cls])
    return names


@dataclass(frozen=True)
class _Prepared:
    """The ROI cut to its bounding box: intensities x (float64, C order), grey levels (1-D, same order),
    the number of bins N_b, the bool mask of the box (z, y, x) and the spacing (mm)."""

    x: np.ndarray
    levels: np.ndarray
    n_bins: int
    mask_zyx: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def counts(self) -> np.ndarray:
        """Voxels per discretised bin 1..N_b (empty bins included)."""
        return np.bincount(self.levels, minlength=self.n_bins + 1)[1:]

    @property
    def levels_zyx(self) -> np.ndarray:
        """Grey levels of the box (int64), 0 outside the ROI (the family modules' input)."""
        out = np.zeros(self.mask_zyx.shape, dtype=np.int64)
        out[self.mask_zyx] = self.levels
        return out


def _prepare(image_zyx, mask_zyx, spacing_zyx_mm, params: Params) -> _Prepared:
    image = np.asarray(image_zyx)
    mask_in = np.asarray(mask_zyx)
    if image.shape != mask_in.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and mask {mask_in.shape} must be 3-D arrays of one shape")
    mask = mask_in == params.settings["label"]
    if engine.AVAILABLE and image.dtype.isnative and image.dtype.kind in "iuf" and image.dtype != np.float16:
        box, x, mask8 = gather_roi(np.ascontiguousarray(image), np.ascontiguousarray(mask).view(np.uint8))
        if box[0] < 0:
            raise ValueError(f"mask has no voxels with label {params.settings['label']}")
        mask = mask8.view(bool)
    else:
        if not mask.any():
            raise ValueError(f"mask has no voxels with label {params.settings['label']}")
        nz = np.nonzero(mask)
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)
        image, mask = image[box], mask[box]
        x = image[mask].astype(np.float64)
    s = params.settings
    if s["binCount"] is not None:
        disc = discretise(x, mode="count", bin_count=s["binCount"])
    else:
        disc = discretise(x, mode="width", bin_width=s["binWidth"])
    return _Prepared(x, disc.levels, len(disc.edges) - 1, mask, tuple(float(v) for v in spacing_zyx_mm))


def _compiled_values(prep: _Prepared, params: Params, classes) -> dict[str, dict[str, float]]:
    """class -> {feature name: value} for every feature of each class in ``classes`` (:mod:`.engine`)."""
    s = params.settings
    roi = engine.prepare_roi(prep.mask_zyx, prep.levels, prep.spacing, pad=max(int(d) for d in s["distances"]))
    out: dict[str, dict[str, float]] = {}
    hood = None
    for cls in classes:
        if cls == "firstorder":
            out[cls] = engine.firstorder_values(prep.x, roi, s)
        elif cls == "shape":
            out[cls] = engine.shape_values(roi, s)
        elif cls == "glcm":
            out[cls] = engine.glcm_values(roi, s)
        elif cls == "glrlm":
            out[cls] = engine.glrlm_values(roi, s)
        elif cls == "glszm":
            out[cls] = engine.glszm_values(roi, s)
        else:  # gldm, ngtdm: one pass over the neighbourhoods for both
            hood = hood or engine.neighbourhood_values(roi, s)
            out[cls] = (engine.gldm_values if cls == "gldm" else engine.ngtdm_values)(roi, s, hood)
    return out


def _family_inputs(prep: _Prepared, params: Params, classes, *, ibsi: bool = False) -> dict[str, Any]:
    """The input object of each class in ``classes``; ``ibsi`` True: IBSI conventions where PyRadiomics
    differs (the NGTDM leaves voxels without a neighbour in the ROI out; the GLRLM keeps directions along
    which the ROI is flat)."""
    s = params.settings
    plane = {"force2d": bool(s["force2D"]), "force2d_dimension": int(s["force2Ddimension"])}
    levels_zyx = prep.levels_zyx
    out: dict[str, Any] = {}
    if "firstorder" in classes:
        out["firstorder"] = firstorder.FirstOrderInput(prep.x, prep.counts, float(np.prod(prep.spacing)),
                                                       float(s["voxelArrayShift"]))
    if "shape" in classes:
        out["shape"] = shape.prepare(prep.mask_zyx, prep.spacing)
    if "glcm" in classes:
        p, grey = glcm.matrices(levels_zyx, prep.spacing, distances=tuple(s["distances"]),
                                symmetric=bool(s["symmetricalGLCM"]), weighting_norm=s["weightingNorm"],
                                **plane)
        out["glcm"] = glcm.coefficients(p, grey)
    if "glrlm" in classes:
        p, grey = glrlm.matrices(levels_zyx, prep.spacing, weighting_norm=s["weightingNorm"],
                                 drop_flat=not ibsi, **plane)
        out["glrlm"] = glrlm.coefficients(p, grey)
    if "glszm" in classes:
        out["glszm"] = glrlm.coefficients(*glszm.zone_matrix(levels_zyx, **plane))
    if "gldm" in classes:
        out["gldm"] = glrlm.coefficients(*gldm.dependence_matrix(
            levels_zyx, alpha=s["gldm_a"], distances=tuple(s["distances"]), **plane))
    if "ngtdm" in classes:
        out["ngtdm"] = ngtdm.matrix(levels_zyx, distances=tuple(s["distances"]), exclude_isolated=ibsi,
                                    **plane)
    return out


def _value(cls: str, feature: Feature, data: Any) -> float:
    value = feature.fn(data)
    return _PER_DIRECTION[cls](value) if cls in _PER_DIRECTION else float(value)


def _check(params: Params, strict: bool) -> None:
    if strict and params.unsupported:
        raise RadiomicsSettingsError(
            f"{params.source}: unsupported settings {params.unsupported}",
            hint="remove them, or pass strict=False to compute only the supported part")


def extract(image_zyx: np.ndarray, mask_zyx: np.ndarray, spacing_zyx_mm: tuple[float, float, float],
            params: Params | None = None, *, strict: bool = True) -> dict[str, float]:
    """Features ``original_<class>_<Feature>`` of the ROI ``mask_zyx == label`` in ``image_zyx``
    (same (z, y, x) grid, spacing in mm). ``params`` None = PyRadiomics defaults, every class."""
    params = params or params_from_mapping(None)
    _check(params, strict)
    classes = [c for c in FAMILIES if c in params.feature_classes]
    prep = _prepare(image_zyx, mask_zyx, spacing_zyx_mm, params)
    out: dict[str, float] = {}
    if engine.AVAILABLE:
        values = _compiled_values(prep, params, classes)
        for cls in classes:
            for name in enabled_features(params, cls):
                out[f"original_{cls}_{name}"] = values[cls][name]
        return out
    inputs = _family_inputs(prep, params, classes)
    for cls in classes:
        for name in enabled_features(params, cls):
            out[f"original_{cls}_{name}"] = _value(cls, FAMILIES[cls][name], inputs[cls])
    return out


def extract_ibsi(image_zyx: np.ndarray, mask_zyx: np.ndarray, spacing_zyx_mm: tuple[float, float, float],
                 params: Params | None = None, *, strict: bool = True) -> dict[str, float]:
    """Values keyed by IBSI code, for every implemented feature whose value equals an IBSI definition
    under ``params`` (Energy and RMS only with voxelArrayShift 0; PyRadiomics Kurtosis is replaced by
    IBSI excess kurtosis; NGTDM without isolated voxels; GLRLM with flat directions). GLCM and GLRLM aggregation follows
    weightingNorm: None = IBSI "3D, averaged", 'no_weighting' = "3D, merged"; with force2D the same give
    "2.5D, direction-merged" and "2.5D, merged", and GLSZM, GLDM (IBSI NGLDM) and NGTDM give IBSI "2.5D"
    (else "3D")."""
    params = params or params_from_mapping(None)
    _check(params, strict)
    classes = [c for c in FAMILIES if c in params.feature_classes]
    prep = _prepare(image_zyx, mask_zyx, spacing_zyx_mm, params)
    inputs = _family_inputs(prep, params, classes, ibsi=True)
    out: dict[str, float] = {}
    for cls in classes:
        for feature in [*FAMILIES[cls].values(), *IBSI_ONLY[cls].values()]:
            if feature.ibsi is None:
                continue
            if cls == "firstorder" and feature.ibsi in ("N8CA", "5ZWQ") and params.settings["voxelArrayShift"]:
                continue
            out[feature.ibsi] = _value(cls, feature, inputs[cls])
    return out
