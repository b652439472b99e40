r"""Clip to an HU window, then resample a (z, y, x) volume onto a new grid (linear or nearest).

Pure numpy, single-threaded, float32 throughout; the same answers as SimpleITK's ``Resample``
with an identity transform onto the same output grid (``sitkLinear`` / ``sitkNearestNeighbor``).

Input
    ``vol_zyx``: Hounsfield units, any real dtype (``reader.hounsfield`` gives float32, the
    synthetic phantom int16; HU = stored × RescaleSlope + RescaleIntercept is the reader's job).
    Its geometry is a :class:`~ctlake.imaging.grid.Grid` (SimpleITK conventions), optionally with
    the true position of every slice (``slice_positions_xyz_mm``, see below).

Clip, then resample (DESIGN §5: "HU clipped then resampled")
    Every input voxel is first clipped to ``window_hu`` (default [-1000, 400] HU), then
    interpolated. The two orders differ next to values outside the window: a 1000 HU rib beside
    -1000 HU air, halfway between, gives -300 HU when clipped first (the mean of 400 and -1000)
    and 0 HU clipped afterwards. Clipping first keeps every output inside the window (linear
    interpolation is a convex combination) and lets bone saturate before it bleeds into its
    neighbours. ``window_hu=None`` skips clipping (masks, or HU kept whole). Nearest neighbour
    commutes with clipping, so for ``order=0`` the order does not matter.

Interpolation (ITK's rules, so that SimpleITK is a reference voxel for voxel)
    An output voxel's centre maps to a continuous input index ``c`` per axis. It is *inside*
    when ``-0.5 <= c < n - 0.5`` on every axis, else it gets ``fill_value``. Linear: the two
    taps ``floor(c)`` and ``floor(c) + 1`` blended with weight ``c - floor(c)``; in the half
    voxel beyond the first/last centre the edge value is repeated (ITK clamps its neighbours).
    Nearest: index ``floor(c + 0.5)`` (ties round up, as ITK), clamped to ``[0, n - 1]``.

Fast path: separable, streamed (:func:`resample_onto` picks it by itself)
    When the output grid has the input's direction, trilinear interpolation is three 1-D passes,
    each a 2-tap weighted sum ``a0 + w (a1 - a0)`` with precomputed tap indices and float32
    weights: along y (gather whole rows), along x (gather elements by flat index) and along z
    (blend two whole planes). The volume is streamed one plane at a time: the in-plane passes
    work on one input plane (in cache), the z pass blends two of them into an output plane, so
    extra memory is a few planes and no float64 or full-size temporary is ever made. The pass
    order is chosen from a cost model to shrink data first: in-plane before z when z grows
    (thick slices → 1 mm), z first when it shrinks; y before x when that leaves fewer elements
    for the (dearer) element gather along x.

Uneven slices, missing slices, gantry tilt (``slice_positions_xyz_mm``)
    Each input slice's Image Position (Patient) (shape (nz, 3)), or only its coordinate along
    the slice normal (shape (nz,), for an axial series its z). The slice index of a point then
    follows the actual positions piecewise linearly (extrapolated with the end steps), so uneven
    steps and gaps are interpolated across at their true distance. Slices shifted in-plane
    (gantry tilt: row k starts ``z_k tan(tilt)`` further along y) stay on the fast path: each
    input slice is resampled in-plane with its own offset taps, then blended along the normal;
    an output voxel is inside when the blended in-plane index is.

Other directions (general path)
    An output direction that differs from the input's goes through a non-separable gather: per
    output plane, bilinear in the two neighbouring input slices at each one's own in-plane
    position, blended along the normal (exactly trilinear for a regular grid; some 30x slower per voxel).

Output grid (:func:`output_grid`)
    Same origin (centre of voxel (0, 0, 0)), same direction; along each axis
    ``size = floor((n - 1) × spacing / new_spacing + 1e-6) + 1``: the output voxel centres stay
    within the span of the input voxel centres, so no output voxel is extrapolated or filled.
    (SimpleITK snippets often use ``round(n × spacing / new_spacing)``, which can put the last
    voxel up to half a new voxel past the last input centre; pass such a grid to
    :func:`resample_onto` if you want it.)

Example::

    vol_zyx, grid = resample_to_spacing(hu_zyx, grid, (1.0, 1.0, 1.0))            # image, HU
    mask_zyx = resample_onto(mask, mask_grid, grid, order=0, window_hu=None)        # its mask
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ctlake.imaging.grid import Grid

__all__ = ["DEFAULT_WINDOW_HU", "Resampled", "output_grid", "resample_onto", "resample_to_spacing"]

#: DESIGN §5: HU clip window before resampling.
DEFAULT_WINDOW_HU = (-1000.0, 400.0)

_SIZE_EPS = 1e-6            # voxels: (n - 1) s / t within this of an integer counts as that integer
_SHIFT_TOL_MM = 1e-4        # in-plane slice shifts below this are no tilt (DICOM positions are decimal)
_DIRECTION_TOL = 1e-6       # directions closer than this are the same (separable path)
# Relative cost per output element of each step (measured on one core: a plane blend streams,
# a row gather copies whole rows, an element gather along x costs ~2.4 row-gather elements).
_COST_CLIP, _COST_Z, _COST_Y, _COST_X = 0.5, 1.0, 1.0, 2.4


class Resampled(NamedTuple):
    """A resampled (z, y, x) array and its grid; unpacks as ``array, grid``."""

    array: np.ndarray
    grid: Grid


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def output_grid(
    grid: Grid,
    target_spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    slice_positions_xyz_mm: np.ndarray | None = None,
) -> Grid:
    """The grid that :func:`resample_to_spacing` writes: ``grid``'s origin and direction, the
    target spacing, and per axis ``size = floor((n - 1) × spacing / target + 1e-6) + 1`` (the
    output voxel centres stay inside the span of the input centres).

    With ``slice_positions_xyz_mm`` (see :func:`resample_onto`) the z span is the true distance
    from the first to the last slice along the slice normal, and the origin the first slice's
    position, whatever ``grid.spacing_zyx_mm[0]`` says.
    """
    target = _spacing3(target_spacing_zyx_mm, "target_spacing_zyx_mm")
    spans = [(n - 1) * s for n, s in zip(grid.shape_zyx, grid.spacing_zyx_mm, strict=True)]
    origin = grid.origin_xyz_mm
    if slice_positions_xyz_mm is not None:
        slices = _SliceGeometry.of(grid, slice_positions_xyz_mm)
        spans[0] = float(slices.normal_mm[-1] - slices.normal_mm[0])
        origin = tuple(float(v) for v in slices.origin_xyz_mm)
    shape = tuple(int(np.floor(span / t + _SIZE_EPS)) + 1 for span, t in zip(spans, target, strict=True))
    return Grid(shape, target, origin, grid.direction)  # type: ignore[arg-type]


def resample_to_spacing(
    vol_zyx: np.ndarray,
    grid: Grid,
    target_spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    order: int = 1,
    window_hu: tuple[float, float] | None = DEFAULT_WINDOW_HU,
    out_dtype: np.dtype | type | None = None,
    slice_positions_xyz_mm: np.ndarray | None = None,
) -> Resampled:
    """Clip ``vol_zyx`` to ``window_hu`` and resample it to ``target_spacing_zyx_mm`` (mm, z y x)
    on :func:`output_grid` (same origin and direction). order=1 (linear) for HU, 0 (nearest) for
    masks and labels (pass ``window_hu=None`` for those). ``out_dtype``: float32 (default for
    order 1), int16 (rounded to the nearest HU; what the lake stores) or, for order 0, the input
    dtype by default. See :func:`resample_onto` for ``slice_positions_xyz_mm``.

    Returns ``Resampled(array, grid)``.
    """
    out_grid = output_grid(grid, target_spacing_zyx_mm, slice_positions_xyz_mm=slice_positions_xyz_mm)
    arr = resample_onto(vol_zyx, grid, out_grid, order=order, window_hu=window_hu, out_dtype=out_dtype,
                        slice_positions_xyz_mm=slice_positions_xyz_mm)
    return Resampled(arr, out_grid)


def resample_onto(
    vol_zyx: np.ndarray,
    grid_in: Grid,
    grid_out: Grid,
    *,
    order: int = 1,
    window_hu: tuple[float, float] | None = DEFAULT_WINDOW_HU,
    fill_value: float | None = None,
    out_dtype: np.dtype | type | None = None,
    slice_positions_xyz_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Clip ``vol_zyx`` (on ``grid_in``) to ``window_hu``, then sample it at the voxel centres of
    ``grid_out`` (any origin, spacing, size and direction); returns a ``grid_out.shape_zyx`` array.

    order: 1 linear (HU), 0 nearest neighbour (masks, labels).
    window_hu: (low, high) HU, applied before interpolation; None: no clipping.
    fill_value: the value of output voxels outside the input (see the module docstring);
        None: the window's low end when clipping (air), else 0 (as SimpleITK's default).
    out_dtype: None: float32 for order 1, the input dtype for order 0; np.int16: values
        rounded to the nearest integer (ties to even) and clipped to int16.
    slice_positions_xyz_mm: the true position of each input slice: (nz, 3) Image Position
        (Patient), or (nz,) coordinates along the slice normal (the third direction column; for an
        axial series the z of ImagePositionPatient), strictly increasing. The in-plane axes,
        spacing and (for (nz,)) in-plane position come from ``grid_in``; its origin must be the
        first slice's position (within 1e-3 mm). None: the slices are where ``grid_in`` says.
    """
    vol = np.asarray(vol_zyx)
    if vol.ndim != 3 or tuple(vol.shape) != tuple(grid_in.shape_zyx):
        raise ValueError(f"vol_zyx has shape {vol.shape}, grid_in says {grid_in.shape_zyx}")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    window = None if window_hu is None else (float(window_hu[0]), float(window_hu[1]))
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"window_hu low {window[0]} must be < high {window[1]}")
    if window is not None and vol.dtype == np.bool_:
        raise ValueError("a boolean mask cannot be clipped to an HU window; pass window_hu=None for masks")
    if fill_value is None:
        fill_value = window[0] if window is not None else 0.0
    default_dtype = np.dtype(np.float32) if order == 1 else vol.dtype
    out = np.empty(grid_out.shape_zyx, dtype=default_dtype if out_dtype is None else np.dtype(out_dtype))

    slices = _SliceGeometry.of(grid_in, slice_positions_xyz_mm)
    if np.allclose(grid_in.matrix, grid_out.matrix, rtol=0.0, atol=_DIRECTION_TOL):
        c_z, c_y, c_x = _separable_indices(grid_in, grid_out, slices)
        _, sy, sx = grid_in.spacing_zyx_mm
        shift_y = slices.shift_v_mm / sy if slices.sheared else np.zeros(vol.shape[0])
        shift_x = slices.shift_u_mm / sx if slices.sheared else np.zeros(vol.shape[0])
        if order == 1:
            _separable_linear(vol, out, c_z, c_y, c_x, shift_y, shift_x, window, float(fill_value))
        else:
            _separable_nearest(vol, out, c_z, c_y, c_x, shift_y, shift_x, window, fill_value)
    else:
        _general(vol, out, grid_in, grid_out, slices, order, window, float(fill_value))
    return out


# --------------------------------------------------------------------------------------------
# Geometry: where the input slices are, continuous indices of the output voxels
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SliceGeometry:
    """Input slices in the frame of ``grid_in``: their coordinate along the normal (mm, from the
    world origin projected on the normal), their in-plane shifts (mm) from the first slice, and
    the first slice's position."""

    normal_mm: np.ndarray        # (nz,) strictly increasing
    shift_u_mm: np.ndarray       # (nz,) along the i (x) direction column
    shift_v_mm: np.ndarray       # (nz,) along the j (y) direction column
    origin_xyz_mm: np.ndarray    # (3,) first slice = voxel (0, 0, 0)
    regular: bool                # positions are origin + k × spacing_z × normal

    @property
    def sheared(self) -> bool:
        return bool(np.abs(self.shift_u_mm).max() > _SHIFT_TOL_MM or np.abs(self.shift_v_mm).max() > _SHIFT_TOL_MM)

    @classmethod
    def of(cls, grid: Grid, positions: np.ndarray | None) -> _SliceGeometry:
        d = grid.matrix
        u, v, w = d[:, 0], d[:, 1], d[:, 2]
        origin = np.asarray(grid.origin_xyz_mm, dtype=np.float64)
        nz = grid.shape_zyx[0]
        if positions is None:
            normal = origin @ w + grid.spacing_zyx_mm[0] * np.arange(nz, dtype=np.float64)
            zeros = np.zeros(nz)
            return cls(normal, zeros, zeros, origin, True)
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape == (nz,):
            pos = origin + (pos - origin @ w)[:, None] * w
        if pos.shape != (nz, 3):
            raise ValueError(f"slice_positions_xyz_mm has shape {pos.shape}; need ({nz}, 3) or ({nz},)")
        if not np.all(np.isfinite(pos)):
            raise ValueError("slice_positions_xyz_mm contains NaN or infinity")
        if np.abs(pos[0] - origin).max() > 1e-3:
            raise ValueError(f"grid_in.origin_xyz_mm {tuple(origin)} is not the first slice's position "
                             f"{tuple(pos[0])}; sort the slices along the normal and take the first one's origin")
        normal = pos @ w
        if nz > 1 and not np.all(np.diff(normal) > 0):
            steps = np.diff(normal)
            raise ValueError(f"slice positions along the normal must increase strictly; steps "
                             f"{steps.min():.4f}..{steps.max():.4f} mm: sort the slices and drop duplicates")
        rel = pos - pos[0]
        return cls(normal, rel @ u, rel @ v, pos[0], False)

    def slice_index(self, normal_mm: np.ndarray, spacing_z_mm: float) -> np.ndarray:
        """Continuous slice index of world coordinates along the normal: piecewise linear through
        the slice positions, extrapolated with the first/last step (the nominal spacing for one slice)."""
        t = np.asarray(normal_mm, dtype=np.float64)
        n = self.normal_mm
        if len(n) == 1:
            return (t - n[0]) / spacing_z_mm
        if self.regular:
            return (t - n[0]) * (1.0 / spacing_z_mm)
        k = np.interp(t, n, np.arange(len(n), dtype=np.float64))
        k = np.where(t < n[0], (t - n[0]) / (n[1] - n[0]), k)
        return np.where(t > n[-1], len(n) - 1 + (t - n[-1]) / (n[-1] - n[-2]), k)


def _spacing3(values, name: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3 or not all(v > 0 for v in out):
        raise ValueError(f"{name} must be 3 positive mm (z, y, x), got {values}")
    return out  # type: ignore[return-value]


def _separable_indices(grid_in: Grid, grid_out: Grid, slices: _SliceGeometry):
    """Continuous input indices (float64) of the output planes, rows and columns when both grids
    share a direction: index = (D^T (origin_out - origin_in) + spacing_out × i) / spacing_in."""
    d = grid_in.matrix
    rel = d.T @ (np.asarray(grid_out.origin_xyz_mm, dtype=np.float64) - slices.origin_xyz_mm)  # (i, j, k) mm
    nz, ny, nx = grid_out.shape_zyx
    tz, ty, tx = grid_out.spacing_zyx_mm
    _, sy, sx = grid_in.spacing_zyx_mm
    c_x = (rel[0] + tx * np.arange(nx, dtype=np.float64)) * (1.0 / sx)
    c_y = (rel[1] + ty * np.arange(ny, dtype=np.float64)) * (1.0 / sy)
    along = rel[2] + tz * np.arange(nz, dtype=np.float64)        # mm from the first slice, along the normal
    if slices.regular:
        c_z = along * (1.0 / grid_in.spacing_zyx_mm[0])
    else:
        c_z = slices.slice_index(slices.normal_mm[0] + along, grid_in.spacing_zyx_mm[0])
    return c_z, c_y, c_x


@dataclass(frozen=True)
class _Taps:
    """Linear taps of one axis: output i = a[i0] + w (a[i1] - a[i0]), clamped at the edges."""

    i0: np.ndarray   # intp
    i1: np.ndarray   # intp
    w: np.ndarray    # float32 in [0, 1]
    identity: bool   # output i is input i exactly: the pass can be skipped

    @classmethod
    def linear(cls, c: np.ndarray, n: int) -> _Taps:
        i0 = np.clip(np.floor(c), 0, max(n - 2, 0)).astype(np.intp)
        w = np.clip(c - i0, 0.0, 1.0)
        i1 = np.minimum(i0 + 1, n - 1)
        if n == 1:
            w = np.zeros_like(w)
        identity = len(c) == n and bool(np.all(np.abs(c - np.arange(n)) < 1e-9))
        return cls(i0, i1, w.astype(np.float32), identity)


def _inside_range(c: np.ndarray, n: int) -> tuple[int, int]:
    """[lo, hi) of the (monotone increasing) output indices with -0.5 <= c < n - 0.5."""
    inside = np.flatnonzero((c >= -0.5) & (c < n - 0.5))
    if len(inside) == 0:
        return 0, 0
    return int(inside[0]), int(inside[-1]) + 1


def _nearest(c: np.ndarray, n: int) -> np.ndarray:
    """ITK's nearest index: floor(c + 0.5) (ties round up), clamped to [0, n - 1]."""
    return np.clip(np.floor(c + 0.5), 0, n - 1).astype(np.intp)


def _fill_outside(plane: np.ndarray, c_y: np.ndarray, c_x: np.ndarray, n_yx: tuple[int, int], fill) -> None:
    """Set the rows and columns of an output plane whose input index is outside to ``fill``."""
    ylo, yhi = _inside_range(c_y, n_yx[0])
    xlo, xhi = _inside_range(c_x, n_yx[1])
    plane[:ylo] = fill
    plane[yhi:] = fill
    plane[:, :xlo] = fill
    plane[:, xhi:] = fill


def _any_outside(c: np.ndarray, n: int) -> bool:
    return bool(len(c)) and not (c[0] >= -0.5 and c[-1] < n - 0.5)


# --------------------------------------------------------------------------------------------
# Separable linear path
# --------------------------------------------------------------------------------------------
def _lerp_into(a: np.ndarray, b: np.ndarray, w, out: np.ndarray) -> np.ndarray:
    """out = a + w (b - a), in float32, without temporaries (``out`` may be ``b``)."""
    np.subtract(b, a, out=out)
    np.multiply(out, w, out=out)
    np.add(out, a, out=out)
    return out


class _Plane:
    """Clip one input plane and resample it in-plane (y then x, or x then y, whichever gathers
    fewer elements along x) into an output-sized plane, edges clamped, reusing its scratch
    buffers: one plane and its intermediates stay in cache. The taps are those of continuous
    indices ``c_y - shift_y``, ``c_x - shift_x`` (voxels; a sheared slice's own offsets)."""

    def __init__(self, shape_in: tuple[int, int], c_y: np.ndarray, c_x: np.ndarray, window) -> None:
        ny, nx = shape_in
        my, mx = len(c_y), len(c_x)
        self.shape_in, self.c_y, self.c_x, self.window = shape_in, c_y, c_x, window
        self.clipped = np.empty((ny, nx), np.float32)
        self.int_buffer: np.ndarray | None = None
        self.shift: tuple[float, float] | None = None
        self.x_shift: float | None = None
        self.y_first = _COST_Y * my * nx + _COST_X * my * mx <= _COST_X * ny * mx + _COST_Y * my * mx
        rows = my if self.y_first else ny          # rows seen by the x pass
        cols = nx if self.y_first else mx          # columns seen by the y pass
        self.flat_rows = np.arange(rows, dtype=np.intp)[:, None] * nx
        self.y0 = np.empty((my, cols), np.float32)
        self.y1 = np.empty((my, cols), np.float32)
        self.x0 = np.empty((rows, mx), np.float32)
        self.x1 = np.empty((rows, mx), np.float32)
        self.set_shift(0.0, 0.0)

    def set_shift(self, shift_y: float, shift_x: float) -> None:
        if self.shift == (shift_y, shift_x):
            return
        self.shift = (shift_y, shift_x)
        self.ty = _Taps.linear(self.c_y - shift_y, self.shape_in[0])
        self.wy = self.ty.w[:, None]
        if self.x_shift != shift_x:
            self.x_shift = shift_x
            self.tx = _Taps.linear(self.c_x - shift_x, self.shape_in[1])
            self.fx0 = (self.flat_rows + self.tx.i0[None, :]).ravel()
            self.fx1 = (self.flat_rows + self.tx.i1[None, :]).ravel()

    def clip(self, plane: np.ndarray) -> np.ndarray:
        """The input plane as float32, clipped to the window. Integer input with a whole-number
        window is clipped in its own dtype, then converted (the same numbers, 3x faster than
        numpy's float clip)."""
        window = self.window
        if window is not None and np.issubdtype(plane.dtype, np.integer) and float(window[0]).is_integer() \
                and float(window[1]).is_integer():
            if self.int_buffer is None or self.int_buffer.dtype != plane.dtype:
                self.int_buffer = np.empty(plane.shape, plane.dtype)
            _clip_in_dtype(plane, window, out=self.int_buffer)
            np.copyto(self.clipped, self.int_buffer, casting="unsafe")
            return self.clipped
        np.copyto(self.clipped, plane, casting="unsafe")
        if window is not None:
            np.clip(self.clipped, np.float32(window[0]), np.float32(window[1]), out=self.clipped)
        return self.clipped

    def _y(self, a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if self.ty.identity:
            return a if out is None else _copy(a, out)
        n = a.shape[1]
        y0, y1 = self.y0[:, :n], self.y1[:, :n]
        np.take(a, self.ty.i0, axis=0, out=y0, mode="clip")
        np.take(a, self.ty.i1, axis=0, out=y1, mode="clip")
        return _lerp_into(y0, y1, self.wy, y1 if out is None else out)

    def _x(self, a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if self.tx.identity:
            return a if out is None else _copy(a, out)
        flat = np.ascontiguousarray(a).reshape(-1)
        np.take(flat, self.fx0, out=self.x0.reshape(-1), mode="clip")
        np.take(flat, self.fx1, out=self.x1.reshape(-1), mode="clip")
        return _lerp_into(self.x0, self.x1, self.tx.w, self.x1 if out is None else out)

    def inplane(self, a: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Bilinear resample of float32 plane ``a`` into ``out`` (float32, output rows × cols)."""
        if self.y_first:
            return self._x(self._y(a, None), out)
        return self._y(self._x(a, None), out)


def _copy(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, a)
    return out


class _Cache:
    """The last two planes made by ``make(k, out)``, keyed by input slice index (the z pass asks
    for k0 <= k1 in non-decreasing order, so each plane is made once)."""

    def __init__(self, shape: tuple[int, int], make) -> None:
        self.make = make
        self.buffers = [np.empty(shape, np.float32), np.empty(shape, np.float32)]
        self.keys: list[int | None] = [None, None]
        self.next = 0

    def get(self, k: int) -> np.ndarray:
        for key, buf in zip(self.keys, self.buffers, strict=True):
            if key == k:
                return buf
        slot = self.next
        self.next = 1 - slot
        self.keys[slot] = None
        self.make(k, self.buffers[slot])
        self.keys[slot] = k
        return self.buffers[slot]

    def pair(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        a = self.get(k0)
        self.next = 0 if a is self.buffers[1] else 1     # keep k0 while k1 is made
        return a, self.get(k1)


def _store(src: np.ndarray, dst: np.ndarray, scratch: np.ndarray | None, value_range=None) -> None:
    """Write a float32 plane into the output plane; for integer outputs rounded (ties to even)
    in ``scratch`` and clipped to the dtype's range unless ``value_range`` (low, high) says the
    values fit (``src`` may be ``scratch``; a cached plane is never modified)."""
    if dst.dtype == np.float32:
        if src is not dst:
            np.copyto(dst, src)
        return
    if np.issubdtype(dst.dtype, np.integer):
        info = np.iinfo(dst.dtype)
        np.rint(src, out=scratch)
        if value_range is None or value_range[0] < info.min or value_range[1] > info.max:
            np.clip(scratch, info.min, info.max, out=scratch)
        src = scratch
    np.copyto(dst, src, casting="unsafe")


def _separable_linear(vol, out, c_z, c_y, c_x, shift_y, shift_x, window, fill: float) -> None:
    """Linear resampling as 1-D passes, streamed plane by plane. ``shift_y``/``shift_x``: each
    input slice's in-plane offset in input voxels (non-zero for a tilted series)."""
    nz_in, ny_in, nx_in = vol.shape
    nz, ny, nx = out.shape
    tz = _Taps.linear(c_z, nz_in)
    zlo, zhi = _inside_range(c_z, nz_in)
    plane = _Plane((ny_in, nx_in), c_y, c_x, window)
    sheared = bool(np.any(shift_y) or np.any(shift_x))
    direct = out.dtype == np.float32
    scratch = np.empty((ny, nx), np.float32)
    edges = sheared or _any_outside(c_y, ny_in) or _any_outside(c_x, nx_in)
    value_range = None if window is None else (min(window[0], fill), max(window[1], fill))

    # pass order: in-plane first (each needed input plane once, then blend small planes) or z
    # first (blend full-size planes, then in-plane for each output plane); the cheaper one
    needed = len(np.unique(np.concatenate([tz.i0[zlo:zhi], tz.i1[zlo:zhi]])))
    n_out = zhi - zlo
    rows_x, cols_y = (ny, nx_in) if plane.y_first else (ny_in, nx)
    per_plane = ((0 if plane.ty.identity else _COST_Y * ny * cols_y)
                 + (0 if plane.tx.identity else _COST_X * rows_x * nx))
    cost_inplane_first = needed * (_COST_CLIP * ny_in * nx_in + per_plane) + n_out * _COST_Z * ny * nx
    cost_z_first = needed * _COST_CLIP * ny_in * nx_in + n_out * (_COST_Z * ny_in * nx_in + per_plane)
    inplane_first = sheared or cost_inplane_first <= cost_z_first

    def make_inplane(k: int, buf: np.ndarray) -> None:
        plane.set_shift(float(shift_y[k]), float(shift_x[k]))
        plane.inplane(plane.clip(vol[k]), buf)

    if inplane_first:
        cache = _Cache((ny, nx), make_inplane)
    else:
        cache = _Cache((ny_in, nx_in), lambda k, buf: np.copyto(buf, plane.clip(vol[k])))
        blended = np.empty((ny_in, nx_in), np.float32)
    out[:zlo] = fill
    out[zhi:] = fill
    for m in range(zlo, zhi):
        k0, k1, w = int(tz.i0[m]), int(tz.i1[m]), tz.w[m]
        dst = out[m] if direct else scratch
        if w == 0.0 or k0 == k1:
            w, res = np.float32(0.0), cache.get(k0)
        elif w == 1.0:
            res = cache.get(k1)
        else:
            a, b = cache.pair(k0, k1)
            res = _lerp_into(a, b, w, dst if inplane_first else blended)
        if not inplane_first:
            res = plane.inplane(res, dst)
        if edges:
            if res is not dst:
                res = _copy(res, dst)
            sy = (1.0 - w) * shift_y[k0] + w * shift_y[k1]
            sx = (1.0 - w) * shift_x[k0] + w * shift_x[k1]
            _fill_outside(res, c_y - sy, c_x - sx, (ny_in, nx_in), fill)
        _store(res, out[m], scratch, value_range)


# --------------------------------------------------------------------------------------------
# Separable nearest path
# --------------------------------------------------------------------------------------------
def _clip_in_dtype(a: np.ndarray, window, out: np.ndarray | None = None) -> np.ndarray:
    """Clip ``a`` to the window in its own dtype (in place unless ``out``), an integer dtype's
    bounds rounded inwards and brought into its range."""
    lo, hi = window
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        lo, hi = min(max(np.ceil(lo), info.min), info.max), max(min(np.floor(hi), info.max), info.min)
    return np.clip(a, a.dtype.type(lo), a.dtype.type(hi), out=a if out is None else out)


def _separable_nearest(vol, out, c_z, c_y, c_x, shift_y, shift_x, window, fill) -> None:
    """Nearest neighbour: one flat gather per output plane from its nearest input slice (at that
    slice's own in-plane offset when sheared)."""
    nz_in, ny_in, nx_in = vol.shape
    kz = _nearest(c_z, nz_in)
    zlo, zhi = _inside_range(c_z, nz_in)
    same = out.dtype == vol.dtype
    buf = None if same else np.empty(out.shape[1:], vol.dtype)
    out[:zlo] = fill
    out[zhi:] = fill
    current: tuple[float, float] | None = None
    for m in range(zlo, zhi):
        k = int(kz[m])
        if current != (shift_y[k], shift_x[k]):
            current = (shift_y[k], shift_x[k])
            cy, cx = c_y - shift_y[k], c_x - shift_x[k]
            flat = (_nearest(cy, ny_in)[:, None] * nx_in + _nearest(cx, nx_in)[None, :]).ravel()
        src = np.ascontiguousarray(vol[k]).reshape(-1)
        dst = out[m] if same else buf
        np.take(src, flat, out=dst.reshape(-1), mode="clip")
        if window is not None:
            _clip_in_dtype(dst, window)
        if not same:
            _store_any(dst, out[m])
        _fill_outside(out[m], cy, cx, (ny_in, nx_in), fill)


def _store_any(src: np.ndarray, dst: np.ndarray) -> None:
    if np.issubdtype(dst.dtype, np.integer) and not np.issubdtype(src.dtype, np.integer):
        info = np.iinfo(dst.dtype)
        src = np.clip(np.rint(src), info.min, info.max)
    np.copyto(dst, src, casting="unsafe")


# --------------------------------------------------------------------------------------------
# General path: any output direction, uneven or sheared (tilted) slices
# --------------------------------------------------------------------------------------------
def _general(vol, out, grid_in: Grid, grid_out: Grid, slices: _SliceGeometry, order: int, window, fill: float) -> None:
    nz_in, ny_in, nx_in = vol.shape
    _, sy, sx = grid_in.spacing_zyx_mm
    d_in = grid_in.matrix
    u, v, w = d_in[:, 0], d_in[:, 1], d_in[:, 2]
    _, ny, nx = grid_out.shape_zyx
    tz, ty, tx = grid_out.spacing_zyx_mm
    d_out = grid_out.matrix
    o_out = np.asarray(grid_out.origin_xyz_mm, dtype=np.float64)
    jj, ii = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    in_plane = (ii.ravel()[:, None] * tx) * d_out[:, 0] + (jj.ravel()[:, None] * ty) * d_out[:, 1]  # (ny nx, 3)
    flat_in = vol.reshape(-1) if vol.flags.c_contiguous else None
    step_x = 1 if nx_in > 1 else 0
    step_y = nx_in if ny_in > 1 else 0
    plane_size = ny_in * nx_in
    scratch = np.empty((ny, nx), np.float32) if order == 1 else np.empty((ny, nx), vol.dtype)

    def gather(flat_index: np.ndarray) -> np.ndarray:
        if flat_in is not None:
            return np.take(flat_in, flat_index, mode="clip")
        k, rest = np.divmod(flat_index, plane_size)
        j, i = np.divmod(rest, nx_in)
        return vol[k, j, i]

    def value(flat_index: np.ndarray) -> np.ndarray:
        a = gather(flat_index)
        if order == 0:
            return a
        a = a.astype(np.float32, copy=False)       # a fresh array from the gather: clipped in place
        return a if window is None else np.clip(a, window[0], window[1], out=a)

    for m in range(out.shape[0]):
        p = o_out + (m * tz) * d_out[:, 2] + in_plane - slices.origin_xyz_mm       # (ny nx, 3) from slice 0
        a_u, a_v = p @ u, p @ v
        c_z = slices.slice_index(slices.normal_mm[0] + p @ w, grid_in.spacing_zyx_mm[0])
        if order == 0:
            k = _nearest(c_z, nz_in)
            c_y = (a_v - slices.shift_v_mm[k]) * (1.0 / sy)
            c_x = (a_u - slices.shift_u_mm[k]) * (1.0 / sx)
            idx = k * plane_size + _nearest(c_y, ny_in) * nx_in + _nearest(c_x, nx_in)
            res = value(idx)
            if window is not None:
                _clip_in_dtype(res, window)
        else:
            k0 = np.clip(np.floor(c_z), 0, max(nz_in - 2, 0)).astype(np.intp)
            k1 = np.minimum(k0 + 1, nz_in - 1)
            wz = np.clip(c_z - k0, 0.0, 1.0) if nz_in > 1 else np.zeros_like(c_z)
            planes = []
            c_ys, c_xs = [], []
            for k in (k0, k1):
                cy = (a_v - slices.shift_v_mm[k]) * (1.0 / sy)
                cx = (a_u - slices.shift_u_mm[k]) * (1.0 / sx)
                c_ys.append(cy)
                c_xs.append(cx)
                j0 = np.clip(np.floor(cy), 0, max(ny_in - 2, 0)).astype(np.intp)
                i0 = np.clip(np.floor(cx), 0, max(nx_in - 2, 0)).astype(np.intp)
                wy = (np.clip(cy - j0, 0.0, 1.0) if ny_in > 1 else np.zeros_like(cy)).astype(np.float32)
                wx = (np.clip(cx - i0, 0.0, 1.0) if nx_in > 1 else np.zeros_like(cx)).astype(np.float32)
                base = k * plane_size + j0 * nx_in + i0
                top = _lerp_into(value(base), value(base + step_x), wx, np.empty(len(base), np.float32))
                bottom = _lerp_into(value(base + step_y), value(base + step_y + step_x), wx,
                                    np.empty(len(base), np.float32))
                planes.append(_lerp_into(top, bottom, wy, bottom))
            res = _lerp_into(planes[0], planes[1], wz.astype(np.float32), planes[1])
            c_y = (1.0 - wz) * c_ys[0] + wz * c_ys[1]
            c_x = (1.0 - wz) * c_xs[0] + wz * c_xs[1]
        inside = ((c_z >= -0.5) & (c_z < nz_in - 0.5) & (c_y >= -0.5) & (c_y < ny_in - 0.5)
                  & (c_x >= -0.5) & (c_x < nx_in - 0.5))
        scratch.reshape(-1)[:] = res
        scratch.reshape(-1)[~inside] = fill
        _store_any(scratch, out[m])
