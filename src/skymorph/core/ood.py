"""Out of distribution: how far every galaxy lies from the extension's training galaxies.

The distance is the mean Euclidean distance to the ``k`` nearest training galaxies (a
seeded sample of at most ``reference`` of them), taken in the training galaxies' first
``dims`` principal components plus the norm of the residual off them; the threshold is a
quantile of the training galaxies' own leave-one-out distances (step 5 of
:mod:`skymorph.core.extend`, which re-exports :func:`ood_distances`).  Plain arrays in
and out: no run directory, no settings object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ood_distances"]


def _ood_space(z_train: np.ndarray, dims: int, seed: int):
    """A map from standardised rows to the space the neighbour distances are taken in."""
    if not dims or z_train.shape[1] <= dims + 1:
        return lambda z: np.concatenate([np.asarray(z[s:s + 20000], dtype=np.float32)
                                         for s in range(0, z.shape[0], 20000)])
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dims, z_train.shape[0] - 1, z_train.shape[1]),
              svd_solver="randomized", random_state=seed).fit(z_train)
    mean = pca.mean_.astype(np.float32)
    comps = pca.components_.astype(np.float32)

    def project(z: np.ndarray) -> np.ndarray:
        out = np.empty((z.shape[0], comps.shape[0] + 1), dtype=np.float32)
        for start in range(0, z.shape[0], 20000):
            c = np.asarray(z[start:start + 20000], dtype=np.float32) - mean
            p = c @ comps.T
            resid = (c * c).sum(axis=1) - (p * p).sum(axis=1)
            out[start:start + 20000, :-1] = p
            out[start:start + 20000, -1] = np.sqrt(np.clip(resid, 0, None))
        return out

    return project


def _knn_mean_distance(query: np.ndarray, ref: np.ndarray, k: int, skip_self: bool,
                       block: int = 2048) -> np.ndarray:
    """Mean Euclidean distance of each query row to its k nearest ``ref`` rows (brute force,
    blocked GEMM; ``skip_self`` drops the nearest one, the row itself, for queries = ref)."""
    ref = np.ascontiguousarray(ref, dtype=np.float32)
    ref_sq = (ref.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    kk = k + (1 if skip_self else 0)
    kk = min(kk, ref.shape[0])
    out = np.empty(query.shape[0], dtype=np.float64)
    for start in range(0, query.shape[0], block):
        q = np.ascontiguousarray(query[start:start + block], dtype=np.float32)
        d2 = (q * q).sum(axis=1)[:, None] - 2.0 * (q @ ref.T) + ref_sq[None, :]
        part = np.partition(d2, kk - 1, axis=1)[:, :kk]
        part.sort(axis=1)
        if skip_self:
            part = part[:, 1:]
        out[start:start + block] = np.sqrt(np.clip(part, 0, None)).mean(axis=1)
    return out


class _OODReference:
    """The training galaxies (at most ``reference`` of them, a seeded sample) in the space
    the neighbour distances are taken in, and the threshold on those distances."""

    def __init__(self, z_train: np.ndarray, *, k: int, dims: int, quantile: float, reference: int,
                 seed: int) -> None:
        n = z_train.shape[0]
        if n < 2:
            # imported here: skymorph.core.extend imports this module, and its error is the one to raise
            from .extend import ExtendError

            raise ExtendError("the OOD flag needs at least 2 training galaxies")
        rows = np.arange(n)
        if reference and n > reference:
            rows = np.sort(np.random.default_rng([int(seed), 17]).choice(n, size=reference, replace=False))
        self.rows = rows
        self.k = max(1, min(int(k), rows.size - 1))
        self.project = _ood_space(z_train[rows], dims, seed)
        self.ref = self.project(z_train[rows])
        self.loo = _knn_mean_distance(self.ref, self.ref, self.k, skip_self=True)
        self.threshold = float(np.quantile(self.loo, quantile))

    def distance(self, z: Any) -> np.ndarray:
        return _knn_mean_distance(self.project(z), self.ref, self.k, skip_self=False)


def ood_distances(z_train: np.ndarray, z_all: np.ndarray, train_rows: np.ndarray, *, k: int = 5,
                  dims: int = 64, quantile: float = 0.99, reference: int = 10000, seed: int = 0
                  ) -> tuple[np.ndarray, float]:
    """k-NN distance of every galaxy to the training set, and the OOD threshold.

    Parameters
    ----------
    z_train : ndarray (n, D)
        Standardised training rows.
    z_all : ndarray (N, D)
        Standardised rows of every galaxy.
    train_rows : ndarray of int
        Positions of the training rows in ``z_all``; those in the reference sample get
        their leave-one-out distances.
    k, dims, quantile, reference, seed
        See :class:`~skymorph.core.extend.ExtendModel`.

    Returns
    -------
    distance : ndarray (N,)
    threshold : float
    """
    ref = _OODReference(z_train, k=k, dims=dims, quantile=quantile, reference=reference, seed=seed)
    distance = ref.distance(z_all)
    distance[np.asarray(train_rows)[ref.rows]] = ref.loo
    return distance, ref.threshold
