"""Small statistics used by the validation stage.

Effect sizes and intervals that scipy does not provide directly: Cliff's delta,
Cohen's d, Wilson score intervals for a binomial fraction, and a KS test wrapper
that tolerates NaNs and tiny samples; agreement between raters (Fleiss' kappa,
Krippendorff's alpha for nominal data, a bootstrap interval over the rated units
and the Landis & Koch words for a kappa).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cliffs_delta", "cohens_d", "wilson_interval", "fraction_interval", "ks_test", "binned_fraction",
           "rating_counts", "fleiss_kappa", "krippendorff_alpha_nominal", "bootstrap_interval",
           "agreement_words"]


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
        # astropy's rounding leaves ~1e-17 where the exact bound is 0 (k = 0) or 1 (k = n)
        low[valid & (k == 0)] = 0.0
        high[valid & (k == n)] = 1.0
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def fraction_interval(k: int, n: int, confidence: float = 0.95) -> dict[str, float | int | None]:
    """k/n with its Wilson interval, as a plain dictionary (``None`` where n = 0).

    Returns
    -------
    dict
        ``k``, ``n``, ``fraction``, ``ci_low``, ``ci_high`` and ``confidence``.
    """
    low, high = wilson_interval(int(k), int(n), confidence)
    return {"k": int(k), "n": int(n), "fraction": (k / n) if n else None,
            "ci_low": float(low) if n else None, "ci_high": float(high) if n else None,
            "confidence": float(confidence)}


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


# --- agreement between raters ---------------------------------------------------------------------


def rating_counts(units: np.ndarray, categories: np.ndarray, levels: list | None = None
                  ) -> tuple[np.ndarray, list, list]:
    """Count table of ratings: one row per rated unit, one column per category.

    Parameters
    ----------
    units, categories : array-like
        One entry per rating: the unit rated (e.g. a cluster) and the category
        the rater chose (e.g. a morphology type).
    levels : list, optional
        Categories in column order (default: the sorted categories seen).

    Returns
    -------
    counts : ndarray of int, shape (n_units, n_categories)
    unit_ids : list
        The unit of each row (sorted).
    levels : list
        The category of each column.
    """
    units = np.asarray(units)
    categories = np.asarray(categories)
    levels = sorted(set(categories.tolist())) if levels is None else list(levels)
    unit_ids = sorted(set(units.tolist()))
    row = {u: i for i, u in enumerate(unit_ids)}
    col = {c: j for j, c in enumerate(levels)}
    counts = np.zeros((len(unit_ids), len(levels)), dtype=np.int64)
    for u, c in zip(units.tolist(), categories.tolist(), strict=True):
        if c not in col:
            raise ValueError(f"category {c!r} is not one of {levels}")
        counts[row[u], col[c]] += 1
    return counts, unit_ids, levels


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' (1971) kappa of a count table where every unit has the same number of ratings.

    ``kappa = (P_bar - P_e) / (1 - P_e)`` with ``P_bar`` the mean over units of the
    fraction of agreeing rater pairs and ``P_e = sum_j p_j^2`` the agreement expected
    by chance from the overall category shares ``p_j``.

    Parameters
    ----------
    counts : ndarray of int, shape (n_units, n_categories)
        Raters per unit and category (:func:`rating_counts`).

    Returns
    -------
    float
        1 for perfect agreement, 0 for chance agreement, negative below chance;
        NaN when there is no unit, or every rating is one category (``P_e = 1``).

    Raises
    ------
    ValueError
        If the units have different numbers of ratings, or fewer than two.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return float("nan")
    per_unit = counts.sum(axis=1)
    if not np.all(per_unit == per_unit[0]):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every unit "
                         f"(got {sorted(set(per_unit.astype(int).tolist()))}); use Krippendorff's alpha")
    n = per_unit[0]
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per unit")
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = (np.sum(counts * (counts - 1), axis=1)) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.sum(p_j**2)
    if p_e >= 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal categories; units may have different numbers of ratings.

    ``alpha = 1 - D_o / D_e`` from the coincidence matrix (Krippendorff 2011,
    "Computing Krippendorff's alpha-reliability"): units with fewer than two
    ratings are not pairable and are dropped.

    Parameters
    ----------
    counts : ndarray of int, shape (n_units, n_categories)
        Raters per unit and category (:func:`rating_counts`).

    Returns
    -------
    float
        1 for perfect agreement, 0 for chance; NaN when fewer than two pairable
        ratings exist or only one category was ever used.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        return float("nan")
    m_u = counts.sum(axis=1)
    counts = counts[m_u >= 2]
    m_u = m_u[m_u >= 2]
    if counts.size == 0:
        return float("nan")
    # coincidence matrix o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1)
    weighted = counts / (m_u - 1)[:, None]
    coincidence = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    # alpha = 1 - D_o / D_e = 1 - (n - 1) sum_{c != k} o_ck / sum_{c != k} n_c n_k
    observed = coincidence.sum() - np.trace(coincidence)
    expected = n**2 - np.sum(n_c**2)
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1) * observed / expected)


def bootstrap_interval(statistic, counts: np.ndarray, confidence: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of an agreement statistic, resampling the rated units.

    Parameters
    ----------
    statistic : callable
        ``statistic(counts) -> float`` (e.g. :func:`fleiss_kappa`).
    counts : ndarray, shape (n_units, n_categories)
    confidence : float
        Two-sided level.
    n_boot : int
        Resamples; resamples whose statistic is undefined (NaN) are dropped.
    seed : int

    Returns
    -------
    low, high : float
        NaN when fewer than two units or no resample gives a value.
    """
    counts = np.asarray(counts)
    if counts.shape[0] < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(counts[rng.integers(0, counts.shape[0], counts.shape[0])])
                       for _ in range(n_boot)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def agreement_words(kappa: float) -> str:
    """Landis & Koch (1977) words for a kappa: poor, slight, fair, moderate, substantial, almost perfect."""
    if not np.isfinite(kappa):
        return "undefined"
    if kappa < 0:
        return "poor (below chance)"
    for upper, words in ((0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial")):
        if kappa <= upper:
            return words
    return "almost perfect"
