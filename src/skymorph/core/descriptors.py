"""Cheap shape descriptors of every stamp, as clustering features (not as physics).

:func:`shape_descriptors` measures, on whole arrays of stamps at once (no per-galaxy fit,
no Sérsic model), the non-parametric quantities that separate ellipticals, discs and
edge-on discs by eye: concentration C, asymmetry A, smoothness S, Gini, M20, the axis
ratio b/a, the radii r20, r50 and r80 (pixels) and, for multi-band stamps, colours.

They follow the definitions of Conselice (2003), Lotz et al. (2004) and Lotz et al. (2008)
in a simplified form: the galaxy's pixels are those of a smoothed stamp above
``nsigma`` times the sky noise (no deblending), the centre is the light-weighted centroid
of those pixels (rounded to a pixel for A and S), the radii come from circular apertures
about it, and the asymmetry's sky term is the expected value for Gaussian noise.  They are
therefore **not** statmorph's values (``skymorph measure`` computes those); they are
stable, fast features for clustering, valid on any stamp, including non-linear (JPEG)
ones where statmorph's physics does not hold.

Everything runs on ``(N, H, W)`` arrays with numpy and scipy.ndimage; about 1 ms per
100 x 100 stamp on one core.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

__all__ = ["DESCRIPTOR_NAMES", "shape_descriptors", "descriptor_names", "descriptors_at_levels"]

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "concentration", "asymmetry", "smoothness", "gini", "m20", "axis_ratio", "r20", "r50", "r80",
)
"""Columns of :func:`shape_descriptors` for one-band stamps (colours follow for more bands)."""


def descriptor_names(n_bands: int = 1) -> list[str]:
    """Column names of :func:`shape_descriptors` for stamps of ``n_bands`` bands.

    Colours are ``colour_<b>_<b+1>``: -2.5 log10 of the flux ratio of neighbouring bands
    inside the galaxy's pixels (band order as given).
    """
    return [*DESCRIPTOR_NAMES, *(f"colour_{b}_{b + 1}" for b in range(n_bands - 1))]


def _sky(images: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD-based sigma of each stamp's border pixels (``border`` px wide)."""
    n, h, w = images.shape
    edge = np.ones((h, w), dtype=bool)
    edge[border:h - border, border:w - border] = False
    pix = images[:, edge]
    median = np.median if np.isfinite(pix).all() else np.nanmedian
    med = median(pix, axis=1)
    sigma = 1.4826 * median(np.abs(pix - med[:, None]), axis=1)
    # a flat sky (a JPEG's black border) has a MAD of 0: fall back to the pixel scatter
    flat = ~(sigma > 0)
    if flat.any():
        sigma[flat] = np.nanstd(pix[flat], axis=1)
    scale = np.nanmax(np.abs(images.reshape(n, -1)), axis=1)
    sigma = np.maximum(np.nan_to_num(sigma), 1e-6 * np.maximum(np.nan_to_num(scale), 1e-30))
    return np.nan_to_num(med), sigma


def _rot180(a: np.ndarray) -> np.ndarray:
    """``a`` turned by 180 degrees about pixel ``(H // 2, W // 2)`` (wrapping at the edge)."""
    h, w = a.shape
    return np.roll(a[::-1, ::-1], (int(h % 2 == 0), int(w % 2 == 0)), axis=(0, 1))


def _radius_at(cum: np.ndarray, radii: np.ndarray, frac: float) -> np.ndarray:
    """Radius where each row's normalised curve of growth ``cum`` first reaches ``frac``
    (linear interpolation between the aperture radii)."""
    idx = np.clip((cum < frac).sum(axis=1), 1, cum.shape[1] - 1)
    rows = np.arange(cum.shape[0])
    c0, c1 = cum[rows, idx - 1], cum[rows, idx]
    t = np.clip((frac - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0, 1)
    return radii[idx - 1] + t * (radii[idx] - radii[idx - 1])


def shape_descriptors(images: np.ndarray, *, nsigma: float = 1.5, peak_fraction: float = 0.2,
                      smooth: float = 1.0, border: int = 4, aperture_step: float = 0.5,
                      chunk: int = 256) -> np.ndarray:
    """Non-parametric shape descriptors of every stamp.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, B, H, W)
        Stamps, galaxy near the centre (as ingest writes them); with a band axis the
        shape is measured on the band sum and colours are added.
    nsigma : float
        The galaxy's pixels are those of the ``smooth``-Gaussian-smoothed stamp above
        the sky by ``nsigma`` times the sky noise (measured on a ``border``-pixel frame)
        and by ``peak_fraction`` times the brightest smoothed pixel of the stamp's central
        half; the connected region at (or nearest to) the centre.
    peak_fraction : float
        See ``nsigma``: the threshold that holds on stamps whose noise is not measurable
        (JPEG cutouts quantise the sky away).
    smooth : float
        Sigma (pixels) of that smoothing.
    border : int
        Width of the stamp frame used for the sky level and noise.
    aperture_step : float
        Radius step (pixels) of the circular apertures of the curve of growth.
    chunk : int
        Stamps measured at once (memory: ~50 bytes per pixel of a chunk).

    Returns
    -------
    ndarray, shape (N, len(descriptor_names(B))), float32
        Columns :func:`descriptor_names`; a row is NaN where a stamp has no finite pixel
        or no pixel above the threshold (callers impute, see
        :func:`skymorph.core.hybrid.combine_features`).

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D, or smaller than 8 x 8 pixels.
    """
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 4:
        bands = arr
        arr = np.nansum(arr, axis=1) if arr.shape[1] > 1 else arr[:, 0]
        all_nan = ~np.isfinite(bands).any(axis=(1, 2, 3))
        arr[all_nan] = np.nan
    elif arr.ndim == 3:
        bands = None
    else:
        raise ValueError(f"shape_descriptors needs (N, H, W) or (N, B, H, W) stamps, got shape {arr.shape}")
    n, h, w = arr.shape
    if min(h, w) < 8:
        raise ValueError(f"stamps of {h} x {w} pixels are too small for shape descriptors (need 8 x 8)")
    n_bands = 1 if bands is None else bands.shape[1]
    out = np.full((n, len(descriptor_names(n_bands))), np.nan, dtype=np.float32)
    for start in range(0, n, max(1, int(chunk))):
        stop = min(n, start + max(1, int(chunk)))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # all-NaN stamps make NaN rows on purpose; say nothing about them
            warnings.simplefilter("ignore", RuntimeWarning)
            out[start:stop] = _measure(arr[start:stop], None if bands is None else bands[start:stop],
                                       nsigma=nsigma, peak_fraction=peak_fraction, smooth=smooth,
                                       border=border, aperture_step=aperture_step)
    return out


def _measure(arr: np.ndarray, bands: np.ndarray | None, *, nsigma: float, peak_fraction: float,
             smooth: float, border: int,
             aperture_step: float) -> np.ndarray:
    """:func:`shape_descriptors` of one chunk of (n, H, W) stamps."""
    n, h, w = arr.shape
    n_bands = 1 if bands is None else bands.shape[1]
    out = np.full((n, len(descriptor_names(n_bands))), np.nan, dtype=np.float32)
    if n == 0:
        return out
    good = np.isfinite(arr).any(axis=(1, 2))
    sky, sigma = _sky(arr, min(border, min(h, w) // 4))
    img = np.nan_to_num(arr - sky[:, None, None]).astype(np.float32)
    smoothed = ndimage.gaussian_filter(img, sigma=(0, smooth, smooth)) if smooth > 0 else img
    # noise of the smoothed stamp: a Gaussian of sigma s averages ~4 pi s^2 pixels
    noise_s = sigma / max(1.0, np.sqrt(4 * np.pi * smooth ** 2)) if smooth > 0 else sigma
    central = smoothed[:, h // 4:h - h // 4, w // 4:w - w // 4].reshape(n, -1).max(axis=1)
    level = np.maximum(nsigma * noise_s, peak_fraction * np.maximum(central, 0))
    mask = smoothed > level[:, None, None]
    # keep the galaxy: the connected region at (or nearest to) the centre is what matters for
    # clustering, but labelling every stamp costs little, so do it
    for i in np.flatnonzero(mask.any(axis=(1, 2))):
        lab, count = ndimage.label(mask[i])
        if count > 1:
            cy, cx = h // 2, w // 2
            centre = lab[cy, cx]
            if centre == 0:
                ys, xs = np.nonzero(lab)
                j = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
                centre = lab[ys[j], xs[j]]
            mask[i] = lab == centre
    good &= mask.sum(axis=(1, 2)) >= 3
    flux = np.where(mask, np.clip(img, 0, None), 0.0)
    total = flux.sum(axis=(1, 2))
    good &= total > 0
    total = np.where(total > 0, total, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yc = (flux * yy).sum(axis=(1, 2)) / total
    xc = (flux * xx).sum(axis=(1, 2)) / total
    dy = yy[None] - yc[:, None, None]
    dx = xx[None] - xc[:, None, None]
    r2 = dy * dy + dx * dx

    # axis ratio from the second moments of the galaxy's light
    myy = (flux * dy * dy).sum(axis=(1, 2)) / total
    mxx = (flux * dx * dx).sum(axis=(1, 2)) / total
    mxy = (flux * dx * dy).sum(axis=(1, 2)) / total
    half_tr, det = (mxx + myy) / 2, mxx * myy - mxy ** 2
    root = np.sqrt(np.maximum(half_tr ** 2 - det, 0))
    lam1, lam2 = half_tr + root, np.maximum(half_tr - root, 0)
    axis_ratio = np.sqrt(lam2 / np.where(lam1 > 0, lam1, 1.0))

    # curve of growth in circular apertures about the centroid (galaxy pixels only)
    r = np.sqrt(r2)
    rmax = float(np.hypot(h, w) / 2)
    radii = np.arange(0, rmax + 2 * aperture_step, aperture_step)  # aperture i holds r < radii[i]
    ring = np.minimum((r / aperture_step).astype(np.int64) + 1, radii.size - 1)
    index = (np.arange(n)[:, None, None] * radii.size + ring).reshape(-1)
    cum = np.bincount(index, weights=flux.reshape(-1), minlength=n * radii.size).reshape(n, radii.size)
    cum = np.cumsum(cum, axis=1) / total[:, None]
    r20, r50, r80 = (_radius_at(cum, radii, f) for f in (0.2, 0.5, 0.8))
    concentration = 5 * np.log10(r80 / np.maximum(r20, 1e-3))

    # one sort of the galaxy's (positive) pixel values serves Gini and M20; pixels outside
    # the galaxy are 0 and sort first, so the galaxy's npix pixels are the last npix
    fl = flux.reshape(n, -1)
    vals = np.sort(fl, axis=1)
    npix = mask.reshape(n, -1).sum(axis=1)
    p = vals.shape[1]
    rank = np.arange(1, p + 1)[None, :] - (p - npix)[:, None]  # 1..npix on the galaxy's pixels
    weight = np.where(rank >= 1, 2 * rank - npix[:, None] - 1, 0)
    gini = (weight * vals).sum(axis=1) / np.maximum(total * np.maximum(npix - 1, 1), 1e-30)
    # M20: second moment of the brightest pixels holding 20 % of the light, over the total;
    # the faintest of them is where the descending cumulative sum passes 20 %
    desc = np.cumsum(vals[:, ::-1], axis=1)
    cut = np.minimum((desc < 0.2 * total[:, None]).sum(axis=1), p - 1)
    level = vals[np.arange(n), p - 1 - cut]
    moment = fl * r2.reshape(n, -1)
    m_tot = moment.sum(axis=1)
    m_bright = np.where(fl >= level[:, None], moment, 0).sum(axis=1)
    m20 = np.log10(np.maximum(m_bright, 1e-30) / np.maximum(m_tot, 1e-30))

    # asymmetry and smoothness about the centroid rounded to a pixel, inside the galaxy
    centre_r = np.hypot(yy - h // 2, xx - w // 2)
    asym = np.full(n, np.nan)
    smooth_s = np.full(n, np.nan)
    for i in np.flatnonzero(good):
        shift = (int(round(h // 2 - yc[i])), int(round(w // 2 - xc[i])))
        im = np.roll(img[i], shift, axis=(0, 1))
        mk = np.roll(mask[i], shift, axis=(0, 1))
        rot = _rot180(im)
        both = mk | _rot180(mk)
        denom = np.abs(im[both]).sum()
        sky_term = both.sum() * 2 * sigma[i] / np.sqrt(np.pi)  # E|n1 - n2| for Gaussian noise
        asym[i] = (np.abs(im - rot)[both].sum() - sky_term) / max(denom, 1e-30)
        width = max(1.0, 0.25 * r80[i])
        boxed = ndimage.uniform_filter(im, size=int(round(width)) | 1)
        inner = mk & (centre_r > 0.25 * r80[i])
        smooth_s[i] = np.clip(im - boxed, 0, None)[inner].sum() / max(im[inner].sum(), 1e-30)

    cols = [concentration, asym, smooth_s, gini, m20, axis_ratio, r20, r50, r80]
    if bands is not None and n_bands > 1:
        bflux = np.stack([np.where(mask, np.nan_to_num(bands[:, b] - np.nanmedian(
            bands[:, b].reshape(n, -1), axis=1)[:, None, None]), 0).sum(axis=(1, 2))
            for b in range(n_bands)], axis=1)
        bflux = np.maximum(bflux, 1e-30)
        cols += [-2.5 * np.log10(bflux[:, b] / bflux[:, b + 1]) for b in range(n_bands - 1)]
    out[:] = np.stack(cols, axis=1).astype(np.float32)
    out[~good] = np.nan
    return out


def descriptors_at_levels(images: np.ndarray, *, levels: tuple[float, ...] | list[float] = (0.05, 0.2),
                          **kwargs: float) -> tuple[np.ndarray, list[str]]:
    """:func:`shape_descriptors` at several isophotes, side by side.

    A faint isophote (a few per cent of the peak) follows a disc's outskirts, a bright one the
    bulge; on the development sets the pair separates types better than either alone
    (faint, small JWST galaxies favour the faint one, SDSS cutouts the bright one).

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, B, H, W)
    levels : sequence of float
        The ``peak_fraction`` of each set of columns.
    **kwargs
        Other :func:`shape_descriptors` parameters.

    Returns
    -------
    values : ndarray, shape (N, len(levels) * P), float32
    names : list of str
        ``<descriptor>_p<level in per cent>``, e.g. ``gini_p5``, ``gini_p20`` (plain names for
        one level).
    """
    levels = [float(v) for v in levels]
    if not levels:
        raise ValueError("levels must hold at least one peak fraction")
    n_bands = np.asarray(images).shape[1] if np.asarray(images).ndim == 4 else 1
    base = descriptor_names(n_bands)
    blocks, names = [], []
    for level in levels:
        blocks.append(shape_descriptors(images, peak_fraction=level, **kwargs))
        names += base if len(levels) == 1 else [f"{c}_p{100 * level:g}" for c in base]
    return np.hstack(blocks), names
