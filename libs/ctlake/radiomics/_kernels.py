r"""Compiled (numba, nopython) kernels of the radiomics engine: one pass over the ROI per matrix family
and the features of every matrix in compiled loops, so a small ROI costs microseconds, not the
Python overhead of many small numpy calls.

Every kernel works on the *padded level volume*: the ROI's bounding box with ``pad`` >= 1 zero voxels on
every side, int32, 0 = outside the ROI, grey level >= 1 inside; flattened (C order, (z, y, x)). A
neighbour at offset (dz, dy, dx) of flat voxel v is v + dz * Y * X + dy * X + dx (``strides``), and the
padding keeps every neighbour read in bounds (|offset| <= pad). ``roi`` is the flat indices of the ROI
voxels in C order (the order of ``image[mask]``); ``rank`` maps a grey level to its row among the levels
present (``rank[level]``, -1 for an absent level).

The numpy code in the family modules is the definition and the fallback: ``AVAILABLE`` is False when
numba cannot be imported, and the callers then use it. tests/unit/test_radiomics_kernels.py checks
every kernel against it.

The ``*_values`` kernels are what :mod:`.engine` calls: one call per feature class builds its matrices,
aggregates them as PyRadiomics does and returns the feature vector.

Compilation: ``cache=True`` writes the machine code next to this file (``__pycache__``), or, where that
is read-only (a wheel in a system site-packages, a zip on a Spark executor), in numba's user-wide cache
(``NUMBA_CACHE_DIR`` or ~/.cache); when no cache location is writable at all the kernels are compiled in
memory on first use instead (:func:`_jit`). Compiling everything ``extract`` uses takes about 25 s of
CPU; loading it from the cache about 0.3 s (bench/results/radiomics.json, ``first_call``). Every
argument has one dtype (int32 levels, int64 indices, float64 values), so each kernel compiles once,
except :func:`gather_roi`, once per image dtype.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is optional at run time: without it the callers use the numpy code
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None
EPS = float(np.spacing(1))


_CACHE_DIRS: dict[str, bool] = {}


def _cache_usable(dispatcher) -> bool:
    """Whether the cache location numba picked for ``dispatcher`` can be written. Most locators are
    checked by numba when the function is decorated, but not all (a module inside a zip, as Spark's
    --py-files ships it, gets the user-wide directory unchecked, and the first call would then fail while
    saving); unknown numba internals count as usable."""
    try:
        locator = dispatcher._cache._impl.locator
        path = str(locator.get_cache_path())
    except AttributeError:
        return True
    if path not in _CACHE_DIRS:
        try:
            locator.ensure_cache_path()
            _CACHE_DIRS[path] = True
        except OSError:
            _CACHE_DIRS[path] = False
    return _CACHE_DIRS[path]


def _jit(fn, **options):
    """``numba.njit(cache=True, nogil=True, error_model="numpy", **options)`` (numpy semantics for a
    division by zero: inf / nan, no exception, no check), or the same without the cache where no cache
    location is writable: the kernels are then compiled in memory on first use in each process."""
    if numba is None:
        return fn
    options = {"nogil": True, "error_model": "numpy", **options}
    try:
        dispatcher = numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return numba.njit(cache=False, **options)(fn)
    return dispatcher if _cache_usable(dispatcher) else numba.njit(cache=False, **options)(fn)


def _jit_reassociating(fn):
    """:func:`_jit` allowing the compiler to reassociate sums and fuse multiply-adds (``fastmath`` flags
    reassoc, contract only: no NaN/Inf assumptions), so dot products vectorise; for the eigenvalue
    reduction, whose results differ from the left-to-right sums by round-off only."""
    return _jit(fn, fastmath={"reassoc", "contract"})


# --------------------------------------------------------------------------------------------------
# preparation
# --------------------------------------------------------------------------------------------------
@_jit
def bounding_box(mask):
    """(z0, z1, y0, y1, x0, x1), half open, of the non-zero voxels of a uint8 (z, y, x) array; z0 = -1
    when there is none."""
    nz, ny, nx = mask.shape
    box = np.empty(6, dtype=np.int64)
    box[0], box[1], box[2], box[3], box[4], box[5] = nz, -1, ny, -1, nx, -1
    for z in range(nz):
        for y in range(ny):
            row_any = False
            for x in range(nx):
                if mask[z, y, x] != 0:
                    row_any = True
                    if x < box[4]:
                        box[4] = x
                    break
            if not row_any:
                continue
            for x in range(nx - 1, -1, -1):
                if mask[z, y, x] != 0:
                    if x > box[5]:
                        box[5] = x
                    break
            if z < box[0]:
                box[0] = z
            box[1] = z
            if y < box[2]:
                box[2] = y
            if y > box[3]:
                box[3] = y
    if box[1] < 0:
        box[0] = -1
        return box
    box[1] += 1
    box[3] += 1
    box[5] += 1
    return box


@_jit
def gather_roi(image, mask):
    """The ROI (mask != 0, uint8 (z, y, x)) cut out of ``image`` (same shape, any numeric dtype):
    (bounding box as :func:`bounding_box`, the ROI values as float64 in C order, the box's mask as
    contiguous uint8); an empty ROI gives z0 = -1 and empty arrays."""
    box = bounding_box(mask)
    if box[0] < 0:
        return box, np.empty(0), np.empty((0, 0, 0), dtype=np.uint8)
    z0, z1, y0, y1, x0, x1 = box[0], box[1], box[2], box[3], box[4], box[5]
    mask_box = np.empty((z1 - z0, y1 - y0, x1 - x0), dtype=np.uint8)
    count = 0
    for z in range(z0, z1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                m = mask[z, y, x] != 0
                mask_box[z - z0, y - y0, x - x0] = m
                count += m
    values = np.empty(count)
    k = 0
    for z in range(z0, z1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                if mask_box[z - z0, y - y0, x - x0]:
                    values[k] = image[z, y, x]
                    k += 1
    return box, values, mask_box


@_jit
def digitize(x, edges):
    """``np.digitize(x, edges)`` (edges increasing, right=False: i with edges[i-1] <= x < edges[i])."""
    out = np.empty(x.shape[0], dtype=np.int32)
    n_edges = edges.shape[0]
    for k in range(x.shape[0]):
        v = x[k]
        lo, hi = 0, n_edges
        while lo < hi:                      # searchsorted(edges, v, side="right")
            mid = (lo + hi) >> 1
            if edges[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        out[k] = lo
    return out


@_jit
def level_volume(mask, levels, pad):
    """The padded level volume (flat int32, shape ``mask.shape + 2 pad``) with ``levels`` (ROI voxels in
    C order) written at the ROI voxels of the uint8 ``mask``, and the flat indices of those voxels."""
    nz, ny, nx = mask.shape
    pz, py, px = nz + 2 * pad, ny + 2 * pad, nx + 2 * pad
    lv = np.zeros(pz * py * px, dtype=np.int32)
    roi = np.empty(levels.shape[0], dtype=np.int64)
    k = 0
    for z in range(nz):
        for y in range(ny):
            base = ((z + pad) * py + (y + pad)) * px + pad
            for x in range(nx):
                if mask[z, y, x] != 0:
                    lv[base + x] = levels[k]
                    roi[k] = base + x
                    k += 1
    return lv, roi


@_jit
def level_ranks(levels, top):
    """Grey levels present among ``levels`` (ascending, int64), their counts, and rank[level] (-1 if
    absent) for levels 0..top."""
    seen = np.zeros(top + 1, dtype=np.int64)
    for v in levels:
        seen[v] += 1
    n = 0
    for v in range(top + 1):
        if seen[v] > 0:
            n += 1
    present = np.empty(n, dtype=np.int64)
    counts = np.empty(n, dtype=np.int64)
    rank = np.full(top + 1, -1, dtype=np.int64)
    k = 0
    for v in range(top + 1):
        if seen[v] > 0:
            present[k] = v
            counts[k] = seen[v]
            rank[v] = k
            k += 1
    return present, counts, rank


# --------------------------------------------------------------------------------------------------
# first order
# --------------------------------------------------------------------------------------------------
@_jit
def counting_sort(x):
    """(True, x sorted ascending) by counting when every value is an integer in a range of at most
    4 n + 65536 (CT in HU), else (False, x unchanged): the caller sorts (np.sort, outside the kernels:
    numba's sort costs seconds of compilation)."""
    n = x.shape[0]
    lo, hi = x[0], x[0]
    integral = True
    for v in x:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        if integral and v != math.floor(v):
            integral = False
    if not integral or hi - lo > 4.0 * n + 65536.0:
        return False, x
    span = int(hi - lo) + 1
    hist = np.zeros(span, dtype=np.int64)
    for v in x:
        hist[int(v - lo)] += 1
    out = np.empty(n, dtype=np.float64)
    k = 0
    for b in range(span):
        value = lo + b
        for _ in range(hist[b]):
            out[k] = value
            k += 1
    return True, out


@_jit
def _percentile_sorted(xs, q):
    """``np.percentile(x, q)`` (method 'linear') from the sorted values xs, with numpy's own arithmetic (the
    same bits: robust mean absolute deviation keeps the values between P10 and P90, so one ulp moves a
    voxel in or out)."""
    n = xs.shape[0]
    virtual = (n - 1) * (q / 100.0)
    if virtual >= n - 1:
        return xs[n - 1]
    if virtual < 0:
        return xs[0]
    previous = math.floor(virtual)
    gamma = virtual - previous
    a = xs[int(previous)]
    b = xs[int(previous) + 1]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1.0 - gamma)
    return a + diff * gamma


@_jit
def firstorder_features(x, xs, counts, voxel_volume, shift):
    """The PyRadiomics first-order features (order of ``firstorder.FEATURES``) of ROI values x (xs: the
    same sorted ascending) and the discretised histogram ``counts``; definitions in :mod:`.firstorder`."""
    n = x.shape[0]
    out = np.empty(19, dtype=np.float64)
    total = 0.0
    energy = 0.0
    for v in x:
        total += v
        energy += (v + shift) * (v + shift)
    mu = total / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    mad = 0.0
    for v in x:
        d = v - mu
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        mad += abs(d)
    m2 /= n
    m3 /= n
    m4 /= n
    p10 = _percentile_sorted(xs, 10.0)
    p90 = _percentile_sorted(xs, 90.0)
    p25 = _percentile_sorted(xs, 25.0)
    p75 = _percentile_sorted(xs, 75.0)
    half = n // 2
    median = xs[half] if n % 2 == 1 else (xs[half - 1] + xs[half]) / 2.0
    # robust mean absolute deviation: the values in [P10, P90] (a contiguous run of xs)
    sub_total = 0.0
    sub_n = 0
    for v in xs:
        if v >= p10 and v <= p90:
            sub_total += v
            sub_n += 1
    sub_mu = sub_total / sub_n
    rmad = 0.0
    for v in xs:
        if v >= p10 and v <= p90:
            rmad += abs(v - sub_mu)
    n_counts = 0.0
    for c in counts:
        n_counts += c
    entropy = 0.0
    uniformity = 0.0
    for c in counts:
        if c > 0:
            p = c / n_counts
            entropy -= p * math.log2(p)
            uniformity += p * p
    std = math.sqrt(m2)
    out[0] = energy
    out[1] = voxel_volume * energy
    out[2] = entropy
    out[3] = xs[0]
    out[4] = p10
    out[5] = p90
    out[6] = xs[n - 1]
    out[7] = mu
    out[8] = median
    out[9] = p75 - p25
    out[10] = xs[n - 1] - xs[0]
    out[11] = mad / n
    out[12] = rmad / sub_n
    out[13] = math.sqrt(energy / n)
    out[14] = std
    out[15] = 0.0 if m2 == 0 else m3 / m2**1.5
    out[16] = 0.0 if m2 == 0 else m4 / (m2 * m2)
    out[17] = std * std
    out[18] = uniformity
    return out


# --------------------------------------------------------------------------------------------------
# GLCM
# --------------------------------------------------------------------------------------------------
@_jit
def cooccurrence(lv, roi, rank, n, steps):
    """Raw co-occurrence counts (A, n, n) over the present levels' ranks: P[a, r(x), r(x + step_a)] for
    ROI voxels x whose neighbour x + step_a is in the ROI. (Branch-free: a neighbour outside the ROI is
    counted in an extra row/column n that is dropped.)"""
    n_dir = steps.shape[0]
    lut = rank.copy()
    lut[0] = n
    p = np.zeros((n_dir, n + 1, n + 1), dtype=np.float64)
    for v in roi:
        i = lut[lv[v]]
        for a in range(n_dir):
            p[a, i, lut[lv[v + steps[a]]]] += 1.0
    return np.ascontiguousarray(p[:, :n, :n])


@_jit_reassociating
def _householder_tridiagonal(a, d, e):
    """Reduce the symmetric matrix ``a`` (n, n; overwritten, both triangles kept) to tridiagonal form:
    diagonal d (n,), off-diagonal e (n,) with e[i] between i - 1 and i, e[0] = 0. Householder reflections
    from the last row up (as EISPACK tred1), each applied as the rank-2 update A -= u q^T + q u^T to the
    full leading block, row by row (contiguous, vectorisable)."""
    n = a.shape[0]
    u = np.empty(n)
    p = np.empty(n)
    e[0] = 0.0
    for i in range(n - 1, 0, -1):
        if i == 1:
            e[1] = a[1, 0]
            break
        scale = 0.0
        for k in range(i):
            scale += abs(a[i, k])
        if scale == 0.0:
            e[i] = 0.0
            continue
        h = 0.0
        for k in range(i):
            u[k] = a[i, k] / scale
            h += u[k] * u[k]
        f = u[i - 1]
        g = -math.sqrt(h) if f >= 0 else math.sqrt(h)
        e[i] = scale * g
        h -= f * g
        u[i - 1] = f - g
        kk = 0.0
        for j in range(i):
            t = 0.0
            for k in range(i):
                t += a[j, k] * u[k]
            p[j] = t / h
            kk += u[j] * p[j]
        kk /= h + h
        for j in range(i):
            p[j] -= kk * u[j]
        for j in range(i):
            uj = u[j]
            pj = p[j]
            for k in range(i):
                a[j, k] -= uj * p[k] + pj * u[k]
    for i in range(n):
        d[i] = a[i, i]


@_jit
def _sturm(d, e2, x):
    """For the symmetric tridiagonal T = (d, e^2) at x: the number of eigenvalues of T above x (Sturm
    count of the LDL^T pivots q_i of T - xI) and sum_i q_i'/q_i = d/dx log|det(T - xI)|."""
    n = d.shape[0]
    q = d[0] - x
    if q == 0.0:
        q = -1e-300
    below = 1 if q < 0 else 0
    r = 1.0 / q
    dq = -1.0
    slope = dq * r
    for i in range(1, n):
        dq = -1.0 + e2[i] * dq * r * r
        q = d[i] - x - e2[i] * r
        if q == 0.0:
            q = -1e-300
        below += q < 0
        r = 1.0 / q
        slope += dq * r
    return n - below, slope


@_jit
def _tridiagonal_eigenvalue(d, e, k, bound):
    """The k-th largest eigenvalue (k = 1..n) of the symmetric tridiagonal matrix (d, e), all of whose
    eigenvalues lie in [-bound, bound] (bound <= 0: unknown, Gershgorin's): bisection on the Sturm count
    to 3e-2 of the spectrum's scale, then Newton steps on det(T - xI) kept inside the Sturm bracket
    (bisection where a step leaves it), to the last bit."""
    n = d.shape[0]
    e2 = e * e
    lo = d[0]
    hi = d[0]
    for i in range(n):                       # Gershgorin interval
        r = (abs(e[i]) if i > 0 else 0.0) + (abs(e[i + 1]) if i + 1 < n else 0.0)
        lo = min(lo, d[i] - r)
        hi = max(hi, d[i] + r)
    if bound > 0:
        lo = max(lo, -bound)
        hi = min(hi, bound)
    span = max(abs(lo), abs(hi)) + 1e-300
    lo -= 1e-12 * span
    hi += 1e-12 * span
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi or hi - lo <= 3e-2 * span:
            break
        if _sturm(d, e2, mid)[0] >= k:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    floor = 4e-19 * span
    for _ in range(100):
        above, slope = _sturm(d, e2, x)
        if above >= k:
            lo = x
        else:
            hi = x
        step = 1.0 / slope if slope != 0.0 else x - 0.5 * (lo + hi)
        if abs(step) <= 4e-16 * abs(x) + floor:
            break                               # converged: the step is below the last bit of x
        nxt = x - step
        if not (lo < nxt < hi):
            nxt = 0.5 * (lo + hi)
            if nxt <= lo or nxt >= hi:
                break                           # the bracket is down to adjacent floats
        x = nxt
    return x


@_jit
def second_largest_eigenvalue(s):
    """Second largest eigenvalue of the symmetric matrix s (n >= 2; overwritten)."""
    n = s.shape[0]
    d = np.empty(n)
    e = np.empty(n)
    _householder_tridiagonal(s, d, e)
    return _tridiagonal_eigenvalue(d, e, 2, 0.0)


@_jit
def _mcc(p, px, py, symmetric):
    """Maximal correlation coefficient of one normalised GLCM p (n, n): sqrt of the second largest
    eigenvalue of Q(i, j) = sum_k p(i,k) p(j,k) / (p_x(i) p_y(k)). Over the levels with p_x, p_y > 0
    (the others add zero eigenvalues), Q = D^-1/2 B B^T D^1/2 with B(i, k) = p(i, k) / sqrt(p_x(i) p_y(k)),
    so Q has the eigenvalues of the symmetric B B^T; for a symmetric p, B itself is symmetric, B B^T = B^2
    and the eigenvalues are the squares of B's, whose largest is 1 (B is similar to the stochastic
    D^-1 p): MCC = max(|mu_2|, |mu_min|) over B's eigenvalues mu. PyRadiomics adds 2.2e-16 to
    p_x p_y, a relative change below 1e-7 even for the rarest pair of a 10^4-voxel ROI."""
    n = p.shape[0]
    if n < 2:
        return 1.0
    rows = np.empty(n, dtype=np.int64)
    cols = np.empty(n, dtype=np.int64)
    nr = 0
    nc = 0
    for i in range(n):
        if px[i] > 0:
            rows[nr] = i
            nr += 1
        if py[i] > 0:
            cols[nc] = i
            nc += 1
    if nr < 2:
        return 0.0
    ry = np.empty(nc)
    for c in range(nc):
        ry[c] = 1.0 / math.sqrt(py[cols[c]])
    b = np.empty((nr, nc))
    for a in range(nr):
        i = rows[a]
        rx = 1.0 / math.sqrt(px[i])
        for c in range(nc):
            b[a, c] = p[i, cols[c]] * (rx * ry[c])      # symmetric p: rx * ry[c] = ry[a] * ry[c], B = B^T
    d = np.empty(nr)
    e = np.empty(nr)
    if symmetric:
        _householder_tridiagonal(b, d, e)
        bound = 1.0 + 1e-9                       # |mu| <= 1, up to round-off
        mu2 = abs(_tridiagonal_eigenvalue(d, e, 2, bound))
        if _sturm(d, e * e, -mu2)[0] == nr:      # no eigenvalue below -|mu_2|: mu_min does not matter
            return mu2
        return max(mu2, abs(_tridiagonal_eigenvalue(d, e, nr, bound)))
    s = np.zeros((nr, nr))                   # B B^T as a sum of outer products of B's sparse columns
    nz = np.empty(nr, dtype=np.int64)
    for c in range(nc):
        m = 0
        for a in range(nr):
            if b[a, c] != 0.0:
                nz[m] = a
                m += 1
        for u in range(m):
            bu = b[nz[u], c]
            for w in range(u, m):
                s[nz[u], nz[w]] += bu * b[nz[w], c]
    for a in range(nr):
        for c in range(a + 1, nr):
            s[c, a] = s[a, c]
    _householder_tridiagonal(s, d, e)
    lam = _tridiagonal_eigenvalue(d, e, 2, 1.0 + 1e-9)         # B B^T: eigenvalues in [0, 1]
    return math.sqrt(lam) if lam > 0 else 0.0


@_jit
def glcm_features(p, g, ng, symmetric):
    """The 24 PyRadiomics GLCM features (order of ``glcm.FEATURES``) of each normalised matrix
    p (A, n, n) over grey levels g (n,) with N_g = ng; definitions in :mod:`.glcm`. ``symmetric``: every
    p equals its transpose (symmetricalGLCM), so each pair of cells is visited once.
    HXY2 is summed as -sum_i p_x(i) log2 p_x(i) - sum_j p_y(j) log2 p_y(j), i.e. without the 2.2e-16
    PyRadiomics adds inside the logarithm (a change below n^2 * 2.2e-16), unless HXY2 - HXY < 1e-4."""
    n_dir, n, _ = p.shape
    out = np.empty((n_dir, 24), dtype=np.float64)
    n_sum = 2 * ng - 1
    px = np.empty(n)
    py = np.empty(n)
    p_sum = np.empty(n_sum)
    p_diff = np.empty(ng)
    for a in range(n_dir):
        pa = p[a]
        px[:] = 0.0
        py[:] = 0.0
        p_sum[:] = 0.0
        p_diff[:] = 0.0
        for i in range(n):
            for j in range(n):
                v = pa[i, j]
                px[i] += v
                py[j] += v
        if symmetric:
            py[:] = px
        ux = 0.0
        uy = 0.0
        for i in range(n):
            ux += px[i] * g[i]
            uy += py[i] * g[i]
        autocorr = 0.0
        energy = 0.0
        hxy = 0.0
        hxy1 = 0.0
        pmax = 0.0
        c2 = 0.0
        c3 = 0.0
        c4 = 0.0
        contrast = 0.0
        sxy = 0.0
        for i in range(n):
            gi = g[i]
            di = gi - ux
            for j in range(i if symmetric else 0, n):
                v = pa[i, j]
                if v == 0.0:
                    continue
                gj = g[j]
                if v > pmax:
                    pmax = v
                wv = 2.0 * v if symmetric and j != i else v
                autocorr += wv * gi * gj
                energy += wv * v
                hxy -= wv * math.log2(v + EPS)
                hxy1 -= wv * math.log2(px[i] * py[j] + EPS)
                p_sum[int(gi + gj) - 2] += wv
                p_diff[int(abs(gi - gj))] += wv
                t = gi + gj - ux - uy
                t2 = t * t
                c2 += wv * t2
                c3 += wv * t2 * t
                c4 += wv * t2 * t2
                dd = gi - gj
                contrast += wv * dd * dd
                sxy += wv * di * (gj - uy)
        sxx = 0.0
        syy = 0.0
        hx = 0.0
        hy = 0.0
        hx0 = 0.0
        hy0 = 0.0
        for i in range(n):
            sxx += px[i] * (g[i] - ux) ** 2
            syy += py[i] * (g[i] - uy) ** 2
            hx -= px[i] * math.log2(px[i] + EPS)
            hy -= py[i] * math.log2(py[i] + EPS)
            if px[i] > 0:
                hx0 -= px[i] * math.log2(px[i])
            if py[i] > 0:
                hy0 -= py[i] * math.log2(py[i])
        hxy2 = hx0 + hy0
        if hxy2 - hxy < 1e-4:
            # nearly independent: IMC2 = sqrt(1 - exp(-2 (HXY2 - HXY))) magnifies the last bits of a tiny
            # difference, so sum HXY2 cell by cell as PyRadiomics does (equal to HXY where p = p_x p_y)
            hxy2 = 0.0
            for i in range(n):
                if px[i] == 0.0:
                    continue
                for j in range(n):
                    q = px[i] * py[j]
                    if q != 0.0:
                        hxy2 -= q * math.log2(q + EPS)
        sx = math.sqrt(sxx)
        sy = math.sqrt(syy)
        diff_avg = 0.0
        diff_ent = 0.0
        idm = 0.0
        idmn = 0.0
        inv_d = 0.0
        idn = 0.0
        inv_var = 0.0
        for k in range(ng):
            v = p_diff[k]
            if v == 0.0:
                continue
            diff_avg += v * k
            diff_ent -= v * math.log2(v + EPS)
            idm += v / (1.0 + k * k)
            idmn += v / (1.0 + k * k / (ng * ng))
            inv_d += v / (1.0 + k)
            idn += v / (1.0 + k / ng)
            if k > 0:
                inv_var += v / (k * k)
        diff_var = 0.0
        for k in range(ng):
            diff_var += p_diff[k] * (k - diff_avg) ** 2
        sum_avg = 0.0
        sum_ent = 0.0
        for k in range(n_sum):
            v = p_sum[k]
            if v == 0.0:
                continue
            sum_avg += v * (k + 2)
            sum_ent -= v * math.log2(v + EPS)
        div = max(hx, hy)
        out[a, 0] = autocorr
        out[a, 1] = ux
        out[a, 2] = c4
        out[a, 3] = c3
        out[a, 4] = c2
        out[a, 5] = contrast
        out[a, 6] = 1.0 if sx * sy == 0 else sxy / (sx * sy + EPS)
        out[a, 7] = diff_avg
        out[a, 8] = diff_ent
        out[a, 9] = diff_var
        out[a, 10] = energy
        out[a, 11] = hxy
        out[a, 12] = (hxy - hxy1) / div if div != 0 else 0.0
        out[a, 13] = math.sqrt(1.0 - math.exp(-2.0 * max(hxy2 - hxy, 0.0)))
        out[a, 14] = idm
        out[a, 15] = _mcc(pa, px, py, symmetric)
        out[a, 16] = idmn
        out[a, 17] = inv_d
        out[a, 18] = idn
        out[a, 19] = inv_var
        out[a, 20] = pmax
        out[a, 21] = sum_avg
        out[a, 22] = sum_ent
        out[a, 23] = sxx
    return out


@_jit
def column_nanmean(values):
    """Mean of each column over the rows that are not NaN (NaN where every row is; ``np.nanmean``)."""
    n_rows, n_cols = values.shape
    out = np.empty(n_cols, dtype=np.float64)
    for c in range(n_cols):
        total = 0.0
        count = 0
        for r in range(n_rows):
            v = values[r, c]
            if not math.isnan(v):
                total += v
                count += 1
        out[c] = total / count if count > 0 else np.nan
    return out


# --------------------------------------------------------------------------------------------------
# GLRLM, GLSZM, GLDM, NGTDM matrices
# --------------------------------------------------------------------------------------------------
@_jit
def run_lengths(lv, roi, rank, n, steps, max_length):
    """Run length counts (A, n, max_length) over the present levels' ranks, and for each direction
    whether some ROI voxel has its neighbour along it in the ROI (a line holding two ROI voxels).

    Steps are positive and the ROI voxels ascend, so the voxel before v on its line (v - step) has been
    seen: the run reaching v is 1 + the run reaching v - step when that has v's level, and a run ends at
    v when the next voxel has another level or is outside the ROI. The (level, length) key of every voxel
    is appended to a buffer whose end advances only at run ends, then the buffer is counted: no branch
    on the grey levels (mispredicted half the time in a textured ROI) and no chain of increments of one
    histogram cell per voxel."""
    n_dir = steps.shape[0]
    p = np.zeros((n_dir, n * max_length), dtype=np.float64)
    multi = np.zeros(n_dir, dtype=np.bool_)
    run = np.zeros(lv.shape[0], dtype=np.int32)
    keys = np.empty(roi.shape[0] + 1, dtype=np.int64)
    for a in range(n_dir):
        s = steps[a]
        any_pair = False
        k = 0
        for v in roi:
            level = lv[v]
            length = 1 + run[v - s] * (lv[v - s] == level)
            run[v] = length
            nxt = lv[v + s]
            any_pair |= nxt > 0
            keys[k] = rank[level] * max_length + length - 1
            k += nxt != level
        for t in range(k):
            p[a, keys[t]] += 1.0
        multi[a] = any_pair
    return p.reshape((n_dir, n, max_length)), multi




@_jit
def size_zones(lv, roi, rank, n, steps):
    """Size zone counts (n, S) over the present levels' ranks: the connected components of equal-level
    ROI voxels, neighbours at +/- ``steps`` (flood fill from each unvisited voxel; a neighbour is pushed
    by a store and a conditional advance of the stack top, without a branch on the levels)."""
    n_roi = roi.shape[0]
    seen = np.zeros(lv.shape[0], dtype=np.uint8)
    stack = np.empty(n_roi + 1, dtype=np.int64)
    zone_rank = np.empty(n_roi, dtype=np.int64)
    zone_size = np.empty(n_roi, dtype=np.int64)
    n_zones = 0
    biggest = 0
    for v in roi:
        if seen[v]:
            continue
        level = lv[v]
        seen[v] = 1
        stack[0] = v
        top = 1
        size = 0
        while top > 0:
            top -= 1
            u = stack[top]
            size += 1
            for s in steps:
                w = u + s
                fresh = (lv[w] == level) & (seen[w] == 0)
                seen[w] |= fresh
                stack[top] = w
                top += fresh
                w = u - s
                fresh = (lv[w] == level) & (seen[w] == 0)
                seen[w] |= fresh
                stack[top] = w
                top += fresh
        zone_rank[n_zones] = rank[level]
        zone_size[n_zones] = size
        n_zones += 1
        if size > biggest:
            biggest = size
    p = np.zeros((n, biggest), dtype=np.float64)
    for z in range(n_zones):
        p[zone_rank[z], zone_size[z] - 1] += 1.0
    return p


@_jit
def neighbourhoods(lv, roi, rank, n, steps, alpha, exclude_isolated):
    """GLDM dependence counts (n, 2A + 1) and the NGTDM columns n_i, s_i (n,) in one pass over the ROI,
    neighbours at +/- ``steps``: a neighbour in the ROI with |level difference| <= alpha is dependent;
    s_i sums |i - mean neighbour level| over the voxels of level i with a neighbour in the ROI; n_i
    counts the voxels of level i (with ``exclude_isolated`` only those with a neighbour). Levels are
    integers, so |difference| <= alpha is |difference| <= floor(alpha); no branches per neighbour."""
    n_dir = steps.shape[0]
    a_int = int(math.floor(alpha))
    dep = np.zeros((n, 2 * n_dir + 1), dtype=np.float64)
    n_i = np.zeros(n, dtype=np.float64)
    s_i = np.zeros(n, dtype=np.float64)
    for v in roi:
        level = lv[v]
        r = rank[level]
        count = 0
        total = 0
        dependent = 0
        for s in steps:
            w = lv[v + s]
            inside = w > 0
            count += inside
            total += w
            dependent += inside & (abs(w - level) <= a_int)
            w = lv[v - s]
            inside = w > 0
            count += inside
            total += w
            dependent += inside & (abs(w - level) <= a_int)
        dep[r, dependent] += 1.0
        if count > 0:
            n_i[r] += 1.0
            s_i[r] += abs(level - total / count)
        elif not exclude_isolated:
            n_i[r] += 1.0
    return dep, n_i, s_i


@_jit
def matrix_features(p, g):
    """The 16 features shared by GLRLM, GLSZM and GLDM (order of ``glrlm.FEATURES``: SRE, LRE, GLN, GLNN,
    RLN, RLNN, RP, GLV, RV, RE, LGLRE, HGLRE, SRLGLE, SRHGLE, LRLGLE, LRHGLE) of each matrix P (A, n, m),
    rows = grey levels g (n,), columns j = 1..m; definitions in :mod:`.glrlm`."""
    n_mat, n, m = p.shape
    out = np.empty((n_mat, 16), dtype=np.float64)
    gsum = np.empty(n)
    rsum = np.empty(m)
    for a in range(n_mat):
        pa = p[a]
        gsum[:] = 0.0
        rsum[:] = 0.0
        total = 0.0
        srlgle = 0.0
        srhgle = 0.0
        lrlgle = 0.0
        lrhgle = 0.0
        for i in range(n):
            i2 = g[i] * g[i]
            for jj in range(m):
                v = pa[i, jj]
                if v == 0.0:
                    continue
                j = jj + 1.0
                j2 = j * j
                gsum[i] += v
                rsum[jj] += v
                total += v
                srlgle += v / (i2 * j2)
                srhgle += v * i2 / j2
                lrlgle += v * j2 / i2
                lrhgle += v * i2 * j2
        entropy = 0.0
        for i in range(n):
            for jj in range(m):
                v = pa[i, jj]
                if v != 0.0:
                    q = v / total
                    entropy -= q * math.log2(q + EPS)
        sre = 0.0
        lre = 0.0
        rln = 0.0
        n_p = 0.0
        mu_j = 0.0
        for jj in range(m):
            j = jj + 1.0
            r = rsum[jj]
            sre += r / (j * j)
            lre += r * j * j
            rln += r * r
            n_p += r * j
            mu_j += r / total * j
        rv = 0.0
        for jj in range(m):
            rv += rsum[jj] / total * (jj + 1.0 - mu_j) ** 2
        gln = 0.0
        lgl = 0.0
        hgl = 0.0
        mu_i = 0.0
        for i in range(n):
            gi = gsum[i]
            gln += gi * gi
            lgl += gi / (g[i] * g[i])
            hgl += gi * g[i] * g[i]
            mu_i += gi / total * g[i]
        glv = 0.0
        for i in range(n):
            glv += gsum[i] / total * (g[i] - mu_i) ** 2
        out[a, 0] = sre / total
        out[a, 1] = lre / total
        out[a, 2] = gln / total
        out[a, 3] = gln / (total * total)
        out[a, 4] = rln / total
        out[a, 5] = rln / (total * total)
        out[a, 6] = total / n_p
        out[a, 7] = glv
        out[a, 8] = rv
        out[a, 9] = entropy
        out[a, 10] = lgl / total
        out[a, 11] = hgl / total
        out[a, 12] = srlgle / total
        out[a, 13] = srhgle / total
        out[a, 14] = lrlgle / total
        out[a, 15] = lrhgle / total
    return out


@_jit
def ngtdm_features(g, n_i, s_i):
    """Coarseness, Contrast, Busyness, Complexity, Strength (``ngtdm.FEATURES`` order) from the NGTDM
    columns over grey levels g; levels with n_i = 0 are left out; NaN when no voxel is counted."""
    out = np.empty(5, dtype=np.float64)
    n_vp = 0.0
    for v in n_i:
        n_vp += v
    if n_vp == 0:
        out[:] = np.nan
        return out
    k = 0
    for v in n_i:
        if v > 0:
            k += 1
    gi = np.empty(k)
    pi = np.empty(k)
    si = np.empty(k)
    k = 0
    for r in range(n_i.shape[0]):
        if n_i[r] > 0:
            gi[k] = g[r]
            pi[k] = n_i[r] / n_vp
            si[k] = s_i[r]
            k += 1
    ps_total = 0.0
    s_total = 0.0
    for r in range(k):
        ps_total += pi[r] * si[r]
        s_total += si[r]
    spread = 0.0
    absdiff = 0.0
    complexity = 0.0
    strength = 0.0
    for r in range(k):
        for c in range(k):
            d = gi[r] - gi[c]
            spread += pi[r] * pi[c] * d * d
            absdiff += abs(gi[r] * pi[r] - gi[c] * pi[c])
            complexity += abs(d) * (pi[r] * si[r] + pi[c] * si[c]) / (pi[r] + pi[c])
            strength += (pi[r] + pi[c]) * d * d
    out[0] = 1.0 / ps_total if ps_total != 0 else 1e6
    out[1] = 0.0 if k < 2 else spread * s_total / n_vp / (k * (k - 1))
    out[2] = ps_total / absdiff if absdiff != 0 else 0.0
    out[3] = complexity / n_vp
    out[4] = 0.0 if s_total == 0 else strength / s_total
    return out


# --------------------------------------------------------------------------------------------------
# one call per feature class (the extract path): matrices, aggregation and features
# --------------------------------------------------------------------------------------------------
@_jit
def prepare(mask, levels, pad):
    """:func:`level_volume` and :func:`level_ranks` in one call: (lv, roi, present, counts, rank)."""
    lv, roi = level_volume(mask, levels, pad)
    top = 0
    for v in levels:
        if v > top:
            top = v
    present, counts, rank = level_ranks(levels, top)
    return lv, roi, present, counts, rank


@_jit
def merge_directions(p, weights):
    """sum_a w_a P_a as one matrix (1, n, m) (PyRadiomics weightingNorm)."""
    n_dir, n, m = p.shape
    out = np.zeros((1, n, m))
    for a in range(n_dir):
        w = weights[a]
        for i in range(n):
            for j in range(m):
                out[0, i, j] += w * p[a, i, j]
    return out


@_jit
def glcm_values(lv, roi, rank, present, steps, symmetric, weights):
    """The 24 GLCM features (``glcm.FEATURES`` order), PyRadiomics aggregation: co-occurrences along
    ``steps``, + transpose when ``symmetric``, merged with ``weights`` when there are any (else one matrix
    per direction), normalised, directions without pairs dropped, features averaged over the matrices."""
    n = present.shape[0]
    p = cooccurrence(lv, roi, rank, n, steps)
    if symmetric:
        for a in range(p.shape[0]):
            for i in range(n):
                for j in range(i, n):
                    t = p[a, i, j] + p[a, j, i]
                    p[a, i, j] = t
                    p[a, j, i] = t
    if weights.shape[0] > 0:
        p = merge_directions(p, weights)
    keep = 0
    for a in range(p.shape[0]):
        total = p[a].sum()
        if total > 0:
            p[keep] = p[a] / total
            keep += 1
    g = present.astype(np.float64)
    return column_nanmean(glcm_features(p[:keep], g, int(present[n - 1]), symmetric))


@_jit
def glrlm_values(lv, roi, rank, present, steps, max_length, drop_flat, weights):
    """The 16 GLRLM features (``glrlm.FEATURES`` order), PyRadiomics aggregation: runs along ``steps``,
    directions in which no line holds two ROI voxels zeroed when ``drop_flat``, merged with ``weights``
    when there are any, matrices without runs dropped, features averaged over the matrices."""
    p, multi = run_lengths(lv, roi, rank, present.shape[0], steps, max_length)
    if drop_flat:
        for a in range(p.shape[0]):
            if not multi[a]:
                p[a] = 0.0
    if weights.shape[0] > 0:
        p = merge_directions(p, weights)
    keep = 0
    for a in range(p.shape[0]):
        if p[a].sum() > 0:
            p[keep] = p[a]
            keep += 1
    return column_nanmean(matrix_features(p[:keep], present.astype(np.float64)))


@_jit
def glszm_values(lv, roi, rank, present, steps):
    """The 16 GLSZM features (``glszm.FEATURES`` order) of the ROI's size zone matrix."""
    p = size_zones(lv, roi, rank, present.shape[0], steps)
    return matrix_features(p.reshape((1, p.shape[0], p.shape[1])), present.astype(np.float64))[0]


@_jit
def neighbourhood_values(lv, roi, rank, present, steps, alpha, exclude_isolated):
    """(the 16 run-length-style features of the dependence matrix, the 5 NGTDM features) of the ROI."""
    dep, n_i, s_i = neighbourhoods(lv, roi, rank, present.shape[0], steps, alpha, exclude_isolated)
    g = present.astype(np.float64)
    return matrix_features(dep.reshape((1, dep.shape[0], dep.shape[1])), g)[0], ngtdm_features(g, n_i, s_i)


# --------------------------------------------------------------------------------------------------
# shape: marching cubes, diameters, axes
# --------------------------------------------------------------------------------------------------


@_jit
def _config_tables(spacing, midpoints, tri, n_tri):
    """Per configuration (< 128): its triangles' area (mm^2), and for the signed volume 6V the constant
    and linear terms in the cube origin o: sum_t det(a_t, b_t, c_t) = K0 + o . K1 with a_t = o + m_a etc.
    (det(o + m_a, o + m_b, o + m_c) = det(m_a, m_b, m_c) + o . (m_b x m_c + m_c x m_a + m_a x m_b))."""
    area = np.zeros(128)
    k0 = np.zeros(128)
    k1 = np.zeros((128, 3))
    m = np.empty((3, 3))
    for config in range(128):
        for t in range(n_tri[config]):
            for q in range(3):
                e = tri[config, t, q]
                for c in range(3):
                    m[q, c] = midpoints[e, c] * spacing[c]
            a0, a1, a2 = m[0, 0], m[0, 1], m[0, 2]
            b0, b1, b2 = m[1, 0], m[1, 1], m[1, 2]
            c0, c1, c2 = m[2, 0], m[2, 1], m[2, 2]
            bc0, bc1, bc2 = b1 * c2 - b2 * c1, b2 * c0 - b0 * c2, b0 * c1 - b1 * c0
            ca0, ca1, ca2 = c1 * a2 - c2 * a1, c2 * a0 - c0 * a2, c0 * a1 - c1 * a0
            ab0, ab1, ab2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
            k0[config] += ab0 * c0 + ab1 * c1 + ab2 * c2
            k1[config, 0] += bc0 + ca0 + ab0
            k1[config, 1] += bc1 + ca1 + ab1
            k1[config, 2] += bc2 + ca2 + ab2
            u0, u1, u2 = a0 - c0, a1 - c1, a2 - c2
            w0, w1, w2 = b0 - c0, b1 - c1, b2 - c2
            n0 = u1 * w2 - u2 * w1
            n1 = u2 * w0 - u0 * w2
            n2 = u0 * w1 - u1 * w0
            area[config] += 0.5 * math.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
    return area, k0, k1


@_jit
def mesh_area_volume(lv, dims, pad, spacing, corners, midpoints, tri, n_tri):
    """(surface area mm^2, volume mm^3) of the marching-cubes mesh of the ROI (lv > 0) of the padded
    level volume (flat, shape ``dims``, ``pad`` >= 1; see :mod:`.mesh`: iso-level 0.5 on the voxel-centre
    grid, configurations >= 128 complemented with their signed volume negated). ``corners`` (8, 3)
    (z, y, x) of the cube corners in the configuration bit order. Coordinates count from one voxel before
    the ROI's bounding box, as :func:`.mesh.marching_cubes` (the signed volume of a mesh with
    configurations the table orients inconsistently, e.g. around one-voxel holes, depends on it).
    Each configuration's area and volume terms come from :func:`_config_tables`."""
    nz, ny, nx = dims[0], dims[1], dims[2]
    area_of, k0, k1 = _config_tables(spacing, midpoints, tri, n_tri)
    bit = np.zeros((2, 2, 2), dtype=np.int64)         # bit of each corner, by (dz, dy, dx)
    for k in range(8):
        bit[corners[k, 0], corners[k, 1], corners[k, 2]] = 1 << k
    b000, b010, b100, b110 = bit[0, 0, 0], bit[0, 1, 0], bit[1, 0, 0], bit[1, 1, 0]
    b001, b011, b101, b111 = bit[0, 0, 1], bit[0, 1, 1], bit[1, 0, 1], bit[1, 1, 1]
    area = 0.0
    volume6 = 0.0
    face = np.empty(nx, dtype=np.int64)       # corner bits of the 4 voxels at x of the cube row, as dx = 0
    for iz in range(nz - 1):
        oz = (iz - pad + 1) * spacing[0]
        for iy in range(ny - 1):
            oy = (iy - pad + 1) * spacing[1]
            any_in = 0
            base = (iz * ny + iy) * nx
            for ix in range(nx):
                v = base + ix
                f = (b000 * (lv[v] > 0) | b010 * (lv[v + nx] > 0) | b100 * (lv[v + ny * nx] > 0)
                     | b110 * (lv[v + ny * nx + nx] > 0))
                face[ix] = f
                any_in |= f
            if any_in == 0:
                continue
            for ix in range(nx - 1):
                f0 = face[ix]
                f1 = face[ix + 1]
                # the dx = 1 corners carry the bits of the dx = 0 corners of the same (dz, dy)
                config = (f0 | b001 * ((f1 & b000) != 0) | b011 * ((f1 & b010) != 0) | b101 * ((f1 & b100) != 0)
                          | b111 * ((f1 & b110) != 0))
                if config == 0 or config == 255:
                    continue
                sign = 1.0
                if config & 0x80:
                    config ^= 0xFF
                    sign = -1.0
                ox = (ix - pad + 1) * spacing[2]
                area += area_of[config]
                volume6 += sign * (k0[config] + oz * k1[config, 0] + oy * k1[config, 1] + ox * k1[config, 2])
    return area, abs(volume6) / 6.0


@_jit
def _surface_edges(lv, dims, out):
    """Count the face-adjacent voxel pairs of which exactly one is in the ROI; write their midpoints as
    doubled indices into ``out`` when it has room for them."""
    nz, ny, nx = dims[0], dims[1], dims[2]
    write = out.shape[0] > 0
    count = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = (z * ny + y) * nx + x
                inside = lv[v] > 0
                for axis in range(3):
                    if axis == 0:
                        if z + 1 >= nz or (lv[v + ny * nx] > 0) == inside:
                            continue
                    elif axis == 1:
                        if y + 1 >= ny or (lv[v + nx] > 0) == inside:
                            continue
                    elif x + 1 >= nx or (lv[v + 1] > 0) == inside:
                        continue
                    if write:
                        out[count, 0] = 2 * z + (1 if axis == 0 else 0)
                        out[count, 1] = 2 * y + (1 if axis == 1 else 0)
                        out[count, 2] = 2 * x + (1 if axis == 2 else 0)
                    count += 1
    return count


@_jit
def mesh_vertices(lv, dims):
    """The mesh vertices as doubled voxel indices (n, 3) (z, y, x) of the padded level volume: every
    midpoint between two face-adjacent voxels of which exactly one is in the ROI."""
    count = _surface_edges(lv, dims, np.empty((0, 3), dtype=np.int64))
    out = np.empty((count, 3), dtype=np.int64)
    _surface_edges(lv, dims, out)
    return out


@_jit
def _cross2(o0, o1, a0, a1, b0, b1):
    return (a0 - o0) * (b1 - o1) - (a1 - o1) * (b0 - o0)


@_jit
def _convex_polygon_diameter2(hc, hb, h, scale_c, scale_b):
    """Largest squared distance (mm^2) between two vertices of the convex polygon (hc[:h], hb[:h])
    (strictly convex, counter-clockwise, integer coordinates; mm = coordinate * scale), by rotating
    calipers: for each edge (i, i + 1) the vertex j farthest from its line (found by advancing j while the
    next vertex is farther, exact in integers) forms an antipodal pair with both ends of the edge, and
    j + 1 does too where the two edges are parallel. The farthest pair is antipodal, and scaling the axes
    keeps antipodal pairs antipodal, so the pairs found in index space are scored in mm."""
    if h < 2:
        return 0.0
    best = 0.0
    if h == 2:
        db = (hb[0] - hb[1]) * scale_b
        dc = (hc[0] - hc[1]) * scale_c
        return db * db + dc * dc
    j = 1
    for i in range(h):
        ni = i + 1 if i + 1 < h else 0
        ec = hc[ni] - hc[i]
        eb = hb[ni] - hb[i]
        nj = j + 1 if j + 1 < h else 0
        for _ in range(h):
            nj = j + 1 if j + 1 < h else 0
            if ec * (hb[nj] - hb[j]) - eb * (hc[nj] - hc[j]) > 0:
                j = nj
            else:
                break
        for u, w in ((i, j), (ni, j), (i, nj), (ni, nj)):     # (., j + 1) matters for parallel edges only
            db = (hb[u] - hb[w]) * scale_b
            dc = (hc[u] - hc[w]) * scale_c
            d2 = db * db + dc * dc
            if d2 > best:
                best = d2
    return best


@_jit
def _order_descending(key):
    """Indices that sort ``key`` descending (Shell sort with Ciura's gaps: a few loops, quick to compile,
    enough for the few hundred points it gets)."""
    k = key.shape[0]
    order = np.arange(k)
    for gap in (701, 301, 132, 57, 23, 10, 4, 1):
        for i in range(gap, k):
            item = order[i]
            j = i
            while j >= gap and key[order[j - gap]] < key[item]:
                order[j] = order[j - gap]
                j -= gap
            order[j] = item
    return order


@_jit
def _farthest_pair2(pts):
    """Largest squared distance between two of the points (k, 3): pairs in order of decreasing distance
    from the centroid, stopping once r_u + r_w (>= their distance) is below the best so far."""
    k = pts.shape[0]
    if k < 2:
        return 0.0
    c = np.zeros(3)
    for u in range(k):
        for q in range(3):
            c[q] += pts[u, q]
    c /= k
    r = np.empty(k)
    for u in range(k):
        r[u] = math.sqrt((pts[u, 0] - c[0]) ** 2 + (pts[u, 1] - c[1]) ** 2 + (pts[u, 2] - c[2]) ** 2)
    order = _order_descending(r)
    best = 0.0
    best_d = 0.0
    for iu in range(k):
        u = order[iu]
        if (r[u] + r[order[0]]) * (1.0 + 1e-9) < best_d:
            break
        for iw in range(iu + 1, k):
            w = order[iw]
            if (r[u] + r[w]) * (1.0 + 1e-9) < best_d:
                break
            d0 = pts[u, 0] - pts[w, 0]
            d1 = pts[u, 1] - pts[w, 1]
            d2 = pts[u, 2] - pts[w, 2]
            d = d0 * d0 + d1 * d1 + d2 * d2
            if d > best:
                best = d
                best_d = math.sqrt(d)
    return best


@_jit
def mesh_diameters(vertices, dims, spacing):
    """(Maximum2DDiameterSlice, ...Column, ...Row, Maximum3DDiameter) in mm of the mesh vertices
    (doubled voxel indices (n, 3) in a padded volume of shape ``dims``).

    The farthest pair of a point set lies among the extreme points (convex hull vertices). For the plane
    diameters, each axis plane's extreme points come from the first and last vertex of each line of the
    plane (an inner point of a line is no extreme point) by Andrew's monotone chain in exact integer
    arithmetic, then every pair of them. An extreme point of the 3D set is also extreme in the three
    axis planes through it, so the 3D diameter is the largest distance among the vertices that are hull
    vertices of all three of their planes."""
    nv = vertices.shape[0]
    out = np.zeros(4, dtype=np.float64)
    if nv < 2:
        return out
    size = np.empty(3, dtype=np.int64)
    for q in range(3):
        size[q] = 2 * dims[q] + 1
    half = np.empty(3)
    for q in range(3):
        half[q] = spacing[q] / 2.0
    flags = np.zeros(nv, dtype=np.int64)
    cand = np.empty(2 * nv + 2, dtype=np.int64)          # vertex index of each candidate
    cc = np.empty(2 * nv + 2, dtype=np.int64)            # its (C, B) coordinates
    cb = np.empty(2 * nv + 2, dtype=np.int64)
    hull = np.empty(2 * nv + 2, dtype=np.int64)          # candidate positions on the hull
    hc = np.empty(2 * nv + 2, dtype=np.int64)
    hb = np.empty(2 * nv + 2, dtype=np.int64)
    for plane_axis in range(3):
        # B: along the lines, C: the line key within the plane
        ax_b = 2 if plane_axis != 2 else 1
        ax_c = 1 if plane_axis == 0 else 0
        n_plane, n_line = size[plane_axis], size[ax_c]
        # first and last vertex of each line: min / max of (B << 40 | vertex), no branches
        lo_packed = np.full(n_plane * n_line, np.iinfo(np.int64).max, dtype=np.int64)
        hi_packed = np.full(n_plane * n_line, -1, dtype=np.int64)
        for k in range(nv):
            key = vertices[k, plane_axis] * n_line + vertices[k, ax_c]
            packed = (vertices[k, ax_b] << 40) | k
            lo_packed[key] = min(lo_packed[key], packed)
            hi_packed[key] = max(hi_packed[key], packed)
        mask40 = (1 << 40) - 1
        best = 0.0
        for pl in range(n_plane):
            n_cand = 0
            for ln in range(n_line):
                key = pl * n_line + ln
                if hi_packed[key] >= 0:
                    lo_k = lo_packed[key] & mask40
                    hi_k = hi_packed[key] & mask40
                    cand[n_cand] = lo_k
                    cc[n_cand] = ln
                    cb[n_cand] = lo_packed[key] >> 40
                    n_cand += 1
                    if hi_k != lo_k:
                        cand[n_cand] = hi_k
                        cc[n_cand] = ln
                        cb[n_cand] = hi_packed[key] >> 40
                        n_cand += 1
            if n_cand == 0:
                continue
            # candidates are sorted by (C, B): Andrew's monotone chain, lower then upper hull
            if n_cand == 1:
                hull[0] = 0
                h = 1
            else:
                h = 0
                for idx in range(n_cand):
                    while h >= 2 and _cross2(cc[hull[h - 2]], cb[hull[h - 2]], cc[hull[h - 1]], cb[hull[h - 1]],
                                             cc[idx], cb[idx]) <= 0:
                        h -= 1
                    hull[h] = idx
                    h += 1
                lower = h + 1
                for idx in range(n_cand - 2, -1, -1):
                    while h >= lower and _cross2(cc[hull[h - 2]], cb[hull[h - 2]], cc[hull[h - 1]],
                                                 cb[hull[h - 1]], cc[idx], cb[idx]) <= 0:
                        h -= 1
                    hull[h] = idx
                    h += 1
                h -= 1                      # the chain ends where it started
            for u in range(h):
                flags[cand[hull[u]]] |= 1 << plane_axis
                hc[u] = cc[hull[u]]
                hb[u] = cb[hull[u]]
            d2 = _convex_polygon_diameter2(hc, hb, h, half[ax_c], half[ax_b])
            if d2 > best:
                best = d2
        out[plane_axis] = math.sqrt(best)
    n_keep = 0
    for k in range(nv):
        if flags[k] == 7:
            n_keep += 1
    pts = np.empty((n_keep, 3))
    n_keep = 0
    for k in range(nv):
        if flags[k] == 7:
            for q in range(3):
                pts[n_keep, q] = vertices[k, q] * half[q]
            n_keep += 1
    best = _farthest_pair2(pts)
    out[3] = math.sqrt(best)
    return out


@_jit
def axis_covariance(lv, dims, spacing):
    """Population covariance (3, 3), mm^2, of the physical centres of the ROI voxels (lv > 0) of the
    padded level volume (flat, shape ``dims``): integer moments of the box indices (exact), then
    cov_ab = s_a s_b (S_ab / N - (S_a / N) (S_b / N))."""
    nz, ny, nx = dims[0], dims[1], dims[2]
    n = 0
    s1 = np.zeros(3, dtype=np.int64)
    s2 = np.zeros((3, 3), dtype=np.int64)
    for z in range(nz):
        for y in range(ny):
            base = (z * ny + y) * nx
            for x in range(nx):
                if lv[base + x] > 0:
                    n += 1
                    s1[0] += z
                    s1[1] += y
                    s1[2] += x
                    s2[0, 0] += z * z
                    s2[0, 1] += z * y
                    s2[0, 2] += z * x
                    s2[1, 1] += y * y
                    s2[1, 2] += y * x
                    s2[2, 2] += x * x
    cov = np.empty((3, 3))
    for r in range(3):
        for q in range(r, 3):
            c = (s2[r, q] / n - (s1[r] / n) * (s1[q] / n)) * spacing[r] * spacing[q]
            cov[r, q] = c
            cov[q, r] = c
    return cov


@_jit
def shape_values(lv, dims, pad, spacing, corners, midpoints, tri, n_tri):
    """(surface area mm^2, mesh volume mm^3, the four maximum diameters mm (slice, column, row, 3D), the
    voxel-centre covariance (3, 3) mm^2 row by row) of the ROI of the padded level volume, as a 15-vector
    (the 3 x 3 eigenvalues are left to numpy: LAPACK inside a kernel costs seconds of compilation)."""
    out = np.empty(15)
    out[0], out[1] = mesh_area_volume(lv, dims, pad, spacing, corners, midpoints, tri, n_tri)
    out[2:6] = mesh_diameters(mesh_vertices(lv, dims), dims, spacing)
    out[6:15] = axis_covariance(lv, dims, spacing).ravel()
    return out
