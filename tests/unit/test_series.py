"""ctlake.imaging.series: sort, QC and assemble slices into one stack and its target Grid.

Tiny SliceInfos whose answer is known by construction (shuffled positions, a gap, a duplicate,
a tilt, uneven steps, mixed rows, an MR), then a synthetic cohort with every geometric edge case
planted where its manifest says, then two real series read from ../shared/data.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.dicom.flatten import instance_summary
from ctlake.dicom.reader import read_dicom_file
from ctlake.errors import ConfigError
from ctlake.imaging.grid import IDENTITY
from ctlake.imaging.series import (
    FLAGS,
    SeriesPolicy,
    SeriesRejected,
    SliceInfo,
    assemble_instances,
    assemble_series,
    series_qc,
    slice_info,
    slice_info_from_summary,
    slice_infos,
    source_slice_index_zyx,
    source_slice_positions_xyz_mm,
    stack_hu,
)
from ctlake.synth import SynthConfig, generate_cohort
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom"
LUNG_DX = DATA / "ct_series" / "Lung_Dx-A0002_series3_B40f"
FIVE_SLICES = DATA / "samples" / "ct_series_5slices_uniform"

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
MR = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def fake_slice(
    z_mm: float,
    *,
    y_mm: float = 0.0,
    x_mm: float = 0.0,
    n: int | None = None,
    rows: int = 4,
    cols: int = 4,
    spacing_yx_mm: tuple[float, float] = (0.5, 0.5),
    orientation: tuple[float, ...] = AXIAL,
    position_xyz_mm: tuple[float, float, float] | None = None,
    modality: str = "CT",
    sop_class: str = CT,
    series: str = "1.2.3",
    tilt_deg: float | None = None,
    digest: str | None = None,
    value: float | None = None,
) -> SliceInfo:
    """A slice at (x, y, z) mm; ``value`` fills its HU plane; ``n`` its instance number."""
    pos = position_xyz_mm if position_xyz_mm is not None else (x_mm, y_mm, z_mm)
    num = n if n is not None else int(round(z_mm * 100))
    return SliceInfo(
        sop_instance_uid=f"{series}.{num}.{z_mm}",
        series_instance_uid=series,
        modality=modality,
        sop_class_uid=sop_class,
        rows=rows,
        columns=cols,
        pixel_spacing_yx_mm=spacing_yx_mm,
        position_xyz_mm=pos,
        orientation=orientation,
        slice_thickness_mm=1.0,
        gantry_tilt_deg=tilt_deg,
        instance_number=num,
        pixel_digest=digest,
        pixels=None if value is None else (lambda v=value: np.full((rows, cols), v, np.float32)),
    )


def zs_of(assembled) -> list[float]:
    return [s.position_xyz_mm[2] for s in assembled.slices]


# --------------------------------------------------------------------------------------------
# Sorting and the target Grid
# --------------------------------------------------------------------------------------------
def test_shuffled_slices_are_sorted_along_the_normal_and_the_grid_starts_at_the_first():
    slices = [fake_slice(z, x_mm=-3.0, y_mm=7.0) for z in (10.0, 0.0, 5.0, 2.5, 7.5)]
    a = assemble_series(slices)
    assert a.qc.ok and a.qc.flags == () and a.decisions == {} and not a.needs_resampling
    assert zs_of(a) == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert a.grid.shape_zyx == (5, 4, 4)
    assert a.grid.spacing_zyx_mm == pytest.approx((2.5, 0.5, 0.5))
    assert a.grid.origin_xyz_mm == pytest.approx((-3.0, 7.0, 0.0))
    assert a.grid.direction == pytest.approx(IDENTITY)
    assert a.qc.median_step_mm == pytest.approx(2.5) and a.qc.n_slices == 5
    np.testing.assert_allclose(source_slice_index_zyx(a), [[k, 0, 0] for k in range(5)], atol=1e-9)


def test_pixel_spacing_is_row_spacing_y_then_column_spacing_x():
    slices = [fake_slice(z, rows=3, cols=5, spacing_yx_mm=(0.8, 0.6)) for z in (0.0, 1.0, 2.0)]
    a = assemble_series(slices)
    assert a.grid.shape_zyx == (3, 3, 5)
    assert a.grid.spacing_zyx_mm == pytest.approx((1.0, 0.8, 0.6))
    # last pixel (row 2, column 4) of slice 0: x moves by 4 columns x 0.6, y by 2 rows x 0.8
    assert a.grid.index_zyx_to_world_xyz([0, 2, 4]) == pytest.approx([2.4, 1.6, 0.0])


@pytest.mark.parametrize(
    "orientation",
    [
        (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # normal -z: positions sorted by descending z
        (1.0, 0.0, 0.0, 0.0, math.cos(0.35), -math.sin(0.35)),  # oblique by 20 degrees about x
    ],
)
def test_grid_index_k_lands_on_sorted_slice_k_for_any_orientation(orientation):
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    origin = np.array([10.0, -20.0, 30.0])
    depths = [3.0, 0.0, 6.0, 1.5, 4.5]  # shuffled, 1.5 mm apart
    slices = [
        fake_slice(0.0, n=i + 1, orientation=orientation, position_xyz_mm=tuple(origin + d * normal))
        for i, d in enumerate(depths)
    ]
    a = assemble_series(slices)
    assert a.qc.ok
    assert a.normal_xyz == pytest.approx(tuple(normal))
    assert a.grid.spacing_zyx_mm[0] == pytest.approx(1.5)
    np.testing.assert_allclose(
        a.grid.index_zyx_to_world_xyz([[k, 0, 0] for k in range(5)]), source_slice_positions_xyz_mm(a), atol=1e-9
    )
    assert [s.instance_number for s in a.slices] == [2, 4, 1, 5, 3]


# --------------------------------------------------------------------------------------------
# Spacing: gaps and uneven steps
# --------------------------------------------------------------------------------------------
def test_gap_rejected_unless_allowed():
    slices = [fake_slice(z) for z in (10.0, 0.0, 5.0, 2.5)]  # shuffled, 7.5 missing
    with pytest.raises(SeriesRejected) as err:
        assemble_series(slices)
    assert err.value.code == "MISSING_SLICES"
    assert "2.500-5.000 mm (median 2.500 mm)" in err.value.detail
    assert "5.000 mm after slice 2" in err.value.detail and "1 slice(s) missing" in err.value.detail
    assert err.value.hint and "quarantine" in err.value.hint
    assert err.value.qc.gap_after == (2,) and err.value.qc.missing_slice_count == 1
    assert len(err.value.sop_instance_uids) == 4
    again = pickle.loads(pickle.dumps(err.value))  # worker processes hand refusals back
    assert (again.code, again.detail, again.qc, str(again)) == (
        err.value.code,
        err.value.detail,
        err.value.qc,
        str(err.value),
    )

    a = assemble_series(slices, SeriesPolicy(missing_slices="resample"))
    assert a.spacing_zyx_mm[0] == pytest.approx(2.5)
    assert a.grid.shape_zyx[0] == 5 and a.needs_resampling
    assert a.decisions == {"MISSING_SLICES": "resample"} and a.qc.flags == ("MISSING_SLICES",)
    np.testing.assert_allclose(source_slice_index_zyx(a)[:, 0], [0, 1, 2, 4], atol=1e-9)


def test_a_gap_of_three_steps_is_two_missing_slices():
    qc = series_qc([fake_slice(z) for z in (0.0, 1.0, 2.0, 5.0, 6.0)])
    assert qc.flags == ("MISSING_SLICES",)
    assert qc.gap_after == (2,) and qc.missing_slice_count == 2


def test_uneven_steps_resampled_by_default_refused_on_request():
    slices = [fake_slice(z) for z in (0.0, 2.5, 5.0, 6.5, 9.0, 11.5)]  # one 1.5 mm step
    a = assemble_series(slices)
    assert a.qc.flags == ("UNEVEN_SPACING",) and a.qc.uneven_after == (2,)
    assert a.decisions == {"UNEVEN_SPACING": "resample"} and a.needs_resampling
    # a regular grid from the first to the last slice at (about) the median step
    assert a.grid.shape_zyx[0] == 6 and a.spacing_zyx_mm[0] == pytest.approx(11.5 / 5)
    with pytest.raises(SeriesRejected) as err:
        assemble_series(slices, SeriesPolicy(uneven_spacing="refuse"))
    assert err.value.code == "UNEVEN_SPACING"
    assert "steps 1.500-2.500 mm (median 2.500 mm)" in err.value.detail
    assert "1.500 mm after slice 2" in err.value.detail


def test_one_and_a_half_steps_is_uneven_not_a_missing_slice():
    qc = series_qc([fake_slice(z) for z in (0.0, 1.0, 2.0, 3.5, 4.5, 5.5)])
    assert qc.flags == ("UNEVEN_SPACING",) and qc.missing_slice_count == 0


def test_small_drifts_that_add_up_are_uneven():
    # every step within 10 % of the median, but the stack drifts 0.5 step off a regular grid
    zs = np.cumsum([0.0] + [0.92] * 6 + [1.08] * 6)
    qc = series_qc([fake_slice(float(z)) for z in zs])
    assert qc.uneven_after == () and qc.max_grid_offset_mm > 0.1
    assert qc.flags == ("UNEVEN_SPACING",)
    assert series_qc([fake_slice(float(z)) for z in zs], spacing_rtol=0.49).ok


# --------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------
def test_duplicate_with_identical_pixels_is_dropped_keeping_the_lowest_instance_number():
    slices = [
        fake_slice(0.0, n=1),
        fake_slice(2.5, n=2, value=7.0),
        fake_slice(5.0, n=3),
        fake_slice(2.5, n=9, value=7.0),
    ]
    a = assemble_series(slices)
    assert a.qc.flags == ("DUPLICATE_POSITIONS",) and a.qc.duplicate_groups == ((1, 2),)
    assert a.decisions == {"DUPLICATE_POSITIONS": "drop_duplicates"}
    assert [s.instance_number for s in a.slices] == [1, 2, 3]
    assert [s.instance_number for s in a.dropped] == [9]
    assert a.grid.shape_zyx[0] == 3 and not a.needs_resampling


def test_duplicate_with_other_pixels_or_none_to_compare_is_refused():
    differ = [
        fake_slice(0.0, n=1),
        fake_slice(2.5, n=2, value=7.0),
        fake_slice(2.5, n=3, value=8.0),
        fake_slice(5.0, n=4),
    ]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(differ)
    assert err.value.code == "DUPLICATE_POSITIONS" and "differ in pixels" in err.value.detail
    unknown = [fake_slice(0.0, n=1), fake_slice(2.5, n=2), fake_slice(2.5, n=3), fake_slice(5.0, n=4)]
    with pytest.raises(SeriesRejected, match="no pixel digest"):
        assemble_series(unknown)
    digests = [
        fake_slice(0.0, n=1),
        fake_slice(2.5, n=2, digest="ab"),
        fake_slice(2.5, n=3, digest="ab"),
        fake_slice(5.0, n=4),
    ]
    assert len(assemble_series(digests).slices) == 3
    kept = assemble_series(differ, SeriesPolicy(duplicate_positions="drop_duplicates"))
    assert [s.instance_number for s in kept.slices] == [1, 2, 4]
    with pytest.raises(SeriesRejected, match="DUPLICATE_POSITIONS"):
        assemble_series(digests, SeriesPolicy(duplicate_positions="refuse"))


def test_two_interleaved_reconstructions_split_into_two_parts():
    first = [fake_slice(z, n=i + 1) for i, z in enumerate((0.0, 2.5, 5.0))]
    second = [fake_slice(z, n=i + 11, value=float(i)) for i, z in enumerate((0.0, 2.5, 5.0))]
    a = assemble_series(second + first, SeriesPolicy(duplicate_positions="split"))
    assert [s.instance_number for s in a.slices] == [1, 2, 3] and a.part == 0
    assert a.decisions == {"DUPLICATE_POSITIONS": "split"} and "DUPLICATE_POSITIONS" in a.qc.flags
    (other,) = a.split_off
    assert [s.instance_number for s in other.slices] == [11, 12, 13] and other.part == 1
    assert other.grid == a.grid and a.rejected_parts == ()


# --------------------------------------------------------------------------------------------
# Tilt, orientation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tilt_deg", [15.0, -15.0])
def test_gantry_tilt_sheared_positions_get_an_axis_aligned_grid_that_covers_every_plane(tilt_deg):
    tan = math.tan(math.radians(tilt_deg))
    slices = [fake_slice(z, x_mm=5.0, y_mm=z * tan, tilt_deg=tilt_deg) for z in (0.0, 2.0, 4.0, 6.0)]
    a = assemble_series(slices)
    assert a.qc.flags == ("GANTRY_TILT", "NON_ORTHOGONAL")
    assert a.qc.gantry_tilt_deg == tilt_deg and a.qc.stack_angle_deg == pytest.approx(15.0)
    assert a.qc.shear_yx == pytest.approx((tan, 0.0))
    assert a.decisions == {"GANTRY_TILT": "resample", "NON_ORTHOGONAL": "resample"} and a.needs_resampling
    assert a.grid.direction == pytest.approx(IDENTITY)  # the normal, not the sheared stacking direction
    assert a.grid.spacing_zyx_mm == pytest.approx((2.0, 0.5, 0.5))
    shift_rows = 6.0 * abs(tan) / 0.5  # 3.2 rows of shear over the stack
    assert a.grid.shape_zyx == (4, 4 + math.ceil(shift_rows), 4)
    # the grid starts at the lowest y of any plane: the first slice for +15, the last for -15
    assert a.grid.origin_xyz_mm == pytest.approx((5.0, min(0.0, 6.0 * tan), 0.0))
    rows_k = [(k * 2.0 * tan - min(0.0, 6.0 * tan)) / 0.5 for k in range(4)]
    np.testing.assert_allclose(source_slice_index_zyx(a), [[k, rows_k[k], 0] for k in range(4)], atol=1e-9)
    with pytest.raises(SeriesRejected) as err:
        assemble_series(slices, SeriesPolicy(gantry_tilt="refuse", non_orthogonal="refuse"))
    assert err.value.code == "GANTRY_TILT" and err.value.refused == ("GANTRY_TILT", "NON_ORTHOGONAL")
    assert "15.00 deg off the normal" in err.value.detail


def test_tilt_in_the_header_only_needs_no_resampling():
    a = assemble_series([fake_slice(z, tilt_deg=-12.0) for z in (0.0, 1.0, 2.0)])
    assert a.qc.flags == ("GANTRY_TILT",) and not a.needs_resampling


def test_coronal_reformat_refused_or_resampled_onto_a_patient_aligned_grid():
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # normal = +y
    slices = [
        fake_slice(0.0, n=i, orientation=coronal, position_xyz_mm=(0.0, y, 0.0))
        for i, y in enumerate((0.0, 2.0, 4.0, 6.0))
    ]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(slices)
    assert err.value.code == "NOT_AXIAL" and "90.0 deg from z" in err.value.detail
    a = assemble_series(slices, SeriesPolicy(not_axial="resample"))
    assert a.needs_resampling and a.grid.direction == pytest.approx(IDENTITY)
    assert a.grid.origin_xyz_mm == pytest.approx((0.0, 0.0, -1.5))
    assert a.grid.shape_zyx == (4, 4, 4) and a.grid.spacing_zyx_mm == pytest.approx((0.5, 2.0, 0.5))


# --------------------------------------------------------------------------------------------
# Mixed geometry, not CT, too few, missing geometry
# --------------------------------------------------------------------------------------------
def test_mixed_matrix_sizes_split_into_consistent_parts():
    axial = [fake_slice(z, rows=8, cols=8) for z in (0.0, 1.0, 2.0, 3.0, 4.0)]
    small = [fake_slice(z, rows=4, cols=4) for z in (0.0, 2.0, 4.0)]
    scout = [fake_slice(z, rows=6, cols=6) for z in (0.0, 1.0)]
    a = assemble_series(small + scout + axial)
    assert a.grid.shape_zyx == (5, 8, 8) and a.part == 0
    assert a.qc.flags == ("MIXED_GEOMETRY",) and a.decisions == {"MIXED_GEOMETRY": "split"}
    (other,) = a.split_off
    assert other.grid.shape_zyx == (3, 4, 4) and other.part == 1
    (refused,) = a.rejected_parts
    assert refused.code == "TOO_FEW_SLICES" and refused.part == 2 and len(refused.sop_instance_uids) == 2
    with pytest.raises(SeriesRejected) as err:
        assemble_series(small + axial, SeriesPolicy(mixed_geometry="refuse"))
    assert err.value.code == "MIXED_GEOMETRY" and "5 x 8x8" in err.value.detail and "3 x 4x4" in err.value.detail


def test_mr_and_secondary_capture_are_not_ct():
    mr = [fake_slice(z, modality="MR", sop_class=MR) for z in (0.0, 1.0, 2.0)]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(mr)
    assert err.value.code == "NOT_CT" and "modality MR" in err.value.detail
    screen = [fake_slice(z, sop_class=SECONDARY_CAPTURE) for z in (0.0, 1.0, 2.0)]  # claims Modality CT
    assert series_qc(screen).flags == ("NOT_CT",)
    kept = assemble_series(mr, SeriesPolicy(not_ct="keep"))
    assert kept.qc.flags == ("NOT_CT",) and kept.decisions == {"NOT_CT": "keep"}


def test_too_few_slices_and_missing_geometry():
    two = [fake_slice(z) for z in (0.0, 1.0)]
    with pytest.raises(SeriesRejected, match="TOO_FEW_SLICES"):
        assemble_series(two)
    assert assemble_series(two, min_slices=2).grid.shape_zyx == (2, 4, 4)
    one = assemble_series(two[:1], SeriesPolicy(too_few_slices="keep"))
    assert one.grid.shape_zyx == (1, 4, 4) and one.qc.median_step_mm is None
    lost = [fake_slice(0.0), fake_slice(1.0), SliceInfo("9.9", "1.2.3", "CT", CT, 4, 4, (0.5, 0.5), None, AXIAL)]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(lost)
    assert err.value.code == "MISSING_GEOMETRY" and err.value.qc.missing_geometry


def test_slices_of_several_series_are_refused_but_assemble_instances_takes_them_all():
    a = [fake_slice(z, series="1.1") for z in (0.0, 1.0, 2.0)]
    b = [fake_slice(z, series="2.2") for z in (0.0, 1.0, 2.0, 4.0)]
    mr = [fake_slice(z, series="3.3", modality="MR", sop_class=MR) for z in (0.0, 1.0, 2.0)]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(a + b)
    assert err.value.code == "MULTIPLE_SERIES"
    volumes, refusals = assemble_instances(b + mr + a)
    assert [v.series_instance_uid for v in volumes] == ["1.1"]
    assert sorted((r.series_instance_uid, r.code) for r in refusals) == [("2.2", "MISSING_SLICES"), ("3.3", "NOT_CT")]


def test_policy_and_tolerances_are_validated():
    with pytest.raises(ConfigError, match="missing_slices"):
        SeriesPolicy(missing_slices="interpolate")
    with pytest.raises(ConfigError, match="unknown key"):
        SeriesPolicy.from_mapping({"missing_slice": "resample"})
    assert SeriesPolicy.from_mapping({"missing_slices": "resample"}).missing_slices == "resample"
    with pytest.raises(ConfigError, match="spacing_rtol"):
        series_qc([fake_slice(0.0)], spacing_rtol=0.7)
    with pytest.raises(TypeError):
        series_qc([fake_slice(0.0)], spacing_tol=0.1)


def test_qc_to_dict_lists_the_flags():
    d = series_qc([fake_slice(z) for z in (0.0, 1.0, 2.0, 4.0)]).to_dict()
    assert d["flags"] == ["MISSING_SLICES"] and d["steps_mm"] == [1.0, 1.0, 2.0] and d["gap_after"] == [2]
    assert set(FLAGS) <= {k.upper() for k in d}


# --------------------------------------------------------------------------------------------
# Stacking HU
# --------------------------------------------------------------------------------------------
def test_stack_hu_follows_the_sorted_order():
    slices = [fake_slice(z, value=z * 10) for z in (2.0, 0.0, 1.0)]
    a = assemble_series(slices)
    vol, pos = stack_hu(a)
    assert vol.shape == (3, 4, 4) and vol.dtype == np.float32
    assert vol[:, 0, 0].tolist() == [0.0, 10.0, 20.0]
    assert pos[:, 2].tolist() == [0.0, 1.0, 2.0]
    vol2, _ = stack_hu(a, lambda s: np.full((4, 4), s.instance_number, np.float32))
    assert vol2[:, 0, 0].tolist() == [0.0, 100.0, 200.0]
    with pytest.raises(SeriesRejected, match="PIXEL_SHAPE_MISMATCH"):
        stack_hu(a, lambda s: np.zeros((4, 5)))
    with pytest.raises(SeriesRejected, match="NO_PIXELS"):
        stack_hu(assemble_series([fake_slice(z) for z in (0.0, 1.0, 2.0)]))


# --------------------------------------------------------------------------------------------
# From DICOM: enhanced multi-frame, bronze columns, real series
# --------------------------------------------------------------------------------------------
def enhanced_ct(depths_mm: tuple[float, ...]) -> Dataset:
    """An Enhanced CT instance, one frame per depth (per-frame positions), shared geometry."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = ENHANCED_CT, "1.5.1", "1.5"
    ds.Modality, ds.InstanceNumber = "CT", 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = 2, 3, len(depths_mm)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    frames = np.stack([np.full((2, 3), 100 * i, np.int16) for i in range(len(depths_mm))])
    ds.PixelData = frames.tobytes()
    measures, orient, rescale, details = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.9], 1.0
    orient.ImageOrientationPatient = list(AXIAL)
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    details.GantryDetectorTilt = 0
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    shared.CTAcquisitionDetailsSequence = DicomSequence([details])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per = []
    for d in depths_mm:
        pos, item = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, d]
        item.PlanePositionSequence = DicomSequence([pos])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
    return ds


def test_enhanced_ct_gives_one_slice_per_frame_with_its_own_position():
    ds = enhanced_ct((3.0, 0.0, 1.5))
    infos = slice_infos(ds)
    assert [s.frame_index for s in infos] == [0, 1, 2]
    assert infos[0].pixel_spacing_yx_mm == (0.7, 0.9) and infos[0].gantry_tilt_deg == 0.0
    with pytest.raises(ValueError, match="slice_infos"):
        slice_info(ds)
    a = assemble_series([ds])
    assert a.qc.ok and [s.frame_index for s in a.slices] == [1, 2, 0]
    assert a.grid.shape_zyx == (3, 2, 3) and a.grid.spacing_zyx_mm == pytest.approx((1.5, 0.7, 0.9))
    vol, _ = stack_hu(a)
    assert vol[:, 0, 0].tolist() == [-924.0, -824.0, -1024.0]  # frames 1, 2, 0


def read_series(folder: Path) -> list[pydicom.Dataset]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        pytest.fail(f"test data missing: {folder} (see ../shared/data/README.md)")
    return [read_dicom_file(p) for p in files]


def test_bronze_columns_give_the_same_slice_as_the_header():
    ds = read_series(FIVE_SLICES)[0]
    from_header = slice_info(ds)
    from_row = slice_info_from_summary(instance_summary(ds), gantry_tilt_deg=from_header.gantry_tilt_deg)
    assert from_row == from_header and from_row.pixels is None


def test_real_chest_ct_series_assembles_clean():
    # README: 30 slices, 512², 0.6465 mm pixels, 8 mm slice step, intercept -1024
    a = assemble_series(read_series(LUNG_DX))
    assert a.qc.ok and a.qc.n_slices == 30 and a.qc.median_step_mm == pytest.approx(8.0)
    assert a.qc.min_step_mm == pytest.approx(8.0) and a.qc.max_step_mm == pytest.approx(8.0)
    assert a.grid.shape_zyx == (30, 512, 512)
    assert a.grid.spacing_zyx_mm == pytest.approx((8.0, 0.646484375, 0.646484375))
    assert a.grid.origin_xyz_mm == pytest.approx((-173.1767578125, -294.1767578125, 312.0 - 29 * 8.0))
    assert a.grid.direction == pytest.approx(IDENTITY)
    assert [s.instance_number for s in a.slices] == list(range(30, 0, -1))  # instance 1 is the top slice
    vol, pos = stack_hu(a)
    assert vol.shape == (30, 512, 512) and vol.min() >= -1024.0
    assert np.percentile(vol, 5) < -900 and vol.max() > 500  # air around the chest, bone
    np.testing.assert_allclose(pos, a.grid.index_zyx_to_world_xyz([[k, 0, 0] for k in range(30)]))


def test_pydicom_five_slice_series_assembles_clean():
    a = assemble_series(read_series(FIVE_SLICES))
    assert a.qc.ok and a.grid.shape_zyx == (5, 16, 16)
    assert a.grid.spacing_zyx_mm == pytest.approx((2.5, 0.488281, 0.488281))
    assert a.grid.origin_xyz_mm == pytest.approx((-72.199997, -143.0, -1.2375))
    assert [s.instance_number for s in a.slices] == [10, 9, 8, 7, 6]


# --------------------------------------------------------------------------------------------
# Synthetic cohort: every flag exactly where synth planted it
# --------------------------------------------------------------------------------------------
GEOMETRIC_EDGES = ("missing_slice", "duplicate_slice", "gantry_tilt", "uneven_spacing", "non_ct")
EXPECTED = {
    "missing_slice": {"MISSING_SLICES"},
    "duplicate_slice": {"DUPLICATE_POSITIONS"},
    "gantry_tilt": {"GANTRY_TILT", "NON_ORTHOGONAL"},
    "uneven_spacing": {"UNEVEN_SPACING"},
    "non_ct": set(),  # the CT series itself is clean; its MR and screen capture are the extras
}


def _read(out: Path, record) -> list[pydicom.Dataset]:
    return [read_dicom_file(out / f.path) for f in record.files]


def _expected_flags(record) -> set[str]:
    cases = record.edge_cases
    flags = set().union(*(EXPECTED[c] for c in cases)) if cases else set()
    if "missing_slice" in cases and "uneven_spacing" in cases:
        k = cases["missing_slice"]["slice_index"]
        changed = {c["between_slices"][0] for c in cases["uneven_spacing"]["changed_steps"]}
        if changed & {k - 1, k}:  # the gap absorbed a changed step: not a whole number of steps
            flags.discard("MISSING_SLICES")
    return flags


@pytest.fixture(scope="module", params=["spread", "all"])
def synth_cohort(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"synth_{request.param}")
    config = SynthConfig(
        patients=6, seed=3, size=32, slices=12, edge_cases=GEOMETRIC_EDGES, edge_case_series=request.param
    )
    return out, generate_cohort(out, config)


def test_synth_flags_are_raised_exactly_where_planted(synth_cohort):
    out, manifest = synth_cohort
    seen = set()
    for record in manifest.series:
        qc = series_qc(_read(out, record))
        if record.kind == "ct":
            assert set(qc.flags) == _expected_flags(record), (record.edge_cases, qc.flags)
            seen |= set(qc.flags)
        elif record.kind == "mr":
            assert "NOT_CT" in qc.flags and qc.modalities == ("MR",)
        else:  # a screen capture that claims Modality CT, without geometry
            assert qc.flags == ("NOT_CT", "MISSING_GEOMETRY", "TOO_FEW_SLICES")
            assert qc.modalities == ("CT",)
    assert {"MISSING_SLICES", "DUPLICATE_POSITIONS", "GANTRY_TILT", "NON_ORTHOGONAL", "UNEVEN_SPACING"} <= seen
    clean = [r for r in manifest.ct_series() if not set(r.edge_cases) - {"non_ct"}]
    assert all(series_qc(_read(out, r)).ok for r in clean)


def test_synth_measured_facts_match_the_manifest(tmp_path):
    manifest = generate_cohort(
        tmp_path, SynthConfig(patients=5, seed=3, size=32, slices=12, edge_cases=GEOMETRIC_EDGES)
    )
    by_case = {next(iter(r.edge_cases)): r for r in manifest.ct_series() if r.edge_cases}

    missing = by_case["missing_slice"]
    k = missing.edge_cases["missing_slice"]["slice_index"]
    with pytest.raises(SeriesRejected) as err:
        assemble_series(_read(tmp_path, missing))
    assert err.value.code == "MISSING_SLICES" and err.value.qc.gap_after == (k - 1,)
    step = missing.spacing_zyx_mm[0]
    assert f"{2 * step:.3f} mm after slice {k - 1}" in err.value.detail
    filled = assemble_series(_read(tmp_path, missing), SeriesPolicy(missing_slices="resample"))
    assert filled.grid.shape_zyx == missing.shape_zyx
    assert filled.grid.spacing_zyx_mm == pytest.approx(missing.spacing_zyx_mm, abs=1e-3)

    dup = by_case["duplicate_slice"]
    original, copy = dup.edge_cases["duplicate_slice"]["sop_instance_uids"]
    a = assemble_series(_read(tmp_path, dup))  # identical pixels: one kept
    assert a.decisions == {"DUPLICATE_POSITIONS": "drop_duplicates"}
    assert [s.sop_instance_uid for s in a.dropped] == [copy]
    assert original in {s.sop_instance_uid for s in a.slices} and a.grid.shape_zyx == dup.shape_zyx

    tilt = by_case["gantry_tilt"]
    a = assemble_series(_read(tmp_path, tilt))
    details = tilt.edge_cases["gantry_tilt"]
    assert a.qc.gantry_tilt_deg == pytest.approx(details["tilt_deg"])
    assert a.qc.shear_yx[0] == pytest.approx(details["shear_y_mm_per_mm_z"], abs=1e-4)
    assert a.grid.direction == pytest.approx(IDENTITY)
    shift_rows = source_slice_index_zyx(a)[:, 1]
    expected = (np.array(tilt.slice_shift_y_mm) - min(tilt.slice_shift_y_mm)) / tilt.spacing_zyx_mm[1]
    np.testing.assert_allclose(shift_rows, expected, atol=1e-3)
    assert a.grid.shape_zyx[1] >= tilt.shape_zyx[1] + math.floor(expected.max())

    uneven = by_case["uneven_spacing"]
    qc = series_qc(_read(tmp_path, uneven))
    planted = tuple(c["between_slices"][0] for c in uneven.edge_cases["uneven_spacing"]["changed_steps"])
    assert qc.uneven_after == planted and qc.median_step_mm == pytest.approx(uneven.spacing_zyx_mm[0])
    with pytest.raises(SeriesRejected, match="UNEVEN_SPACING"):
        assemble_series(_read(tmp_path, uneven), SeriesPolicy(uneven_spacing="refuse"))
