"""Cluster: the consensus ("voting") clustering of the UMAP embedding -> the catalog.

K-means, BIRCH and ward, ``k`` clusters each, and a galaxy is kept (``consensus``)
only where the three agree (paper section 3.4); the science is in
:mod:`skymorph.core.clustering`.  This stage reads ``embedding``, unpacks the
``[cluster]`` settings, calls :func:`~skymorph.core.clustering.consensus_clustering`
(or, with ``fit_sample``, fits on samples and labels the embedding chunk by chunk,
on the Dask cluster when there is one), and writes the results.

Outputs: ``catalog.parquet`` / ``catalog.fits`` (the ``sources`` table, all its columns,
plus ``cluster_kmeans``, ``cluster_birch``, ``cluster_agglomerative``, ``cluster``,
``consensus`` and an empty ``morph_type``), and ``cluster/clusters.csv`` (per K-means
label: members of each method, kept galaxies and agreement rate).
"""

from __future__ import annotations

import logging
import time
from os import PathLike
from typing import Any

import numpy as np

from ..config import ClusterConfig, Config
from ..core.clustering import (
    ClusterError,
    ClusterResult,
    Placer,
    cluster_table,
    consensus_clustering,
    fit_placer,
    vote,
)
from ..io.csvfile import write_csv
from ..io.rundir import RunDir
from ..summaries import read_summary, shown
from . import Stage, StageContext, execute

__all__ = ["cluster", "core_options", "cluster_placed", "ClusterError", "ClusterResult"]

log = logging.getLogger(__name__)


def core_options(cfg: ClusterConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.clustering.consensus_clustering` that the
    ``[cluster]`` settings give (every one but ``fit_sample``)."""
    return dict(k=cfg.k, kmeans_n_init=cfg.kmeans_n_init, birch_threshold=cfg.birch_threshold,
                birch_subclusters=cfg.birch_subclusters, birch_branching_factor=cfg.birch_branching_factor,
                ward_method=cfg.ward_method, ward_sample=cfg.ward_sample,
                ward_connectivity=cfg.ward_connectivity, seed=cfg.seed)


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
    (:func:`~skymorph.core.clustering.fit_placer`), label every chunk of the embedding
    array at ``path`` (on the Dask cluster when the stage has one), then the vote."""
    import zarr

    from ..core.compute import current, run_chunks

    options = core_options(cfg)
    del options["ward_connectivity"]
    array = zarr.open_array(store=path, mode="r")
    start = time.perf_counter()
    placer = fit_placer(lambda rows: array.get_orthogonal_selection((rows,)), n, fit_sample=cfg.fit_sample,
                        **options)
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
    info = {**placer.info, "seconds_fit": fitted, "seconds_place": time.perf_counter() - start - fitted}
    return vote(km, birch, ward, info)


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
        result = consensus_clustering(x, ids=sources["id"].tolist(), **core_options(cfg))
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
    write_csv(cluster_table(result, k=cfg.k), out / "clusters.csv")
    log.info("cluster: %d of %d galaxies kept (%.0f%%)", result.info["n_kept"], n,
             100 * result.info["kept_fraction"])
    return {"n_galaxies": n, **result.info}


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    s = read_summary("cluster", info)
    kept = "?" if s.kept_fraction is None else f"{100 * s.kept_fraction:.0f}"
    return (f"{shown(s.n_kept)} of {shown(s.n_galaxies)} galaxies kept by the vote "
            f"({kept}%); catalog {run.path / 'catalog.parquet'}, "
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
