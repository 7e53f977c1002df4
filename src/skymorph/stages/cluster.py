"""Cluster: the consensus ("voting") clustering of the UMAP embedding -> the catalog.

The paper (section 3.4) clusters the embedding with K-means, BIRCH and ward
agglomerative clustering, ``k`` clusters each.  K-means labels are the reference:
every BIRCH cluster and every agglomerative cluster takes the K-means label that most
of its members hold (plurality; ties go to the smaller label).  Several clusters may
take the same label, and then they simply merge - the authors' scripts kept that
mapping in a dict keyed the wrong way round, so such clusters overwrote each other,
and a K-means label no cluster mapped to survived whole; neither happens here.
A galaxy is kept (``consensus``) only where its three labels agree; ``cluster`` is that
label, or -1.

Built to hold at 10^5 galaxies x 300 dimensions on one machine:

* BIRCH's threshold is scaled to the data (``birch_threshold = "auto"``, see
  :func:`birch_threshold`), so the CF tree holds thousands of subclusters, not one per
  galaxy, and BIRCH's final ward over the subclusters stays small;
* exact ward needs the N^2/2 pairwise distances (~40 GB at 10^5).  ``ward_method``
  chooses the route: ``sample`` (exact ward on ``ward_sample`` galaxies, every other
  galaxy joins the cluster whose centroid is nearest - the DESIGN's route for applying
  a sample's clustering to every chunk), ``connectivity`` (ward restricted to a k-NN
  graph) or ``exact``.  ``benchmarks/bench_reduce_cluster.py`` measures the adjusted
  Rand index of each route against exact ward at 10^4 galaxies.

Outputs: ``catalog.parquet`` / ``catalog.fits`` (the ``sources`` table, all its columns,
plus ``cluster_kmeans``, ``cluster_birch``, ``cluster_agglomerative``, ``cluster``,
``consensus`` and an empty ``morph_type``), and ``cluster/clusters.csv`` (per K-means
label: members of each method, kept galaxies and agreement rate).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from ..config import ClusterConfig, Config
from ..io.rundir import RunDir
from . import Stage, StageContext, execute

__all__ = [
    "cluster",
    "cluster_array",
    "ClusterError",
    "ClusterResult",
    "map_to_reference",
    "consensus",
    "kmeans_labels",
    "birch_labels",
    "birch_threshold",
    "ward_labels",
    "cluster_table",
    "fit_placer",
    "cluster_placed",
]

log = logging.getLogger(__name__)


class ClusterError(ValueError):
    """The embedding cannot be clustered (NaN rows, fewer galaxies than k, bad settings)."""


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
    """
    kmeans = np.asarray(kmeans, dtype=np.int64)
    birch_mapped = map_to_reference(birch, kmeans)
    agg_mapped = map_to_reference(agglomerative, kmeans)
    kept = (birch_mapped == kmeans) & (agg_mapped == kmeans)
    return birch_mapped, agg_mapped, np.where(kept, kmeans, -1), kept


# --- the three methods --------------------------------------------------------------------


def kmeans_labels(x: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """K-means with ``cfg.k`` clusters (k-means++, ``kmeans_n_init`` restarts, seeded)."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=cfg.k, n_init=cfg.kmeans_n_init, random_state=cfg.seed)
    return model.fit_predict(x).astype(np.int64)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (float64), clipped at 0."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d, 0)


def birch_threshold(x: np.ndarray, cfg: ClusterConfig, n_queries: int = 1000) -> float:
    """BIRCH threshold scaled to the data.

    BIRCH lets a subcluster absorb galaxies while its radius (RMS distance to its
    centroid) stays under the threshold.  For ``n_queries`` seeded random galaxies this
    takes the galaxy's m nearest neighbours (itself included), m = N / ``birch_subclusters``,
    and the radius of that group; the median radius is the threshold, so subclusters hold
    about m galaxies and the tree about ``birch_subclusters`` of them, in any dimension.
    """
    n = x.shape[0]
    m = max(2, int(round(n / max(1, cfg.birch_subclusters))))
    m = min(m, n)
    rng = np.random.default_rng([cfg.seed, 3])
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


def _calibrated_threshold(x: np.ndarray, cfg: ClusterConfig) -> float:
    """:func:`birch_threshold`, raised until a BIRCH tree of a random sample of
    4 x ``birch_subclusters`` galaxies holds at most 1.5 x ``birch_subclusters``
    subclusters.  With a fixed threshold the subcluster count depends on the volume the
    data fill, not on how many galaxies fill it, so the sample predicts the count of the
    full tree; the check matters where neighbourhoods are nearly as wide as the clusters
    (noise-dominated, high intrinsic dimension), where the radius estimate runs low."""
    from sklearn.cluster import Birch

    threshold = birch_threshold(x, cfg)
    n = x.shape[0]
    size = min(n, 4 * cfg.birch_subclusters)
    rng = np.random.default_rng([cfg.seed, 6])
    sample = x[rng.choice(n, size=size, replace=False)]
    limit = 1.5 * min(cfg.birch_subclusters, size / 2)
    floor = min(5 * cfg.k, size / 2)
    previous = None
    for _ in range(12):
        tree = Birch(threshold=threshold, branching_factor=cfg.birch_branching_factor, n_clusters=None)
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


def birch_labels(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """BIRCH with ``cfg.k`` clusters and a threshold scaled to the data.

    Returns
    -------
    labels : ndarray of int64
    info : dict
        ``birch_threshold`` used and ``birch_subclusters`` obtained.
    """
    from sklearn.cluster import AgglomerativeClustering, Birch

    if cfg.birch_threshold == "auto":
        threshold = _calibrated_threshold(x, cfg)
    else:
        try:
            threshold = float(cfg.birch_threshold)
        except (TypeError, ValueError):
            raise ClusterError(f"cluster.birch_threshold must be a number or 'auto', "
                               f"got {cfg.birch_threshold!r}") from None
    # The final step (a ward over the subcluster centroids) is done here rather than by
    # Birch(n_clusters=k), so the subclusters can be counted and reported.
    tree = Birch(threshold=threshold, branching_factor=cfg.birch_branching_factor, n_clusters=None)
    tree.fit(x)
    centres = tree.subcluster_centers_
    if centres.shape[0] < cfg.k:
        raise ClusterError(
            f"BIRCH threshold {threshold:.4g} leaves {centres.shape[0]} subclusters, fewer than "
            f"k={cfg.k}; lower cluster.birch_threshold"
        )
    if centres.shape[0] > cfg.k:
        sub_labels = AgglomerativeClustering(n_clusters=cfg.k, linkage="ward").fit_predict(centres)
    else:
        sub_labels = np.arange(centres.shape[0])
    labels = sub_labels[tree.predict(x)]
    return labels.astype(np.int64), {"birch_threshold": threshold,
                                     "birch_subclusters": int(centres.shape[0])}


def _exact_ward(x: np.ndarray, k: int) -> np.ndarray:
    """Exact ward (scikit-learn; O(N^2) memory)."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x).astype(np.int64)


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    from sklearn.metrics import pairwise_distances_argmin

    return pairwise_distances_argmin(x, centroids).astype(np.int64)


def ward_route(n: int, cfg: ClusterConfig) -> str:
    """The ward route ``cfg.ward_method`` resolves to for ``n`` galaxies."""
    if cfg.ward_method == "auto":
        return "exact" if n <= cfg.ward_sample else "sample"
    if cfg.ward_method not in ("exact", "sample", "connectivity"):
        raise ClusterError(f"cluster.ward_method must be auto, exact, sample or connectivity, "
                           f"got {cfg.ward_method!r}")
    return cfg.ward_method


def ward_labels(x: np.ndarray, cfg: ClusterConfig, route: str | None = None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """Ward agglomerative clustering with ``cfg.k`` clusters by the chosen route.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    cfg : ClusterConfig
    route : str, optional
        ``exact``, ``sample`` or ``connectivity``; by default from :func:`ward_route`.

    Returns
    -------
    labels : ndarray of int64
    info : dict
        ``ward_route`` used.
    """
    n = x.shape[0]
    route = route or ward_route(n, cfg)
    if route == "exact" or (route == "sample" and n <= cfg.ward_sample):
        return _exact_ward(x, cfg.k), {"ward_route": "exact"}
    if route == "sample":
        if cfg.ward_sample < cfg.k:
            raise ClusterError(f"cluster.ward_sample={cfg.ward_sample} is smaller than k={cfg.k}")
        rng = np.random.default_rng([cfg.seed, 4])
        rows = np.sort(rng.choice(n, size=cfg.ward_sample, replace=False))
        sample_labels = _exact_ward(x[rows], cfg.k)
        centroids = np.stack([x[rows][sample_labels == c].mean(axis=0) for c in range(cfg.k)])
        labels = _nearest_centroid(x, centroids)
        return labels, {"ward_route": f"sample ({cfg.ward_sample} galaxies, nearest centroid)"}
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    if cfg.ward_connectivity < 1:
        raise ClusterError("cluster.ward_connectivity must be at least 1 for the connectivity route")
    graph = kneighbors_graph(x, n_neighbors=min(cfg.ward_connectivity, n - 1), include_self=False)
    model = AgglomerativeClustering(n_clusters=cfg.k, linkage="ward", connectivity=graph)
    with warnings.catch_warnings():
        # A k-NN graph of well-separated groups has several components; scikit-learn joins
        # them (which is what we want) and says so.
        warnings.filterwarnings("ignore", message="the number of connected components")
        labels = model.fit_predict(x)
    return labels.astype(np.int64), {
        "ward_route": f"connectivity ({cfg.ward_connectivity}-NN graph)"}


# --- fitted on a sample, placed chunk by chunk ------------------------------------------------


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
        """K-means, BIRCH and ward labels of the galaxies ``start .. start + len(x)``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        km = self.kmeans.predict(x).astype(np.int64)
        birch = self.birch_groups[self.birch_tree.predict(x)].astype(np.int64)
        if self.ward_exact is not None:
            ward = self.ward_exact[start:start + len(x)]
        else:
            ward = _nearest_centroid(x, self.ward_centroids)
        return km, birch, ward


def fit_placer(read_rows: Any, n: int, cfg: ClusterConfig) -> Placer:
    """Fit the three methods on seeded samples of ``n`` galaxies.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(sorted_indices) -> (len, d) array``: reads only those galaxies
        (the whole embedding never has to be in memory).
    n : int
        Number of galaxies.
    cfg : ClusterConfig
        ``fit_sample`` galaxies (seeded) fit K-means and BIRCH; ``ward_sample`` fit ward.
    """
    from sklearn.cluster import AgglomerativeClustering, Birch, KMeans

    size = n if cfg.fit_sample is None else min(n, int(cfg.fit_sample))
    rows = np.sort(np.random.default_rng([cfg.seed, 5]).choice(n, size=size, replace=False))
    x = np.ascontiguousarray(read_rows(rows), dtype=np.float32)
    _check(x, cfg)
    info: dict[str, Any] = {"fit_sample": int(size)}
    kmeans = KMeans(n_clusters=cfg.k, n_init=cfg.kmeans_n_init, random_state=cfg.seed).fit(x)
    threshold = (_calibrated_threshold(x, cfg) if cfg.birch_threshold == "auto"
                 else float(cfg.birch_threshold))
    tree = Birch(threshold=threshold, branching_factor=cfg.birch_branching_factor, n_clusters=None).fit(x)
    centres = tree.subcluster_centers_
    if centres.shape[0] < cfg.k:
        raise ClusterError(f"BIRCH threshold {threshold:.4g} leaves {centres.shape[0]} subclusters, fewer "
                           f"than k={cfg.k}; lower cluster.birch_threshold")
    groups = (AgglomerativeClustering(n_clusters=cfg.k, linkage="ward").fit_predict(centres)
              if centres.shape[0] > cfg.k else np.arange(centres.shape[0]))
    info.update(birch_threshold=threshold, birch_subclusters=int(centres.shape[0]))
    route = ward_route(n, cfg)
    if route == "connectivity":
        raise ClusterError("cluster.fit_sample places galaxies chunk by chunk, which the connectivity "
                           "ward route cannot do; use ward_method = sample (or auto)")
    if route == "exact" or n <= cfg.ward_sample:
        centroids, exact = None, _exact_ward(np.ascontiguousarray(read_rows(np.arange(n)), np.float32), cfg.k)
        info["ward_route"] = "exact"
    else:
        wrows = np.sort(np.random.default_rng([cfg.seed, 4]).choice(n, size=cfg.ward_sample, replace=False))
        xw = np.ascontiguousarray(read_rows(wrows), dtype=np.float32)
        sample_labels = _exact_ward(xw, cfg.k)
        centroids = np.stack([xw[sample_labels == c].mean(axis=0) for c in range(cfg.k)])
        exact = None
        info["ward_route"] = f"sample ({cfg.ward_sample} galaxies, nearest centroid)"
    return Placer(kmeans, tree, np.asarray(groups), centroids, exact, info)


def place_chunk(i: int, path: str, n: int, chunk: int, placer: Placer) -> tuple[np.ndarray, ...]:
    """Labels of chunk ``i`` of the embedding at ``path`` (a Dask task: only the
    chunk and the fitted models travel)."""
    import zarr

    start, stop = i * chunk, min(n, (i + 1) * chunk)
    x = np.asarray(zarr.open_array(store=path, mode="r")[start:stop], dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ClusterError(f"{bad.size} galaxies from row {start + bad[0]} have NaN or infinite embedding "
                           "values; re-run `skymorph reduce`")
    return placer.labels(x, start)


def cluster_placed(path: str, n: int, cfg: ClusterConfig, chunk: int) -> ClusterResult:
    """The work of :func:`cluster` past one machine's memory: fit on samples
    (:func:`fit_placer`), label every chunk of the embedding array at ``path`` (on the
    Dask cluster when the stage has one), then the vote."""
    import zarr

    from ..core.compute import current, run_chunks

    array = zarr.open_array(store=path, mode="r")
    start = time.perf_counter()
    placer = fit_placer(lambda rows: array.get_orthogonal_selection((rows,)), n, cfg)
    fitted = time.perf_counter() - start
    session = current()
    shared = placer
    if session is not None and session.distributed:
        shared = session.client.scatter(placer, broadcast=True, hash=False)
    n_chunks = -(-n // chunk)
    parts: dict[int, tuple[np.ndarray, ...]] = {}
    run_chunks(place_chunk, range(n_chunks), path, n, chunk, shared,
               on_done=lambda i, labels: parts.__setitem__(i, labels))
    km, birch, ward = (np.concatenate([parts[i][m] for i in range(n_chunks)]) for m in range(3))
    birch_mapped, agg_mapped, agreed, kept = consensus(km, birch, ward)
    info = {**placer.info, "seconds_fit": fitted, "seconds_place": time.perf_counter() - start - fitted,
            "n_kept": int(kept.sum()), "kept_fraction": float(kept.mean())}
    return ClusterResult(kmeans=km, birch=birch_mapped, agglomerative=agg_mapped, cluster=agreed,
                         consensus=kept, birch_raw=birch, agglomerative_raw=ward, info=info)


# --- putting it together ------------------------------------------------------------------


def _check(x: np.ndarray, cfg: ClusterConfig, ids: Any = None) -> None:
    if x.ndim != 2:
        raise ClusterError(f"the embedding must be 2-D (galaxies x dimensions), got shape {x.shape}")
    if cfg.k < 2:
        raise ClusterError(f"cluster.k must be at least 2, got {cfg.k}")
    if x.shape[0] < cfg.k:
        raise ClusterError(
            f"cannot make k={cfg.k} clusters of {x.shape[0]} galaxies; lower --k or add galaxies"
        )
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        names = [str(ids[i]) if ids is not None else str(i) for i in bad[:10]]
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ClusterError(
            f"{bad.size} of {x.shape[0]} galaxies have NaN or infinite embedding values "
            f"(ids {', '.join(names)}{more}); re-run `skymorph reduce`"
        )


def cluster_array(x: np.ndarray, cfg: ClusterConfig, ids: Any = None) -> ClusterResult:
    """Cluster an embedding in memory (the work of :func:`cluster`, without a run directory).

    Parameters
    ----------
    x : ndarray, shape (N, d)
    cfg : ClusterConfig
    ids : sequence, optional
        Galaxy ids for error messages.

    Returns
    -------
    ClusterResult

    Raises
    ------
    ClusterError
        Fewer galaxies than k, NaN rows, bad settings.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    _check(x, cfg, ids)
    info: dict[str, Any] = {}
    start = time.perf_counter()
    km = kmeans_labels(x, cfg)
    info["seconds_kmeans"] = time.perf_counter() - start
    start = time.perf_counter()
    birch, birch_info = birch_labels(x, cfg)
    info["seconds_birch"] = time.perf_counter() - start
    start = time.perf_counter()
    ward, ward_info = ward_labels(x, cfg)
    info["seconds_ward"] = time.perf_counter() - start
    info.update(birch_info)
    info.update(ward_info)
    birch_mapped, agg_mapped, agreed, kept = consensus(km, birch, ward)
    info["n_kept"] = int(kept.sum())
    info["kept_fraction"] = float(kept.mean())
    return ClusterResult(kmeans=km, birch=birch_mapped, agglomerative=agg_mapped, cluster=agreed,
                         consensus=kept, birch_raw=birch, agglomerative_raw=ward, info=info)


def cluster_table(result: ClusterResult, k: int) -> pd.DataFrame:
    """Per K-means label: members of each method, kept galaxies and agreement rate
    (kept / K-means members), and how many BIRCH / ward clusters mapped to it."""
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


def _compute(ctx: StageContext) -> dict[str, Any]:
    cfg, run = ctx.config.cluster, ctx.run
    embedding = run.open_array("embedding")
    n = int(embedding.shape[0])
    sources = run.sources()
    if len(sources) != n:
        raise ClusterError(
            f"the embedding has {n} rows but the sources table {len(sources)}; "
            "re-run the stages after ingest (`skymorph run`)"
        )
    if cfg.fit_sample is not None:
        result = cluster_placed(str(run.array_path("embedding")), n, cfg, int(embedding.chunks[0]))
    else:
        x = np.asarray(embedding[:], dtype=np.float32)
        result = cluster_array(x, cfg, ids=sources["id"].tolist())
    catalog = sources.copy()
    catalog["cluster_kmeans"] = result.kmeans
    catalog["cluster_birch"] = result.birch
    catalog["cluster_agglomerative"] = result.agglomerative
    catalog["cluster"] = result.cluster
    catalog["consensus"] = result.consensus
    catalog["morph_type"] = np.where(result.consensus, None, "NOCONS")  # typed by inspect merge
    if run.has_array("descriptors"):  # reduce.descriptors: the clustering's shape features, labelled as such
        desc = run.open_array("descriptors")
        if desc.shape[0] == n:
            values = np.asarray(desc[:])
            for j, name in enumerate(desc.attrs.get("columns", [])):
                catalog[f"desc_{name}"] = values[:, j]
    run.write_catalog(catalog)
    out = run.path / "cluster"
    out.mkdir(exist_ok=True)
    cluster_table(result, cfg.k).to_csv(out / "clusters.csv", index=False)
    log.info("cluster: %d of %d galaxies kept (%.0f%%)", result.info["n_kept"], n,
             100 * result.info["kept_fraction"])
    return {"n_galaxies": n, **result.info}


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    n = info.get("n_galaxies", 0)
    return (f"{info.get('n_kept', 0)} of {n} galaxies kept by the vote "
            f"({100 * info.get('kept_fraction', 0):.0f}%); catalog {run.path / 'catalog.parquet'}, "
            f"per-cluster table {run.path / 'cluster' / 'clusters.csv'}")


STAGE = Stage(
    name="cluster",
    summary="consensus of K-means, BIRCH and ward clustering -> catalog",
    description=__doc__.split("\n\n")[0],
    compute=_compute,
    sections=("cluster",),
    upstream=lambda config: ("reduce",),
    outputs=("catalog.parquet", "cluster/clusters.csv"),
    report=_report,
    chunked=True,
)


def cluster(run_dir: str | PathLike | RunDir, config: Config | None = None, *, force: bool = False,
            progress: bool = True, **settings: Any) -> RunDir:
    """Consensus-cluster the run's ``embedding`` and write the catalog.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory where ``reduce`` has run.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the embedding and settings are unchanged.
    progress : bool
        Kept for the common stage signature (the three fits have no loop to show).
    **settings
        Overrides of the ``[cluster]`` settings, e.g. ``k=10``.

    Returns
    -------
    RunDir
        The run directory, with ``catalog.parquet``/``catalog.fits`` and ``cluster/clusters.csv``.

    Raises
    ------
    ClusterError
        Fewer galaxies than k, NaN in the embedding.
    RunDirError
        The run directory or its ``embedding`` are missing.
    """
    return execute("cluster", run_dir, config, force=force, progress=progress, **settings)
