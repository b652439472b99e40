"""ctlake.imaging.lung, .nodules, .patches: lung mask, nodule annotations and masks, patches,
negative candidates and patient splits.

Answers are known by construction: synthetic phantoms (ctlake.synth) with their true lung mask and
nodules, resampled to 1 mm with ctlake.imaging.resample (the truth with nearest neighbour);
partial-volume spheres of known diameter; juxtapleural spheres cut by a wall; RTSTRUCT and SEG
objects written with pydicom from a known mask and read back. The real series (TCIA
Lung-PET-CT-Dx A0002) and the LUNA16 CSV come from ../shared/data (a missing folder fails).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.imaging.grid import Grid
from ctlake.imaging.lung import LungMaskError, fill_holes_2d, lung_mask
from ctlake.imaging.nodules import (
    Box,
    NoduleError,
    SliceBox,
    Sphere,
    merge_slice_boxes,
    nodule_mask,
    otsu_threshold,
    polygon_mask_2d,
    read_luna16_csv,
    rtstruct_mask,
    seg_mask,
    voc_lesions,
)
from ctlake.imaging.patches import (
    CANDIDATE_PATCH_ZYX,
    PATCH_SIZES,
    PatchError,
    extract_patch,
    patient_split,
    sample_negative_centres,
    split_of,
)
from ctlake.imaging.resample import resample_onto, resample_to_spacing
from ctlake.synth.phantom import phantom_volume
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SERIES_DIR = "dicom/ct_series/Lung_Dx-A0002_series3_B40f"
VOC_DIR = "dicom/ct_series/annotations_voc_xml/A0002"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def phantom_grid(ph) -> Grid:
    """The Grid of an (untilted, evenly spaced) phantom: voxel (0, 0, 0) at (x0, y0, z0)."""
    g = ph.geometry
    return Grid(g.shape_zyx, g.spacing_zyx_mm, (g.origin_yx_mm[1], g.origin_yx_mm[0] + g.slice_shift_y_mm[0],
                                                g.slice_z_mm[0]))


def world_xyz(nodule) -> tuple[float, float, float]:
    z, y, x = nodule.center_zyx_mm
    return (x, y, z)


def sphere_fraction(shape_zyx, centre_zyx, diameter_mm: float, ss: int = 4) -> np.ndarray:
    """Partial-volume fraction of a sphere in each 1 mm voxel (ss³ sub-samples per voxel)."""
    off = (np.arange(ss) + 0.5) / ss - 0.5
    z, y, x = (np.arange(n, dtype=np.float64) for n in shape_zyx)
    acc = np.zeros(shape_zyx, dtype=np.float32)
    r2 = (diameter_mm / 2.0) ** 2
    for a in off:
        for b in off:
            for c in off:
                acc += (((z + a - centre_zyx[0]) ** 2)[:, None, None] + ((y + b - centre_zyx[1]) ** 2)[None, :, None]
                        + ((x + c - centre_zyx[2]) ** 2)[None, None, :]) <= r2
    return acc / ss**3


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantoms():
    """Two synthetic chests (128², 48 slices of 2 mm, 4 nodules of 6-30 mm), resampled to 1 mm;
    the lung mask computed once; truths resampled with nearest neighbour."""
    cases = []
    for seed in (0, 3):
        ph = phantom_volume(np.random.default_rng(seed), size=128, slices=48, slice_thickness_mm=2.0,
                            nodules=4, nodule_diameter_mm=(6.0, 30.0))
        grid = phantom_grid(ph)
        hu, g1 = resample_to_spacing(ph.hu, grid, (1.0, 1.0, 1.0))
        truth_lung = resample_onto(ph.lung_mask, grid, g1, order=0, window_hu=None)
        labels = resample_onto(ph.nodule_labels, grid, g1, order=0, window_hu=None)
        cases.append({"phantom": ph, "hu": hu, "grid": g1, "truth_lung": truth_lung, "labels": labels,
                      "lung": lung_mask(hu, g1.spacing_zyx_mm)})
    return cases


@pytest.fixture(scope="module")
def real_slices(shared_data: Path):
    files = sorted((shared_data / SERIES_DIR).glob("*.dcm"))
    assert len(files) == 30
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


# --------------------------------------------------------------------------------------------
# lung mask
# --------------------------------------------------------------------------------------------
def test_lung_mask_overlaps_phantom_truth(phantoms):
    for case in phantoms:
        mask, truth = case["lung"], case["truth_lung"]
        assert mask.dtype == np.bool_ and mask.shape == case["hu"].shape
        assert dice(mask, truth) > 0.9, dice(mask, truth)
        assert case["grid"].spacing_zyx_mm == (1.0, 1.0, 1.0)


def test_lung_mask_steps_on_a_drawn_chest():
    """A 40 × 140 × 160 mm box chest: air outside, a table below (a -950 HU core in 200 HU
    shells, larger than a lung), two lungs with a vessel through one (a hole to fill) and a
    thin ring of partial volume around the body; only the two lungs, vessel included, come out."""
    nz, ny, nx = 40, 140, 160
    hu = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    hu[:, 10:95, 10:150] = 40.0                       # body
    hu[:, 9, 10:150] = -600.0                         # partial-volume ring, in the lung window
    hu[:, 100:103, 5:155] = 200.0                     # table: shell, core, shell
    hu[:, 103:128, 5:155] = -950.0                    # 150 ml, more than either lung
    hu[:, 128:131, 5:155] = 200.0
    hu[:, 25:80, 20:70] = -850.0                      # right lung
    hu[:, 25:80, 90:140] = -850.0                     # left lung
    hu[:, 50:56, 40:46] = 40.0                        # a 6 mm vessel along z in the right lung
    hu[:, 30:33, 120:123] = 40.0                      # a 3 mm vessel (closing takes it)
    lungs = np.zeros_like(hu, dtype=bool)
    lungs[:, 25:80, 20:70] = True
    lungs[:, 25:80, 90:140] = True
    mask = lung_mask(hu, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(mask, lungs)
    # a 1 ml pocket beside a 110 ml lung: dropped below min_component_fraction (0.1), kept without
    small = hu.copy()
    small[:, 25:80, 90:140] = 40.0
    small[:, 40:45, 100:105] = -850.0
    assert not lung_mask(small, (1.0, 1.0, 1.0), min_volume_ml=0.5)[:, 40:45, 100:105].any()
    kept = lung_mask(small, (1.0, 1.0, 1.0), min_volume_ml=0.5, min_component_fraction=0.0, closing_radius_vox=0)
    assert kept[:, 40:45, 100:105].all() and kept.sum() == 40 * 55 * 50 + 40 * 25
    with pytest.raises(LungMaskError) as err:
        lung_mask(np.full((8, 32, 32), 40.0), (1.0, 1.0, 1.0))
    assert err.value.code == "NO_LUNG_FOUND"


def test_fill_holes_2d_area_limit():
    m = np.zeros((1, 20, 20), dtype=bool)
    m[0, 2:18, 2:18] = True
    m[0, 5:7, 5:7] = False            # 4-pixel hole
    m[0, 9:15, 9:15] = False          # 36-pixel hole
    assert fill_holes_2d(m).sum() == 256
    assert fill_holes_2d(m, max_area_vox=10).sum() == 256 - 36


# --------------------------------------------------------------------------------------------
# nodule masks
# --------------------------------------------------------------------------------------------
def test_phantom_nodules_found_from_a_luna16_csv(phantoms, tmp_path):
    """The phantoms' nodules, written as LUNA16 rows (world mm), read back and segmented: every
    centroid lies within one voxel (each axis) of the true centre; masks overlap the truth.
    Region growing (threshold halfway from lung to the seed) keeps only the solid core of a
    part-solid nodule, whose spikes may pull its centroid further: checked on solid ones."""
    for case in phantoms:
        ph, grid = case["phantom"], case["grid"]
        path = tmp_path / "annotations.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
            for n in ph.nodules:
                w.writerow(["1.2.3", *world_xyz(n), n.diameter_mm])
        annotations = read_luna16_csv(path)
        assert len(annotations) == len(ph.nodules) >= 3
        for i, (ann, n) in enumerate(zip(annotations, ph.nodules, strict=True)):
            truth_idx = grid.world_xyz_to_index_zyx(np.asarray(world_xyz(n)))
            for method in ("otsu", "region_growing") if n.texture == "solid" else ("otsu",):
                found = nodule_mask(case["hu"], grid, ann, case["lung"], method=method)
                assert np.abs(np.asarray(found.centre_index_zyx) - truth_idx).max() <= 1.0, (n, method)
                np.testing.assert_allclose(found.centre_xyz_mm, grid.index_zyx_to_world_xyz(found.centre_index_zyx))
                assert found.method == method
            truth = case["labels"] == i + 1
            assert dice(nodule_mask(case["hu"], grid, ann, case["lung"]).full(grid.shape_zyx), truth) > 0.6


def test_phantom_solid_nodule_centre_found_from_an_offset_annotation(phantoms):
    """An annotation 1 mm off the centre (as readers click) still gives the true centre."""
    rng = np.random.default_rng(7)
    checked = 0
    for case in phantoms:
        grid = case["grid"]
        for n in case["phantom"].nodules:
            if n.texture != "solid":
                continue
            off = rng.normal(size=3)
            off *= 1.0 / np.linalg.norm(off)
            ann = Sphere(tuple(np.asarray(world_xyz(n)) + off), n.diameter_mm)
            found = nodule_mask(case["hu"], grid, ann, case["lung"])
            truth_idx = grid.world_xyz_to_index_zyx(np.asarray(world_xyz(n)))
            assert np.abs(np.asarray(found.centre_index_zyx) - truth_idx).max() <= 1.0
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("diameter_mm", [6.0, 8.0, 10.0, 15.0, 20.0, 30.0])
@pytest.mark.parametrize("method", ["otsu", "region_growing"])
def test_sphere_diameters_within_1mm(diameter_mm, method):
    """A partial-volume sphere (30 HU in -850 HU lung, noise 15 HU) at a sub-voxel centre."""
    rng = np.random.default_rng(int(diameter_mm * 10))
    n = int(diameter_mm * 2 + 12)
    centre = np.full(3, n / 2.0) + rng.uniform(-0.5, 0.5, 3)
    hu = -850.0 + 880.0 * sphere_fraction((n, n, n), centre, diameter_mm) + rng.normal(0.0, 15.0, (n, n, n))
    grid = Grid((n, n, n), (1.0, 1.0, 1.0), (-20.0, 30.5, 100.0))
    found = nodule_mask(hu, grid, Sphere(tuple(grid.index_zyx_to_world_xyz(centre)), diameter_mm), None,
                        method=method)
    assert found.equivalent_diameter_mm == pytest.approx(diameter_mm, abs=1.0)
    assert found.max_diameter_mm == pytest.approx(diameter_mm, abs=1.0)
    assert found.volume_mm3 == pytest.approx(found.n_voxels * 1.0)
    assert found.volume_mm3 == pytest.approx(np.pi / 6 * diameter_mm**3, rel=0.2)
    assert np.abs(np.asarray(found.centre_index_zyx) - centre).max() < 0.25
    assert found.mask_zyx.dtype == np.bool_ and found.full((n, n, n)).sum() == found.n_voxels


def test_anisotropic_grid_and_box_roi():
    """A 12 mm sphere on a 2.5 × 0.7 × 0.7 mm grid, annotated by a box: same size in mm."""
    spacing = (2.5, 0.7, 0.7)
    shape = (16, 48, 48)
    centre_mm = np.array([20.0, 16.6, 16.9])                   # z, y, x from voxel (0, 0, 0)
    sub = 5
    z = (np.arange(shape[0]) * spacing[0])[:, None, None, None, None, None]
    y = (np.arange(shape[1]) * spacing[1])[None, :, None, None, None, None]
    x = (np.arange(shape[2]) * spacing[2])[None, None, :, None, None, None]
    o = (np.arange(sub) + 0.5) / sub - 0.5
    inside = ((z + o[:, None, None] * spacing[0] - centre_mm[0]) ** 2
              + (y + o[None, :, None] * spacing[1] - centre_mm[1]) ** 2
              + (x + o[None, None, :] * spacing[2] - centre_mm[2]) ** 2) <= 36.0
    frac = inside.reshape(*shape, -1).mean(axis=-1)
    hu = -850.0 + 880.0 * frac
    grid = Grid(shape, spacing, (-50.0, 10.0, 300.0))
    world = grid.index_zyx_to_world_xyz(centre_mm / np.asarray(spacing))
    box = Box(tuple(world - 6.0), tuple(world + 6.0))
    found = nodule_mask(hu, grid, box, None)
    assert found.equivalent_diameter_mm == pytest.approx(12.0, abs=1.0)
    np.testing.assert_allclose(found.centre_xyz_mm, world, atol=0.5)


@pytest.mark.parametrize(("radius_mm", "depth_mm"), [(6, 3), (10, 8), (15, 7)])
def test_juxtapleural_nodule_rolling_ball(radius_mm, depth_mm):
    """A sphere on a flat chest wall (x >= 50 mm), its centre ``depth_mm`` inside the lung: the
    lung mask does not hold it; the rolling-ball closing restores it, the wall stays out."""
    shape = (60, 80, 80)
    grid = Grid(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    z, y, x = np.ogrid[:60, :80, :80]
    cx = 50 - depth_mm
    ball = (z - 30) ** 2 + (y - 40) ** 2 + (x - cx) ** 2 <= radius_mm**2
    wall = np.broadcast_to(x >= 50, shape)
    hu = np.where(wall | ball, 40.0, -850.0) + np.random.default_rng(0).normal(0.0, 15.0, shape)
    lung = ~wall & ~ball
    truth = ball & ~wall
    roi = Sphere((float(cx), 40.0, 30.0), 2.0 * radius_mm)
    found = nodule_mask(hu, grid, roi, lung)
    assert dice(found.full(shape), truth) > 0.9
    assert not (found.full(shape) & wall).any()
    with pytest.raises(NoduleError) as err:
        nodule_mask(hu, grid, roi, lung, pleura="none")
    assert err.value.code == "NODULE_NOT_FOUND"


def test_otsu_threshold_by_hand():
    values = np.concatenate([np.full(700, -850.0), np.full(300, 30.0)])
    t = otsu_threshold(values)
    assert -850.0 < t < 30.0
    assert otsu_threshold(np.full(5, 7.0)) == 7.0
    with pytest.raises(ValueError):
        otsu_threshold(np.array([]))


def test_nodule_mask_errors():
    grid = Grid((20, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    hu = np.random.default_rng(1).normal(-850.0, 15.0, (20, 20, 20))
    with pytest.raises(NoduleError) as err:
        nodule_mask(hu, grid, Sphere((500.0, 0.0, 0.0), 10.0))
    assert err.value.code == "ROI_OUTSIDE_VOLUME"
    with pytest.raises(NoduleError) as err:                    # noise only: nothing to find
        nodule_mask(hu, grid, Sphere((10.0, 10.0, 10.0), 8.0))
    assert err.value.code == "NODULE_NOT_FOUND"
    with pytest.raises(NoduleError) as err:
        nodule_mask(hu[:5], grid, Sphere((10.0, 10.0, 10.0), 8.0))
    assert err.value.code == "SHAPE_MISMATCH"
    with pytest.raises(NoduleError) as err:
        Sphere((0.0, 0.0, 0.0), -1.0)
    assert err.value.code == "BAD_ANNOTATION"


# --------------------------------------------------------------------------------------------
# annotations: LUNA16 CSV, VOC boxes
# --------------------------------------------------------------------------------------------
def test_luna16_csv_real(shared_data: Path, tmp_path):
    rows = read_luna16_csv(shared_data / "luna16" / "annotations.csv")
    assert len(rows) == 1186
    assert all(isinstance(v, float) for r in rows for v in (*r.centre_xyz_mm, r.diameter_mm))
    assert all(r.diameter_mm > 0 and r.source == "luna16_csv" for r in rows)
    assert rows[0].series_instance_uid == "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
    assert rows[0].centre_xyz_mm == pytest.approx((-128.6994211, -175.3192718, -298.3875064))
    assert rows[0].diameter_mm == pytest.approx(5.651470635)
    assert len({r.series_instance_uid for r in rows}) == 601
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2,1,2,3,4\n1.2,1,x,3,4\n")
    with pytest.raises(NoduleError) as err:
        read_luna16_csv(bad)
    assert err.value.code == "BAD_ANNOTATION" and "bad.csv:3" in str(err.value)
    bad.write_text("seriesuid,coordX,coordY,diameter_mm\n")
    with pytest.raises(NoduleError, match="coordZ"):
        read_luna16_csv(bad)


def test_voc_boxes_on_the_real_series(shared_data: Path, real_slices):
    """Each box lies in its slice's plane (z = the slice's ImagePositionPatient z), its corners
    at the centres of pixels (xmin, ymin) and (xmax, ymax); the 10 boxes on consecutive slices
    are one lesion; the 8 files for slices not in this 30-slice series are reported."""
    found = voc_lesions(shared_data / VOC_DIR, real_slices)
    assert len(found.slice_boxes) == 10 and len(found.unmatched_sop_uids) == 8
    by_uid = {ds.SOPInstanceUID: ds for ds in real_slices}
    for b in found.slice_boxes:
        ds = by_uid[b.sop_instance_uid]
        px, py, pz = (float(v) for v in ds.ImagePositionPatient)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        xmin, ymin, xmax, ymax = b.pixel_box
        assert b.box.lo_xyz_mm == pytest.approx((px + xmin * dx, py + ymin * dy, pz))
        assert b.box.hi_xyz_mm == pytest.approx((px + xmax * dx, py + ymax * dy, pz))
        assert b.box.lo_xyz_mm[2] == b.box.hi_xyz_mm[2] == pytest.approx(pz) == pytest.approx(b.depth_mm)
        assert b.label == "A"
    (lesion,) = found.lesions
    zs = sorted(b.depth_mm for b in lesion.slice_boxes)
    assert zs == pytest.approx([176.0 + 8.0 * k for k in range(10)])
    assert [b.slice_index for b in lesion.slice_boxes] == list(range(12, 22))
    assert lesion.half_step_mm == pytest.approx(4.0)
    assert lesion.box.lo_xyz_mm[2] == pytest.approx(172.0) and lesion.box.hi_xyz_mm[2] == pytest.approx(252.0)
    assert lesion.annotation.roi == lesion.box and lesion.annotation.source == "voc_xml"
    # the same boxes through a Grid of the series: pixel indices come back exactly
    first = min(real_slices, key=lambda d: float(d.ImagePositionPatient[2]))
    grid = Grid((30, 512, 512), (8.0, *(float(v) for v in first.PixelSpacing)),
                tuple(float(v) for v in first.ImagePositionPatient))
    for b in found.slice_boxes:
        np.testing.assert_allclose(grid.world_xyz_to_index_zyx(np.asarray(b.box.lo_xyz_mm)),
                                   (b.slice_index, b.pixel_box[1], b.pixel_box[0]), atol=1e-6)


def test_merge_slice_boxes_by_hand():
    def sb(k: int, x0: float, label: str = "A") -> SliceBox:
        return SliceBox(f"uid{k}-{x0}", "s", label, (0, 0, 0, 0), k, float(k),
                        Box((x0, 0.0, float(k)), (x0 + 10.0, 10.0, float(k))))

    boxes = [sb(0, 0.0), sb(1, 2.0), sb(2, 4.0),        # one lesion drifting in x
             sb(1, 50.0), sb(2, 52.0),                   # a second one beside it
             sb(4, 4.0),                                 # after a gap of one slice: a new lesion
             sb(2, 0.0, "B")]                            # another label
    lesions = merge_slice_boxes(boxes, slice_step_mm=1.0)
    assert sorted((le.label, len(le.slice_boxes)) for le in lesions) == [("A", 1), ("A", 2), ("A", 3), ("B", 1)]
    first = next(le for le in lesions if len(le.slice_boxes) == 3)
    assert first.box == Box((0.0, 0.0, -0.5), (14.0, 10.0, 2.5))
    bridged = merge_slice_boxes(boxes, slice_step_mm=1.0, max_gap_slices=1)
    assert sorted(len(le.slice_boxes) for le in bridged if le.label == "A") == [2, 4]


# --------------------------------------------------------------------------------------------
# RTSTRUCT and SEG round trips
# --------------------------------------------------------------------------------------------
def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _round_trip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _contour(points_yx_vox, k: int, grid: Grid) -> Dataset:
    idx = np.array([[k, y, x] for y, x in points_yx_vox], dtype=np.float64)
    world = grid.index_zyx_to_world_xyz(idx)
    c = Dataset()
    c.ContourGeometricType = "CLOSED_PLANAR"
    c.NumberOfContourPoints = len(world)
    c.ContourData = [f"{v:.6f}" for v in world.ravel()]
    return c


def test_rtstruct_round_trip():
    """Contours along pixel edges (half-integer indices) of a known shape: a 6 × 8 rectangle on
    slices 2-4 with a 2 × 2 hole on slice 3, on an anisotropic grid off the origin."""
    grid = Grid((8, 20, 24), (2.5, 0.8, 0.7), (-100.0, 50.0, 12.5))
    truth = np.zeros(grid.shape_zyx, dtype=bool)
    truth[2:5, 5:11, 4:12] = True
    truth[3, 7:9, 6:8] = False
    rect = [(4.5, 3.5), (4.5, 11.5), (10.5, 11.5), (10.5, 3.5)]
    hole = [(6.5, 5.5), (8.5, 5.5), (8.5, 7.5), (6.5, 7.5)]
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta("1.2.840.10008.5.1.4.1.1.481.3", uid)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.481.3", uid, "RTSTRUCT"
    rois = []
    for number, name in ((1, "GTV"), (7, "other")):
        item = Dataset()
        item.ROINumber, item.ROIName = number, name
        rois.append(item)
    ds.StructureSetROISequence = rois
    gtv = Dataset()
    gtv.ReferencedROINumber = 1
    gtv.ContourSequence = [_contour(rect, k, grid) for k in (2, 3, 4)] + [_contour(hole, 3, grid)]
    point = Dataset()
    point.ContourGeometricType = "POINT"
    point.NumberOfContourPoints = 1
    point.ContourData = [0.0, 0.0, 0.0]
    other = Dataset()
    other.ReferencedROINumber = 7
    other.ContourSequence = [point]
    ds.ROIContourSequence = [gtv, other]
    back = _round_trip(ds)
    np.testing.assert_array_equal(rtstruct_mask(back, grid, "GTV"), truth)
    np.testing.assert_array_equal(rtstruct_mask(back, grid, 1), truth)
    assert not rtstruct_mask(back, grid, "other").any()
    with pytest.raises(NoduleError) as err:
        rtstruct_mask(back, grid, "missing")
    assert err.value.code == "ROI_NOT_FOUND"
    shifted = Grid(grid.shape_zyx, grid.spacing_zyx_mm, (-100.0 + 0.7, 50.0, 12.5))    # one voxel along x
    np.testing.assert_array_equal(rtstruct_mask(back, shifted, "GTV"), np.roll(truth, -1, axis=2))
    off_plane = Grid(grid.shape_zyx, grid.spacing_zyx_mm, (-100.0, 50.0, 12.5 + 1.25))  # half a slice
    with pytest.raises(NoduleError) as err:
        rtstruct_mask(back, off_plane, "GTV")
    assert err.value.code == "CONTOUR_OFF_GRID"


def test_polygon_mask_circle():
    yy, xx = np.mgrid[:40, :40]
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    poly = np.stack([20.3 + 12 * np.sin(t), 19.6 + 12 * np.cos(t)], axis=1)
    disc = (yy - 20.3) ** 2 + (xx - 19.6) ** 2 <= 144
    assert dice(polygon_mask_2d(poly, (40, 40)), disc) > 0.99


def test_seg_round_trip():
    """A binary DICOM SEG (1 bit per pixel, two segments, frames only where a segment has
    pixels) written with pydicom, read back onto the grid of its frames."""
    grid = Grid((10, 17, 21), (2.0, 0.75, 0.75), (30.0, -40.0, 75.5))
    z, y, x = np.ogrid[:10, :17, :21]
    nodule = (((z - 4.2) * 2.0) ** 2 + ((y - 8.0) * 0.75) ** 2 + ((x - 9.5) * 0.75) ** 2) <= 5.0**2
    vessel = np.zeros(grid.shape_zyx, dtype=bool)
    vessel[6:9, 2:4, 15:18] = True
    uid = generate_uid()
    seg = Dataset()
    seg.file_meta = _file_meta("1.2.840.10008.5.1.4.1.1.66.4", uid)
    seg.SOPClassUID, seg.SOPInstanceUID, seg.Modality = "1.2.840.10008.5.1.4.1.1.66.4", uid, "SEG"
    seg.SegmentationType = "BINARY"
    seg.Rows, seg.Columns = 17, 21
    seg.SamplesPerPixel, seg.PhotometricInterpretation = 1, "MONOCHROME2"
    seg.BitsAllocated, seg.BitsStored, seg.HighBit, seg.PixelRepresentation = 1, 1, 0, 0
    segments = []
    for number, label in ((1, "nodule"), (2, "vessel")):
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel = number, label
        segments.append(item)
    seg.SegmentSequence = segments
    shared = Dataset()
    ori, px = Dataset(), Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    px.PixelSpacing, px.SliceThickness = [0.75, 0.75], 2.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [ori], [px]
    seg.SharedFunctionalGroupsSequence = [shared]
    frames, per_frame = [], []
    for number, mask in ((1, nodule), (2, vessel)):
        for k in range(grid.shape_zyx[0]):
            if not mask[k].any():
                continue
            frames.append(mask[k])
            item, pos, ident = Dataset(), Dataset(), Dataset()
            pos.ImagePositionPatient = [f"{v:.4f}" for v in grid.index_zyx_to_world_xyz(np.array([k, 0, 0]))]
            ident.ReferencedSegmentNumber = number
            item.PlanePositionSequence, item.SegmentIdentificationSequence = [pos], [ident]
            per_frame.append(item)
    seg.PerFrameFunctionalGroupsSequence = per_frame
    seg.NumberOfFrames = len(frames)
    packed = np.packbits(np.stack(frames).ravel().astype(np.uint8), bitorder="little").tobytes()
    seg.PixelData = packed + b"\0" * (len(packed) % 2)
    back = _round_trip(seg)
    np.testing.assert_array_equal(seg_mask(back, grid, "nodule"), nodule)
    np.testing.assert_array_equal(seg_mask(back, grid, 2), vessel)
    with pytest.raises(NoduleError) as err:
        seg_mask(back, grid, 3)
    assert err.value.code == "SEGMENT_NOT_FOUND"
    back.SegmentationType = "LABELMAP"
    with pytest.raises(NoduleError) as err:
        seg_mask(back, grid, 1)
    assert err.value.code == "UNSUPPORTED_SEG"


# --------------------------------------------------------------------------------------------
# patches, negatives, splits
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PATCH_SIZES))
def test_patch_shape_dtype_and_centre(name):
    size = PATCH_SIZES[name]
    rng = np.random.default_rng(0)
    vol = rng.uniform(-1200.0, 1500.0, (80, 90, 100)).astype(np.float32)
    mask = rng.random((80, 90, 100)) < 0.1
    c = (40, 45, 50)
    p = extract_patch(vol, c, size, mask_zyx=mask)
    assert p.image.shape == size and p.image.dtype == np.int16
    assert p.mask is not None and p.mask.shape == size and p.mask.dtype == np.uint8
    centre_in_patch = tuple(s // 2 for s in size)
    assert p.image[centre_in_patch] == np.clip(np.rint(vol[c]), -1000, 400)
    assert p.mask[centre_in_patch] == mask[c]
    assert p.padded_fraction == 0.0 and p.start_zyx == tuple(ci - s // 2 for ci, s in zip(c, size, strict=True))
    assert p.image.min() >= -1000 and p.image.max() <= 400
    np.testing.assert_array_equal(p.mask, mask[tuple(slice(a - s // 2, a - s // 2 + s) for a, s in zip(c, size,
                                                                                                     strict=True))])


def test_patch_padding_at_edges():
    vol = np.full((40, 50, 60), 20, dtype=np.int16)
    mask = np.ones((40, 50, 60), dtype=bool)
    p = extract_patch(vol, (0, 0, 0), CANDIDATE_PATCH_ZYX, mask_zyx=mask)
    assert p.padded_fraction == pytest.approx(7 / 8)
    assert (p.image[:16] == -1000).all() and (p.image[:, :24] == -1000).all() and (p.image[:, :, :24] == -1000).all()
    assert (p.image[16:, 24:, 24:] == 20).all() and (p.mask[16:, 24:, 24:] == 1).all()
    assert p.mask[:16].sum() == 0
    far = extract_patch(vol, (39, 49, 59), (64, 64, 64))           # the far corner: also padded
    assert (far.image[:32, :32, :32] == 20).all() and (far.image[33:] == -1000).all()
    outside = extract_patch(vol, (500, 0, 0), (32, 32, 32))
    assert outside.padded_fraction == 1.0 and (outside.image == -1000).all()
    raw = extract_patch(vol.astype(np.float32) * 100, (20, 25, 30), (4, 4, 4), window_hu=None, pad_hu=-2048)
    assert (raw.image == 2000).all()


def test_patches_around_found_nodules(phantoms):
    case = phantoms[0]
    for n in case["phantom"].nodules:
        found = nodule_mask(case["hu"], case["grid"], Sphere(world_xyz(n), n.diameter_mm), case["lung"])
        p = extract_patch(case["hu"], found.centre_voxel_zyx, (64, 64, 64), mask_zyx=found.full(case["grid"].shape_zyx))
        assert p.image.dtype == np.int16 and p.mask is not None
        assert p.mask.sum() == found.n_voxels or p.padded_fraction > 0 or n.diameter_mm > 30
        assert p.mask[32, 32, 32] == 1


def test_negative_centres_inside_lung_and_away_from_nodules(phantoms):
    case = phantoms[1]
    lung, grid = case["lung"], case["grid"]
    centres = np.array([grid.world_xyz_to_index_zyx(np.asarray(world_xyz(n))) for n in case["phantom"].nodules])
    diameters = [n.diameter_mm for n in case["phantom"].nodules]
    negs = sample_negative_centres(lung, centres, 200, np.random.default_rng(5), 20.0,
                                   spacing_zyx_mm=grid.spacing_zyx_mm, nodule_diameters_mm=diameters)
    assert negs.shape == (200, 3) and negs.dtype == np.int64
    assert lung[negs[:, 0], negs[:, 1], negs[:, 2]].all()
    dist = np.sqrt((((negs[:, None, :] - centres[None]) * np.asarray(grid.spacing_zyx_mm)) ** 2).sum(-1))
    assert (dist >= 20.0 + np.asarray(diameters)[None] / 2).all()
    assert len({tuple(c) for c in negs.tolist()}) == 200
    again = sample_negative_centres(lung, centres, 200, np.random.default_rng(5), 20.0,
                                    spacing_zyx_mm=grid.spacing_zyx_mm, nodule_diameters_mm=diameters)
    np.testing.assert_array_equal(negs, again)


def test_negative_centres_when_there_is_no_room():
    lung = np.zeros((10, 10, 10), dtype=bool)
    lung[4:6, 4:6, 4:6] = True                                 # 8 voxels
    rng = np.random.default_rng(0)
    with pytest.raises(PatchError) as err:
        sample_negative_centres(lung, [[5, 5, 5]], 3, rng, 10.0)
    assert err.value.code == "NOT_ENOUGH_NEGATIVES"
    assert sample_negative_centres(lung, np.zeros((0, 3)), 8, rng, 1.0).shape == (8, 3)
    assert sample_negative_centres(lung, [[5, 5, 5]], 20, rng, 1.0, allow_fewer=True).shape[0] == 7
    with pytest.raises(PatchError) as err:
        sample_negative_centres(np.zeros((4, 4, 4), dtype=bool), [], 1, rng, 1.0)
    assert err.value.code == "EMPTY_LUNG_MASK"


def test_patient_split_by_patient_and_stable():
    patients = [f"pp-{i:05d}" for i in range(3000)]
    rows = [(p, k) for p in patients[:500] for k in range(3)]          # three nodules per patient
    split = patient_split([p for p, _ in rows], seed=11)
    assert len(split) == 500
    assert len({(p, split[p]) for p, _ in rows}) == 500                 # one split per patient
    bigger = patient_split(patients, seed=11)
    assert all(bigger[p] == s for p, s in split.items())                 # adding patients moves no one
    assert all(split_of(p, seed=11) == s for p, s in split.items())
    counts = {name: sum(1 for s in bigger.values() if s == name) / 3000 for name in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(0.7, abs=0.03)
    assert counts["val"] == pytest.approx(0.15, abs=0.03) and counts["test"] == pytest.approx(0.15, abs=0.03)
    other = patient_split(patients, seed=12)
    assert sum(other[p] != bigger[p] for p in patients) > 500            # the seed matters
    assert set(patient_split(patients[:50], fractions=(1.0, 0.0, 0.0)).values()) == {"train"}
    with pytest.raises(ValueError):
        patient_split(patients, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError):
        patient_split(patients, fractions=(0.5, 0.5))
