"""Anomaly ranking: how unusual each galaxy is among the galaxies of its run.

Plain array functions; the ``anomaly`` stage (:mod:`skymorph.stages.anomaly`) reads the run's
``features`` or ``embedding`` and writes ``anomaly_score`` to the catalog.

Three scores, each higher for a more unusual galaxy, all taken in the same space: the input
scaled (rows to unit length, the cosine geometry ``similar`` searches in, or columns standardised)
and projected on its first ``dims`` principal components (fitted on a seeded sample), so 10^5
galaxies x 2048 features cost seconds, not the N^2 D of a full neighbour search:

``knn``
    mean distance to the ``n_neighbors`` nearest galaxies of a seeded reference sample
    (``reference`` galaxies; a reference galaxy leaves itself out);
``lof``
    scikit-learn's local outlier factor (the k-NN distance relative to that of the
    neighbours), fitted on the reference sample;
``iforest``
    scikit-learn's isolation forest (mean path length), fitted on the reference sample.

Which one ranks known oddities highest is measured by ``benchmarks/eval_special.py``
(ROC AUC of Galaxy Zoo's merger + don't-know galaxies, and of CEERS artefacts); the
README gives the comparison and the default follows it.
"""

from __future__ import annotations

import numpy as np

from ..errors import SkymorphError

__all__ = ["METHODS", "AnomalyError", "project", "anomaly_scores"]

METHODS = ("knn", "lof", "iforest")


class AnomalyError(SkymorphError, ValueError):
    """The galaxies cannot be scored (unknown method, too few galaxies)."""


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def project(x: np.ndarray, *, dims: int = 64, sample: int = 10000, seed: int = 0,
            scaling: str = "l2", block: int = 16384) -> np.ndarray:
    """Scale the rows or columns and keep the first ``dims`` principal components.

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Finite rows only (an array-like that can be sliced by rows, e.g. a zarr array).
    dims : int
        Principal components kept; 0 keeps the scaled input whole.
    scaling : {"l2", "standardise"}
        ``l2``: every row to unit length (the cosine geometry of the features, as ``similar``
        uses); ``standardise``: every column to zero mean and unit variance.
    sample : int
        Rows (seeded sample) the mean, scale and components are fitted on.
    seed : int
    block : int
        Rows scaled and projected at a time (bounds the memory to one block of D columns).

    Returns
    -------
    ndarray of float32, shape (N, min(dims, D))

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 32))
    >>> project(x, dims=8).shape
    (500, 8)
    """
    if scaling not in ("l2", "standardise"):
        raise AnomalyError(f"anomaly.scaling must be 'l2' or 'standardise' (got {scaling!r})")
    n, d = x.shape
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
    fit = np.asarray(x[rows], dtype=np.float32)
    if scaling == "l2":
        fit = _unit_rows(fit)
    mean = fit.mean(axis=0)
    scale = fit.std(axis=0) if scaling == "standardise" else np.ones(d, np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    components = None
    if dims and dims < d:
        zf = (fit - mean) / scale
        zf -= zf.mean(axis=0)
        # the leading eigenvectors of the D x D covariance are the right singular vectors of the
        # sample: the same axes (up to sign, which no distance sees) for a tenth of the cost of
        # a full SVD of the sample
        _, vectors = np.linalg.eigh(np.asarray(zf.T @ zf, dtype=np.float64))
        components = vectors[:, ::-1][:, :dims].astype(np.float32)
    out = np.empty((n, d if components is None else dims), dtype=np.float32)
    for start in range(0, n, block):
        z = np.asarray(x[start:start + block], dtype=np.float32)
        if scaling == "l2":
            z = _unit_rows(z)
        z = (z - mean) / scale
        out[start:start + block] = z if components is None else z @ components
    return out


def _knn_score(z: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(ref) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(z[ref])
    dist, idx = nn.kneighbors(z)
    own = ref[idx] == np.arange(len(z))[:, None]
    # a reference galaxy leaves itself out; every other galaxy uses its first k neighbours
    dist = np.where(own, np.inf, dist)
    dist.sort(axis=1)
    return dist[:, :k].mean(axis=1)


def anomaly_scores(x: np.ndarray, *, method: str = "knn", n_neighbors: int = 10, dims: int = 64,
                   reference: int = 10000, seed: int = 0, scaling: str = "l2") -> np.ndarray:
    """An anomaly score per galaxy: higher is more unusual.

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Features or embedding; rows with NaN get NaN.
    method : {"knn", "lof", "iforest"}
    n_neighbors : int
        Neighbours of ``knn`` and ``lof``.
    dims : int
        Principal components of the scaled input the scores are taken in (0: all).
    reference : int
        Galaxies (seeded sample) the neighbours are searched among / the models are fitted on.
    seed : int
    scaling : {"l2", "standardise"}
        See :func:`project`.

    Returns
    -------
    ndarray of float64, shape (N,)

    Raises
    ------
    AnomalyError
        Unknown method, or fewer than three galaxies with finite values.
    """
    if method not in METHODS:
        raise AnomalyError(f"anomaly.method must be one of {', '.join(METHODS)} (got {method!r})")
    ok = np.concatenate([np.isfinite(np.asarray(x[a:a + 16384])).all(axis=1)
                         for a in range(0, len(x), 16384)]) if len(x) else np.zeros(0, bool)
    out = np.full(len(x), np.nan)
    if ok.sum() < 3:
        raise AnomalyError(f"only {int(ok.sum())} galaxies have finite values; at least 3 are needed")
    z = project(x if ok.all() else np.asarray(x, dtype=np.float32)[ok], dims=dims, seed=seed,
                scaling=scaling)
    rng = np.random.default_rng(seed)
    m = len(z)
    ref = np.arange(m) if m <= reference else np.sort(rng.choice(m, reference, replace=False))
    if method == "knn":
        score = _knn_score(z, ref, n_neighbors)
    elif method == "lof":
        from sklearn.neighbors import LocalOutlierFactor

        k = min(n_neighbors, len(ref) - 1)
        lof = LocalOutlierFactor(n_neighbors=k, novelty=True, algorithm="brute").fit(z[ref])
        score = -lof.score_samples(z)
        score[ref] = -lof.negative_outlier_factor_
    else:
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(n_estimators=200, random_state=seed).fit(z[ref])
        score = -forest.score_samples(z)
    out[ok] = score
    return out
