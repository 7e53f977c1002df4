"""The 180-degree rotations of :class:`skymorph.core.fast_statmorph.FastSourceMorphology`:
skimage's ``rotate(image, 180, center=(xc, yc))`` bilinear warp and its nearest-neighbour
mask lookup written out on the same transformation matrix (equal to skimage's to ~1e-15),
compiled with numba when it is installed, else in numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["prepare_image", "rotate_180", "rotate_mask_180"]


_ROTATION_PI = None
_LAST_MATRIX: tuple = (None, None)


def _rotation_matrix(xc: float, yc: float) -> np.ndarray:
    """The inverse map skimage's ``rotate(image, 180, center=(xc, yc))`` warps with:
    translation(-c), rotation(pi), translation(+c), composed as skimage composes them."""
    global _ROTATION_PI, _LAST_MATRIX
    last = _LAST_MATRIX  # the image and then its mask are rotated about the same centre
    if last[0] == (xc, yc):
        return last[1]
    if _ROTATION_PI is None:
        angle = np.deg2rad(180.0)
        _ROTATION_PI = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                                 [0.0, 0.0, 1.0]])
    t1 = np.array([[1.0, 0.0, xc], [0.0, 1.0, yc], [0.0, 0.0, 1.0]])
    t3 = np.array([[1.0, 0.0, -xc], [0.0, 1.0, -yc], [0.0, 0.0, 1.0]])
    # SimilarityTransform addition: (t3 + t2 + t1).params = t1 @ (t2 @ t3)
    matrix = t1 @ (_ROTATION_PI @ t3)
    matrix[2] = (0.0, 0.0, 1.0)
    _LAST_MATRIX = ((xc, yc), matrix)
    return matrix


_LAST_MAP: tuple = (None, None, None)


def _mapped(xc: float, yc: float, rows_sl: slice, cols_sl: slice) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_map_coordinates` of the rotation about (xc, yc), remembered for the last call
    (the asymmetry rotates the image and then its mask about the same centre)."""
    global _LAST_MAP
    key = (xc, yc, rows_sl.start, rows_sl.stop, cols_sl.start, cols_sl.stop)
    last = _LAST_MAP
    if last[0] == key:
        return last[1], last[2]
    r, c = _map_coordinates(_rotation_matrix(xc, yc), rows_sl, cols_sl)
    _LAST_MAP = (key, r, c)
    return r, c


def _map_coordinates(h: np.ndarray, rows_sl: slice, cols_sl: slice) -> tuple[np.ndarray, np.ndarray]:
    # c = h00 * col + h01 * row + h02 (and r likewise) on the grid, element by element as
    # skimage computes it, by broadcasting a row and a column (the same operations)
    rows = np.arange(rows_sl.start, rows_sl.stop, dtype=np.float64)[:, None]
    cols = np.arange(cols_sl.start, cols_sl.stop, dtype=np.float64)[None, :]
    c = (h[0, 0] * cols + h[0, 1] * rows) + h[0, 2]
    r = (h[1, 0] * cols + h[1, 1] * rows) + h[1, 2]
    return r, c


def prepare_image(image: np.ndarray) -> tuple[float, float, bool, np.ndarray]:
    """What :func:`rotate_180` needs of an image, once: its range (NaN-safe), whether
    it is free of NaN, and a copy padded with one ring of zeros."""
    lo, hi = np.min(image), np.max(image)
    finite = not np.isnan(lo)
    if not finite:
        lo, hi = np.nanmin(image), np.nanmax(image)
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2))
    padded[1:-1, 1:-1] = image
    return lo, hi, finite, padded


_KERNELS: dict | None = None


def _kernels() -> dict:
    """numba versions of the two rotations' per-pixel arithmetic (the same operations in the
    same order, no fast-math: the same bits as the numpy code below), compiled once and
    cached on disk; an empty dict where numba is unavailable (numpy is used then)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    _KERNELS = {}
    try:
        import math

        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return _KERNELS

    @numba.njit(cache=True, nogil=True, inline="always")
    def sample(padded, r, c, ny, nx):  # pragma: no cover - compiled
        # one bilinear sample at (r, c) of the 1-pixel padded image, as skimage's order-1 warp
        minr, minc = math.floor(r), math.floor(c)
        maxr, maxc = math.ceil(r), math.ceil(c)
        dr, dc = r - minr, c - minc
        rlo = min(max(int(minr) + 1, 0), ny + 1)
        rhi = min(max(int(maxr) + 1, 0), ny + 1)
        clo = min(max(int(minc) + 1, 0), nx + 1)
        chi = min(max(int(maxc) + 1, 0), nx + 1)
        one_dc = 1 - dc
        top = one_dc * padded[rlo, clo] + dc * padded[rlo, chi]
        bottom = one_dc * padded[rhi, clo] + dc * padded[rhi, chi]
        return (1 - dr) * top + dr * bottom

    @numba.njit(cache=True, nogil=True)
    def bilinear(padded, h, r0, r1, c0, c1):  # pragma: no cover - compiled
        ny, nx = padded.shape[0] - 2, padded.shape[1] - 2
        out = np.empty((r1 - r0, c1 - c0))
        for i in range(r1 - r0):
            row = float(r0 + i)
            for j in range(c1 - c0):
                col = float(c0 + j)
                c = (h[0, 0] * col + h[0, 1] * row) + h[0, 2]
                r = (h[1, 0] * col + h[1, 1] * row) + h[1, 2]
                out[i, j] = sample(padded, r, c, ny, nx)
        return out

    @numba.njit(cache=True, nogil=True)
    def nearest(mask, h, r0, r1, c0, c1):  # pragma: no cover - compiled
        ny, nx = mask.shape
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.bool_)
        for i in range(r1 - r0):
            row = float(r0 + i)
            for j in range(c1 - c0):
                col = float(c0 + j)
                c = (h[0, 0] * col + h[0, 1] * row) + h[0, 2]
                r = (h[1, 0] * col + h[1, 1] * row) + h[1, 2]
                ri, ci = int(math.floor(r + 0.5)), int(math.floor(c + 0.5))
                if 0 <= ri < ny and 0 <= ci < nx:
                    out[i, j] = mask[ri, ci]
        return out

    @numba.njit(cache=True, nogil=True)
    def asymmetry_terms(padded, h, r0, r1, c0, c1, lo, hi, mask, has_mask, weights, n_terms,
                        area_weights, a0, b0):  # pragma: no cover - compiled
        # _asymmetry_function's per-pixel work in one pass, the same operations as its numpy
        # path: the rotated pixel (bilinear, clipped to [lo, hi]), both zeroed where the
        # symmetrised mask is set (and their aperture weight in area_weights, offset a0, b0),
        # then |I| w, |I_180 - I| w (and I^2 w, (I_180 - I)^2 w) of the pixels with w > 0 in
        # row-major order: numpy sums these rows exactly as it sums the boolean-indexed arrays
        ny, nx = padded.shape[0] - 2, padded.shape[1] - 2
        out = np.empty((n_terms, (r1 - r0) * (c1 - c0)))
        # the products h00 * col and h10 * col of each column, h01 * row and h11 * row of each
        # row, computed once (the same products, summed in the same order below)
        h02, h12 = h[0, 2], h[1, 2]
        col_c = np.empty(c1 - c0)
        col_r = np.empty(c1 - c0)
        for j in range(c1 - c0):
            col_c[j] = h[0, 0] * float(c0 + j)
            col_r[j] = h[1, 0] * float(c0 + j)
        k = 0
        for i in range(r1 - r0):
            row_c = h[0, 1] * float(r0 + i)
            row_r = h[1, 1] * float(r0 + i)
            for j in range(c1 - c0):
                c = (col_c[j] + row_c) + h02
                r = (col_r[j] + row_r) + h12
                rotated = sample(padded, r, c, ny, nx)
                if rotated < lo:
                    rotated = lo
                if rotated > hi:
                    rotated = hi
                value = padded[r0 + i + 1, c0 + j + 1]
                if has_mask:
                    masked = mask[r0 + i, c0 + j]
                    if not masked:
                        ri, ci = int(math.floor(r + 0.5)), int(math.floor(c + 0.5))
                        masked = 0 <= ri < ny and 0 <= ci < nx and mask[ri, ci]
                    if masked:
                        value = 0.0
                        rotated = 0.0
                        area_weights[a0 + i, b0 + j] = 0.0
                w = weights[i, j]
                if w > 0:
                    diff = rotated - value
                    out[0, k] = abs(value) * w
                    out[1, k] = abs(diff) * w
                    if n_terms == 4:
                        out[2, k] = (value * value) * w
                        out[3, k] = (diff * diff) * w
                    k += 1
        return out, k

    try:  # compile (or load from the cache) now: a failure means numpy, not a failed galaxy
        padded, h, small = np.zeros((4, 4)), np.eye(3), np.ones((2, 2))
        bilinear(padded, h, 0, 2, 0, 2)
        nearest(np.zeros((2, 2), dtype=np.bool_), h, 0, 2, 0, 2)
        asymmetry_terms(padded, h, 0, 2, 0, 2, -1.0, 1.0, np.zeros((2, 2), dtype=np.bool_), True, small, 4,
                        small.copy(), 0, 0)
    except Exception:  # noqa: BLE001 - pragma: no cover - numba that cannot compile here
        return _KERNELS
    _KERNELS.update(bilinear=bilinear, nearest=nearest, asymmetry_terms=asymmetry_terms)
    return _KERNELS


def _bilinear_numpy(padded: np.ndarray, ny: int, nx: int, xc: float, yc: float, rows_sl: slice,
                    cols_sl: slice) -> np.ndarray:
    r, c = _mapped(xc, yc, rows_sl, cols_sl)
    minr, minc = np.floor(r), np.floor(c)
    maxr, maxc = np.ceil(r), np.ceil(c)
    dr, dc = r - minr, c - minc
    # outside the image: 0 (skimage's mode "constant", cval 0): indices clipped into the
    # padded image's ring of zeros, as flat indices (one gather per corner)
    width = nx + 2
    flat = padded.ravel()
    row_lo = np.minimum(np.maximum(minr.astype(np.int64) + 1, 0), ny + 1) * width
    row_hi = np.minimum(np.maximum(maxr.astype(np.int64) + 1, 0), ny + 1) * width
    col_lo = np.minimum(np.maximum(minc.astype(np.int64) + 1, 0), nx + 1)
    col_hi = np.minimum(np.maximum(maxc.astype(np.int64) + 1, 0), nx + 1)
    one_dc = 1 - dc
    top = one_dc * flat.take(row_lo + col_lo) + dc * flat.take(row_lo + col_hi)
    bottom = one_dc * flat.take(row_hi + col_lo) + dc * flat.take(row_hi + col_hi)
    out = (1 - dr) * top + dr * bottom
    return out


def rotate_180(image: np.ndarray, xc: float, yc: float,
               region: tuple[slice, slice] | None = None,
               prepared: tuple[float, float, bool, np.ndarray] | None = None) -> np.ndarray:
    """``skimage.transform.rotate(image, 180.0, center=(xc, yc))`` for a 2-D float64 image
    (bilinear, zero outside, output clipped to the input's range), vectorised.

    Parameters
    ----------
    image : numpy.ndarray
        2-D float64 image.
    xc, yc : float
        Centre of the rotation (x = column, y = row), in pixels.
    region : tuple of slice, optional
        Only these rows and columns of the output (``rotate(...)[region]``); computed
        from the whole output where the clipping needs it (an image without both signs).
    prepared : tuple, optional
        :func:`prepare_image` of ``image`` (computed here when not given).

    Returns
    -------
    numpy.ndarray
        The rotated image (or its ``region``).
    """
    ny, nx = image.shape
    lo, hi, finite_range, padded = prepare_image(image) if prepared is None else prepared
    needs_whole = not lo <= 0.0 <= hi
    if region is None or needs_whole:
        rows_sl, cols_sl = slice(0, ny), slice(0, nx)
    else:
        rows_sl, cols_sl = (slice(*sl.indices(n)[:2]) for sl, n in zip(region, (ny, nx), strict=True))
    kernel = _kernels().get("bilinear")
    if kernel is not None:
        out = kernel(padded, _rotation_matrix(float(xc), float(yc)), rows_sl.start, rows_sl.stop,
                     cols_sl.start, cols_sl.stop)
    else:
        out = _bilinear_numpy(padded, ny, nx, float(xc), float(yc), rows_sl, cols_sl)
    # skimage's clip to the input's range, widened to cval (0) when 0 lies outside the
    # input's range but inside the output's
    if needs_whole:
        omin, omax = (np.min(out), np.max(out)) if finite_range else (np.nanmin(out), np.nanmax(out))
        if omin <= 0.0 <= omax:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
    np.maximum(out, lo, out=out)  # np.clip(out, lo, hi) without its per-call overhead
    np.minimum(out, hi, out=out)
    if needs_whole and region is not None:
        return out[region]
    return out


def rotate_mask_180(mask: np.ndarray, xc: float, yc: float,
                    region: tuple[slice, slice] | None = None) -> np.ndarray:
    """``skimage.transform.rotate(mask, 180.0, center=(xc, yc)) >= 0.5`` for a 2-D boolean
    mask (skimage rotates booleans by nearest neighbour, False outside), vectorised;
    ``region`` as in :func:`rotate_180`."""
    ny, nx = mask.shape
    rows_sl, cols_sl = (slice(0, ny), slice(0, nx)) if region is None else \
        (slice(*sl.indices(n)[:2]) for sl, n in zip(region, (ny, nx), strict=True))
    kernel = _kernels().get("nearest")
    if kernel is not None:
        return kernel(np.ascontiguousarray(mask, dtype=bool), _rotation_matrix(float(xc), float(yc)),
                      rows_sl.start, rows_sl.stop, cols_sl.start, cols_sl.stop)
    r, c = _mapped(float(xc), float(yc), rows_sl, cols_sl)
    ri = np.floor(r + 0.5).astype(np.int64)
    ci = np.floor(c + 0.5).astype(np.int64)
    inside = (ri >= 0) & (ri < ny) & (ci >= 0) & (ci < nx)
    return inside & mask.ravel().take(np.minimum(np.maximum(ri, 0), ny - 1) * nx
                                      + np.minimum(np.maximum(ci, 0), nx - 1))
