"""Active learning: which single galaxies an expert should type next.

After the clusters are named, the extension classifier (:mod:`skymorph.core.extend`)
types every galaxy.  It is least sure where its two most probable types are nearly
tied: the *margin* ``p_1 - p_2`` is small.  An expert who types exactly those galaxies
teaches the classifier most per galaxy looked at (uncertainty sampling, Lewis & Gale
1994; Settles 2009), and finds the rare types that whole clusters absorb.

The functions here work on plain arrays:

:func:`margins`
    ``p_1 - p_2`` per galaxy.
:func:`select_queries`
    The ``n`` galaxies of least margin among the candidates (a page for the expert).
:func:`random_start`
    A seeded random page, for a start without cluster names.
:func:`combine_labels`
    Cluster-derived types and the experts' single-galaxy types -> one training set, the
    taught galaxies weighted above the cluster-derived ones.
:func:`uncertainty`
    Per-type probabilities from the extension's classifier (standardised input, the same
    :func:`~skymorph.core.extend.fit_model`), fitted once without the cross-validation and
    calibration of the full step: the ranking that picks the next page.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .extend import ExtendError, _log_proba, _softmax, _Standardiser, fit_model

__all__ = ["margins", "select_queries", "random_start", "combine_labels", "uncertainty"]


def margins(proba: np.ndarray) -> np.ndarray:
    """Margin of the classifier on every galaxy: top probability minus the second.

    Parameters
    ----------
    proba : ndarray, shape (N, C)
        Per-type probabilities (rows sum to 1).

    Returns
    -------
    ndarray, shape (N,)
        ``p_1 - p_2`` in [0, 1]; 1 where there is only one type.  Non-finite rows get
        NaN (they are never selected).
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] == 0:
        raise ExtendError(f"probabilities must be an N x C array, got shape {proba.shape}")
    if proba.shape[1] == 1:
        out = np.ones(proba.shape[0])
    else:
        top2 = -np.partition(-proba, 1, axis=1)[:, :2]
        out = top2[:, 0] - top2[:, 1]
    out[~np.isfinite(proba).all(axis=1)] = np.nan
    return out


def select_queries(proba: np.ndarray, *, n: int, candidates: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` candidate galaxies of least margin, least sure first.

    Parameters
    ----------
    proba : ndarray, shape (N, C)
        Per-type probabilities of every galaxy.
    n : int
        How many to pick (fewer when there are fewer candidates).
    candidates : ndarray of bool, shape (N,), optional
        Galaxies that may be picked (e.g. not yet looked at); all by default.

    Returns
    -------
    ndarray of int
        Row positions, by increasing margin; equal margins in row order (deterministic).
    """
    if n < 0:
        raise ExtendError(f"the number of galaxies to pick must be >= 0, got {n}")
    m = margins(proba)
    ok = np.isfinite(m)
    if candidates is not None:
        candidates = np.asarray(candidates, dtype=bool)
        if candidates.shape != m.shape:
            raise ExtendError(f"candidates must be a boolean mask of {m.size} galaxies, "
                              f"got {candidates.shape}")
        ok &= candidates
    rows = np.flatnonzero(ok)
    order = np.argsort(m[rows], kind="stable")
    return rows[order[:n]]


def random_start(n_total: int, *, n: int, seed: int, candidates: np.ndarray | None = None) -> np.ndarray:
    """``n`` galaxies drawn at random (seeded) among the candidates, in row order.

    Parameters
    ----------
    n_total : int
        Number of galaxies.
    n : int
        How many to draw (all candidates when fewer).
    seed : int
        Seed of the draw.
    candidates : ndarray of bool, optional
        Galaxies that may be drawn; all by default.
    """
    pool = np.arange(n_total) if candidates is None else np.flatnonzero(np.asarray(candidates, dtype=bool))
    rng = np.random.default_rng([int(seed), 19])
    return np.sort(rng.choice(pool, size=min(int(n), pool.size), replace=False))


def combine_labels(cluster_types: Any, taught_types: Any, *, taught_weight: float = 1.0,
                   use_clusters: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training set from cluster-derived types and experts' single-galaxy types.

    Parameters
    ----------
    cluster_types : sequence of str, shape (N,)
        Type each galaxy gets from its named cluster; ``""`` where none (rejected by the
        consensus vote, or a type the classifier must not learn).
    taught_types : sequence of str, shape (N,)
        Type an expert gave the galaxy itself; ``""`` where none.  It replaces the
        cluster-derived type of the same galaxy.
    taught_weight : float
        Sample weight of a taught galaxy; cluster-derived galaxies weigh 1.
    use_clusters : bool
        Learn from the cluster-derived types too (False: the taught galaxies alone).

    Returns
    -------
    learn : ndarray of bool (N,)
        Galaxies the classifier learns from.
    y : ndarray of str (N,)
        Their types (``""`` elsewhere).
    weight : ndarray of float (N,)
        Their sample weights (0 elsewhere).
    """
    cluster_types = np.asarray(cluster_types, dtype=object).astype(str)
    taught_types = np.asarray(taught_types, dtype=object).astype(str)
    if cluster_types.shape != taught_types.shape or cluster_types.ndim != 1:
        raise ExtendError(f"cluster and taught types must be two arrays of N galaxies, got "
                          f"{cluster_types.shape} and {taught_types.shape}")
    if not taught_weight > 0:
        raise ExtendError(f"the weight of a taught galaxy must be > 0, got {taught_weight}")
    taught = taught_types != ""
    base = (cluster_types != "") if use_clusters else np.zeros(cluster_types.size, bool)
    learn = taught | base
    y = np.where(taught, taught_types, np.where(base, cluster_types, "")).astype(object)
    weight = np.where(taught, float(taught_weight), np.where(base, 1.0, 0.0))
    return learn, y, weight


def uncertainty(x: np.ndarray, learn: np.ndarray, y: Any, *, weight: np.ndarray | None = None,
                model: str = "logistic", c: float = 0.1, class_weight: str = "balanced",
                max_iter: int = 300, seed: int = 0, block: int = 20000) -> tuple[list[str], np.ndarray]:
    """Per-type probabilities of every galaxy from a classifier fitted on the labelled ones.

    The extension's model (:func:`~skymorph.core.extend.fit_model` on inputs standardised
    by the training rows), fitted once; no cross-validation, no temperature (a single
    temperature scales every galaxy's log-odds alike and hardly moves the ranking).

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Input of every galaxy.
    learn : ndarray of bool, shape (N,)
        Labelled galaxies.
    y : sequence of str, shape (N,)
        Their types (read where ``learn``).
    weight : ndarray, shape (N,), optional
        Sample weights (read where ``learn``); 1 by default.
    model, c, class_weight, max_iter, seed
        See :func:`~skymorph.core.extend.fit_model`.

    Returns
    -------
    classes : list of str
    proba : ndarray, shape (N, C)
        NaN rows where the input is not finite.

    Raises
    ------
    ExtendError
        Fewer than two types among the labelled galaxies, or shapes that do not match.
    """
    x = np.asarray(x)
    learn = np.asarray(learn, dtype=bool)
    if x.ndim != 2 or learn.shape != (x.shape[0],):
        raise ExtendError(f"x must be N x D and learn a boolean mask of N galaxies; got {x.shape} "
                          f"and {learn.shape}")
    finite = np.isfinite(x).all(axis=1)
    rows = np.flatnonzero(learn & finite)
    y_train = np.asarray(y, dtype=object)[rows].astype(str)
    classes = sorted(set(y_train.tolist()))
    if len(classes) < 2:
        raise ExtendError(f"the labelled galaxies hold {len(classes)} type(s); ranking by margin needs two")
    w = None if weight is None else np.asarray(weight, dtype=np.float64)[rows]
    scaler = _Standardiser(x[rows])
    est = fit_model(scaler(x[rows]), y_train, model=model, c=c, class_weight=class_weight,
                    max_iter=max_iter, seed=seed, sample_weight=w)
    proba = np.full((x.shape[0], len(classes)), np.nan)
    ok = np.flatnonzero(finite)
    for start in range(0, ok.size, block):
        part = ok[start:start + block]
        proba[part] = _softmax(_log_proba(est, scaler(x[part]), classes))
    return classes, proba
