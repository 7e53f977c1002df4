"""Consensus ("voting") clustering of an embedding: K-means, BIRCH and ward, and the vote.

The paper (section 3.4) clusters the UMAP embedding with K-means, BIRCH and ward
agglomerative clustering, ``k`` clusters each.  K-means labels are the reference:
every BIRCH cluster and every agglomerative cluster takes the K-means label that most
of its members hold (plurality; ties go to the smaller label).  Several clusters may
take the same label, and then they simply merge - the authors' scripts kept that
mapping in a dict keyed the wrong way round, so such clusters overwrote each other,
and a K-means label no cluster mapped to survived whole; neither happens here.
A galaxy is kept (``consensus``) only where its three labels agree; ``cluster`` is that
label, or -1.

Built to hold at 10^5 galaxies x 300 dimensions on one machine:

* BIRCH's threshold is scaled to the data (``birch_threshold="auto"``, see
  :func:`auto_birch_threshold`), so the CF tree holds thousands of subclusters, not one
  per galaxy, and BIRCH's final ward over the subclusters stays small;
* exact ward needs the N^2/2 pairwise distances (~40 GB at 10^5).  ``ward_method``
  chooses the route: ``sample`` (exact ward on ``ward_sample`` galaxies, every other
  galaxy joins the cluster whose centroid is nearest), ``connectivity`` (ward restricted
  to a k-NN graph) or ``exact``;
* :func:`fit_placer` fits the three methods on seeded samples and labels any block of
  galaxies afterwards (the route past one machine's memory, chunk by chunk).

The three members live in :mod:`skymorph.core.cluster_members` (re-exported here); this
module holds the vote, the in-memory run of all three and the placing block by block.
Everything here works on NumPy arrays: no run directory, no settings object.  The
``cluster`` stage (:mod:`skymorph.stages.cluster`) reads the embedding, calls
:func:`consensus_clustering` (or :func:`fit_placer`) and writes the catalog.  Every
default is the default of the ``[cluster]`` settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cluster_members import (  # noqa: F401 - re-exported: public names of this module before the split
    WARD_METHODS,
    ClusterError,
    _birch_tree,
    _exact_ward,
    _nearest_centroid,
    _threshold,
    _ward_sample_centroids,
    auto_birch_threshold,
    birch_labels,
    calibrated_birch_threshold,
    kmeans_labels,
    ward_labels,
    ward_route,
)

__all__ = [
    "ClusterError",
    "ClusterResult",
    "Placer",
    "map_to_reference",
    "consensus",
    "kmeans_labels",
    "auto_birch_threshold",
    "calibrated_birch_threshold",
    "birch_labels",
    "ward_route",
    "ward_labels",
    "check_embedding",
    "consensus_clustering",
    "vote",
    "fit_placer",
    "cluster_table",
]


@dataclass
class ClusterResult:
    """Labels of the three methods and their consensus (one entry per galaxy)."""

    kmeans: np.ndarray
    birch: np.ndarray
    """BIRCH labels mapped to K-means labels."""
    agglomerative: np.ndarray
    """Ward labels mapped to K-means labels."""
    cluster: np.ndarray
    """The agreed label, -1 where the three differ."""
    consensus: np.ndarray
    """True where the three agree."""
    birch_raw: np.ndarray
    agglomerative_raw: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    """Timings and the choices made (BIRCH threshold and subclusters, ward route)."""


# --- the vote ---------------------------------------------------------------------------


def map_to_reference(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Relabel every cluster of ``labels`` with the ``reference`` label most of its members hold.

    Many clusters may map to one reference label; their members then share it (they
    merge).  Ties go to the smaller reference label, so the result is deterministic.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
        Labels to map (e.g. BIRCH), any integers.
    reference : ndarray of int, shape (N,)
        Reference labels (K-means), non-negative integers.

    Returns
    -------
    ndarray of int64, shape (N,)
        ``reference``-label of each galaxy's cluster.

    Raises
    ------
    ClusterError
        Unequal or non 1-D shapes, negative reference labels.

    See Also
    --------
    consensus : the vote that maps BIRCH and ward to K-means with this function.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import map_to_reference
    >>> map_to_reference(np.array([7, 7, 3, 3, 5]), np.array([0, 0, 0, 1, 1]))
    array([0, 0, 0, 0, 1])
    """
    labels = np.asarray(labels)
    reference = np.asarray(reference)
    if labels.shape != reference.shape or labels.ndim != 1:
        raise ClusterError(f"labels {labels.shape} and reference {reference.shape} must be equal 1-D shapes")
    if reference.size == 0:
        return np.empty(0, dtype=np.int64)
    if reference.min() < 0:
        raise ClusterError("reference labels must be non-negative")
    clusters, inverse = np.unique(labels, return_inverse=True)
    counts = np.zeros((clusters.size, int(reference.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, reference), 1)
    # argmax returns the first maximum: ties go to the smaller reference label.
    return counts.argmax(axis=1)[inverse].astype(np.int64)


def consensus(kmeans: np.ndarray, birch: np.ndarray, agglomerative: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vote: map BIRCH and ward clusters to K-means labels and keep the agreements.

    Parameters
    ----------
    kmeans, birch, agglomerative : ndarray of int, shape (N,)
        Raw labels of the three methods.

    Returns
    -------
    birch_mapped, agglomerative_mapped : ndarray of int64
        Labels mapped to K-means labels by :func:`map_to_reference`.
    cluster : ndarray of int64
        The agreed label, -1 where the three disagree.
    kept : ndarray of bool
        Where all three agree.

    See Also
    --------
    consensus_clustering : the three clusterings and this vote on an embedding.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import consensus
    >>> kmeans = np.array([0, 0, 1, 1])
    >>> _, _, cluster, kept = consensus(kmeans, np.array([5, 5, 6, 6]), np.array([2, 3, 3, 3]))
    >>> cluster, kept
    (array([ 0, -1,  1,  1]), array([ True, False,  True,  True]))
    """
    kmeans = np.asarray(kmeans, dtype=np.int64)
    birch_mapped = map_to_reference(birch, kmeans)
    agg_mapped = map_to_reference(agglomerative, kmeans)
    kept = (birch_mapped == kmeans) & (agg_mapped == kmeans)
    return birch_mapped, agg_mapped, np.where(kept, kmeans, -1), kept


# --- putting it together ------------------------------------------------------------------


def check_embedding(x: np.ndarray, *, k: int = 20, ids: Sequence[Any] | None = None) -> None:
    """Refuse an embedding that cannot make ``k`` clusters, naming the galaxies at fault.

    Parameters
    ----------
    x : ndarray
        The embedding, shape (N, d).
    k : int
        Number of clusters.
    ids : sequence, optional
        Galaxy ids in row order, for the message.

    Raises
    ------
    ClusterError
        Not 2-D, ``k`` below 2, fewer galaxies than ``k``, or NaN / infinite rows.

    See Also
    --------
    consensus_clustering

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import check_embedding
    >>> check_embedding(np.zeros((10, 2)), k=3)
    >>> check_embedding(np.zeros((2, 2)), k=3)
    Traceback (most recent call last):
    ...
    skymorph.core.cluster_members.ClusterError: cannot make k=3 clusters of 2 galaxies; lower --k ...
    """
    if x.ndim != 2:
        raise ClusterError(f"the embedding must be 2-D (galaxies x dimensions), got shape {x.shape}")
    if k < 2:
        raise ClusterError(f"cluster.k must be at least 2, got {k}")
    if x.shape[0] < k:
        raise ClusterError(f"cannot make k={k} clusters of {x.shape[0]} galaxies; lower --k or add galaxies")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        names = [str(ids[i]) if ids is not None else str(i) for i in bad[:10]]
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ClusterError(
            f"{bad.size} of {x.shape[0]} galaxies have NaN or infinite embedding values "
            f"(ids {', '.join(names)}{more}); re-run `skymorph reduce`"
        )


def consensus_clustering(x: np.ndarray, *, k: int = 20, kmeans_n_init: int = 4,
                         birch_threshold: float | str = "auto", birch_subclusters: int = 2000,
                         birch_branching_factor: int = 50, ward_method: str = "auto",
                         ward_sample: int = 20000, ward_connectivity: int = 10, seed: int = 42,
                         ids: Sequence[Any] | None = None) -> ClusterResult:
    """K-means, BIRCH and ward on an embedding in memory, and their vote.

    Parameters
    ----------
    x : ndarray, shape (N, d)
        The embedding (converted to float32).
    k : int
        Clusters of each method.
    kmeans_n_init : int
        K-means restarts.
    birch_threshold : float or "auto"
        See :func:`birch_labels`.
    birch_subclusters, birch_branching_factor : int
        See :func:`birch_labels`.
    ward_method : {"auto", "exact", "sample", "connectivity"}
        See :func:`ward_labels`.
    ward_sample, ward_connectivity : int
        See :func:`ward_labels`.
    seed : int
        Seed of K-means and of every sample.
    ids : sequence, optional
        Galaxy ids for error messages.

    Returns
    -------
    ClusterResult
        Raw and mapped labels, the agreed label and where the three agree, and ``info``
        (timings, BIRCH threshold and subclusters, ward route, the kept fraction).

    Raises
    ------
    ClusterError
        Fewer galaxies than k, NaN rows, bad settings.

    See Also
    --------
    fit_placer : the same methods fitted on samples, for more galaxies than memory holds.
    consensus : the vote alone.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import consensus_clustering
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(c, 0.3, size=(60, 4)) for c in (0, 5, 10)])
    >>> result = consensus_clustering(x, k=3, birch_subclusters=30)
    >>> float(result.consensus.mean()), sorted(set(result.cluster.tolist()))
    (1.0, [0, 1, 2])
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_embedding(x, k=k, ids=ids)
    info: dict[str, Any] = {}
    start = time.perf_counter()
    km = kmeans_labels(x, k=k, n_init=kmeans_n_init, seed=seed)
    info["seconds_kmeans"] = time.perf_counter() - start
    start = time.perf_counter()
    birch, birch_info = birch_labels(x, k=k, threshold=birch_threshold, n_subclusters=birch_subclusters,
                                     branching_factor=birch_branching_factor, seed=seed)
    info["seconds_birch"] = time.perf_counter() - start
    start = time.perf_counter()
    ward, ward_info = ward_labels(x, k=k, method=ward_method, sample=ward_sample,
                                  connectivity=ward_connectivity, seed=seed)
    info["seconds_ward"] = time.perf_counter() - start
    info.update(birch_info)
    info.update(ward_info)
    return vote(km, birch, ward, info)


def vote(kmeans: np.ndarray, birch: np.ndarray, ward: np.ndarray, info: dict[str, Any] | None = None
         ) -> ClusterResult:
    """:func:`consensus` of raw labels, as a :class:`ClusterResult` (``info`` gains the kept count)."""
    birch_mapped, agg_mapped, agreed, kept = consensus(kmeans, birch, ward)
    info = dict(info or {})
    info["n_kept"] = int(kept.sum())
    info["kept_fraction"] = float(kept.mean())
    return ClusterResult(kmeans=np.asarray(kmeans), birch=birch_mapped, agglomerative=agg_mapped,
                         cluster=agreed, consensus=kept, birch_raw=np.asarray(birch),
                         agglomerative_raw=np.asarray(ward), info=info)


# --- fitted on a sample, placed block by block ------------------------------------------------


@dataclass
class Placer:
    """The three clusterings fitted on samples, to label any block of galaxies.

    K-means: the fitted centres (``predict``); BIRCH: the fitted CF tree and the ward
    grouping of its subclusters (``predict``); ward: the centroids of exact ward on
    ``ward_sample`` galaxies (nearest centroid), or, when every galaxy fits in that
    sample, the exact labels themselves.
    """

    kmeans: Any
    birch_tree: Any
    birch_groups: np.ndarray
    ward_centroids: np.ndarray | None
    ward_exact: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self, x: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw K-means, BIRCH and ward labels of the galaxies ``start .. start + len(x)``.

        Parameters
        ----------
        x : ndarray, shape (B, d)
            A block of the embedding.
        start : int
            Row of its first galaxy (picks the exact ward labels when ward was exact).

        Returns
        -------
        kmeans, birch, ward : ndarray of int64, shape (B,)
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        km = self.kmeans.predict(x).astype(np.int64)
        birch = self.birch_groups[self.birch_tree.predict(x)].astype(np.int64)
        if self.ward_exact is not None:
            ward = self.ward_exact[start:start + len(x)]
        else:
            ward = _nearest_centroid(x, self.ward_centroids)
        return km, birch, ward


def fit_placer(read_rows: Callable[[np.ndarray], np.ndarray], n: int, *, k: int = 20, kmeans_n_init: int = 4,
               birch_threshold: float | str = "auto", birch_subclusters: int = 2000,
               birch_branching_factor: int = 50, ward_method: str = "auto", ward_sample: int = 20000,
               fit_sample: int | None = None, seed: int = 42) -> Placer:
    """Fit the three methods on seeded samples of ``n`` galaxies.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(sorted_indices) -> (len, d) array``: reads only those galaxies
        (the whole embedding never has to be in memory).
    n : int
        Number of galaxies.
    k, kmeans_n_init, birch_threshold, birch_subclusters, birch_branching_factor : see
        :func:`consensus_clustering`.
    ward_method : {"auto", "exact", "sample"}
        The ``connectivity`` route cannot place galaxies block by block.
    ward_sample : int
        Galaxies (seeded) that fit ward; all galaxies are read when ``n`` is not larger.
    fit_sample : int, optional
        Galaxies (seeded) that fit K-means and BIRCH; all when None.
    seed : int
        Seed of K-means and of the samples.

    Returns
    -------
    Placer
        Its :meth:`Placer.labels` labels any block; :func:`vote` turns the labels of all
        blocks into the consensus.

    Raises
    ------
    ClusterError
        As :func:`consensus_clustering`, and for the ``connectivity`` route.

    See Also
    --------
    consensus_clustering : the same in memory.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import fit_placer, vote
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(c, 0.3, size=(100, 4)) for c in (0, 5, 10)]).astype(np.float32)
    >>> placer = fit_placer(lambda rows: x[rows], len(x), k=3, birch_subclusters=30, fit_sample=150,
    ...                     ward_sample=100)
    >>> blocks = [placer.labels(x[i:i + 100], i) for i in range(0, len(x), 100)]
    >>> result = vote(*(np.concatenate(part) for part in zip(*blocks)))
    >>> float(result.consensus.mean())
    1.0
    """
    from sklearn.cluster import KMeans

    size = n if fit_sample is None else min(n, int(fit_sample))
    rows = np.sort(np.random.default_rng([seed, 5]).choice(n, size=size, replace=False))
    x = np.ascontiguousarray(read_rows(rows), dtype=np.float32)
    check_embedding(x, k=k)
    info: dict[str, Any] = {"fit_sample": int(size)}
    kmeans = KMeans(n_clusters=k, n_init=kmeans_n_init, random_state=seed).fit(x)
    threshold = _threshold(x, birch_threshold, k, birch_subclusters, birch_branching_factor, seed)
    tree, groups = _birch_tree(x, threshold, k, birch_branching_factor)
    info.update(birch_threshold=threshold, birch_subclusters=int(tree.subcluster_centers_.shape[0]))
    route = ward_route(n, method=ward_method, sample=ward_sample)
    if route == "connectivity":
        raise ClusterError("cluster.fit_sample places galaxies chunk by chunk, which the connectivity "
                           "ward route cannot do; use ward_method = sample (or auto)")
    if route == "exact" or n <= ward_sample:
        centroids, exact = None, _exact_ward(np.ascontiguousarray(read_rows(np.arange(n)), np.float32), k)
        info["ward_route"] = "exact"
    else:
        wrows = np.sort(np.random.default_rng([seed, 4]).choice(n, size=ward_sample, replace=False))
        centroids = _ward_sample_centroids(np.ascontiguousarray(read_rows(wrows), dtype=np.float32), k)
        exact = None
        info["ward_route"] = f"sample ({ward_sample} galaxies, nearest centroid)"
    return Placer(kmeans, tree, groups, centroids, exact, info)


def cluster_table(result: ClusterResult, *, k: int) -> Any:
    """Per K-means label: members of each method, kept galaxies and agreement.

    Parameters
    ----------
    result : ClusterResult
    k : int
        Number of K-means labels (every label gets a row, empty ones too).

    Returns
    -------
    pandas.DataFrame
        Columns ``cluster``, ``n_kmeans``, ``n_birch``, ``n_agglomerative``, ``n_kept``,
        ``agreement`` (kept / K-means members), ``birch_clusters_mapped`` and
        ``agglomerative_clusters_mapped`` (how many raw clusters mapped to the label).

    See Also
    --------
    consensus_clustering

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.clustering import cluster_table, vote
    >>> table = cluster_table(vote(np.array([0, 0, 1]), np.array([4, 4, 5]), np.array([1, 2, 3])), k=2)
    >>> table[["cluster", "n_kmeans", "n_kept"]].to_numpy().tolist()
    [[0, 2, 2], [1, 1, 1]]
    """
    import pandas as pd

    rows = []
    for label in range(k):
        n_km = int((result.kmeans == label).sum())
        n_kept = int((result.cluster == label).sum())
        rows.append({
            "cluster": label,
            "n_kmeans": n_km,
            "n_birch": int((result.birch == label).sum()),
            "n_agglomerative": int((result.agglomerative == label).sum()),
            "n_kept": n_kept,
            "agreement": n_kept / n_km if n_km else 0.0,
            "birch_clusters_mapped": int(np.unique(result.birch_raw[result.birch == label]).size),
            "agglomerative_clusters_mapped": int(
                np.unique(result.agglomerative_raw[result.agglomerative == label]).size),
        })
    return pd.DataFrame(rows)
