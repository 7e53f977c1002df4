"""Sky level and noise of stamps, measured on their border pixels.

One place for the estimates every stage needs: the CAE's normalisation and the
denoise summary (:func:`border_sky`, vectorised over a stack of stamps) and
ingest's per-stamp background (:func:`ring_background`).
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats

__all__ = ["border_frame", "border_sky", "ring_background"]


def border_frame(stamps: np.ndarray, width: int) -> np.ndarray:
    """The pixels of each stamp's border frame, ``width`` pixels wide.

    Parameters
    ----------
    stamps : ndarray, shape (N, H, W)
    width : int
        Frame width; clipped to half the stamp.

    Returns
    -------
    ndarray, shape (N, M)
    """
    x = np.asarray(stamps)
    n, h, w = x.shape
    b = max(1, min(int(width), h // 2, w // 2))
    return np.concatenate([x[:, :b].reshape(n, -1), x[:, -b:].reshape(n, -1),
                           x[:, b:h - b, :b].reshape(n, -1), x[:, b:h - b, -b:].reshape(n, -1)],
                          axis=1)


def border_sky(stamps: np.ndarray, border: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sky level and noise of each stamp from its border frame.

    Parameters
    ----------
    stamps : ndarray, shape (N, S, S)
    border : int, optional
        Frame width in pixels; default ``max(2, S // 20)``.

    Returns
    -------
    sky, sigma : ndarray, shape (N,)
        Median and robust standard deviation (1.4826 x MAD, ``astropy.stats.mad_std``)
        of the frame, ignoring non-finite pixels (0 when none is finite).
    """
    x = np.asarray(stamps)
    b = max(2, min(x.shape[1:]) // 20) if border is None else int(border)
    frame = border_frame(x, b).astype(np.float64)
    frame = np.where(np.isfinite(frame), frame, np.nan)
    frame[~np.isfinite(frame).any(axis=1)] = 0.0
    return np.nanmedian(frame, axis=1), mad_std(frame, axis=1, ignore_nan=True)


def ring_background(image: np.ndarray) -> tuple[float, float]:
    """Background of one image: sigma-clipped (3 sigma, 3 iterations) median and
    MAD sigma of its border ring (``min(H, W) // 8`` pixels wide, at least 2).

    Falls back to every finite pixel when the ring holds fewer than 10, and to the
    plain standard deviation when the MAD is 0 (e.g. a quantised image).

    Parameters
    ----------
    image : ndarray, shape (H, W)

    Returns
    -------
    background, sigma : float
    """
    h, w = image.shape
    ring = border_frame(image[None], max(2, min(h, w) // 8))[0]
    ring = ring[np.isfinite(ring)]
    if ring.size < 10:
        ring = image[np.isfinite(image)]
    with warnings.catch_warnings():
        # a constant ring (MAD 0) warns in astropy's clipping; it is handled below
        warnings.simplefilter("ignore")
        _, median, sigma = sigma_clipped_stats(ring, sigma=3.0, maxiters=3, stdfunc="mad_std")
    if not sigma > 0:
        sigma = float(np.std(ring))
    return float(median), float(sigma)
