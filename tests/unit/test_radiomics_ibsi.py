"""Radiomics against the IBSI digital phantom (../shared/data/ibsi_digital_phantom).

Every IBSI reference value of the families implemented is checked within its tolerance (the CSV's
``tol``, else half a unit of the third significant digit, the precision the values are given to), for
every aggregation ctlake computes: the phantom's PyRadiomics settings (``Phantom.yml``: "3D, averaged"
and "3D"; ``Phantom_Combined.yml``: "3D, merged"), and the same with force2D for "2.5D, ...".
Reference rows not implemented yet are listed in NOT_IMPLEMENTED_IBSI / NOT_IMPLEMENTED_AGGREGATIONS;
a row that is neither checked nor listed fails the test, and so does a listed row that has become
implemented.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from ctlake.radiomics import extract, extract_ibsi, glcm, gldm, glrlm, glszm, load_params, ngtdm, params_from_mapping
from ctlake.radiomics.discretise import discretise
from ctlake.radiomics.mesh import marching_cubes

FAMILIES = {
    "Morphological features": "shape",
    "Intensity-based statistical features": "firstorder",
    "Intensity histogram features": "firstorder",
    "Grey level co-occurrence based features": "glcm",
    "Grey level run length based features": "glrlm",
    "Grey level size zone based features": "glszm",
    "Neighbourhood grey tone difference based features": "ngtdm",
    "Neighbouring grey level dependence based features": "gldm",
}
# (family, IBSI code) of reference rows in the families above that ctlake does not compute yet
NOT_IMPLEMENTED_IBSI = {
    "Morphological features": {"KLMA", "PBX1", "R59B", "6BDE", "RDD2", "R3ER", "7T7F", "99N0", "N365", "NPT7"},
    "Intensity histogram features": {"X6K6", "CH89", "88K1", "C3I7", "WIFQ", "1PR8", "GPMT", "3NCY", "AMMC",
                                     "WR0O", "5Z3W", "D2ZX", "WRZB", "4RNL", "CWYJ", "SLWD", "12CE", "8E6O",
                                     "VQB3", "RHQZ"},
}
# IBSI aggregation -> (parameter file, force2D). Morphology and intensity rows have no aggregation and
# use "3D, averaged"; GLSZM, NGTDM and NGLDM have one matrix per ROI ("3D") or per slice stack ("2.5D").
AGGREGATIONS = {
    "3D, averaged": ("Phantom.yml", False),
    "3D, merged": ("Phantom_Combined.yml", False),
    "3D": ("Phantom.yml", False),
    "2.5D, direction-merged": ("Phantom.yml", True),
    "2.5D, merged": ("Phantom_Combined.yml", True),
    "2.5D": ("Phantom.yml", True),
}
# per-slice features averaged over the slices: ctlake has no per-slice aggregation yet
NOT_IMPLEMENTED_AGGREGATIONS = {"2D, averaged", "2D, slice-merged", "2D"}
# whole IBSI families with no ctlake module yet
NOT_IMPLEMENTED_FAMILIES = {
    "Grey level distance zone based features", "Intensity-volume histogram features", "Local intensity features",
}


@pytest.fixture(scope="module")
def phantom_dir(shared_data: Path) -> Path:
    d = shared_data / "ibsi_digital_phantom"
    needed = ("nifti/image/phantom.nii.gz", "nifti/mask/mask.nii.gz", "reference_values.csv",
              "Phantom.nrrd", "Phantom-label.nrrd", *{yml for yml, _ in AGGREGATIONS.values()})
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


def _phantom_params(phantom_dir: Path, yml: str, force2d: bool):
    doc = yaml.safe_load((phantom_dir / yml).read_text())
    doc["setting"]["force2D"] = force2d
    return params_from_mapping(doc, source=f"{yml} (force2D {force2d})")


@pytest.fixture(scope="module")
def computed(phantom, phantom_dir: Path) -> dict[str, dict[str, float]]:
    """IBSI code -> value, per IBSI aggregation."""
    return {aggregation: extract_ibsi(*phantom, _phantom_params(phantom_dir, yml, force2d))
            for aggregation, (yml, force2d) in AGGREGATIONS.items()}


def test_phantom_matches_every_ibsi_reference_value_of_the_implemented_families(computed, references):
    checked, failures, unaccounted = 0, [], []
    for row in references:
        family, code, aggregation = row["family"], row["ibsi_code"], row["aggr_method"]
        if family not in FAMILIES or aggregation in NOT_IMPLEMENTED_AGGREGATIONS:
            continue
        values = computed[aggregation or "3D, averaged"]
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
    # 15 morphology + 18 intensity + 2 histogram; GLCM 25 and GLRLM 16 in 4 aggregations each
    # (3D averaged / merged, 2.5D direction-merged / merged); GLSZM 16, NGTDM 5, NGLDM 17 in 3D and 2.5D
    assert checked == 35 + 4 * (25 + 16) + 2 * (16 + 5 + 17)


def test_not_implemented_lists_are_accurate(computed, references):
    codes = set().union(*(values.keys() for values in computed.values()))
    listed = set().union(*NOT_IMPLEMENTED_IBSI.values())
    assert not (listed & codes), f"implemented now, remove from NOT_IMPLEMENTED_IBSI: {listed & codes}"
    families = {row["family"] for row in references} - {"family"}
    assert families == set(FAMILIES) | NOT_IMPLEMENTED_FAMILIES
    aggregations = {r["aggr_method"] for r in references if r["family"] in FAMILIES} - {""}
    assert aggregations == set(AGGREGATIONS) | NOT_IMPLEMENTED_AGGREGATIONS


def test_phantom_settings_are_all_supported(phantom_dir):
    params = load_params(phantom_dir / "Phantom.yml")
    assert not params.unsupported
    assert set(params.feature_classes) == {"firstorder", "shape", "glcm", "glrlm", "glszm", "ngtdm", "gldm"}
    assert "resampledPixelSpacing" in params.ignored and "interpolator" in params.ignored
    assert params.settings["binWidth"] == 1 and params.settings["voxelArrayShift"] == 0
    assert params.settings["gldm_a"] == 0 and params.settings["distances"] == [1]
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


# The 5 x 5 example image of the PyRadiomics GLRLM / GLSZM / GLDM documentation, as one axial slice.
EXAMPLE = np.array([[5, 2, 5, 4, 4],
                    [3, 3, 3, 1, 3],
                    [2, 1, 1, 1, 3],
                    [4, 2, 2, 2, 3],
                    [3, 5, 3, 3, 2]])[None]


def test_runs_break_at_grey_level_changes_and_at_voxels_outside_the_roi():
    line = np.array([1, 1, 2, 0, 2, 2])[None, None]  # 0 = outside the ROI
    grey, lengths, multi = glrlm.runs(line, (0, 0, 1))
    assert grey.tolist() == [1, 2, 2] and lengths.tolist() == [2, 1, 2] and multi
    grey, lengths, multi = glrlm.runs(line, (1, 0, 0))  # across the single slice: every run one voxel
    assert lengths.tolist() == [1] * 5 and not multi  # PyRadiomics drops such a direction


def test_run_length_matrix_along_rows_of_the_example():
    grey, lengths, _ = glrlm.runs(EXAMPLE, (0, 0, 1))
    p = np.zeros((5, 5), dtype=int)
    np.add.at(p, (grey - 1, lengths - 1), 1)
    assert p.tolist() == [[1, 0, 1, 0, 0], [3, 0, 1, 0, 0], [4, 1, 1, 0, 0], [1, 1, 0, 0, 0], [3, 0, 0, 0, 0]]
    # the 4 in-plane directions survive force2D; the through-plane ones are dropped (one slice)
    p_dirs, levels = glrlm.matrices(EXAMPLE, (1.0, 1.0, 1.0), force2d=True)
    assert len(p_dirs) == 4 and levels.tolist() == [1, 2, 3, 4, 5]
    assert len(glrlm.matrices(EXAMPLE, (1.0, 1.0, 1.0))[0]) == 4
    # IBSI keeps them: 9 more directions, in which each of the 25 voxels is a run of length 1
    kept, _ = glrlm.matrices(EXAMPLE, (1.0, 1.0, 1.0), drop_flat=False)
    flat = [m[:, 0].sum() == 25 and m[:, 1:].sum() == 0 for m in kept]
    assert len(kept) == 13 and sum(flat) == 9


def test_size_zones_of_the_example_are_8_connected_in_plane():
    p, levels = glszm.zone_matrix(EXAMPLE)
    # grey 2: (2,0), (3,1..3) and (4,4) touch at corners: one zone of 5 voxels, plus (0,1) alone
    assert p[0].astype(int).tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 1], [1, 0, 1, 0, 1], [1, 1, 0, 0, 0],
                                         [3, 0, 0, 0, 0]]
    assert glszm.zone_percentage(glrlm.coefficients(p, levels)) == pytest.approx(11 / 25)
    stack = np.ones((2, 1, 1), dtype=int)  # one voxel in each of two slices
    assert glszm.zone_matrix(stack)[0].tolist() == [[[0, 1]]]  # 3D: one zone of 2
    assert glszm.zone_matrix(stack, force2d=True)[0].tolist() == [[[2]]]  # 2.5D: a zone per slice


def test_dependence_matrix_of_the_example():
    p, _ = gldm.dependence_matrix(EXAMPLE, alpha=0, force2d=True)
    # grey 1 at (2,2) has 3 equal neighbours, so k = 4; the 5s have none (k = 1)
    assert p[0].astype(int).tolist() == [[0, 1, 2, 1], [1, 2, 3, 0], [1, 4, 4, 0], [1, 2, 0, 0], [3, 0, 0, 0]]
    c = glrlm.coefficients(p, np.arange(1, 6))
    assert gldm.dependence_percentage(c) == 1.0
    uniformity = ((np.bincount(EXAMPLE.ravel())[1:] / 25) ** 2).sum()  # first order Uniformity
    assert gldm.gray_level_non_uniformity_normalized(c) == pytest.approx(uniformity)
    assert gldm.FEATURES["DependencePercentage"].default is False  # deprecated in PyRadiomics


def test_ngtdm_of_a_checkerboard_and_an_isolated_voxel():
    board = np.zeros((1, 3, 6), dtype=int)
    board[0, :, :3] = [[1, 2, 1], [2, 1, 2], [1, 2, 1]]
    board[0, 1, 5] = 2  # no neighbour in the ROI
    c = ngtdm.matrix(board, force2d=True)
    # centre 1: |1 - 12/8| = 1/2; corner 1s: |1 - 5/3| = 2/3 each; edge 2s: |2 - 7/5| = 3/5 each
    assert c.n_i.tolist() == [5, 5] and c.n_vp == 10  # PyRadiomics counts the isolated 2 (difference 0)
    assert c.s_i == pytest.approx([1 / 2 + 4 * 2 / 3, 4 * 3 / 5])
    ibsi = ngtdm.matrix(board, force2d=True, exclude_isolated=True)
    assert ibsi.n_i.tolist() == [5, 4] and ibsi.s_i == pytest.approx(c.s_i)
    assert ngtdm.coarseness(ibsi) == pytest.approx(1 / (5 / 9 * (1 / 2 + 8 / 3) + 4 / 9 * 12 / 5))


def test_glrlm_merged_run_percentage_counts_every_voxel_once_per_direction(phantom):
    levels = np.where(phantom[1] == 1, phantom[0], 0)
    merged = glrlm.coefficients(*glrlm.matrices(levels, (2.0, 2.0, 2.0), weighting_norm="no_weighting"))
    averaged = glrlm.coefficients(*glrlm.matrices(levels, (2.0, 2.0, 2.0)))
    assert merged.n_p[0] == 13 * 74 and (averaged.n_p == 74).all()
    assert glrlm.run_percentage(merged)[0] == pytest.approx(glrlm.run_percentage(averaged).mean())
    assert len(glcm.directions((1,))) == 13
