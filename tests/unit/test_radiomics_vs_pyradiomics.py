"""Radiomics side by side with PyRadiomics (the pinned version in requirements/test.in), and the
file loader ``ctlake.radiomics.io.load_case``.

PyRadiomics is the reference peer: ``RadiomicsFeatureExtractor()`` with its defaults (binWidth 25, no
resampling, label 1, every default feature of firstorder, shape, glcm, glrlm, glszm, gldm, ngtdm) on
SimpleITK images built from the very arrays ``extract`` gets, with the same spacing. Inputs are
synthetic chest-CT nodules of 5-30 mm (lobulated or spiculated blobs with internal texture in
lung-like background; int16 HU as CT, one float64 case), on isotropic and anisotropic grids, then files
written to disk (NIfTI, NRRD, a second label) and a real CT series read from its DICOM folder.

Every feature must agree within RTOL relative (|a - b| <= RTOL * max(|a|, |b|), or both |a|, |b| <
ATOL_ZERO); a NaN on either side is a failure (PyRadiomics turns any exception into NaN). Features
that cannot be compared are listed in NOT_COMPARABLE with the reason, and that reason is checked.
PyRadiomics missing from the venv is a failure that says to run ``make venv``, never a skip.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from ctlake.imaging.grid import Grid
from ctlake.imaging.series import assemble_series, slice_infos, stack_hu
from ctlake.imaging.volume import read_series_folder
from ctlake.radiomics import RadiomicsSettingsError, extract, params_from_mapping
from ctlake.radiomics.extract import FAMILIES
from ctlake.radiomics.io import RadiomicsInputError, load_case
from ctlake.synth.phantom import lobulated_nodule
from scipy import ndimage

try:
    import radiomics
    from radiomics import featureextractor
except ImportError as exc:  # reported by the pyradiomics fixture as a failure, never a skip
    radiomics = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
FIVE_SLICES = SHARED / "dicom" / "samples" / "ct_series_5slices_uniform"
LUNG_DX = SHARED / "dicom" / "ct_series" / "Lung_Dx-A0002_series3_B40f"
LUNG_DX_BOXES = SHARED / "dicom" / "ct_series" / "annotations_voc_xml" / "A0002"

CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
RTOL = 1e-6
ATOL_ZERO = 1e-12
# (class, PyRadiomics feature name) -> why the two cannot be compared: PyRadiomics 3.0.1 raises
# DeprecationWarning inside these getters and returns no value even when a settings file names them.
# Checked in test_features_without_a_pyradiomics_value.
NOT_COMPARABLE = {
    ("glcm", "Dissimilarity"): "deprecated in PyRadiomics, no value; = DifferenceAverage; ctlake refuses the name",
    ("glcm", "Homogeneity1"): "deprecated in PyRadiomics, no value; = Id; ctlake refuses the name",
    ("glcm", "Homogeneity2"): "deprecated in PyRadiomics, no value; = Idm; ctlake refuses the name",
    ("glcm", "SumVariance"): "deprecated in PyRadiomics, no value; = ClusterTendency; ctlake refuses the name",
    ("gldm", "GrayLevelNonUniformityNormalized"): "deprecated in PyRadiomics, no value; ctlake computes IBSI 5SPA "
                                                  "when named, checked against PyRadiomics' firstorder Uniformity",
    ("gldm", "DependencePercentage"): "deprecated in PyRadiomics, no value; ctlake computes IBSI 6XV8 when named, "
                                      "always 1",
}
# deprecated PyRadiomics features that it still computes when a settings file names them; compared
# in test_deprecated_features_listed_by_name
DEPRECATED_WITH_VALUE = {
    "firstorder": ["StandardDeviation"],
    "shape": ["Compactness1", "Compactness2", "SphericalDisproportion"],
}


# --------------------------------------------------------------------------------------------
# PyRadiomics
# --------------------------------------------------------------------------------------------
def _pinned_version() -> str:
    text = (ROOT / "requirements" / "test.in").read_text()
    match = re.search(r"^pyradiomics==(\S+)", text, flags=re.MULTILINE | re.IGNORECASE)
    assert match, "requirements/test.in must pin pyradiomics==<version>"
    return match.group(1)


@pytest.fixture(scope="module")
def pyradiomics():
    """The radiomics module, at the version pinned in requirements/test.in; a failure otherwise."""
    if radiomics is None:
        pytest.fail(f"PyRadiomics is not importable ({_IMPORT_ERROR}); it is the reference for these tests: "
                    "run `make venv` (infra/local/install_test_deps.sh installs requirements/test.in)",
                    pytrace=False)
    installed, pinned = importlib.metadata.version("pyradiomics"), _pinned_version()
    if installed != pinned:
        pytest.fail(f"PyRadiomics {installed} installed, requirements/test.in pins {pinned}: run `make venv`",
                    pytrace=False)
    radiomics.setVerbosity(60)  # errors only as exceptions/NaN, no log output
    return radiomics


def _sitk(array_zyx: np.ndarray, spacing_zyx_mm, origin_xyz_mm=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx_mm)))
    img.SetOrigin(tuple(float(o) for o in origin_xyz_mm))
    return img


def _reference(image, mask, settings: dict | None = None, feature_classes: dict | None = None,
               label: int | None = None) -> dict[str, float]:
    """PyRadiomics feature values (original_* keys) for sitk images or file paths."""
    params = {"setting": settings or {}}
    if feature_classes is not None:
        params["featureClass"] = feature_classes
    extractor = featureextractor.RadiomicsFeatureExtractor(params)
    out = extractor.execute(image if isinstance(image, sitk.Image) else str(image),
                            mask if isinstance(mask, sitk.Image) else str(mask), label=label)
    return {k: float(v) for k, v in out.items() if k.startswith("original_")}


def _rel_diff(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.inf
    if abs(a) < ATOL_ZERO and abs(b) < ATOL_ZERO:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def _compare(got: dict[str, float], ref: dict[str, float], what: str) -> dict[str, float]:
    """Assert the same feature names and every value within RTOL; returns the worst relative
    difference per class."""
    assert set(got) == set(ref), (f"{what}: only ours {sorted(set(got) - set(ref))}, "
                                  f"only PyRadiomics {sorted(set(ref) - set(got))}")
    worst: dict[str, float] = {}
    failures = []
    for name in sorted(ref):
        rel = _rel_diff(got[name], ref[name])
        cls = name.split("_")[1]
        worst[cls] = max(worst.get(cls, 0.0), rel)
        if not rel <= RTOL:
            failures.append(f"{name}: ours {got[name]!r}, PyRadiomics {ref[name]!r}, rel diff {rel:.3g}")
    assert not failures, f"{what}: {len(failures)} feature(s) differ\n" + "\n".join(failures)
    return worst


# --------------------------------------------------------------------------------------------
# Synthetic nodules
# --------------------------------------------------------------------------------------------
def synthetic_nodule(diameter_mm: float, spacing_zyx_mm: tuple[float, float, float], rng: np.random.Generator,
                     *, spiculated: bool = False, margin_mm: float = 5.0, dtype=np.int16,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like patch (HU, ``dtype``) around one nodule and its boolean mask, (z, y, x).

    The surface is r <= R(u): R = d/2 (1 + sum_k a_k (u . v_k)^2) over 6 random directions v_k,
    |a_k| <= 0.12 (lobulation); spiculated: plus 10 narrow spikes up to 0.45 d/2 long. Inside: 40 HU
    falling towards the rim, plus smooth texture (Gaussian-filtered noise, 60 HU); outside: lung at
    -850 HU with 25 HU texture; then a 0.6 mm blur (partial volume) and 15 HU white noise. The nodule
    centre is moved by a random sub-voxel offset, so the voxelisation differs from case to case."""
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    radius = diameter_mm / 2.0
    reach = radius * (1.5 if spiculated else 1.2) + margin_mm
    shape = tuple(int(np.ceil(2 * reach / s)) + 1 for s in spacing)
    centre = (np.asarray(shape) - 1) / 2.0 * spacing + rng.uniform(-0.5, 0.5, 3) * spacing
    z, y, x = np.meshgrid(*[np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre, strict=True)],
                          indexing="ij")
    r, mask = lobulated_nodule(z, y, x, diameter_mm, rng, spiculated=spiculated)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.0 / np.maximum(spacing, 0.5))
    texture /= texture.std()
    hu = np.where(mask, 40.0 - 300.0 * np.clip(r / radius - 0.7, 0.0, None) + 60.0 * texture, -850.0 + 25.0 * texture)
    hu = ndimage.gaussian_filter(hu, 0.6 / spacing) + rng.normal(0.0, 15.0, shape)
    if np.dtype(dtype).kind == "i":
        hu = np.round(hu)
    return hu.astype(dtype), mask


# id -> (diameter mm, spacing (z, y, x) mm, spiculated, image dtype, seed)
NODULES = {
    "5mm-1mm": (5.0, (1.0, 1.0, 1.0), False, np.int16, 1),
    "8mm-thin-spiculated": (8.0, (1.25, 0.7, 0.7), True, np.int16, 2),
    "12mm-2.5mm-slices": (12.0, (2.5, 0.65, 0.65), False, np.int16, 3),
    "15mm-float64": (15.0, (1.0, 0.9, 0.9), True, np.float64, 4),
    "20mm-spiculated": (20.0, (1.0, 1.0, 1.0), True, np.int16, 5),
    "30mm-lobulated": (30.0, (1.0, 0.8, 0.8), False, np.int16, 6),
}


def _nodule(case: str):
    diameter, spacing, spiculated, dtype, seed = NODULES[case]
    image, mask = synthetic_nodule(diameter, spacing, np.random.default_rng(seed), spiculated=spiculated, dtype=dtype)
    return image, mask, spacing


def test_synthetic_nodules_look_like_nodules():
    for case, (diameter, spacing, *_rest) in NODULES.items():
        image, mask, _ = _nodule(case)
        volume_mm3 = mask.sum() * np.prod(spacing)
        sphere_mm3 = np.pi / 6 * diameter**3
        assert 0.6 * sphere_mm3 < volume_mm3 < 2.0 * sphere_mm3, case
        assert -200 < image[mask].mean() < 100 and image[mask].std() > 30, case     # soft tissue with texture
        assert image[~ndimage.binary_dilation(mask, iterations=3)].mean() < -700, case  # lung around it


@pytest.mark.parametrize("case", list(NODULES))
def test_every_default_feature_equals_pyradiomics(pyradiomics, case):
    image, mask, spacing = _nodule(case)
    got = extract(image, mask, spacing)
    ref = _reference(_sitk(image, spacing, (-120.5, 33.0, -301.25)),
                     _sitk(mask.astype(np.uint8), spacing, (-120.5, 33.0, -301.25)))
    assert len(ref) == sum(f.default for cls in CLASSES for f in FAMILIES[cls].values()) == 107
    _compare(got, ref, case)


def test_deprecated_features_listed_by_name(pyradiomics):
    """A settings file that names PyRadiomics' deprecated features gets them from both."""
    image, mask, spacing = _nodule("20mm-spiculated")
    classes = {cls: list(names) for cls, names in DEPRECATED_WITH_VALUE.items()}
    got = extract(image, mask, spacing, params_from_mapping({"featureClass": classes}))
    ref = _reference(_sitk(image, spacing), _sitk(mask.astype(np.uint8), spacing), feature_classes=classes)
    assert len(ref) == 4
    _compare(got, ref, "deprecated features")


def test_features_without_a_pyradiomics_value(pyradiomics):
    """NOT_COMPARABLE holds: PyRadiomics returns no value for these names; ctlake refuses the GLCM
    ones and computes the two GLDM ones (their IBSI values)."""
    image, mask, spacing = _nodule("12mm-2.5mm-slices")
    sitk_image, sitk_mask = _sitk(image, spacing), _sitk(mask.astype(np.uint8), spacing)
    for (cls, name), reason in NOT_COMPARABLE.items():
        ref = _reference(sitk_image, sitk_mask, feature_classes={cls: [name]})
        assert f"original_{cls}_{name}" not in ref, f"{cls}.{name} now has a PyRadiomics value; was: {reason}"
        if cls == "glcm":
            with pytest.raises(RadiomicsSettingsError, match="unknown"):
                params_from_mapping({"featureClass": {cls: [name]}})
    gldm = extract(image, mask, spacing, params_from_mapping({"featureClass": {"gldm": [
        "GrayLevelNonUniformityNormalized", "DependencePercentage"]}}))
    uniformity = _reference(sitk_image, sitk_mask, feature_classes={"firstorder": ["Uniformity"]})
    assert _rel_diff(gldm["original_gldm_GrayLevelNonUniformityNormalized"],
                     uniformity["original_firstorder_Uniformity"]) <= RTOL
    assert gldm["original_gldm_DependencePercentage"] == 1.0


# --------------------------------------------------------------------------------------------
# Files: load_case, then both engines on the same files
# --------------------------------------------------------------------------------------------
def _write(array_zyx: np.ndarray, grid: Grid, path: Path) -> Path:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(grid.spacing_xyz_mm)
    img.SetOrigin(grid.origin_xyz_mm)
    img.SetDirection(grid.direction)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


ROTATED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)   # x index runs along world y, y index along -x


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_files_round_trip_and_match_pyradiomics(pyradiomics, tmp_path, suffix):
    image, mask, spacing = _nodule("8mm-thin-spiculated")
    labels = mask.astype(np.uint8) * 2                      # the ROI is label 2; label 1 is a decoy blob
    labels[:3, :3, :3] = 1
    grid = Grid(image.shape, spacing, (10.25, -180.5, -42.0), ROTATED)
    image_path = _write(image, grid, tmp_path / f"image{suffix}")
    mask_path = _write(labels, grid, tmp_path / f"mask{suffix}")

    case = load_case(image_path, mask_path, label=2)
    assert case.image_zyx.dtype == np.float64 and np.array_equal(case.image_zyx, image)
    assert case.mask_zyx.dtype == bool and np.array_equal(case.mask_zyx, mask)
    assert case.spacing_zyx_mm == pytest.approx(spacing, abs=1e-6)
    assert case.grid.shape_zyx == image.shape
    np.testing.assert_allclose(case.grid.origin_xyz_mm, grid.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(case.grid.direction, ROTATED, atol=1e-6)
    image_zyx, mask_zyx, spacing_zyx_mm, _ = case                     # unpacks as a tuple

    got = extract(image_zyx, mask_zyx, spacing_zyx_mm)
    ref = _reference(image_path, mask_path, settings={"label": 2})
    _compare(got, ref, f"files {suffix}, label 2")
    decoy = load_case(image_path, mask_path)                          # label 1 by default, as PyRadiomics
    assert decoy.mask_zyx.sum() == 27


def _lung_dx_mask(image_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    """The tumour of Lung_Dx-A0002: voxels above -400 HU inside the annotated boxes of their slice,
    largest 26-connected component."""
    from ctlake.dicom.reader import read_dicom_file

    z_of_uid = {}
    for path in sorted(p for p in LUNG_DX.rglob("*") if p.is_file()):
        ds = read_dicom_file(path)
        z_of_uid[str(ds.SOPInstanceUID)] = float(ds.ImagePositionPatient[2])
    boxes = np.zeros(image_zyx.shape, dtype=bool)
    for xml in LUNG_DX_BOXES.glob("*.xml"):
        if xml.stem not in z_of_uid:
            continue
        k = int(round(grid.world_xyz_to_index_zyx(np.array([grid.origin_xyz_mm[0], grid.origin_xyz_mm[1],
                                                            z_of_uid[xml.stem]]))[0]))
        for box in ET.parse(xml).getroot().iter("bndbox"):
            x0, y0, x1, y1 = (int(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes[k, y0:y1 + 1, x0:x1 + 1] = True
    assert boxes.any(), "no tumour box matched a slice of the series"
    labels, n = ndimage.label(boxes & (image_zyx > -400), structure=np.ones((3, 3, 3)))
    assert n >= 1
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def test_real_ct_series_from_its_dicom_folder_matches_pyradiomics(pyradiomics, tmp_path):
    if not (LUNG_DX.is_dir() and LUNG_DX_BOXES.is_dir()):
        pytest.fail(f"{LUNG_DX} or its boxes missing: the shared test data must sit beside the repo")
    datasets = read_series_folder(LUNG_DX)
    assembled = assemble_series([i for ds in datasets for i in slice_infos(ds)])
    stack, _ = stack_hu(assembled)
    mask = _lung_dx_mask(stack, assembled.grid)
    mask_path = _write(mask.astype(np.uint8), assembled.grid, tmp_path / "tumour.nii.gz")

    case = load_case(LUNG_DX, mask_path)
    assert case.grid == assembled.grid and np.array_equal(case.image_zyx, stack) and case.mask_zyx.sum() > 500
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(LUNG_DX)))
    series = reader.Execute()                                       # PyRadiomics' own way in: SimpleITK/GDCM
    assert np.array_equal(sitk.GetArrayFromImage(series), stack)
    got = extract(case.image_zyx, case.mask_zyx, case.spacing_zyx_mm)
    # the NIfTI mask keeps its origin in float32 (~1e-5 mm off the DICOM origin): PyRadiomics' own
    # geometryTolerance setting accepts that, as load_case does
    ref = _reference(series, sitk.ReadImage(str(mask_path)), settings={"geometryTolerance": 1e-4})
    _compare(got, ref, "Lung_Dx-A0002 tumour")


# --------------------------------------------------------------------------------------------
# load_case refusals
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def written(tmp_path):
    image = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    grid = Grid(image.shape, (2.0, 0.75, 0.75), (-72.199997, -143.0, -1.2375))
    return tmp_path, grid, _write(image, grid, tmp_path / "image.nii.gz"), mask


@pytest.mark.parametrize("change, field", [
    ({"origin_xyz_mm": (-72.199997, -142.5, -1.2375)}, "origin_xyz_mm"),
    ({"spacing_zyx_mm": (2.5, 0.75, 0.75)}, "spacing_zyx_mm"),
    ({"direction": ROTATED}, "direction"),
])
def test_mask_off_the_image_grid_is_refused(written, change, field):
    tmp_path, grid, image_path, mask = written
    moved = Grid(**{**grid.to_dict(), **change})
    mask_path = _write(mask, moved, tmp_path / "mask.nrrd")
    with pytest.raises(RadiomicsInputError) as err:
        load_case(image_path, mask_path)
    assert err.value.code == "MASK_GEOMETRY_MISMATCH"
    assert field in str(err.value) and "resample the mask" in str(err.value)


def test_mask_of_another_shape_is_refused(written):
    tmp_path, grid, image_path, mask = written
    mask_path = _write(mask[:, :, :5], Grid((4, 5, 5), grid.spacing_zyx_mm, grid.origin_xyz_mm),
                       tmp_path / "mask.nii.gz")
    with pytest.raises(RadiomicsInputError, match=r"shape_zyx \(4, 5, 5\) vs image \(4, 5, 6\)"):
        load_case(image_path, mask_path)


def test_float32_geometry_rounding_is_accepted(written):
    """NIfTI stores the origin as float32: -72.199997 comes back as -72.19999694...; still one grid."""
    tmp_path, grid, image_path, mask = written
    case = load_case(image_path, _write(mask, grid, tmp_path / "mask.nii.gz"))
    assert case.mask_zyx.sum() == 18 and case.image_zyx.dtype == np.float64


def test_missing_label_and_non_label_masks_are_refused(written):
    tmp_path, grid, image_path, mask = written
    mask_path = _write(mask, grid, tmp_path / "mask.nii.gz")
    with pytest.raises(RadiomicsInputError, match=r"no voxel has label 3.*labels present: \[0, 1\]") as err:
        load_case(image_path, mask_path, label=3)
    assert err.value.code == "EMPTY_ROI"
    soft = _write(mask * np.float32(0.5), grid, tmp_path / "soft.nii.gz")
    with pytest.raises(RadiomicsInputError) as err:
        load_case(image_path, soft)
    assert err.value.code == "NOT_A_LABEL_MAP"
    with pytest.raises(RadiomicsInputError) as err:
        load_case(image_path, tmp_path / "mask.png")
    assert err.value.code == "UNSUPPORTED_FORMAT"


def test_dicom_folder_is_read_as_its_series_without_resampling(tmp_path):
    if not FIVE_SLICES.is_dir():
        pytest.fail(f"{FIVE_SLICES} missing: the shared test data must sit beside the repo")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(FIVE_SLICES)))
    series = reader.Execute()
    grid = Grid(series.GetSize()[::-1], series.GetSpacing()[::-1], series.GetOrigin(), series.GetDirection())
    mask = np.zeros(grid.shape_zyx, dtype=np.uint8)
    mask[1:4, 4:12, 4:12] = 1
    case = load_case(FIVE_SLICES, _write(mask, grid, tmp_path / "mask.nrrd"))
    assert np.array_equal(case.image_zyx, sitk.GetArrayFromImage(series))
    assert case.spacing_zyx_mm == pytest.approx((2.5, 0.488281, 0.488281))
    np.testing.assert_allclose(case.grid.origin_xyz_mm, series.GetOrigin(), atol=1e-4)


def test_dicom_series_off_a_regular_grid_is_refused(tmp_path):
    """One slice moved by 0.8 mm (steps 2.5, 3.3, 1.7, 2.5): UNEVEN_SPACING, which only a resampler can
    fix; radiomics refuses it rather than pretend the planes are 2.5 mm apart."""
    folder = tmp_path / "series"
    shutil.copytree(FIVE_SLICES, folder)
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                               float(ds.ImagePositionPatient[2]) + 0.8]
    ds.save_as(files[2])
    mask = tmp_path / "mask.nii.gz"
    _write(np.ones((5, 16, 16), np.uint8), Grid((5, 16, 16), (2.5, 0.488281, 0.488281), (0.0, 0.0, 0.0)), mask)
    with pytest.raises(RadiomicsInputError) as err:
        load_case(folder, mask)
    assert err.value.code == "NEEDS_RESAMPLING" and "UNEVEN_SPACING" in str(err.value)
