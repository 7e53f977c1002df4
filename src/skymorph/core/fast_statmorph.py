"""statmorph with its hottest helper done without repeated work (same numbers).

Profiling ``skymorph measure`` (COSMOS F814W stamps, one process) puts more than half of
statmorph's time in ``SourceMorphology._asymmetry_function``, which the Nelder-Mead searches
for the asymmetry centre (CAS, RMS, outer and shape asymmetry) call ~150 times per galaxy.
Each call rotates the image by 180 degrees with ``skimage.transform.rotate`` (a generic
warp: building three transforms, their product, a coordinate map) and rotates the mask the
same way even when nothing is masked, then builds the same exact-overlap aperture mask three
times (``area_overlap`` and two ``do_photometry``).

:class:`FastSourceMorphology` overrides only that method:

* the 180-degree rotation is the same bilinear interpolation, written out with numpy on
  the same transformation matrix (``rotate_180``; equal to skimage's to ~1e-15);
* the mask's rotation is the same nearest-neighbour lookup (``rotate_mask_180``), and an
  empty mask is not rotated at all;
* only the pixels inside the aperture's bounding box are rotated (the sums use no others);
* the aperture's exact-overlap weights are computed once and used for the area and the
  sums, with the same selection of pixels as photutils.

Every other property is statmorph's own code.  ``tests/test_measure.py`` checks that the
results equal statmorph's reference values within the reference test's tolerances and a
direct statmorph call to 1e-9.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["fast_class", "prepare_image", "rotate_180", "rotate_mask_180"]


def _rotation_matrix(xc: float, yc: float) -> np.ndarray:
    """The inverse map skimage's ``rotate(image, 180, center=(xc, yc))`` warps with:
    translation(-c), rotation(pi), translation(+c), composed as skimage composes them."""
    angle = np.deg2rad(180.0)
    t1 = np.array([[1.0, 0.0, xc], [0.0, 1.0, yc], [0.0, 0.0, 1.0]])
    t2 = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                   [0.0, 0.0, 1.0]])
    t3 = np.array([[1.0, 0.0, -xc], [0.0, 1.0, -yc], [0.0, 0.0, 1.0]])
    # SimilarityTransform addition: (t3 + t2 + t1).params = t1 @ (t2 @ t3)
    matrix = t1 @ (t2 @ t3)
    matrix[2] = (0.0, 0.0, 1.0)
    return matrix


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
    h = _rotation_matrix(float(xc), float(yc))
    rows, cols = np.mgrid[rows_sl, cols_sl].astype(np.float64)
    c = h[0, 0] * cols + h[0, 1] * rows + h[0, 2]
    r = h[1, 0] * cols + h[1, 1] * rows + h[1, 2]
    minr, minc = np.floor(r), np.floor(c)
    maxr, maxc = np.ceil(r), np.ceil(c)
    dr, dc = r - minr, c - minc
    minr, minc, maxr, maxc = (a.astype(np.int64) for a in (minr, minc, maxr, maxc))

    def pixel(rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
        # outside the image: 0 (skimage's mode "constant", cval 0)
        return padded[np.clip(rr + 1, 0, ny + 1), np.clip(cc + 1, 0, nx + 1)]

    top = (1 - dc) * pixel(minr, minc) + dc * pixel(minr, maxc)
    bottom = (1 - dc) * pixel(maxr, minc) + dc * pixel(maxr, maxc)
    out = (1 - dr) * top + dr * bottom
    # skimage's clip to the input's range, widened to cval (0) when 0 lies outside the
    # input's range but inside the output's
    if needs_whole:
        omin, omax = (np.min(out), np.max(out)) if finite_range else (np.nanmin(out), np.nanmax(out))
        if omin <= 0.0 <= omax:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
    np.clip(out, lo, hi, out=out)
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
    h = _rotation_matrix(float(xc), float(yc))
    rows, cols = np.mgrid[rows_sl, cols_sl].astype(np.float64)
    c = h[0, 0] * cols + h[0, 1] * rows + h[0, 2]
    r = h[1, 0] * cols + h[1, 1] * rows + h[1, 2]
    ri = np.floor(r + 0.5).astype(np.int64)
    ci = np.floor(c + 0.5).astype(np.int64)
    inside = (ri >= 0) & (ri < ny) & (ci >= 0) & (ci < nx)
    return inside & mask[np.clip(ri, 0, ny - 1), np.clip(ci, 0, nx - 1)]


def _make_class():
    import statmorph
    from astropy.utils.exceptions import AstropyUserWarning
    from photutils.aperture import CircularAperture, EllipticalAnnulus

    class FastSourceMorphology(statmorph.SourceMorphology):
        """:class:`statmorph.SourceMorphology` with a faster ``_asymmetry_function``
        (same values; see the module's notes)."""

        def _prepared(self, image):
            # the asymmetry searches rotate the same image ~150 times: convert it and
            # prepare it once (keyed by the object statmorph passes, kept alive here)
            cache = self.__dict__.setdefault("_skymorph_rotation_cache", {})
            key = id(image)
            if key not in cache:
                converted = np.float64(image)
                cache[key] = (image, converted, prepare_image(converted))
            return cache[key][1], cache[key][2]

        def _asymmetry_function(self, center, image, kind):
            image, prepared = self._prepared(image)
            ny, nx = image.shape
            xc, yc = center
            if xc < 0 or xc >= nx or yc < 0 or yc >= ny:
                warnings.warn('[asym_center] Minimizer tried to exit bounds.', AstropyUserWarning,
                              stacklevel=2)
                self.flag = max(self.flag, 1)
                return 100.0
            if kind in ("cas", "rms"):
                ap = CircularAperture(center, self._petro_extent_cas * self._rpetro_circ_centroid)
            elif kind == "outer":
                a_in, a_out = self.rhalf_ellip, self.rmax_ellip
                b_out = a_out / self.elongation_asymmetry
                assert (a_in > 0) & (a_out > 0)
                ap = EllipticalAnnulus(center, a_in, a_out, b_out, theta=self.orientation_asymmetry)
            elif kind == "shape":
                if np.isnan(self.rmax_circ) or (self.rmax_circ <= 0):
                    warnings.warn('[shape_asym] Invalid rmax_circ value.', AstropyUserWarning, stacklevel=2)
                    self.flag = 2
                    return -99.0
                ap = CircularAperture(center, self.rmax_circ)
            else:
                raise NotImplementedError('Asymmetry kind not understood:', kind)
            # only the aperture's pixels enter the sums: rotate just those
            apermask = ap.to_mask(method="exact")
            slc_large, slc_small = apermask.get_overlap_slices(image.shape)
            if slc_large is None:
                ap_area, sums = float("nan"), [float("nan")] * (4 if kind == "rms" else 2)
            else:
                cut = image[slc_large]
                cut_180 = rotate_180(image, xc, yc, slc_large, prepared)
                mask = self._mask_stamp
                if mask.any():
                    mask_symmetric = mask[slc_large] | rotate_mask_180(mask, xc, yc, slc_large)
                    cut = np.where(~mask_symmetric, cut, 0.0)
                    cut_180 = np.where(~mask_symmetric, cut_180, 0.0)
                else:
                    mask_symmetric = None
                weights = apermask.data[slc_small]
                if mask_symmetric is None:
                    ap_area = np.sum(weights)
                else:
                    masked = weights.copy()
                    masked[mask_symmetric] = 0.0
                    ap_area = np.sum(masked)
                diff = cut_180 - cut
                images = [np.abs(cut), np.abs(diff)]
                if kind == "rms":
                    images += [cut ** 2, diff ** 2]
                good = weights > 0
                sums = [(img * weights)[good].sum() for img in images]
            ap_abs_sum, ap_abs_diff = sums[0], sums[1]
            if ap_abs_sum == 0.0:
                warnings.warn('[asymmetry_function] Zero flux sum.', AstropyUserWarning, stacklevel=2)
                self.flag = max(self.flag, 1)
                return 100.0
            if kind == "shape":
                return ap_abs_diff / ap_abs_sum
            if kind == "rms":
                ap_sqr_sum, ap_sqr_diff = sums[2], sums[3]
                if self.sky_sigma == -99.0:
                    return ap_sqr_diff / ap_sqr_sum
                return (ap_sqr_diff - 2 * ap_area * self.sky_sigma ** 2) / (
                    ap_sqr_sum - ap_area * self.sky_sigma ** 2)
            if self._sky_asymmetry == -99.0:
                return ap_abs_diff / ap_abs_sum
            return (ap_abs_diff - ap_area * self._sky_asymmetry) / ap_abs_sum

    return FastSourceMorphology


_CLASS = None


def fast_class():
    """The :class:`FastSourceMorphology` class (built on first use: imports statmorph)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class()
    return _CLASS


def __getattr__(name: str):
    if name == "FastSourceMorphology":
        return fast_class()
    raise AttributeError(name)
