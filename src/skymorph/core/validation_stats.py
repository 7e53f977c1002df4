"""Pure computations behind the validate stage (arrays in, arrays out).

The stage (:mod:`skymorph.stages.validate`) reads the run directory and the physical
table, calls these functions and writes the report; the functions here know nothing of
files.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kpc_per_arcsec"]


def kpc_per_arcsec(*, z: np.ndarray) -> np.ndarray:
    """Proper physical scale (kpc per arcsec) at each redshift, Planck18 cosmology.

    Parameters
    ----------
    z : ndarray
        Redshifts; non-finite or non-positive ones have no scale.

    Returns
    -------
    ndarray of float
        Same shape as ``z``; NaN where ``z`` is not finite and positive.

    Examples
    --------
    >>> import numpy as np
    >>> scale = kpc_per_arcsec(z=np.array([0.1, np.nan, -1.0]))
    >>> round(float(scale[0]), 3), bool(np.isnan(scale[1:]).all())
    (1.906, True)
    """
    import astropy.units as u
    from astropy.cosmology import Planck18

    z = np.asarray(z, dtype=float)
    good = np.isfinite(z) & (z > 0)
    out = np.full(z.shape, np.nan)
    # astropy converts arcmin -> arcsec (the factor 60) rather than a hand division
    out[good] = Planck18.kpc_proper_per_arcmin(z[good]).to(u.kpc / u.arcsec).value
    return out
