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

import contextlib
import threading
import warnings

import numpy as np

from .rotate180 import (
    _kernels,
    _rotation_matrix,
    prepare_image,
    rotate_180,
    rotate_mask_180,
)

__all__ = ["fast_class", "prepare_image", "rotate_180", "rotate_mask_180"]


def _make_class():
    import scipy.ndimage as ndi
    import scipy.optimize as opt
    import statmorph
    from astropy.utils.decorators import lazyproperty
    from astropy.utils.exceptions import AstropyUserWarning

    from . import fast_apertures as fa

    _EIGHT_NEIGHBOURS = ndi.generate_binary_structure(2, 2)
    convolved = _convolved_sersic_class()

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
                ap = fa.circle(center, self._petro_extent_cas * self._rpetro_circ_centroid, image.shape)
            elif kind == "outer":
                a_in, a_out = self.rhalf_ellip, self.rmax_ellip
                b_out = a_out / self.elongation_asymmetry
                assert (a_in > 0) & (a_out > 0)
                ap = fa.elliptical_annulus(center, a_in, a_out, b_out, self.orientation_asymmetry,
                                           image.shape)
            elif kind == "shape":
                if np.isnan(self.rmax_circ) or (self.rmax_circ <= 0):
                    warnings.warn('[shape_asym] Invalid rmax_circ value.', AstropyUserWarning, stacklevel=2)
                    self.flag = 2
                    return -99.0
                ap = fa.circle(center, self.rmax_circ, image.shape)
            else:
                raise NotImplementedError('Asymmetry kind not understood:', kind)
            # only the aperture's pixels enter the sums: rotate just those
            slc_large = ap.large
            if slc_large is None:
                ap_area, sums = float("nan"), [float("nan")] * (4 if kind == "rms" else 2)
            elif (fused := _kernels().get("asymmetry_terms")) is not None and \
                    prepared[0] <= 0.0 <= prepared[1]:
                # one compiled pass (same numbers as below, which it replaces); an image
                # without both signs needs skimage's whole-image clipping: numpy path
                mask = self._mask_stamp
                has_mask = self.__dict__.get("_skymorph_mask_any")
                if has_mask is None:
                    has_mask = self.__dict__["_skymorph_mask_any"] = bool(mask.any())
                area_weights = ap.full.copy() if has_mask else ap.full
                rows, cols = slc_large
                terms, count = fused(prepared[3], _rotation_matrix(float(xc), float(yc)), rows.start,
                                     rows.stop, cols.start, cols.stop, prepared[0], prepared[1], mask,
                                     has_mask, ap.data, 4 if kind == "rms" else 2, area_weights,
                                     ap.small[0].start, ap.small[1].start)
                ap_area = np.sum(area_weights[ap.small])
                sums = [terms[t, :count].sum() for t in range(terms.shape[0])]
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
                weights = ap.data
                if mask_symmetric is None:
                    ap_area = np.sum(weights)
                else:
                    ap_area = fa.area_overlap(ap, mask_symmetric, region=True)
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

        # --- Sersic fit: statmorph's own, its PSF-convolved model with the PSF's FFT kept ---

        @lazyproperty
        def _sersic_model(self):
            with _statmorph_uses(ConvolvedSersic2D=convolved):
                return statmorph.SourceMorphology.__dict__["_sersic_model"].__get__(self, type(self))

        # --- sky box: statmorph's first empty box in row-major order, found with box sums ---

        @lazyproperty
        def _slice_skybox(self):
            segmap = self._segmap.data[self._slice_stamp]
            ny, nx = segmap.shape
            bad = segmap != 0
            if self._mask is not None:
                bad = bad | self._mask[self._slice_stamp]
            assert self._skybox_size >= 2
            # integral image: the number of bad pixels of any box in four lookups
            integral = np.zeros((ny + 1, nx + 1), dtype=np.int64)
            integral[1:, 1:] = bad.cumsum(axis=0, dtype=np.int64).cumsum(axis=1)
            size = self._skybox_size
            while True:
                if ny - size > 0 and nx - size > 0:
                    # boxes at rows 0 .. ny - size - 1 and columns 0 .. nx - size - 1, as statmorph's loops
                    counts = (integral[size:ny, size:nx] - integral[:ny - size, size:nx]
                              - integral[size:ny, :nx - size] + integral[:ny - size, :nx - size])
                    empty = np.flatnonzero(counts.ravel() == 0)
                    if empty.size:
                        i, j = divmod(int(empty[0]), nx - size)
                        return slice(i, i + size), slice(j, j + size)
                if size <= 2:
                    warnings.warn('[skybox] Skybox not found.', AstropyUserWarning, stacklevel=2)
                    self.flag = 2
                    return slice(0, 0), slice(0, 0)
                size //= 2
                if self._verbose:
                    warnings.warn(f'[skybox] Reducing skybox size to {size}.', AstropyUserWarning,
                                  stacklevel=2)

        # --- radii: statmorph's root finders, each step with fast_apertures' sums ---

        def _petrosian_function_circ(self, r, center):
            image, mask = self._cutout_stamp_maskzeroed, self._mask_stamp
            r_in = r - 0.5 * self._annulus_width
            r_out = r + 0.5 * self._annulus_width
            annulus_mean = np.abs(fa.aperture_mean(fa.circular_annulus(center, r_in, r_out, image.shape),
                                                   image, mask))
            aperture_mean = np.abs(fa.aperture_mean(fa.circle(center, r, image.shape), image, mask))
            if aperture_mean == 0:
                warnings.warn('[rpetro_circ] Mean flux is zero.', AstropyUserWarning, stacklevel=2)
                ratio = float(annulus_mean != 0)
                self.flag = 2
            else:
                ratio = annulus_mean / aperture_mean
            return ratio - self._eta

        def _petrosian_function_ellip(self, a, center, elongation, theta):
            image, mask = self._cutout_stamp_maskzeroed, self._mask_stamp
            b = a / elongation
            a_in = a - 0.5 * self._annulus_width
            a_out = a + 0.5 * self._annulus_width
            b_out = a_out / elongation
            annulus_mean = np.abs(fa.aperture_mean(
                fa.elliptical_annulus(center, a_in, a_out, b_out, theta, image.shape), image, mask))
            aperture_mean = np.abs(fa.aperture_mean(fa.ellipse(center, a, b, theta, image.shape),
                                                    image, mask))
            if aperture_mean == 0:
                warnings.warn('[rpetro_ellip] Mean flux is zero.', AstropyUserWarning, stacklevel=2)
                ratio = float(annulus_mean != 0)
                self.flag = 2
            else:
                ratio = annulus_mean / aperture_mean
            return ratio - self._eta

        def _radius_at_fraction_of_total_cas(self, fraction):
            image = self._cutout_stamp_maskzeroed
            center = self._asymmetry_center
            r_upper = self._petro_extent_cas * self.rpetro_circ
            r, flag = _radius_at_fraction(image, lambda r: fa.circle(center, r, image.shape), r_upper,
                                          fraction, "r_circ")
            self.flag = max(self.flag, flag)
            if np.isnan(r) or (r <= 0.0):
                warnings.warn('[CAS] Invalid radius_at_fraction_of_total.', AstropyUserWarning, stacklevel=2)
                self.flag = 2
                r = -99.0  # invalid
            return r

        @lazyproperty
        def rhalf_circ(self):
            image = self._cutout_stamp_maskzeroed
            center = self._asymmetry_center
            if self.rmax_circ == 0:
                return 0.0
            r, flag = _radius_at_fraction(image, lambda r: fa.circle(center, r, image.shape), self.rmax_circ,
                                          0.5, "r_circ")
            self.flag = max(self.flag, flag)
            return r

        @lazyproperty
        def rhalf_ellip(self):
            image = self._cutout_stamp_maskzeroed
            center = self._asymmetry_center
            if self.rmax_ellip == 0:
                return 0.0
            elongation, theta = self.elongation_asymmetry, self.orientation_asymmetry
            r, flag = _radius_at_fraction(
                image, lambda a: fa.ellipse(center, a, a / elongation, theta, image.shape), self.rmax_ellip,
                0.5, "r_ellip")
            self.flag = max(self.flag, flag)
            return r

        # --- multimode: each threshold's clumps counted once (basin-hopping revisits them) ---

        def _multimode_function(self, q):
            sorted_values = self._sorted_pixelvals_mid
            if hasattr(q, '__len__'):  # statmorph's _quantile
                assert len(q) == 1
                q = q[0]
            if q < 0 or q > 1:
                raise ValueError('Quantiles must be in the range [0, 1].')
            k = int(q * (len(sorted_values) - 1))
            cache = self.__dict__.setdefault("_skymorph_multimode_cache", {})
            if k not in cache:
                above_threshold = self._cutout_mid >= sorted_values[k]
                labeled_array, num_features = ndi.label(above_threshold, structure=_EIGHT_NEIGHBOURS)
                # every label 1..num_features occurs: bincount gives np.unique's counts
                counts = np.bincount(labeled_array.ravel(), minlength=num_features + 1)[1:]
                cache[k] = np.sort(counts)[::-1]
            return cache[k]

        def _multimode_ratio(self, q):
            invalid = self.__dict__.get("_skymorph_multimode_invalid")
            if invalid is None:
                invalid = self.__dict__["_skymorph_multimode_invalid"] = np.sum(self._cutout_mid)
            if (q < 0) or (q > 1):
                return invalid
            # the ratio of each threshold (quantile index) once
            sorted_values = self._sorted_pixelvals_mid
            k = int((q[0] if hasattr(q, '__len__') and len(q) == 1 else q) * (len(sorted_values) - 1))
            ratios = self.__dict__.setdefault("_skymorph_multimode_ratios", {})
            if k not in ratios:
                sorted_counts = self._multimode_function(q)
                if len(sorted_counts) == 1:
                    ratios[k] = invalid
                else:
                    ratios[k] = -1.0 * float(sorted_counts[1]) ** 2 / float(sorted_counts[0])
            return ratios[k]

    def _radius_at_fraction(image, aperture, r_total, fraction, what):
        # statmorph's _radius_at_fraction_of_total_circ / _ellip with ``aperture(r)`` the
        # weights of the circle (ellipse) of radius (semi-major axis) r
        flag = 0
        total_sum = fa.aperture_sum(aperture(r_total), image)
        if total_sum == 0:
            warnings.warn(f'[{what}] Total flux sum is zero.', AstropyUserWarning, stacklevel=2)
            return r_total, 2
        elif total_sum < 0:
            warnings.warn(f'[{what}] Total flux sum is negative.', AstropyUserWarning, stacklevel=2)
            flag = 2
            total_sum = np.abs(total_sum)

        def function(r):
            assert (r >= 0) & (fraction >= 0) & (fraction <= 1) & (total_sum > 0)
            if r == 0:
                return 0.0 - fraction
            return np.abs(fa.aperture_sum(aperture(r), image)) / total_sum - fraction

        npoints = 100
        r_grid = np.linspace(0.0, r_total, num=npoints)
        i = 0
        while True:
            assert i < npoints, 'Root not found within range.'
            r = r_grid[i]
            curval = function(r)
            if curval <= 0:
                r_min = r
            elif curval > 0:
                r_max = r
                break
            i += 1
        return opt.brentq(function, r_min, r_max, xtol=1e-6), flag

    return FastSourceMorphology


_PATCH_LOCK = threading.Lock()
_PATCH_DEPTH = 0


@contextlib.contextmanager
def _statmorph_uses(**classes):
    """statmorph's module uses these classes (same values, faster) while the block runs.

    statmorph builds its PSF-convolved model by its module-level name; the name is swapped
    only while a :class:`FastSourceMorphology` fits (counted across threads), so a plain
    ``statmorph.source_morphology`` call outside measure keeps statmorph's own class.
    """
    global _PATCH_DEPTH
    import statmorph.statmorph as module

    with _PATCH_LOCK:
        if _PATCH_DEPTH == 0:
            _statmorph_uses.originals = {name: getattr(module, name) for name in classes}
            for name, cls in classes.items():
                setattr(module, name, cls)
        _PATCH_DEPTH += 1
    try:
        yield
    finally:
        with _PATCH_LOCK:
            _PATCH_DEPTH -= 1
            if _PATCH_DEPTH == 0:
                for name, cls in _statmorph_uses.originals.items():
                    setattr(module, name, cls)


def _convolved_sersic_class():
    import scipy.fft
    from statmorph.statmorph import ConvolvedSersic2D

    class FastConvolvedSersic2D(ConvolvedSersic2D):
        """statmorph's ``ConvolvedSersic2D`` with the PSF's Fourier transform computed once per
        FFT shape instead of at every evaluation: the same operations as
        ``scipy.signal.fftconvolve(z, psf, mode='same')`` (rfftn of both at the next fast
        lengths, product, irfftn, centred slice), so the same bits."""

        def set_psf(self, psf):
            super().set_psf(psf)
            self._psf_fft = {}

        def evaluate(self, x, y, amplitude, r_eff, n, x_0, y_0, ellip, theta):
            from astropy.modeling import models

            z = models.Sersic2D.evaluate(x, y, amplitude, r_eff, n, x_0, y_0, ellip, theta)
            psf = self.psf
            if psf is None:
                raise AssertionError('Must specify PSF using set_psf method.')
            z = np.asarray(z)
            if z.ndim != 2 or psf.ndim != 2 or 1 in z.shape or 1 in psf.shape or z.dtype.kind == "c":
                return scipy.signal.fftconvolve(z, psf, mode='same')
            shape = [z.shape[i] + psf.shape[i] - 1 for i in range(2)]
            fshape = tuple(scipy.fft.next_fast_len(n_i, True) for n_i in shape)
            cache = self.__dict__.setdefault("_psf_fft", {})
            key = (fshape, id(psf))
            if key not in cache:
                cache.clear()
                cache[key] = (psf, scipy.fft.rfftn(psf, fshape, axes=[0, 1]))
            full = scipy.fft.irfftn(scipy.fft.rfftn(z, fshape, axes=[0, 1]) * cache[key][1], fshape,
                                    axes=[0, 1])[:shape[0], :shape[1]]
            start = [(full.shape[i] - z.shape[i]) // 2 for i in range(2)]
            return full[start[0]: start[0] + z.shape[0], start[1]: start[1] + z.shape[1]]

    import scipy.signal  # noqa: F401 - the fallback above

    return FastConvolvedSersic2D


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
