"""Uncertainties of the measured morphology parameters.

* :func:`sersic_errors` - 1-sigma errors of the single-Sersic parameters from the fit's
  covariance: the Jacobian of the weighted residuals at the best fit (central
  differences), ``cov = (J^T J)^-1 * chi2_dof``, as astropy's ``LevMarLSQFitter`` reports
  ``param_cov`` (statmorph does not keep its fitter, so the covariance is rebuilt at the
  fitted parameters with statmorph's own pixels and weights).
* :func:`resampled_errors` - noise resampling for the non-parametric quantities
  (off by default): the stamp is re-measured ``n`` times with Gaussian noise of the pixel
  errors added, and the standard deviation of each quantity is its error.  Adding noise
  to an already noisy image measures the parameters at sqrt(2) times the noise, so the
  errors are on the conservative side.

The functions never raise on bad data: they return NaN errors.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["SERSIC_ERROR_COLUMNS", "RESAMPLED_QUANTITIES", "sersic_errors", "resampled_errors"]

# statmorph column -> astropy Sersic2D parameter
_SERSIC_PARAMETERS = {"sersic_amplitude": "amplitude", "sersic_rhalf": "r_eff", "sersic_n": "n",
                      "sersic_xc": "x_0", "sersic_yc": "y_0", "sersic_ellip": "ellip",
                      "sersic_theta": "theta"}
SERSIC_ERROR_COLUMNS = [f"{name}_err" for name in _SERSIC_PARAMETERS]
"""The columns :func:`sersic_errors` fills."""

RESAMPLED_QUANTITIES = ["gini", "m20", "concentration", "asymmetry", "smoothness", "multimode", "intensity",
                        "deviation"]
"""Non-parametric quantities whose errors :func:`resampled_errors` gives (``<name>_err``)."""


def _nan_errors() -> dict[str, float]:
    return {name: float("nan") for name in SERSIC_ERROR_COLUMNS}


def sersic_errors(morph: Any, *, rel_step: float = 1e-4) -> dict[str, float]:
    """1-sigma errors of a statmorph single-Sersic fit from its covariance matrix.

    Parameters
    ----------
    morph : statmorph.SourceMorphology
        A measured source whose Sersic fit has run.
    rel_step : float
        Relative step of the central differences (absolute ``rel_step`` for parameters near 0).

    Returns
    -------
    dict
        ``sersic_<param>_err`` for amplitude, rhalf, n, xc, yc, ellip and theta; NaN when the
        fit did not run or its covariance is singular.
    """
    try:
        model = morph._sersic_model
        image = np.asarray(morph._cutout_stamp_maskzeroed, dtype=np.float64)
        weightmap = np.asarray(morph._weightmap_stamp, dtype=np.float64)
        chi2_dof = float(morph.sersic_chi2_dof)
    except Exception:  # noqa: BLE001 - no fit, no error
        return _nan_errors()
    locs = (image != 0) & (weightmap != 0)
    names = list(model.param_names)
    if not locs.any() or not np.isfinite(chi2_dof) or chi2_dof <= 0 or \
            any(p not in names for p in _SERSIC_PARAMETERS.values()):
        return _nan_errors()
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    weights = 1.0 / weightmap[locs]
    best = np.array(model.parameters, dtype=np.float64)

    def weighted(params: np.ndarray) -> np.ndarray:
        return np.asarray(model.evaluate(x, y, *params), dtype=np.float64)[locs] * weights

    jacobian = np.empty((int(locs.sum()), best.size))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i, value in enumerate(best):
            step = rel_step * max(abs(value), 1.0)
            up, down = best.copy(), best.copy()
            up[i] += step
            down[i] -= step
            jacobian[:, i] = (weighted(up) - weighted(down)) / (2 * step)
    if not np.isfinite(jacobian).all():
        return _nan_errors()
    try:
        cov = np.linalg.inv(jacobian.T @ jacobian) * chi2_dof
    except np.linalg.LinAlgError:
        return _nan_errors()
    variance = np.diag(cov)
    out = {}
    for column, param in _SERSIC_PARAMETERS.items():
        v = variance[names.index(param)]
        out[f"{column}_err"] = float(np.sqrt(v)) if np.isfinite(v) and v >= 0 else float("nan")
    return out


def resampled_errors(image: np.ndarray, segmap: np.ndarray, *, n: int, sigma: float | np.ndarray,
                     seed: int | list[int], mask: np.ndarray | None = None,
                     weightmap: np.ndarray | None = None, gain: float | None = None) -> dict[str, float]:
    """Errors of the non-parametric quantities by noise resampling.

    Parameters
    ----------
    image : ndarray
        Background-subtracted stamp, as measured.
    segmap : ndarray
        The galaxy's segment (label 1), as measured.
    n : int
        Number of noisy copies to measure (>= 2).
    sigma : float or ndarray
        1-sigma noise of every pixel (one value or a map of the image's shape).
    seed : int or list of int
        Seed of the noise (give one per galaxy for reproducible errors).
    mask, weightmap, gain
        As given to statmorph for the measurement.

    Returns
    -------
    dict
        ``<quantity>_err`` for every :data:`RESAMPLED_QUANTITIES`: the standard deviation
        (ddof 1) over the copies whose statmorph flag is 0 or 1; NaN with fewer than two.
    """
    from .morphometry import _statmorph_class

    rng = np.random.default_rng(seed)
    noise = np.broadcast_to(np.asarray(sigma, dtype=np.float64), image.shape)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, 0.0)
    cls = _statmorph_class(False)
    values: dict[str, list[float]] = {q: [] for q in RESAMPLED_QUANTITIES}
    for _ in range(max(int(n), 0)):
        copy = image + rng.normal(0.0, 1.0, image.shape) * noise
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                morph = cls(copy, segmap, 1, mask=mask, weightmap=weightmap, gain=gain)
            if morph.flag > 1:
                continue
            for q in RESAMPLED_QUANTITIES:
                values[q].append(float(getattr(morph, q)))
        except Exception:  # noqa: BLE001 - a failed copy only lowers the count
            continue
    out = {}
    for q, v in values.items():
        arr = np.asarray(v, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        out[f"{q}_err"] = float(np.std(arr, ddof=1)) if arr.size >= 2 else float("nan")
    return out
