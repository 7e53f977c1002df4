"""UMAP's plumbing for the reduction: the k-NN graph, one seeded UMAP fit and the spectral start.

The graph (:func:`knn_graph`: pynndescent through ``umap.umap_.nearest_neighbors``, or
an exact brute-force graph for small inputs) is built once and handed to every fit as
``precomputed_knn``; :func:`fit_umap` is one single-threaded, seeded fit; the spectral
layout is computed once for the largest d of the dimension scan.  umap, pynndescent and
numba warnings go to the log.  :mod:`skymorph.core.reduction` scans d, samples and
places the galaxies, and re-exports the public names here.  NumPy arrays in and out: no
run directory, no settings object.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

__all__ = ["knn_graph", "fit_umap"]

# the same logger as skymorph.core.reduction: these messages were always logged under that name
log = logging.getLogger("skymorph.core.reduction")


class _Umap(NamedTuple):
    """The UMAP settings every fit of one reduction shares."""

    n_neighbors: int
    min_dist: float
    metric: str
    n_epochs: int | None
    seed: int
    exact_knn_below: int


@contextlib.contextmanager
def _umap_warnings() -> Iterator[None]:
    """Route umap/pynndescent/numba warnings to the log instead of the warnings machinery:
    they are advice for interactive users (e.g. that a seed disables parallelism, which we
    want) and must not abort a pipeline run that treats warnings as errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("umap: %s", w.message)


def _umap_module() -> Any:
    with _umap_warnings():
        import umap
        import umap.umap_
    return umap


def knn_graph(features: np.ndarray, *, n_neighbors: int = 30, metric: str = "euclidean", seed: int = 42,
              exact_knn_below: int = 4096) -> tuple[np.ndarray, np.ndarray, Any]:
    """The k-NN graph UMAP needs, built once.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    n_neighbors : int
        Neighbours of each galaxy (itself included, as in UMAP's own graphs).
    metric : str
        Any metric pynndescent (and, for the exact graph, scikit-learn) knows.
    seed : int
        Seed of pynndescent's search.
    exact_knn_below : int
        Up to this many galaxies the graph is exact (scikit-learn, brute force): in small
        inputs far cheaper than compiling pynndescent's numba code (about a minute, once
        per process).  Pass 0 when new galaxies must be placed later with ``UMAP.transform``,
        which needs pynndescent's search index.

    Returns
    -------
    tuple
        ``(indices, distances, search_index)``, to pass as UMAP's ``precomputed_knn``;
        the search index (None for the exact graph) lets ``UMAP.transform`` place new galaxies.

    See Also
    --------
    fit_umap, scan_dims : both take this graph as ``knn``.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import knn_graph
    >>> x = np.arange(20, dtype=np.float32).reshape(10, 2)
    >>> indices, distances, index = knn_graph(x, n_neighbors=3)
    >>> indices[0].tolist(), index is None
    ([0, 1, 2], True)
    """
    if features.shape[0] <= exact_knn_below:
        return _exact_knn(features, n_neighbors, metric)
    umap = _umap_module()
    with _umap_warnings():
        indices, dists, index = umap.umap_.nearest_neighbors(
            features, n_neighbors=n_neighbors, metric=metric, metric_kwds={},
            angular=False, random_state=np.random.RandomState(seed), low_memory=True,
            use_pynndescent=True, n_jobs=1, verbose=False,
        )
    return indices, dists, index


def _exact_knn(features: np.ndarray, n_neighbors: int, metric: str) -> tuple[np.ndarray, np.ndarray, None]:
    """Brute-force k-NN (scikit-learn); each galaxy is its own first neighbour."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, features.shape[0])
    search = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(features)
    dists, indices = search.kneighbors(features)
    # Rounding leaves a galaxy ~1e-7 from itself for about half of them; UMAP takes the first
    # non-zero distance as the distance to the nearest neighbour (rho), so those galaxies got a
    # different fuzzy graph than pynndescent's exact zeros give above exact_knn_below.
    dists[indices == np.arange(features.shape[0])[:, None]] = 0.0
    return indices.astype(np.int32), dists.astype(np.float32), None


def _fit(features: np.ndarray, n_components: int, p: _Umap, knn: tuple | None = None,
         init: np.ndarray | str = "spectral", n_epochs: int | None = None) -> tuple[np.ndarray, Any]:
    umap = _umap_module()
    if knn is None:
        knn = knn_graph(features, n_neighbors=p.n_neighbors, metric=p.metric, seed=p.seed,
                        exact_knn_below=p.exact_knn_below)
    model = umap.UMAP(
        n_components=n_components, n_neighbors=p.n_neighbors, min_dist=p.min_dist,
        metric=p.metric, n_epochs=n_epochs if n_epochs is not None else p.n_epochs,
        init=init, random_state=p.seed, n_jobs=1, precomputed_knn=knn, low_memory=True,
        verbose=False,
    )
    with _umap_warnings():
        embedding = model.fit_transform(features)
    return np.ascontiguousarray(embedding, dtype=np.float32), model


def fit_umap(features: np.ndarray, n_components: int, *, n_neighbors: int = 30, min_dist: float = 0.1,
             metric: str = "euclidean", n_epochs: int | None = None, seed: int = 42,
             exact_knn_below: int = 4096, knn: tuple | None = None,
             init: np.ndarray | str = "spectral") -> tuple[np.ndarray, Any]:
    """One seeded UMAP fit (single-threaded: the price of a reproducible embedding).

    Parameters
    ----------
    features : ndarray, shape (N, D)
    n_components : int
        Output dimension.
    n_neighbors, min_dist, metric, n_epochs : UMAP's parameters (``n_epochs=None``
        is UMAP's own choice).
    seed : int
        UMAP's ``random_state``.
    exact_knn_below : int
        See :func:`knn_graph` (used when ``knn`` is not given).
    knn : tuple, optional
        A graph from :func:`knn_graph` for these rows; built here when missing.
    init : ndarray or str
        UMAP's ``init`` (an (N, n_components) array or ``"spectral"``).

    Returns
    -------
    embedding : ndarray, shape (N, n_components), float32
    model : umap.UMAP
        The fitted model (its ``transform`` places new galaxies when ``knn`` carries a search index).

    See Also
    --------
    umap.UMAP, reduce_features

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import fit_umap
    >>> x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    >>> embedding, model = fit_umap(x, 2, n_epochs=20)  # doctest: +SKIP
    >>> embedding.shape  # doctest: +SKIP
    (60, 2)
    """
    p = _Umap(n_neighbors, min_dist, metric, n_epochs, seed, exact_knn_below)
    return _fit(features, n_components, p, knn=knn, init=init)


def _spectral_init(features: np.ndarray, knn: tuple, dim: int, p: _Umap) -> np.ndarray:
    """Spectral layout of the fuzzy graph with ``dim`` components, scaled as UMAP does;
    its first d columns are UMAP's spectral init for any d <= dim."""
    umap = _umap_module()
    from umap.spectral import spectral_layout

    state = np.random.RandomState(p.seed)
    with _umap_warnings():
        graph, _, _ = umap.umap_.fuzzy_simplicial_set(
            features, p.n_neighbors, state, p.metric, knn_indices=knn[0], knn_dists=knn[1],
        )
        layout = spectral_layout(features, graph, dim, state, metric=p.metric)
    return umap.umap_.noisy_scale_coords(layout, state, max_coord=10, noise=0.0001)
