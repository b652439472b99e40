"""Radiomics against the IBSI digital phantom (../shared/data/ibsi_digital_phantom).

Every IBSI reference value of the families implemented is checked within its tolerance (the CSV's
``tol``, else half a unit of the third significant digit, the precision the values are given to).
Reference rows not implemented yet are listed in NOT_IMPLEMENTED_IBSI; a row that is neither checked
nor listed fails the test, and so does a listed row that has become implemented.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from ctlake.radiomics import extract, extract_ibsi, load_params
from ctlake.radiomics.discretise import discretise
from ctlake.radiomics.mesh import marching_cubes

FAMILIES = {
    "Morphological features": "shape",
    "Intensity-based statistical features": "firstorder",
    "Intensity histogram features": "firstorder",
    "Grey level co-occurrence based features": "glcm",
}
# (family, IBSI code) of reference rows in the families above that ctlake does not compute yet
NOT_IMPLEMENTED_IBSI = {
    "Morphological features": {"KLMA", "PBX1", "R59B", "6BDE", "RDD2", "R3ER", "7T7F", "99N0", "N365", "NPT7"},
    "Intensity histogram features": {"X6K6", "CH89", "88K1", "C3I7", "WIFQ", "1PR8", "GPMT", "3NCY", "AMMC",
                                     "WR0O", "5Z3W", "D2ZX", "WRZB", "4RNL", "CWYJ", "SLWD", "12CE", "8E6O",
                                     "VQB3", "RHQZ"},
}
GLCM_AGGREGATIONS = {"3D, averaged": "Phantom.yml", "3D, merged": "Phantom_Combined.yml"}
NOT_IMPLEMENTED_GLCM_AGGREGATIONS = {"2D, averaged", "2D, slice-merged", "2.5D, direction-merged", "2.5D, merged"}
# whole IBSI families with no ctlake module yet
NOT_IMPLEMENTED_FAMILIES = {
    "Grey level run length based features", "Grey level size zone based features",
    "Grey level distance zone based features", "Neighbourhood grey tone difference based features",
    "Neighbouring grey level dependence based features", "Intensity-volume histogram features",
    "Local intensity features",
}


@pytest.fixture(scope="module")
def phantom_dir(shared_data: Path) -> Path:
    d = shared_data / "ibsi_digital_phantom"
    needed = ("nifti/image/phantom.nii.gz", "nifti/mask/mask.nii.gz", "reference_values.csv",
              "Phantom.nrrd", "Phantom-label.nrrd", *GLCM_AGGREGATIONS.values())
    for rel in needed:
        if not (d / rel).is_file():
            pytest.fail(f"IBSI phantom file missing: {d / rel} (see ../shared/data/README.md)")
    return d


@pytest.fixture(scope="module")
def phantom(phantom_dir: Path):
    image = sitk.ReadImage(str(phantom_dir / "nifti/image/phantom.nii.gz"))
    mask = sitk.ReadImage(str(phantom_dir / "nifti/mask/mask.nii.gz"))
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask), image.GetSpacing()[::-1]


@pytest.fixture(scope="module")
def references(phantom_dir: Path) -> list[dict[str, str]]:
    with open(phantom_dir / "reference_values.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _tolerance(row: dict[str, str]) -> float:
    if row["tol"].strip():
        return float(row["tol"])
    value = float(row["value"])
    if value == 0:
        return 5e-4
    return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 2) * (1 + 1e-9)


def _computed(phantom, phantom_dir: Path) -> dict[str, dict[str, float]]:
    """IBSI code -> value, per GLCM aggregation (the other families do not depend on it)."""
    out = {}
    for aggregation, yml in GLCM_AGGREGATIONS.items():
        params = load_params(phantom_dir / yml)
        out[aggregation] = extract_ibsi(*phantom, params, strict=False)
    return out


def test_phantom_matches_every_ibsi_reference_value_of_the_implemented_families(phantom, phantom_dir, references):
    computed = _computed(phantom, phantom_dir)
    checked, failures, unaccounted = 0, [], []
    for row in references:
        family, code, aggregation = row["family"], row["ibsi_code"], row["aggr_method"]
        if family not in FAMILIES:
            continue
        if family == "Grey level co-occurrence based features":
            if aggregation in NOT_IMPLEMENTED_GLCM_AGGREGATIONS:
                continue
            values = computed[aggregation]
        else:
            values = computed["3D, averaged"]
        if code in NOT_IMPLEMENTED_IBSI.get(family, set()):
            continue
        if code not in values:
            unaccounted.append(f"{family} / {row['feature']} ({code}) {aggregation}")
            continue
        tol = _tolerance(row)
        got = values[code]
        checked += 1
        if not abs(got - float(row["value"])) <= tol:
            failures.append(f"{row['feature']} ({code}, {aggregation or 'n/a'}): got {got:.6g}, "
                            f"IBSI {row['value']} +/- {tol:.3g}")
    assert not unaccounted, f"reference rows neither computed nor listed as not implemented: {unaccounted}"
    assert not failures, f"{len(failures)} of {checked} IBSI values off:\n" + "\n".join(failures)
    assert checked >= 80  # 24 morphology (some listed) + 20 intensity + 2 histogram + 2 x 25 GLCM


def test_not_implemented_lists_are_accurate(phantom, phantom_dir, references):
    computed = _computed(phantom, phantom_dir)["3D, averaged"]
    listed = set().union(*NOT_IMPLEMENTED_IBSI.values())
    assert not (listed & set(computed)), f"implemented now, remove from NOT_IMPLEMENTED_IBSI: {listed & set(computed)}"
    families = {row["family"] for row in references} - {"family"}
    assert families == set(FAMILIES) | NOT_IMPLEMENTED_FAMILIES
    aggregations = {r["aggr_method"] for r in references if r["family"] == "Grey level co-occurrence based features"}
    assert aggregations == set(GLCM_AGGREGATIONS) | NOT_IMPLEMENTED_GLCM_AGGREGATIONS


def test_phantom_settings_record_what_is_not_implemented(phantom_dir):
    params = load_params(phantom_dir / "Phantom.yml")
    assert set(params.unsupported) == {f"featureClass.{c}" for c in ("glrlm", "glszm", "ngtdm", "gldm")}
    assert "resampledPixelSpacing" in params.ignored and "interpolator" in params.ignored
    assert params.settings["binWidth"] == 1 and params.settings["voxelArrayShift"] == 0
    assert load_params(phantom_dir / "Phantom_Combined.yml").settings["weightingNorm"] == "no_weighting"


def test_pyradiomics_kurtosis_is_ibsi_excess_kurtosis_plus_three(phantom, phantom_dir):
    params = load_params(phantom_dir / "Phantom.yml")
    names = extract(*phantom, params, strict=False)
    codes = extract_ibsi(*phantom, params, strict=False)
    assert names["original_firstorder_Kurtosis"] == pytest.approx(codes["IPH6"] + 3, rel=1e-12)
    assert codes["IPH6"] == pytest.approx(-0.355, abs=5e-4)
    # PyRadiomics axis lengths divide the covariance by N, IBSI's reference values by N - 1
    n = int((phantom[1] == 1).sum())
    assert codes["TDIC"] == pytest.approx(names["original_shape_MajorAxisLength"] * math.sqrt(n / (n - 1)))


def test_phantom_nrrd_and_nifti_give_the_same_features(phantom, phantom_dir):
    image = sitk.ReadImage(str(phantom_dir / "Phantom.nrrd"))
    mask = sitk.ReadImage(str(phantom_dir / "Phantom-label.nrrd"))
    params = load_params(phantom_dir / "Phantom.yml")
    a = extract(*phantom, params, strict=False)
    b = extract(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask), image.GetSpacing()[::-1], params,
                strict=False)
    assert a.keys() == b.keys()
    assert all(a[k] == pytest.approx(b[k], rel=1e-12) for k in a)


def test_fixed_bin_width_starts_at_a_multiple_of_the_width():
    # low = floor(-30 / 25) * 25 = -50: bins [-50,-25) [-25,0) [0,25) [25,50)
    d = discretise(np.array([-30.0, 0.0, 24.0, 25.0, 49.0]), mode="width", bin_width=25)
    assert d.levels.tolist() == [1, 3, 3, 4, 4]
    assert d.edges[0] == -50


def test_fixed_bin_count_puts_the_maximum_in_the_top_bin():
    d = discretise(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), mode="count", bin_count=2)
    assert d.levels.tolist() == [1, 1, 2, 2, 2]


def test_no_discretisation_refuses_non_integer_levels():
    assert discretise(np.array([1, 3, 4, 6]), mode="none").levels.tolist() == [1, 3, 4, 6]
    with pytest.raises(ValueError, match="integer grey levels"):
        discretise(np.array([0.5, 2.0]), mode="none")


def test_marching_cubes_of_one_voxel_is_an_octahedron():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[1, 1, 1] = True
    mesh = marching_cubes(mask, (1.0, 1.0, 1.0))
    assert mesh.surface_area_mm2 == pytest.approx(math.sqrt(3))  # 8 faces, edge sqrt(1/2)
    assert mesh.volume_mm3 == pytest.approx(1 / 6)  # (4/3) * 0.5^3
    assert len(mesh.vertices_mm) == 6
