"""`ctlake features IMAGE MASK` on the IBSI digital phantom, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PHANTOM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ibsi_digital_phantom"


def test_features_cli_on_the_ibsi_phantom(tmp_path):
    if not PHANTOM.is_dir():
        pytest.fail(f"{PHANTOM} missing: the shared test data must sit beside the repo")
    image, mask = PHANTOM / "nifti" / "image" / "phantom.nii.gz", PHANTOM / "nifti" / "mask" / "mask.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "ctlake", "features", str(image), str(mask), "--params",
                           str(PHANTOM / "Phantom.yml"), "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    features = json.loads(proc.stdout)
    # IBSI reference values for the phantom (reference_values.csv): energy 567, 74 voxels, mean 2.15
    assert features["original_firstorder_Energy"] == pytest.approx(567.0)
    assert features["original_shape_VoxelVolume"] == pytest.approx(74 * 8.0)
    assert features["original_firstorder_Mean"] == pytest.approx(2.15, abs=0.005)
    assert any(k.startswith("original_glszm_") for k in features)
    csv_out = subprocess.run([sys.executable, "-m", "ctlake", "features", str(image), str(mask)],
                             capture_output=True, text=True)
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("feature,value\n")
    bad = subprocess.run([sys.executable, "-m", "ctlake", "features", str(image), str(tmp_path / "no.nii.gz")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "error" in bad.stderr.lower()
