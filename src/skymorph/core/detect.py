"""Sources in a large image: photutils detection and deblending (``skymorph ingest --field``
without a catalog), as a plain array function."""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import Reject

__all__ = ["detect_sources_in"]


def detect_sources_in(image: np.ndarray, *, nsigma: float = 3.0, npixels: int = 20,
                      contrast: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect and deblend the sources of a field; their labels and centroids.

    The background is the sigma-clipped (3 sigma) median of the finite pixels, which also
    replaces the NaN/inf ones; the image is smoothed with a 5-pixel Gaussian kernel (FWHM 2
    pixels), segmented at ``nsigma`` times the clipped standard deviation
    (:func:`photutils.segmentation.detect_sources`) and deblended
    (:func:`photutils.segmentation.deblend_sources`).

    Parameters
    ----------
    image : ndarray
        2-D field.
    nsigma : float
        Detection threshold above the background, in background sigma.
    npixels : int
        Minimum connected pixels of a source (and of a deblended piece).
    contrast : float
        Deblending contrast (photutils' ``contrast``): higher splits less.

    Returns
    -------
    labels : ndarray of int
        Segment label of each source.
    x, y : ndarray of float
        Centroids (photutils' ``SourceCatalog``) in pixels; sources without a finite
        centroid are left out.

    Raises
    ------
    skymorph.errors.Reject
        The image is entirely NaN/inf, or holds no source above the threshold.

    See Also
    --------
    skymorph.core.stamps.field_window : the neighbourhood of each centroid, for a stamp.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.detect import detect_sources_in
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:120, :120]
    >>> field = rng.normal(0.0, 1.0, (120, 120))
    >>> for y, x in [(30, 40), (80, 90)]:
    ...     field += 50.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 18.0)
    >>> labels, x, y = detect_sources_in(field)
    >>> sorted(zip(np.round(y).astype(int).tolist(), np.round(x).astype(int).tolist()))
    [(30, 40), (80, 90)]
    """
    from astropy.convolution import convolve
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel
    from photutils.utils.exceptions import NoDetectionsWarning

    finite = np.isfinite(image)
    if not finite.any():
        raise Reject("field is entirely NaN/inf")
    _, median, std = sigma_clipped_stats(image[finite], sigma=3.0)
    data = np.where(finite, image, median) - median
    kernel = make_2dgaussian_kernel(2.0, size=5)
    smooth = convolve(data, kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # said in the Reject below
        segm = detect_sources(smooth, nsigma * std, n_pixels=npixels)
    if segm is None:
        raise Reject(f"no sources above {nsigma} sigma in the field")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deblending warns about small sources; harmless
        segm = deblend_sources(smooth, segm, n_pixels=npixels, contrast=contrast, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=smooth)
    labels, x, y = np.asarray(cat.labels), np.asarray(cat.x_centroid), np.asarray(cat.y_centroid)
    keep = np.isfinite(x) & np.isfinite(y)
    return labels[keep], x[keep], y[keep]
