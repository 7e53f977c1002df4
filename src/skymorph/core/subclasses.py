"""Subclasses: the members of one cluster or type, embedded on their own for re-clustering.

The paper's outlook asks for special objects (tidal tails, lenses, little red dots) through
subclass subdivision.  A cluster's members are a small, fairly alike sample: in the run's
embedding (fitted on every galaxy) their differences are squeezed, so they get an embedding
of their own - standardised features, PCA to at most 50 components, then a seeded UMAP to
``dims`` dimensions (or the PCA itself with ``dims = 0``) - which the ``subdivide`` stage
clusters with the same three-clusterer vote as the whole run.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import SkymorphError

__all__ = ["SubclassError", "own_embedding", "subcluster_names"]


class SubclassError(SkymorphError, ValueError):
    """The members cannot be subdivided (too few, no finite features)."""


def own_embedding(x: np.ndarray, *, dims: int = 10, n_neighbors: int = 15, seed: int = 42,
                  pca: int = 50) -> np.ndarray:
    """An embedding of a group of galaxies fitted on that group alone.

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Features of the members (finite rows).
    dims : int
        UMAP output dimension; 0 returns the PCA.
    n_neighbors : int
        UMAP neighbours (capped at N - 1).
    seed : int
        Seed of UMAP.
    pca : int
        Principal components of the standardised features kept before UMAP.

    Returns
    -------
    ndarray of float32, shape (N, dims or min(pca, N, D))

    Raises
    ------
    SubclassError
        Fewer than 3 galaxies, or NaN features.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise SubclassError(f"need at least 3 galaxies to subdivide, got {len(x)}")
    if not np.isfinite(x).all():
        raise SubclassError("some members have NaN features; re-run `skymorph encode`")
    scale = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    m = min(pca, len(x) - 1, x.shape[1])
    reduced = u[:, :m] * s[:m]
    if not dims:
        return reduced.astype(np.float32)
    with warnings.catch_warnings():  # umap's advice (no TensorFlow, seeded = serial) is not an error
        warnings.simplefilter("ignore")
        import umap

        model = umap.UMAP(n_components=min(dims, len(x) - 2),
                          n_neighbors=max(2, min(n_neighbors, len(x) - 1)),
                          random_state=seed, n_jobs=1, init="random" if len(x) < 50 else "spectral")
        emb = model.fit_transform(reduced)
    return np.ascontiguousarray(emb, dtype=np.float32)


def subcluster_names(parent: str, labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``"<parent>.<label>"`` where the three clusterers agree, ``""`` elsewhere.

    Parameters
    ----------
    parent : str
        The cluster number or type subdivided (e.g. ``"7"`` or ``"ETD"``).
    labels : ndarray of int, shape (N,)
    kept : ndarray of bool, shape (N,)

    Returns
    -------
    ndarray of object (str)
    """
    labels = np.asarray(labels)
    return np.array([f"{parent}.{int(lab)}" if k else "" for lab, k in zip(labels, kept, strict=True)],
                    dtype=object)
