"""Per-galaxy morphometry: statmorph's parameters plus multiplicity (Psi) and G2.

Everything here works on one image at a time so that :mod:`skymorph.stages.measure`
can map it over chunks of galaxies in worker processes (or Dask tasks).

* :func:`make_segmap` - photutils detection and deblending on a stamp, keeping
  the segment at (or nearest to) the stamp centre; other segments become a mask.
* :func:`multiplicity` - Psi of Law et al. (2007, ApJ 656, 1).
* :func:`gradient_asymmetry` - G2 of Rosa et al. (2018, MNRAS 477, L101).
* :func:`morphology` - statmorph's full set of scalar quantities for one
  segment, plus Psi and G2, as a flat dictionary that never raises.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "STATMORPH_QUANTITIES",
    "DOUBLESERSIC_QUANTITIES",
    "make_segmap",
    "multiplicity",
    "gradient_asymmetry",
    "morphology",
]

# statmorph 0.7's scalar outputs (statmorph.statmorph._quantity_names), copied so that
# the output columns do not depend on a private name of the installed version.
STATMORPH_QUANTITIES = [
    "xc_centroid", "yc_centroid", "ellipticity_centroid", "elongation_centroid",
    "orientation_centroid", "xc_asymmetry", "yc_asymmetry", "ellipticity_asymmetry",
    "elongation_asymmetry", "orientation_asymmetry", "flux_circ", "flux_ellip",
    "rpetro_circ", "rpetro_ellip", "rmax_circ", "rmax_ellip", "rhalf_circ", "rhalf_ellip",
    "r20", "r50", "r80", "gini", "m20", "gini_m20_bulge", "gini_m20_merger", "sn_per_pixel",
    "concentration", "asymmetry", "smoothness", "multimode", "intensity", "deviation",
    "rms_asymmetry2", "outer_asymmetry", "shape_asymmetry", "sersic_amplitude", "sersic_rhalf",
    "sersic_n", "sersic_xc", "sersic_yc", "sersic_ellip", "sersic_theta", "sersic_chi2_dof",
    "sersic_aic", "sersic_bic", "sky_mean", "sky_median", "sky_sigma", "xmin_stamp",
    "ymin_stamp", "xmax_stamp", "ymax_stamp", "nx_stamp", "ny_stamp",
]
DOUBLESERSIC_QUANTITIES = [
    "doublesersic_xc", "doublesersic_yc", "doublesersic_amplitude1", "doublesersic_rhalf1",
    "doublesersic_n1", "doublesersic_ellip1", "doublesersic_theta1", "doublesersic_amplitude2",
    "doublesersic_rhalf2", "doublesersic_n2", "doublesersic_ellip2", "doublesersic_theta2",
    "doublesersic_chi2_dof", "doublesersic_aic", "doublesersic_bic",
]
FLAG_COLUMNS = ["flag", "flag_sersic"]


# --- segmentation ------------------------------------------------------------------------


def make_segmap(image: np.ndarray, noise_sigma: float, nsigma: float = 1.5, npixels: int = 10,
                smooth_fwhm: float = 3.0, deblend: bool = True, contrast: float = 0.001,
                nlevels: int = 32, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Segment a stamp and keep the source at (or nearest to) its centre.

    Parameters
    ----------
    image : ndarray
        Background-subtracted 2-D image.
    noise_sigma : float
        Background standard deviation of ``image``.
    nsigma : float
        Detection threshold in units of ``noise_sigma`` (applied to the smoothed image).
    npixels : int
        Minimum connected pixels of a source.
    smooth_fwhm : float
        FWHM (px) of the Gaussian that smooths the image before detection; 0 disables it.
    deblend : bool
        Split blended sources with :func:`photutils.segmentation.deblend_sources`.
    contrast, nlevels : float, int
        Deblending parameters.
    mask : ndarray of bool, optional
        Pixels to ignore.

    Returns
    -------
    segmap : ndarray of int
        1 on the central source, 0 elsewhere.
    others : ndarray of bool
        Pixels of every other detected source (to be masked).

    Raises
    ------
    ValueError
        If nothing is detected.
    """
    from astropy.convolution import convolve
    from photutils.segmentation import deblend_sources, detect_sources, make_2dgaussian_kernel

    data = np.asarray(image, dtype=np.float64)
    if smooth_fwhm and smooth_fwhm > 0:
        size = int(2 * math.ceil(1.5 * smooth_fwhm) + 1)
        kernel = make_2dgaussian_kernel(smooth_fwhm, size=size)
        # masked pixels (e.g. padding without an error estimate) count as empty sky: astropy's
        # default interpolation leaves NaN in masked regions wider than the kernel
        smoothed = convolve(data, kernel, mask=mask, nan_treatment="fill", fill_value=0.0)
    else:
        smoothed = data
    threshold = nsigma * float(noise_sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = detect_sources(smoothed, threshold, npixels, mask=mask)
        if segm is None:
            raise ValueError(f"no source above {nsigma} sigma with {npixels} connected pixels")
        if deblend and segm.nlabels >= 1:
            try:
                segm = deblend_sources(smoothed, segm, npixels, n_levels=nlevels, contrast=contrast,
                                       progress_bar=False)
            except (ValueError, RuntimeError):
                pass  # keep the blended map: a deblending failure is not a measurement failure
    labels = segm.data
    cy, cx = (labels.shape[0] - 1) / 2.0, (labels.shape[1] - 1) / 2.0
    centre = labels[int(round(cy)), int(round(cx))]
    if centre == 0:
        ys, xs = np.nonzero(labels)
        nearest = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
        centre = labels[ys[nearest], xs[nearest]]
    segmap = (labels == centre).astype(np.int32)
    others = (labels > 0) & (labels != centre)
    return segmap, others


# --- multiplicity (Law et al. 2007) ------------------------------------------------------


def _potential(flux: np.ndarray) -> float:
    """sum_{i != j} I_i I_j / r_ij over the pixels of ``flux`` (zero pixels add nothing).

    Computed as sum_i I_i (I * K)_i with K(r) = 1/r and K(0) = 0 by FFT
    convolution: exact up to rounding, O(N log N) instead of O(N^2) pairs.
    """
    from scipy.signal import fftconvolve

    ny, nx = flux.shape
    yy, xx = np.mgrid[-(ny - 1): ny, -(nx - 1): nx]
    r = np.hypot(yy, xx)
    kernel = np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)
    field = fftconvolve(flux, kernel, mode="same")
    return float(np.sum(flux * field))


def _compact_arrangement(values: np.ndarray) -> np.ndarray:
    """The pixel fluxes rearranged as compactly as possible: the brightest at the
    centre and ever fainter pixels at ever larger radius."""
    n = values.size
    half = int(math.ceil(math.sqrt(n / math.pi))) + 2
    yy, xx = np.mgrid[-half: half + 1, -half: half + 1]
    r2 = (yy ** 2 + xx ** 2).ravel()
    # Stable order by radius, then by angle, so the arrangement is deterministic.
    order = np.lexsort((np.arctan2(yy.ravel(), xx.ravel()), r2))[:n]
    grid = np.zeros(r2.size)
    grid[order] = np.sort(values)[::-1]
    return grid.reshape(yy.shape)


def multiplicity(image: np.ndarray, segmap: np.ndarray) -> float:
    """Multiplicity Psi of Law et al. (2007).

    With psi = sum_{i != j} I_i I_j / r_ij over the segment's pixels (the light's
    "potential energy"), Psi = 100 log10(psi_compact / psi_actual), where
    psi_compact is psi for the same pixel fluxes rearranged most compactly
    (brightest pixel at the centre, fainter pixels at increasing radius).  A
    single smooth, round source gives Psi ~ 0; several separated components give
    large Psi.  Negative pixels (noise) are set to zero.

    Parameters
    ----------
    image : ndarray
        Background-subtracted image.
    segmap : ndarray
        Non-zero on the galaxy's pixels.

    Returns
    -------
    float
        Psi, or NaN when the segment holds fewer than two positive pixels.
    """
    region = np.asarray(segmap) > 0
    if region.sum() < 2:
        return float("nan")
    ys, xs = np.nonzero(region)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    flux = np.where(region[box], np.clip(np.asarray(image, dtype=np.float64)[box], 0, None), 0.0)
    values = flux[flux > 0]
    if values.size < 2:
        return float("nan")
    actual = _potential(flux)
    compact = _potential(_compact_arrangement(values))
    if actual <= 0 or compact <= 0:
        return float("nan")
    return float(100.0 * math.log10(compact / actual))


# --- gradient asymmetry G2 (Rosa et al. 2018) --------------------------------------------


def gradient_asymmetry(image: np.ndarray, segmap: np.ndarray, xc: float | None = None,
                       yc: float | None = None, module_tolerance: float = 0.1,
                       phase_tolerance: float = 0.2, noise_sigma: float | np.ndarray | None = None,
                       noise_tolerance: float = 0.0) -> float:
    """Gradient asymmetry G2 of Rosa et al. (2018).

    The gradient field of the image is taken inside the galaxy's segment
    (symmetrised about the centre).  A pair of vectors at positions mirrored
    through the centre is symmetric when the vectors cancel: their moduli agree
    to within ``module_tolerance`` (relative) and one points opposite to the
    other to within ``phase_tolerance`` radians.  Symmetric pairs are removed;
    with V the number of vectors and V_A the number of asymmetric ones,

        G2 = (V_A / V) * (2 - |sum v_a| / sum |v_a|),

    so G2 = 0 for a point-symmetric image and approaches 2 when the remaining
    vectors are many and point in all directions.

    Parameters
    ----------
    image : ndarray
        Background-subtracted image.
    segmap : ndarray
        Non-zero on the galaxy's pixels.
    xc, yc : float, optional
        Centre of symmetry (pixels, 0-based); rounded to the nearest half pixel
        so that mirrored positions fall on pixels.  Default: the segment's
        flux-weighted centroid.
    module_tolerance : float
        Largest relative difference of the moduli of a symmetric pair.
    phase_tolerance : float
        Largest angle (radians) between one vector and the reverse of its partner.
    noise_sigma : float or ndarray, optional
        Pixel noise (1 sigma): one value, or a map of the image's shape.
    noise_tolerance : float
        Not in Rosa et al.: with ``noise_tolerance > 0`` a pair also counts as
        symmetric when the vectors cancel to within ``noise_tolerance`` times the
        pixel noise (|v_p + v_q| <= k sigma; for pure noise the sum's components
        have standard deviation sigma with np.gradient, so k = 2.45 accepts 95% of
        pairs that differ by noise only).  0 keeps the paper's definition, under
        which noise alone makes G2 approach 2.

    Returns
    -------
    float
        G2 in [0, 2], or NaN when the segment is too small.
    """
    data = np.asarray(image, dtype=np.float64)
    region = np.asarray(segmap) > 0
    if region.sum() < 4:
        return float("nan")
    if xc is None or yc is None or not (np.isfinite(xc) and np.isfinite(yc)):
        weights = np.where(region, np.clip(data, 0, None), 0.0)
        total = weights.sum()
        ys, xs = np.nonzero(region)
        if total > 0:
            yy, xx = np.indices(data.shape)
            yc, xc = float((weights * yy).sum() / total), float((weights * xx).sum() / total)
        else:
            yc, xc = float(ys.mean()), float(xs.mean())
    # Mirror of pixel p is 2c - p; with c on the half-pixel grid it is a pixel.
    twice_y, twice_x = int(round(2 * yc)), int(round(2 * xc))
    gy, gx = np.gradient(data)
    ys, xs = np.nonzero(region)
    my, mx = twice_y - ys, twice_x - xs
    inside = (my >= 0) & (my < data.shape[0]) & (mx >= 0) & (mx < data.shape[1])
    # Symmetrise the region: a pixel whose mirror is in the stamp joins with its mirror.
    sym = np.zeros_like(region)
    sym[ys[inside], xs[inside]] = True
    sym[my[inside], mx[inside]] = True
    ys, xs = np.nonzero(sym)
    my, mx = twice_y - ys, twice_x - xs
    vy, vx = gy[ys, xs], gx[ys, xs]
    wy, wx = gy[my, mx], gx[my, mx]
    mod_v, mod_w = np.hypot(vy, vx), np.hypot(wy, wx)
    biggest = np.maximum(mod_v, mod_w)
    both_zero = biggest == 0
    same_modulus = np.abs(mod_v - mod_w) <= module_tolerance * np.where(both_zero, 1.0, biggest)
    # angle between v and -w
    cosang = np.divide(-(vy * wy + vx * wx), mod_v * mod_w, out=np.ones_like(mod_v),
                       where=(mod_v > 0) & (mod_w > 0))
    angle = np.arccos(np.clip(cosang, -1.0, 1.0))
    opposite = angle <= phase_tolerance
    symmetric = both_zero | (same_modulus & opposite)
    if noise_tolerance > 0 and noise_sigma is not None:
        sigma = np.asarray(noise_sigma, dtype=np.float64)
        if sigma.ndim == 2:
            # per-pixel errors: each gradient component has variance ~ sigma^2 / 2, so the
            # sum of a pair's vectors has (sigma_p^2 + sigma_q^2) / 2 per component
            sigma = np.sqrt((sigma[ys, xs] ** 2 + sigma[my, mx] ** 2) / 2.0)
        usable = np.isfinite(sigma) & (sigma > 0)
        symmetric |= usable & (np.hypot(vy + wy, vx + wx) <= noise_tolerance * np.where(usable, sigma, 0))
    n_total = ys.size
    asym = ~symmetric
    n_asym = int(asym.sum())
    if n_total == 0:
        return float("nan")
    if n_asym == 0:
        return 0.0
    ay, ax = vy[asym], vx[asym]
    norm = float(np.hypot(ay, ax).sum())
    confluence = float(np.hypot(ay.sum(), ax.sum()) / norm) if norm > 0 else 0.0
    return float(n_asym / n_total * (2.0 - confluence))


# --- statmorph ----------------------------------------------------------------------------


def _statmorph_class(include_sersic: bool):
    # statmorph's SourceMorphology with its asymmetry helper done without repeated work
    # (same values: skymorph.core.fast_statmorph)
    from .fast_statmorph import fast_class

    base = fast_class()
    if include_sersic:
        return base

    class _NoSersic(base):
        # statmorph evaluates every lazy property in _calculate_morphology; skipping the
        # Sersic ones saves most of the time when only non-parametric values are wanted.
        def _calculate_morphology(self) -> None:
            for name in STATMORPH_QUANTITIES:
                if not name.startswith("sersic_"):
                    _ = self[name]

    return _NoSersic


def empty_result(include_doublesersic: bool = False) -> dict[str, Any]:
    """A result row with every value missing."""
    row: dict[str, Any] = {q: float("nan") for q in STATMORPH_QUANTITIES}
    if include_doublesersic:
        row.update({q: float("nan") for q in DOUBLESERSIC_QUANTITIES})
        row["flag_doublesersic"] = -1
    row.update(flag=-1, flag_sersic=-1, psi=float("nan"), g2=float("nan"),
               segment_area=0, measure_ok=False, measure_reason="", measure_warnings="")
    return row


def morphology(image: np.ndarray, segmap: np.ndarray, label: int | None = None,
               mask: np.ndarray | None = None, weightmap: np.ndarray | None = None,
               gain: float | None = None, include_sersic: bool = True,
               include_doublesersic: bool = False, psf: np.ndarray | None = None,
               g2_module_tolerance: float = 0.1, g2_phase_tolerance: float = 0.2,
               g2_noise_tolerance: float = 2.45, noise_sigma: float | np.ndarray | None = None,
               **statmorph_kwargs: Any) -> dict[str, Any]:
    """Measure one galaxy: statmorph's quantities, Psi and G2.

    Never raises on bad data: failures give NaN values, ``measure_ok=False`` and
    the reason in ``measure_reason``; statmorph's warnings go to ``measure_warnings``.

    Parameters
    ----------
    image : ndarray
        Background-subtracted image.
    segmap : ndarray of int
        Segmentation map; ``label`` selects the galaxy.
    label : int, optional
        Segment to measure; default: the only (or smallest) non-zero label.
    mask : ndarray of bool, optional
        Pixels to ignore (e.g. neighbours).
    weightmap : ndarray, optional
        1-sigma error of every pixel (statmorph's ``weightmap``).
    gain : float, optional
        Detector gain, used by statmorph when ``weightmap`` is None.
    include_sersic, include_doublesersic : bool
        Fit a single (double) Sersic profile.
    psf : ndarray, optional
        PSF for the Sersic fits.
    g2_module_tolerance, g2_phase_tolerance, g2_noise_tolerance : float
        Tolerances of :func:`gradient_asymmetry`.
    noise_sigma : float or ndarray, optional
        Pixel noise (one value or a map), for ``g2_noise_tolerance``.
    **statmorph_kwargs
        Passed on to :class:`statmorph.SourceMorphology`.

    Returns
    -------
    dict
        One flat row: every name in :data:`STATMORPH_QUANTITIES` (and
        :data:`DOUBLESERSIC_QUANTITIES` when requested), ``flag``,
        ``flag_sersic``, ``psi``, ``g2``, ``segment_area``, ``measure_ok``,
        ``measure_reason``, ``measure_warnings``.
    """
    row = empty_result(include_doublesersic)
    try:
        # statmorph gets the image in its own float type: casting float32 to float64
        # changes the Sersic fits in the 5th digit, beyond the reference's tolerance.
        image = np.asarray(image)
        if image.dtype.kind != "f":
            image = image.astype(np.float64)
        segmap = np.asarray(segmap)
        if image.ndim != 2 or segmap.shape != image.shape:
            raise ValueError(f"image {image.shape} and segmap {segmap.shape} must be equal 2-D shapes")
        if label is None:
            labels = np.unique(segmap[segmap > 0])
            if labels.size == 0:
                raise ValueError("empty segmentation map")
            label = int(labels[0])
        region = segmap == label
        row["segment_area"] = int(region.sum())
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
        if weightmap is None and gain is None:
            raise ValueError("give a weightmap or a gain (statmorph needs one)")
        cls = _statmorph_class(include_sersic)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            morph = cls(image, segmap, label, mask=mask, weightmap=weightmap, gain=gain, psf=psf,
                        include_doublesersic=include_doublesersic, **statmorph_kwargs)
        messages = sorted({str(w.message).split("\n")[0] for w in caught})
        row["measure_warnings"] = "; ".join(messages)[:500]
        names = [q for q in STATMORPH_QUANTITIES if include_sersic or not q.startswith("sersic_")]
        if include_doublesersic:
            names += DOUBLESERSIC_QUANTITIES
        for name in names:
            value = getattr(morph, name, float("nan"))
            row[name] = float(value) if value is not None else float("nan")
        row["flag"] = int(morph.flag)
        row["flag_sersic"] = int(morph.flag_sersic) if include_sersic else -1
        if include_sersic and morph.flag < 4:
            from .uncertainty import sersic_errors

            row.update(sersic_errors(morph))  # from the fit's covariance
        if include_doublesersic:
            row["flag_doublesersic"] = int(getattr(morph, "flag_doublesersic", -1))
        if morph.flag >= 4:
            # statmorph's catastrophic case fills every value with -99
            for name in names:
                row[name] = float("nan")
            row["measure_reason"] = "statmorph aborted (non-positive flux in the segment)"
            return row
        unmasked = region if mask is None else region & ~mask
        data = image.astype(np.float64)
        row["psi"] = multiplicity(data, unmasked)
        row["g2"] = gradient_asymmetry(data, unmasked, row["xc_asymmetry"], row["yc_asymmetry"],
                                       g2_module_tolerance, g2_phase_tolerance, noise_sigma,
                                       g2_noise_tolerance)
        # measured, and statmorph's flag says the non-parametric values are valid (0 good,
        # 1 suspect); the raw values of a bad (2) measurement are kept, flagged
        row["measure_ok"] = bool(morph.flag <= 1)
        if morph.flag >= 2:
            row["measure_reason"] = f"statmorph flag {morph.flag} (bad): {row['measure_warnings']}"[:500]
    except Exception as exc:  # noqa: BLE001 - one galaxy must never abort a run
        row["measure_ok"] = False
        row["measure_reason"] = f"{type(exc).__name__}: {exc}"[:500]
    return row
