"""The three members of the consensus clustering: K-means, BIRCH and ward, each with ``k`` clusters.

BIRCH's threshold is scaled to the data (:func:`auto_birch_threshold`, checked on a
sample tree by :func:`calibrated_birch_threshold`); ward takes the route that fits the
number of galaxies (:func:`ward_route`: ``exact``, ``sample`` or ``connectivity``).  The
vote between the three, and the placing of galaxies block by block, are in
:mod:`skymorph.core.clustering`, which re-exports every public name here.  NumPy arrays
in, labels out: no run directory, no settings object.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from ..errors import SkymorphError

__all__ = [
    "ClusterError",
    "kmeans_labels",
    "auto_birch_threshold",
    "calibrated_birch_threshold",
    "birch_labels",
    "ward_route",
    "ward_labels",
]

# the same logger as skymorph.core.clustering: these messages were always logged under that name
log = logging.getLogger("skymorph.core.clustering")

WARD_METHODS = ("auto", "exact", "sample", "connectivity")


class ClusterError(SkymorphError, ValueError):
    """The embedding cannot be clustered (NaN rows, fewer galaxies than k, bad settings)."""


def kmeans_labels(x: np.ndarray, *, k: int = 20, n_init: int = 4, seed: int = 42) -> np.ndarray:
    """K-means labels (k-means++, ``n_init`` restarts, the best inertia kept, seeded).

    Parameters
    ----------
    x : ndarray, shape (N, d)
        The embedding.
    k : int
        Number of clusters.
    n_init : int
        Restarts.
    seed : int
        Seed of the initialisation.

    Returns
    -------
    ndarray of int64, shape (N,)

    See Also
    --------
    sklearn.cluster.KMeans

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import kmeans_labels
    >>> x = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10]
    >>> labels = kmeans_labels(x, k=2)
    >>> len(set(labels[:5])), len(set(labels[5:])), bool(labels[0] != labels[9])
    (1, 1, True)
    """
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return model.fit_predict(x).astype(np.int64)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (float64), clipped at 0."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d, 0)


def auto_birch_threshold(x: np.ndarray, *, n_subclusters: int = 2000, seed: int = 42,
                         n_queries: int = 1000) -> float:
    """BIRCH threshold scaled to the data, so the CF tree holds about ``n_subclusters``.

    BIRCH lets a subcluster absorb galaxies while its radius (RMS distance to its
    centroid) stays under the threshold.  For ``n_queries`` seeded random galaxies this
    takes the galaxy's m nearest neighbours (itself included), m = N / ``n_subclusters``,
    and the radius of that group; the median radius is the threshold, so subclusters hold
    about m galaxies and the tree about ``n_subclusters`` of them, in any dimension.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    n_subclusters : int
        Target number of subclusters.
    seed : int
        Seed of the query sample.
    n_queries : int
        Galaxies whose neighbourhood radius is measured.

    Returns
    -------
    float
        The threshold (1e-6 when every neighbourhood has radius 0).

    See Also
    --------
    calibrated_birch_threshold : this estimate, checked on a sample tree.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import auto_birch_threshold
    >>> x = np.random.default_rng(0).normal(size=(400, 3))
    >>> 0 < auto_birch_threshold(x, n_subclusters=40) < 2
    True
    """
    n = x.shape[0]
    m = max(2, int(round(n / max(1, n_subclusters))))
    m = min(m, n)
    rng = np.random.default_rng([seed, 3])
    picks = rng.choice(n, size=min(n, n_queries), replace=False)
    radii = np.empty(picks.size)
    block = max(1, int(2e7 // max(n, 1)))
    for start in range(0, picks.size, block):
        d = _sq_dists(x[picks[start:start + block]], x)
        near = np.argpartition(d, m - 1, axis=1)[:, :m]
        for i, rows in enumerate(near):
            group = x[rows].astype(np.float64)
            radii[start + i] = np.sqrt(((group - group.mean(0)) ** 2).sum(1).mean())
    value = float(np.median(radii))
    return value if value > 0 else 1e-6


def calibrated_birch_threshold(x: np.ndarray, *, k: int = 20, n_subclusters: int = 2000,
                               branching_factor: int = 50, seed: int = 42) -> float:
    """:func:`auto_birch_threshold`, raised until a sample tree holds few enough subclusters.

    A BIRCH tree of a random sample of 4 x ``n_subclusters`` galaxies must hold at most
    1.5 x ``n_subclusters`` subclusters.  With a fixed threshold the subcluster count
    depends on the volume the data fill, not on how many galaxies fill it, so the sample
    predicts the count of the full tree; the check matters where neighbourhoods are
    nearly as wide as the clusters (noise-dominated, high intrinsic dimension), where the
    radius estimate runs low.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    k : int
        Final number of clusters (the tree keeps at least 5 k subclusters when it can).
    n_subclusters : int
        Target number of subclusters.
    branching_factor : int
        BIRCH CF-tree branching factor.
    seed : int
        Seed of the samples.

    Returns
    -------
    float

    See Also
    --------
    birch_labels : BIRCH with this threshold (``threshold="auto"``).

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import calibrated_birch_threshold
    >>> x = np.random.default_rng(0).normal(size=(400, 3))
    >>> calibrated_birch_threshold(x, k=4, n_subclusters=40) > 0
    True
    """
    from sklearn.cluster import Birch

    threshold = auto_birch_threshold(x, n_subclusters=n_subclusters, seed=seed)
    n = x.shape[0]
    size = min(n, 4 * n_subclusters)
    rng = np.random.default_rng([seed, 6])
    sample = x[rng.choice(n, size=size, replace=False)]
    limit = 1.5 * min(n_subclusters, size / 2)
    floor = min(5 * k, size / 2)
    previous = None
    for _ in range(12):
        tree = Birch(threshold=threshold, branching_factor=branching_factor, n_clusters=None)
        count = tree.fit(sample).subcluster_centers_.shape[0]
        if count < floor and previous is not None:
            # Past a collapse (data with no scale between noise and clusters): the last
            # finer threshold keeps enough subclusters for the final ward to choose from.
            return previous
        if count <= limit:
            break
        log.debug("cluster: BIRCH threshold %.4g gives %d subclusters on %d galaxies; raising it",
                  threshold, count, size)
        previous, threshold = threshold, threshold * 1.3
    return threshold


def _threshold(x: np.ndarray, threshold: float | str, k: int, n_subclusters: int, branching_factor: int,
               seed: int) -> float:
    if threshold == "auto":
        return calibrated_birch_threshold(x, k=k, n_subclusters=n_subclusters,
                                          branching_factor=branching_factor, seed=seed)
    try:
        return float(threshold)
    except (TypeError, ValueError):
        raise ClusterError(f"cluster.birch_threshold must be a number or 'auto', got {threshold!r}") from None


def _birch_tree(x: np.ndarray, threshold: float, k: int, branching_factor: int) -> tuple[Any, np.ndarray]:
    """A BIRCH CF tree of ``x`` and the ward grouping of its subclusters into ``k`` clusters.

    The final step (a ward over the subcluster centroids) is done here rather than by
    ``Birch(n_clusters=k)``, so the subclusters can be counted and reported."""
    from sklearn.cluster import AgglomerativeClustering, Birch

    tree = Birch(threshold=threshold, branching_factor=branching_factor, n_clusters=None).fit(x)
    centres = tree.subcluster_centers_
    if centres.shape[0] < k:
        raise ClusterError(
            f"BIRCH threshold {threshold:.4g} leaves {centres.shape[0]} subclusters, fewer than "
            f"k={k}; lower cluster.birch_threshold"
        )
    if centres.shape[0] > k:
        groups = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(centres)
    else:
        groups = np.arange(centres.shape[0])
    return tree, np.asarray(groups)


def birch_labels(x: np.ndarray, *, k: int = 20, threshold: float | str = "auto", n_subclusters: int = 2000,
                 branching_factor: int = 50, seed: int = 42) -> tuple[np.ndarray, dict[str, Any]]:
    """BIRCH with ``k`` clusters: a CF tree, then ward over its subcluster centroids.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    k : int
        Number of clusters.
    threshold : float or "auto"
        Subcluster radius; ``"auto"`` scales it to the data
        (:func:`calibrated_birch_threshold`).
    n_subclusters : int
        Target number of subclusters of ``threshold="auto"``.
    branching_factor : int
        CF-tree branching factor.
    seed : int
        Seed of the ``"auto"`` threshold's samples.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
    info : dict
        ``birch_threshold`` used and ``birch_subclusters`` obtained.

    Raises
    ------
    ClusterError
        A threshold that is neither a number nor ``"auto"``, or one that leaves fewer
        than ``k`` subclusters.

    See Also
    --------
    sklearn.cluster.Birch

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import birch_labels
    >>> x = np.r_[np.zeros((50, 2)), np.full((50, 2), 10.0)]
    >>> x += np.random.default_rng(0).normal(scale=0.1, size=x.shape)
    >>> labels, info = birch_labels(x, k=2, n_subclusters=10)
    >>> bool(labels[0] != labels[-1]), sorted(info)
    (True, ['birch_subclusters', 'birch_threshold'])
    """
    value = _threshold(x, threshold, k, n_subclusters, branching_factor, seed)
    tree, groups = _birch_tree(x, value, k, branching_factor)
    labels = groups[tree.predict(x)]
    return labels.astype(np.int64), {"birch_threshold": value,
                                     "birch_subclusters": int(tree.subcluster_centers_.shape[0])}


def _exact_ward(x: np.ndarray, k: int) -> np.ndarray:
    """Exact ward (scikit-learn; O(N^2) memory)."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x).astype(np.int64)


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    from sklearn.metrics import pairwise_distances_argmin

    return pairwise_distances_argmin(x, centroids).astype(np.int64)


def _ward_sample_centroids(x_sample: np.ndarray, k: int) -> np.ndarray:
    labels = _exact_ward(x_sample, k)
    return np.stack([x_sample[labels == c].mean(axis=0) for c in range(k)])


def ward_route(n: int, *, method: str = "auto", sample: int = 20000) -> str:
    """The ward route that ``method`` resolves to for ``n`` galaxies.

    Parameters
    ----------
    n : int
        Number of galaxies.
    method : {"auto", "exact", "sample", "connectivity"}
        ``auto`` is ``exact`` up to ``sample`` galaxies and ``sample`` above.
    sample : int
        Galaxies clustered exactly by the ``sample`` route.

    Returns
    -------
    str
        ``exact``, ``sample`` or ``connectivity``.

    Raises
    ------
    ClusterError
        An unknown ``method``.

    See Also
    --------
    ward_labels

    Examples
    --------
    >>> from skymorph.core.clustering import ward_route
    >>> ward_route(1000), ward_route(10**5), ward_route(10, method="connectivity")
    ('exact', 'sample', 'connectivity')
    """
    if method == "auto":
        return "exact" if n <= sample else "sample"
    if method not in WARD_METHODS:
        raise ClusterError(f"cluster.ward_method must be auto, exact, sample or connectivity, "
                           f"got {method!r}")
    return method


def ward_labels(x: np.ndarray, *, k: int = 20, method: str = "auto", sample: int = 20000,
                connectivity: int = 10, seed: int = 42) -> tuple[np.ndarray, dict[str, Any]]:
    """Ward agglomerative clustering with ``k`` clusters by the chosen route.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    k : int
        Number of clusters.
    method : {"auto", "exact", "sample", "connectivity"}
        ``exact``: all galaxies (O(N^2) memory); ``sample``: exact ward on ``sample``
        seeded random galaxies, every galaxy then joins the nearest centroid;
        ``connectivity``: ward restricted to a ``connectivity``-NN graph; ``auto``: see
        :func:`ward_route`.
    sample : int
        Galaxies of the ``sample`` route.
    connectivity : int
        Neighbours of the ``connectivity`` route's graph.
    seed : int
        Seed of the ``sample`` route's sample.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
    info : dict
        ``ward_route`` used.

    Raises
    ------
    ClusterError
        ``sample`` smaller than ``k``, ``connectivity`` below 1, an unknown ``method``.

    See Also
    --------
    sklearn.cluster.AgglomerativeClustering

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import ward_labels
    >>> x = np.r_[np.zeros((20, 2)), np.full((20, 2), 5.0)]
    >>> labels, info = ward_labels(x, k=2)
    >>> bool(labels[0] != labels[-1]), info["ward_route"]
    (True, 'exact')
    """
    n = x.shape[0]
    route = ward_route(n, method=method, sample=sample)
    if route == "exact" or (route == "sample" and n <= sample):
        return _exact_ward(x, k), {"ward_route": "exact"}
    if route == "sample":
        if sample < k:
            raise ClusterError(f"cluster.ward_sample={sample} is smaller than k={k}")
        rng = np.random.default_rng([seed, 4])
        rows = np.sort(rng.choice(n, size=sample, replace=False))
        labels = _nearest_centroid(x, _ward_sample_centroids(x[rows], k))
        return labels, {"ward_route": f"sample ({sample} galaxies, nearest centroid)"}
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    if connectivity < 1:
        raise ClusterError("cluster.ward_connectivity must be at least 1 for the connectivity route")
    graph = kneighbors_graph(x, n_neighbors=min(connectivity, n - 1), include_self=False)
    model = AgglomerativeClustering(n_clusters=k, linkage="ward", connectivity=graph)
    with warnings.catch_warnings():
        # A k-NN graph of well-separated groups has several components; scikit-learn joins
        # them (which is what we want) and says so.
        warnings.filterwarnings("ignore", message="the number of connected components")
        labels = model.fit_predict(x)
    return labels.astype(np.int64), {"ward_route": f"connectivity ({connectivity}-NN graph)"}
