"""One series → resampled HU volume: equal to SimpleITK on the real series, nodules where the CSV
says on synthetic series (clean, tilted, uneven), refusals by policy, and the CLI's files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from ctlake.imaging.series import SeriesRejected
from ctlake.imaging.volume import build_volume, read_series_folder
from scipy import ndimage

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom" / "ct_series" / "Lung_Dx-A0002_series3_B40f"


def _real_files() -> list[str]:
    if not REAL.is_dir():
        pytest.fail(f"{REAL} missing: the shared test data must sit beside the repo")
    reader = sitk.ImageSeriesReader()
    return list(reader.GetGDCMSeriesFileNames(str(REAL)))


def test_real_series_equals_simpleitk():
    vol = build_volume(read_series_folder(REAL), out_dtype=np.float32)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(_real_files())
    img = sitk.Cast(sitk.Clamp(sitk.Cast(reader.Execute(), sitk.sitkFloat32), sitk.sitkFloat32, -1000, 400),
                    sitk.sitkFloat32)
    g = vol.grid
    ref = sitk.Resample(img, list(reversed(g.shape_zyx)), sitk.Transform(), sitk.sitkLinear, g.origin_xyz_mm,
                        g.spacing_xyz_mm, g.direction, -1000.0, sitk.sitkFloat32)
    np.testing.assert_allclose(img.GetOrigin(), g.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), g.direction, atol=1e-6)
    expected = sitk.GetArrayFromImage(ref)
    assert vol.array.shape == expected.shape == (233, 331, 331)
    inner = (slice(1, -1),) * 3  # away from the border, where the footprint leaves the input
    assert np.abs(vol.array[inner] - expected[inner]).max() <= 0.01
    assert vol.series.qc.flags == () or not vol.series.qc.flags


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from ctlake.synth import SynthConfig, generate_cohort

    out = tmp_path_factory.mktemp("vol")
    cfg = SynthConfig(patients=4, size=160, seed=21, nodules=(2, 3), nodule_diameter_mm=(8.0, 20.0),
                      edge_cases=("gantry_tilt", "uneven_spacing", "missing_slice"), noise_scale=0.5)
    return out, generate_cohort(out, cfg)


def _centroid_near(vol, index_zyx, radius_mm):
    """Centroid (z, y, x voxels) of the nodule-dense voxels (> -600 HU) within ``radius_mm`` of the
    predicted centre: the sphere keeps vessels that touch the nodule from pulling the centroid."""
    r = int(np.ceil(radius_mm)) + 1
    lo = np.maximum(np.round(index_zyx).astype(int) - r, 0)
    hi = np.minimum(np.round(index_zyx).astype(int) + r + 1, vol.array.shape)
    cube = vol.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    near = (zz - index_zyx[0]) ** 2 + (yy - index_zyx[1]) ** 2 + (xx - index_zyx[2]) ** 2 <= radius_mm**2
    dense = (cube > -600) & near
    assert dense.sum() > 0, "no nodule at the annotated centre"
    return np.array(ndimage.center_of_mass(dense)) + lo


@pytest.mark.parametrize("case", ["clean", "gantry_tilt", "uneven_spacing"])
def test_nodules_land_where_the_csv_says(cohort, case):
    out, manifest = cohort
    series = [s for s in manifest.ct_series() if (list(s.edge_cases) or ["clean"]) == [case]]
    assert series, f"no {case} series in the cohort"
    s = series[0]
    vol = build_volume(read_series_folder(out / s.directory))
    if case != "clean":
        flag = {"gantry_tilt": "GANTRY_TILT", "uneven_spacing": "UNEVEN_SPACING"}[case]
        assert flag in vol.series.qc.flags and vol.series.needs_resampling
    notes = [a for a in manifest.annotations if a.seriesuid == s.series_uid]
    assert notes
    for a in notes:
        # ctlake pseudonymises nothing here: the files are the raw synthetic ones
        predicted = vol.grid.world_xyz_to_index_zyx(np.array([a.coordX, a.coordY, a.coordZ]))
        found = _centroid_near(vol, predicted, a.diameter_mm / 2 + 1.5)  # 1 mm voxels
        assert np.abs(found - predicted).max() <= 1.0, (case, a.diameter_mm, found, predicted)


def test_missing_slice_is_refused_by_default(cohort):
    out, manifest = cohort
    s = manifest.with_edge_case("missing_slice")[0]
    with pytest.raises(SeriesRejected) as err:
        build_volume(read_series_folder(out / s.directory))
    assert err.value.code == "MISSING_SLICES"


def test_cli_writes_nrrd_with_geometry(tmp_path):
    out = tmp_path / "v.nrrd"
    proc = subprocess.run([sys.executable, "-m", "ctlake", "volume", str(REAL), "--out", str(out),
                           "--spacing", "2", "--window=-1000,400"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    img = sitk.ReadImage(str(out))
    assert img.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    arr = sitk.GetArrayFromImage(img)
    assert arr.dtype == np.int16 and arr.min() >= -1000 and arr.max() <= 400
    bad = subprocess.run([sys.executable, "-m", "ctlake", "volume", str(tmp_path), "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "NO_DICOM" in bad.stderr
