"""ctlake.imaging.resample: clip to an HU window, then resample, against SimpleITK and by hand.

SimpleITK is the reference: the same array and Grid become an ``sitk.Image``, are clamped to the
same window (clip first, as ours) and resampled with ``sitk.Resample`` (identity transform) onto
the very output grid ours used. "Away from the border" means output voxels whose two linear taps
lie inside the input on every axis (continuous index c with 0 <= c <= n - 1); the default
output grid has no other voxels. The real series (TCIA Lung-PET-CT-Dx A0002) comes from
../shared/data; a missing folder fails the test, it is never skipped.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from ctlake.dicom.reader import frame_geometry, hounsfield, read_dicom_file
from ctlake.imaging import resample
from ctlake.imaging.grid import Grid
from ctlake.imaging.resample import (
    DEFAULT_WINDOW_HU,
    Resampled,
    output_grid,
    resample_onto,
    resample_to_spacing,
)
from scipy import ndimage

CT_SERIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom" / "ct_series"
CT_SERIES = CT_SERIES / "Lung_Dx-A0002_series3_B40f"
TOL_HU = 0.01


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def smooth_volume(shape_zyx, rng: np.random.Generator, scale_hu: float = 8000.0) -> np.ndarray:
    """Smooth random HU field, roughly -2000..2500 HU: the window clips both ends."""
    return (ndimage.gaussian_filter(rng.standard_normal(shape_zyx), 2.0) * scale_hu).astype(np.float32)


def to_sitk(vol_zyx: np.ndarray, grid: Grid) -> sitk.Image:
    img = sitk.GetImageFromArray(vol_zyx)
    img.SetOrigin(grid.origin_xyz_mm)
    img.SetSpacing(grid.spacing_xyz_mm)
    img.SetDirection(grid.direction)
    return img


def sitk_resample(img: sitk.Image, grid_out: Grid, *, order: int = 1, window_hu=DEFAULT_WINDOW_HU,
                  fill: float = -1000.0, pixel_type=sitk.sitkFloat32) -> sitk.Image:
    """The reference: clamp to the window (clip first), then sitk.Resample onto grid_out."""
    if window_hu is not None:
        img = sitk.Clamp(img, sitk.sitkFloat32, *window_hu)
    interpolator = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
    return sitk.Resample(img, grid_out.shape_zyx[::-1], sitk.Transform(), interpolator, grid_out.origin_xyz_mm,
                         grid_out.spacing_xyz_mm, grid_out.direction, fill, pixel_type)


def assert_same_grid(img: sitk.Image, grid: Grid) -> None:
    assert img.GetSize() == grid.shape_zyx[::-1]
    np.testing.assert_allclose(img.GetOrigin(), grid.origin_xyz_mm, atol=1e-9)
    np.testing.assert_allclose(img.GetSpacing(), grid.spacing_xyz_mm, atol=1e-9)
    np.testing.assert_allclose(img.GetDirection(), grid.direction, atol=1e-9)


def continuous_index(grid_in: Grid, grid_out: Grid) -> np.ndarray:
    """(z, y, x, 3) continuous input indices of every output voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid_out.shape_zyx], indexing="ij"), axis=-1)
    return grid_in.world_xyz_to_index_zyx(grid_out.index_zyx_to_world_xyz(idx))


def interior(grid_in: Grid, grid_out: Grid) -> np.ndarray:
    """Output voxels whose linear footprint (floor(c), floor(c) + 1) stays inside the input."""
    c = continuous_index(grid_in, grid_out)
    n = np.asarray(grid_in.shape_zyx)
    return np.all((c >= -1e-9) & (c <= n - 1 + 1e-9), axis=-1)


def all_interior(grid_in: Grid, grid_out: Grid) -> bool:
    """interior(...).all() from the 8 corners of the output grid (the region is convex)."""
    corners = np.array([[z, y, x] for z in (0, 1) for y in (0, 1) for x in (0, 1)]) * (np.array(grid_out.shape_zyx) - 1)
    c = grid_in.world_xyz_to_index_zyx(grid_out.index_zyx_to_world_xyz(corners))
    return bool(np.all((c >= -1e-9) & (c <= np.asarray(grid_in.shape_zyx) - 1 + 1e-9)))


# --------------------------------------------------------------------------------------------
# output grid and hand-checked tiny arrays (the answers are worked out in the comments)
# --------------------------------------------------------------------------------------------
def test_output_grid_keeps_origin_direction_and_spans_input_centres():
    d = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)           # rotated 90° about z
    grid = Grid((300, 512, 512), (1.25, 0.7, 0.7), (-179.0, -200.0, -339.0), d)
    out = output_grid(grid, (1.0, 1.0, 1.0))
    # z: floor(299 × 1.25 / 1) + 1 = 374; y, x: floor(511 × 0.7) + 1 = floor(357.7) + 1 = 358
    assert out == Grid((374, 358, 358), (1.0, 1.0, 1.0), grid.origin_xyz_mm, d)
    # 3 slices 0.3 mm apart → 0.2 mm: 0.6 / 0.2 is 2.9999999999999996 in floats, still 4 slices
    assert output_grid(Grid((3, 1, 1), (0.3, 1.0, 1.0), (0.0, 0.0, 0.0)), (0.2, 1.0, 1.0)).shape_zyx == (4, 1, 1)
    assert all_interior(grid, out)                               # no voxel outside the input's centres


def test_tiny_linear_by_hand():
    vol = np.array([[[0.0, 10.0, 20.0, 30.0]]], dtype=np.float32)  # (1, 1, 4), x spacing 1 mm
    grid = Grid((1, 1, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    arr, out = resample_to_spacing(vol, grid, (1.0, 1.0, 0.5))
    assert out.shape_zyx == (1, 1, 7)
    np.testing.assert_array_equal(arr[0, 0], [0, 5, 10, 15, 20, 25, 30])
    # z: two slices 2 mm apart at 0 and 100 HU → 1 mm: 0, 50, 100
    two = np.array([0.0, 100.0], dtype=np.float32).reshape(2, 1, 1)
    result = resample_to_spacing(two, Grid((2, 1, 1), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    assert isinstance(result, Resampled) and result.grid.shape_zyx == (3, 1, 1)
    np.testing.assert_array_equal(result.array.ravel(), [0, 50, 100])


def test_tiny_nearest_by_hand_ties_round_up():
    labels = np.array([[[1, 2, 3]]], dtype=np.uint8)
    grid = Grid((1, 1, 3), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))       # x centres 0, 2, 4 mm
    arr, out = resample_to_spacing(labels, grid, (1.0, 1.0, 1.0), order=0, window_hu=None)
    # x = 0, 1, 2, 3, 4 mm → c = 0, 0.5, 1, 1.5, 2 → floor(c + 0.5) = 0, 1, 1, 2, 2 (ties round up, as ITK)
    np.testing.assert_array_equal(arr[0, 0], [1, 2, 2, 3, 3])
    assert arr.dtype == np.uint8


def test_clip_before_interpolation_not_after():
    # rib (1000 HU) next to air (-1000 HU), 2 mm apart; the 1 mm voxel between them:
    vol = np.array([1000.0, -1000.0], dtype=np.float32).reshape(1, 1, 2)
    grid = Grid((1, 1, 2), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    arr, _ = resample_to_spacing(vol, grid)
    assert arr[0, 0, 1] == pytest.approx((400.0 + -1000.0) / 2)    # clipped first: -300 HU (not 0)
    arr, _ = resample_to_spacing(vol, grid, window_hu=None)
    assert arr[0, 0, 1] == pytest.approx(0.0)
    np.testing.assert_array_equal(arr[0, 0, [0, 2]], [1000.0, -1000.0])


def test_int16_output_is_the_rounded_float32_output():
    vol = np.array([0.0, 3.0], dtype=np.float32).reshape(1, 1, 2)  # → 0, 0.75, 1.5, 2.25, 3 HU
    grid = Grid((1, 1, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    f32, _ = resample_to_spacing(vol, grid, (1.0, 1.0, 0.25))
    i16, _ = resample_to_spacing(vol, grid, (1.0, 1.0, 0.25), out_dtype=np.int16)
    np.testing.assert_array_equal(f32[0, 0], [0, 0.75, 1.5, 2.25, 3])
    np.testing.assert_array_equal(i16[0, 0], [0, 1, 2, 2, 3])      # rint: ties to even (1.5 → 2)
    assert f32.dtype == np.float32 and i16.dtype == np.int16


# --------------------------------------------------------------------------------------------
# equal to SimpleITK
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spacing_zyx_mm", "target_zyx_mm"),
    [
        ((2.5, 0.7, 0.7), (1.0, 1.0, 1.0)),       # typical chest CT → isotropic 1 mm (z grows: in-plane first)
        ((0.625, 0.8, 0.8), (1.0, 1.0, 1.0)),     # thin slices: z shrinks (z pass first)
        ((2.5, 1.0, 1.0), (1.0, 1.0, 1.0)),       # in-plane unchanged: those passes skipped
        ((0.9, 1.3, 0.55), (1.1, 0.7, 1.3)),      # non-integer ratios, up and down
        ((3.1, 0.4, 1.7), (0.8, 0.9, 2.3)),
    ],
)
def test_random_smooth_volume_equals_simpleitk(spacing_zyx_mm, target_zyx_mm):
    rng = np.random.default_rng(11)
    vol = smooth_volume((24, 40, 36), rng)
    grid = Grid((24, 40, 36), spacing_zyx_mm, (-12.5, 30.25, -101.0))
    arr, out = resample_to_spacing(vol, grid, target_zyx_mm)
    ref = sitk_resample(to_sitk(vol, grid), out)
    assert_same_grid(ref, out)
    assert all_interior(grid, out)
    assert np.abs(arr - sitk.GetArrayFromImage(ref)).max() <= TOL_HU
    assert arr.min() >= -1000.0 and arr.max() <= 400.0 and arr.dtype == np.float32


def test_any_output_grid_equals_simpleitk_inside_and_fill_outside():
    rng = np.random.default_rng(12)
    vol = smooth_volume((20, 30, 34), rng)
    grid = Grid((20, 30, 34), (2.0, 0.8, 0.7), (0.0, 0.0, 0.0))
    # starts 3 mm before the first slice and ends past the last: border and outside voxels too
    out = Grid((48, 40, 40), (0.9, 0.7, 0.75), (-2.13, -1.07, -3.0))
    arr = resample_onto(vol, grid, out, fill_value=-1024.0)
    ref = sitk.GetArrayFromImage(sitk_resample(to_sitk(vol, grid), out, fill=-1024.0))
    inside = interior(grid, out)
    assert 0 < inside.sum() < inside.size
    assert np.abs(arr - ref)[inside].max() <= TOL_HU
    c = continuous_index(grid, out)
    n = np.asarray(grid.shape_zyx)
    outside = np.any((c < -0.5 - 1e-6) | (c >= n - 0.5 + 1e-6), axis=-1)
    assert outside.any() and (arr[outside] == -1024.0).all() and (ref[outside] == -1024.0).all()
    # the half voxel beyond the edge centres repeats the edge value, as ITK does
    border = ~inside & ~outside
    assert np.abs(arr - ref)[border].max() <= TOL_HU


def test_rotated_output_direction_equals_simpleitk():
    rng = np.random.default_rng(13)
    vol = smooth_volume((16, 32, 32), rng)
    grid = Grid((16, 32, 32), (2.5, 0.7, 0.7), (0.0, 0.0, 0.0))
    a, b = np.deg2rad(20.0), np.deg2rad(-10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    out = Grid((40, 26, 26), (1.0, 1.0, 1.0), (6.0, 2.0, 3.0), tuple((rz @ rx).ravel()))
    arr = resample_onto(vol, grid, out)
    ref = sitk.GetArrayFromImage(sitk_resample(to_sitk(vol, grid), out))
    inside = interior(grid, out)
    assert inside.mean() > 0.3
    assert np.abs(arr - ref)[inside].max() <= TOL_HU
    masks = resample_onto((vol > 0).astype(np.uint8), grid, out, order=0, window_hu=None)
    ref_masks = sitk.GetArrayFromImage(
        sitk_resample(to_sitk((vol > 0).astype(np.uint8), grid), out, order=0, window_hu=None, fill=0,
                      pixel_type=sitk.sitkUInt8))
    assert (masks == ref_masks)[inside].mean() > 0.999         # float rounding may flip an exact tie


def test_nearest_neighbour_mask_equals_simpleitk_and_keeps_dtype():
    rng = np.random.default_rng(14)
    vol = smooth_volume((20, 36, 36), rng)
    labels = np.digitize(vol, [-500.0, 0.0, 500.0]).astype(np.uint8)   # 0..3
    grid = Grid((20, 36, 36), (2.5, 0.7, 0.7), (4.0, -3.0, 7.5))
    arr, out = resample_to_spacing(labels, grid, order=0, window_hu=None)   # 0.7 / 1 and 2.5 / 1: no ties
    ref = sitk_resample(to_sitk(labels, grid), out, order=0, window_hu=None, fill=0, pixel_type=sitk.sitkUInt8)
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, sitk.GetArrayFromImage(ref))
    as_bool, _ = resample_to_spacing(labels > 1, grid, order=0, window_hu=None)
    assert as_bool.dtype == np.bool_
    np.testing.assert_array_equal(as_bool, arr > 1)
    with pytest.raises(ValueError, match="window_hu=None"):
        resample_to_spacing(labels > 1, grid, order=0)


# --------------------------------------------------------------------------------------------
# uneven, missing and tilted slices
# --------------------------------------------------------------------------------------------
def test_uneven_slice_positions_by_hand():
    # slices at z = 0, 1, 3, 7 mm (gaps 1, 2, 4 mm) holding 0, 100, 0, 200 HU
    z_mm = np.array([0.0, 1.0, 3.0, 7.0])
    vol = np.array([0.0, 100.0, 0.0, 200.0], dtype=np.float32).reshape(4, 1, 1) * np.ones((1, 2, 2), np.float32)
    grid = Grid((4, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))         # nominal z spacing: not used
    arr, out = resample_to_spacing(vol, grid, slice_positions_xyz_mm=z_mm)
    assert out.shape_zyx == (8, 2, 2) and out.origin_xyz_mm == (0.0, 0.0, 0.0)
    # z = 2: halfway from 100 (z 1) to 0 (z 3); z = 5: halfway from 0 (z 3) to 200 (z 7)
    np.testing.assert_allclose(arr[:, 0, 0], [0, 100, 50, 0, 50, 100, 150, 200], atol=1e-4)
    # the same positions given as ImagePositionPatient rows
    ipp = np.stack([np.zeros(4), np.zeros(4), z_mm], axis=1)
    np.testing.assert_array_equal(resample_to_spacing(vol, grid, slice_positions_xyz_mm=ipp).array, arr)
    # nearest: z = 2 is a tie between z 1 and z 3 → the later slice (index 2); z = 5 → slice 3
    near, _ = resample_to_spacing(vol, grid, order=0, window_hu=None, slice_positions_xyz_mm=z_mm)
    np.testing.assert_array_equal(near[:, 0, 0], [0, 100, 0, 0, 0, 200, 200, 200])


def test_tilted_uneven_series_recovers_a_linear_field():
    # a gantry tilt of 15°: slice k's first row is shifted by z_k tan(15°) along y; slices uneven.
    # The field HU = 3 x - 2 y + 5 z is linear in the world, so trilinear interpolation on the
    # sheared grid must give it back exactly at every output voxel inside the scanned region.
    z_mm = np.array([0.0, 1.2, 2.5, 3.7, 6.2, 7.5, 8.7, 10.0])            # a missing slice at ~5 mm
    shift_y = z_mm * np.tan(np.deg2rad(15.0))
    ny, nx, dy, dx = 30, 28, 0.8, 0.9
    y = shift_y[:, None, None] + dy * np.arange(ny)[None, :, None]
    x = dx * np.arange(nx)[None, None, :]
    vol = (3 * x - 2 * y + 5 * z_mm[:, None, None]).astype(np.float32)
    ipp = np.stack([np.zeros(8), shift_y, z_mm], axis=1)
    grid = Grid((8, ny, nx), (1.25, dy, dx), (0.0, 0.0, 0.0))
    out = Grid((11, 20, 25), (1.0, 1.0, 1.0), (0.0, 3.0, 0.0))
    arr = resample_onto(vol, grid, out, window_hu=None, fill_value=np.nan, slice_positions_xyz_mm=ipp)
    zz, yy, xx = np.meshgrid(*[o + s * np.arange(n) for o, s, n in
                               zip((0.0, 3.0, 0.0), (1.0, 1.0, 1.0), (11, 20, 25), strict=True)], indexing="ij")
    expected = 3 * xx - 2 * yy + 5 * zz
    inside = (yy >= zz * np.tan(np.deg2rad(15.0))) & (yy <= zz * np.tan(np.deg2rad(15.0)) + dy * (ny - 1))
    assert inside.mean() > 0.5
    np.testing.assert_allclose(arr[inside], expected[inside], atol=1e-3)


@pytest.mark.parametrize("order", [1, 0])
def test_tilted_fast_path_equals_general_gather(order, monkeypatch):
    # the separable path with per-slice in-plane taps against the point-by-point gather (forced by
    # a negative direction tolerance): same voxels inside, same values, same fill outside
    rng = np.random.default_rng(16)
    vol = smooth_volume((12, 30, 26), rng)
    z_mm = np.cumsum(rng.uniform(0.8, 3.0, 12)) - 1.0
    z_mm -= z_mm[0]
    ipp = np.stack([0.31 * z_mm, -np.tan(np.deg2rad(20.0)) * z_mm, z_mm], axis=1)   # tilt, plus an x drift
    grid = Grid(vol.shape, (2.0, 0.8, 0.9), (0.0, 0.0, 0.0))
    out = Grid((26, 34, 30), (1.0, 0.9, 1.0), (-2.0, -8.0, -1.5))
    kwargs = {"order": order, "fill_value": -2000.0, "slice_positions_xyz_mm": ipp}
    if order == 0:
        kwargs["window_hu"] = None
    fast = resample_onto(vol, grid, out, **kwargs)
    monkeypatch.setattr(resample, "_DIRECTION_TOL", -1.0)
    slow = resample_onto(vol, grid, out, **kwargs)
    assert (fast == -2000.0).any() and (fast != -2000.0).mean() > 0.4
    np.testing.assert_array_equal(fast == -2000.0, slow == -2000.0)
    if order == 1:
        assert np.abs(fast - slow).max() <= 1e-3
    else:
        assert (fast == slow).mean() > 0.999                  # an exact .5 tie may round either way


def test_slice_positions_must_increase_and_start_at_the_origin():
    vol = np.zeros((3, 2, 2), np.float32)
    grid = Grid((3, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="increase strictly"):
        resample_to_spacing(vol, grid, slice_positions_xyz_mm=[0.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="first slice"):
        resample_to_spacing(vol, grid, slice_positions_xyz_mm=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        resample_to_spacing(np.zeros((3, 2, 3), np.float32), grid)
    with pytest.raises(ValueError, match="order"):
        resample_to_spacing(vol, grid, order=3)


# --------------------------------------------------------------------------------------------
# dtype and memory
# --------------------------------------------------------------------------------------------
def test_bounded_memory_no_full_size_temporary():
    rng = np.random.default_rng(15)
    vol = rng.integers(-1024, 2000, size=(60, 256, 256), dtype=np.int16)   # 7.9 MB of int16
    before = vol.copy()
    grid = Grid(vol.shape, (1.25, 0.7, 0.7), (0.0, 0.0, 0.0))
    out_bytes = np.prod(output_grid(grid).shape_zyx) * 4
    tracemalloc.start()
    try:
        arr, _ = resample_to_spacing(vol, grid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    extra = peak - out_bytes
    assert arr.dtype == np.float32 and arr.nbytes == out_bytes
    # scratch is a few planes: far below a float32 copy of the input (a float64 one is twice that)
    assert extra < vol.size * 4 / 4, f"{extra / 1e6:.1f} MB of temporaries"
    np.testing.assert_array_equal(vol, before)                            # input untouched


# --------------------------------------------------------------------------------------------
# a real series: SimpleITK's reader + Resample against ctlake's reader + stack + resample
# --------------------------------------------------------------------------------------------
def test_real_series_equals_simpleitk():
    if not CT_SERIES.is_dir():
        pytest.fail(f"test material not found at {CT_SERIES}: the shared/ folder must sit beside the repo")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT_SERIES)))
    img = reader.Execute()

    slices = []
    for path in sorted(CT_SERIES.glob("*.dcm")):
        ds = read_dicom_file(path)
        geometry = frame_geometry(ds)[0]
        slices.append((geometry.position_xyz_mm, geometry, hounsfield(ds)[0]))
    slices.sort(key=lambda s: s[0][2])                                    # by ImagePositionPatient z
    ipp = np.array([s[0] for s in slices])
    vol = np.stack([s[2] for s in slices])
    first = slices[0][1]
    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    direction = np.stack([row, col, np.cross(row, col)], axis=1)
    spacing_z = float(np.linalg.norm(ipp[-1] - ipp[0]) / (len(ipp) - 1))     # as ITK's series reader
    grid = Grid(vol.shape, (spacing_z, *first.pixel_spacing_yx_mm), tuple(ipp[0]), tuple(direction.ravel()))
    assert_same_grid(img, grid)

    arr, out = resample_to_spacing(vol, grid, (1.0, 1.0, 1.0))
    assert out.shape_zyx == (233, 331, 331)
    ref = sitk_resample(img, out)
    assert_same_grid(ref, out)
    assert all_interior(grid, out)
    assert np.abs(arr - sitk.GetArrayFromImage(ref)).max() <= TOL_HU
    # the true slice positions (all 8 mm apart here) give the same volume
    with_positions = resample_to_spacing(vol, grid, slice_positions_xyz_mm=ipp)
    assert with_positions.grid == out
    assert np.abs(with_positions.array - arr).max() <= 1e-3
