"""Small statistics used by the validation stage.

Effect sizes and intervals that scipy does not provide directly: Cliff's delta,
Cohen's d, Wilson score intervals for a binomial fraction, and a KS test wrapper
that tolerates NaNs and tiny samples.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cliffs_delta", "cohens_d", "wilson_interval", "ks_test", "binned_fraction"]


def _clean(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's delta: P(a > b) - P(a < b) over all pairs (NaNs dropped).

    Computed by sorting, O((n + m) log m), so it scales to 10^5 galaxies.

    Returns
    -------
    float
        In [-1, 1]; NaN when either sample is empty.
    """
    a, b = _clean(a), np.sort(_clean(b))
    if a.size == 0 or b.size == 0:
        return float("nan")
    below = np.searchsorted(b, a, side="left")   # b values < a_i
    above = b.size - np.searchsorted(b, a, side="right")  # b values > a_i
    return float((below.sum() - above.sum()) / (a.size * b.size))


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d: (mean(a) - mean(b)) / pooled standard deviation (ddof=1).

    Returns
    -------
    float
        NaN when a sample has fewer than two values or the pooled SD is zero.
    """
    a, b = _clean(a), _clean(b)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return float("nan")
    pooled = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    if pooled <= 0:
        return float("nan")
    return float((a.mean() - b.mean()) / math.sqrt(pooled))


def wilson_interval(k: int | np.ndarray, n: int | np.ndarray, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial fraction k/n.

    Parameters
    ----------
    k, n : int or array
        Successes and trials (n = 0 gives NaN bounds).
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    low, high : ndarray (or float for scalar input)
    """
    from astropy.stats import binom_conf_interval

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    low = np.full(k.shape, np.nan)
    high = np.full(k.shape, np.nan)
    valid = n > 0
    if valid.any():
        bounds = binom_conf_interval(k[valid].astype(int), n[valid].astype(int),
                                     confidence_level=confidence, interval="wilson")
        low[valid], high[valid] = np.clip(bounds, 0.0, 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def ks_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (NaNs dropped).

    Returns
    -------
    statistic, pvalue : float
        NaN when either sample is empty.
    """
    from scipy.stats import ks_2samp

    a, b = _clean(a), _clean(b)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def binned_fraction(values: np.ndarray, flags: np.ndarray, n_bins: int = 8,
                    confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Fraction of ``flags`` True in quantile bins of ``values``, with Wilson intervals.

    Returns
    -------
    dict
        ``edges``, ``centre`` (median of each bin), ``n``, ``k``, ``fraction``,
        ``low``, ``high``; bins are quantiles, merged when values repeat.
    """
    values = np.asarray(values, dtype=np.float64)
    flags = np.asarray(flags, dtype=bool)
    good = np.isfinite(values)
    values, flags = values[good], flags[good]
    if values.size == 0:
        empty = np.array([])
        return {"edges": empty, "centre": empty, "n": empty, "k": empty, "fraction": empty,
                "low": empty, "high": empty}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([values.min(), values.max() + 1e-12])
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)
    nb = edges.size - 1
    n = np.bincount(which, minlength=nb).astype(float)
    k = np.bincount(which, weights=flags.astype(float), minlength=nb)
    centre = np.array([np.median(values[which == i]) if n[i] else np.nan for i in range(nb)])
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n > 0, k / n, np.nan)
    low, high = wilson_interval(k, n, confidence)
    return {"edges": edges, "centre": centre, "n": n, "k": k, "fraction": fraction,
            "low": np.atleast_1d(low), "high": np.atleast_1d(high)}
