"""Magnitudes from the measured fluxes, when a photometric zero point is known.

``mag = zeropoint - 2.5 log10(flux)`` with the flux in the stamp's pixel units (the zero
point must be for those units: ``MAGZERO`` / ``PHOTZP`` of the input FITS header, or the
``measure.zeropoint`` setting).

* :func:`sersic_total_flux` - the total flux of an elliptical Sersic profile with
  astropy's ``Sersic2D`` parametrisation (amplitude = surface brightness at r_eff, r_eff
  the semi-major axis): ``2 pi (1 - ellip) r_eff^2 n exp(b_n) b_n^(-2n) Gamma(2n) I_e``.
* :func:`magnitude` - the magnitude of a flux, NaN where the flux is not positive or
  the zero point unknown.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ZEROPOINT_KEYWORDS", "sersic_total_flux", "magnitude"]

ZEROPOINT_KEYWORDS = ("MAGZERO", "PHOTZP", "MAGZPT", "ZEROPNT")
"""FITS header keywords read as the photometric zero point, first found wins."""


def sersic_total_flux(amplitude: np.ndarray | float, r_eff: np.ndarray | float, n: np.ndarray | float,
                      ellip: np.ndarray | float) -> np.ndarray:
    """Total flux of a Sersic profile in astropy's ``Sersic2D`` parametrisation.

    Parameters
    ----------
    amplitude : float or ndarray
        Surface brightness at the effective radius (per pixel).
    r_eff : float or ndarray
        Effective (half-light) semi-major axis, in pixels.
    n : float or ndarray
        Sersic index.
    ellip : float or ndarray
        Ellipticity 1 - b/a.

    Returns
    -------
    ndarray
        The flux, NaN where a parameter is not finite or n is not positive.
    """
    from scipy.special import gamma, gammaincinv

    amplitude, r_eff, n, ellip = (np.asarray(v, dtype=np.float64) for v in (amplitude, r_eff, n, ellip))
    ok = np.isfinite(amplitude) & np.isfinite(r_eff) & np.isfinite(n) & np.isfinite(ellip) & (n > 0)
    safe_n = np.where(ok, n, 1.0)
    with np.errstate(all="ignore"):
        b = gammaincinv(2 * safe_n, 0.5)
        flux = (2 * np.pi * (1 - ellip) * r_eff ** 2 * safe_n * np.exp(b) * b ** (-2 * safe_n)
                * gamma(2 * safe_n) * amplitude)
    return np.where(ok & np.isfinite(flux), flux, np.nan)


def magnitude(flux: np.ndarray | float, zeropoint: np.ndarray | float) -> np.ndarray:
    """``zeropoint - 2.5 log10(flux)``; NaN where the flux is not positive or the zero point is NaN."""
    flux = np.asarray(flux, dtype=np.float64)
    zeropoint = np.asarray(zeropoint, dtype=np.float64)
    with np.errstate(all="ignore"):
        mag = zeropoint - 2.5 * np.log10(np.where(flux > 0, flux, np.nan))
    return np.where(np.isfinite(mag), mag, np.nan)
