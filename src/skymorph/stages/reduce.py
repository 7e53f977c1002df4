"""Reduce: UMAP of the encoder features, optionally scanning the output dimension.

The paper (section 3.3) reduces the 2048-d ConvNeXt features to d = 300 with UMAP and
picks d by the lowest Davies-Bouldin index of K-means (k = 20) over d = 50, ..., 500;
the science is in :mod:`skymorph.core.reduction`.  This stage reads ``features``,
unpacks the ``[reduce]`` settings, calls
:func:`~skymorph.core.reduction.reduce_features` (or, with ``fit_sample`` on a Dask
cluster, fits on the sample here and places every chunk on the cluster) and writes
the arrays.  With ``descriptors`` or ``projection`` the features are first prepared
(:mod:`skymorph.core.hybrid`: shape descriptors beside them, nuisance copies).

Outputs in ``RUN_DIR``: ``embedding`` (N, d) and ``embedding_2d`` (N, 2) float32
arrays, with ``descriptors`` the ``descriptors`` array, and with ``dims = "auto"``
``reduce/dims_scan.csv`` and ``reduce/dims_scan.png``.
Everything is seeded: the same features and settings give the same embedding.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import numpy as np

from ..config import Config, ReduceConfig
from ..core import hybrid, reduction
from ..core.reduction import ReduceError, ReduceResult, expansion_note
from ..io.arrays import write_rows
from ..io.csvfile import write_csv
from ..io.reduce_tasks import place_chunk, place_embeddings
from ..io.rundir import RunDir
from ..report.figures import plot_scan
from . import Stage, StageContext, execute

# plot_scan, expansion_note and place_chunk lived here before issue 18: still importable from here
__all__ = ["reduce", "core_options", "plot_scan", "expansion_note", "place_chunk", "ReduceError",
           "ReduceResult"]

log = logging.getLogger(__name__)


def core_options(cfg: ReduceConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.reduction.reduce_features` that the
    ``[reduce]`` settings give."""
    return dict(method=cfg.method, dims=cfg.dims, dims_grid=list(cfg.dims_grid), n_neighbors=cfg.n_neighbors,
                min_dist=cfg.min_dist, metric=cfg.metric, n_epochs=cfg.n_epochs,
                exact_knn_below=cfg.exact_knn_below, scan_k=cfg.scan_k, scan_sample=cfg.scan_sample,
                scan_epochs=cfg.scan_epochs, map_2d=cfg.map_2d, fit_sample=cfg.fit_sample,
                chunk_size=cfg.chunk_size, seed=cfg.seed)


def _compute(ctx: StageContext) -> dict[str, Any]:
    cfg, run, session = ctx.config.reduce, ctx.run, ctx.compute
    array = run.open_array("features")
    n = int(array.shape[0])
    fit_rows = reduction.sample_rows(n, cfg.fit_sample, seed=cfg.seed, salt=1)
    if session is not None and session.distributed and fit_rows.size < n:
        return _compute_placed(ctx, array, fit_rows)
    features = np.asarray(array[:], dtype=np.float32)
    try:
        ids = run.sources()["id"].tolist()
        ids = ids if len(ids) == features.shape[0] else None
    except Exception:  # the ids only improve an error message
        ids = None
    prepared = _prepares(cfg)
    extra: dict[str, Any] = {}
    if cfg.descriptors <= 0 and run.has_array("descriptors"):  # from an earlier setting: not current
        shutil.rmtree(run.array_path("descriptors"))
    if prepared:
        reduction.check_features(features, ids=ids)
        features, extra = _prepare(ctx, features)
    result = reduction.reduce_features(features, ids=ids, progress=ctx.progress, scaled=prepared,
                             **core_options(cfg))
    result.timings.update(extra)
    write_rows(run, "embedding", result.embedding, cfg.chunk_size)
    if result.embedding_2d is not None:
        write_rows(run, "embedding_2d", result.embedding_2d, cfg.chunk_size)
    return _summary(run, cfg, features.shape, result)


def _prepares(cfg: ReduceConfig) -> bool:
    """Whether the features are prepared (descriptors or a projection) before the reduction."""
    return cfg.descriptors > 0 or cfg.projection != "none"


def _prepare(ctx: StageContext, features: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Hybrid blocks and projection (:func:`skymorph.core.hybrid.prepare_features`): the shape
    descriptors of the stamps (written as the ``descriptors`` array) and, for the nuisance
    projection, the encoder features of nuisance copies of a seeded sample of stamps."""
    cfg, run = ctx.config.reduce, ctx.run
    timings: dict[str, float] = {}
    stamps, n = run.open_array("stamps"), features.shape[0]
    descriptors = nuisance = None
    if cfg.descriptors > 0:
        start = time.perf_counter()
        descriptors, names = hybrid.stamp_descriptors(stamps, levels=cfg.descriptor_levels,
                                                      chunk_size=cfg.chunk_size, rows=n)
        run.create_array("descriptors", descriptors.shape, cfg.chunk_size,
                         attributes=hybrid.descriptor_attributes(names))[:] = descriptors
        timings["descriptors"] = time.perf_counter() - start
    if cfg.projection == "nuisance":  # config.CROSS_RULES: the encoder reads the stamps
        start = time.perf_counter()
        nuisance = _nuisance_copies(ctx, stamps, n, described=descriptors is not None)
        timings["nuisance_copies"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        # NuisanceCopies' fields are prepare_features' rows, copies and copy_descriptors
        prepared = hybrid.prepare_features(
            features, descriptors, descriptor_weight=cfg.descriptors, deep_dims=cfg.deep_dims,
            projection=cfg.projection, projection_dims=cfg.projection_dims,
            **(vars(nuisance) if nuisance is not None else {}))
    except ValueError as exc:
        raise ReduceError(f"cannot prepare the features: {exc}") from None
    timings["prepare"] = time.perf_counter() - start
    return prepared, timings


def _nuisance_copies(ctx: StageContext, stamps: Any, n: int, *, described: bool) -> hybrid.NuisanceCopies:
    """Encoder features (and, when the descriptors are a block, descriptors) of nuisance
    copies of a seeded sample of the stamps, encoded with the run's ``[encode]`` settings."""
    from ..core.encoders import build_encoder

    cfg, encode_cfg = ctx.config.reduce, ctx.config.encode
    rows = reduction.sample_rows(n, cfg.nuisance_sample, seed=cfg.seed, salt=7)
    sample = np.asarray(stamps.get_orthogonal_selection((rows,)), dtype=np.float32)
    encoder, batch = build_encoder(encode_cfg), int(encode_cfg.batch_size)
    return hybrid.nuisance_copies(sample, rows, encode=lambda images: encoder.encode(images, batch)[0],
                                  copies=cfg.nuisance_copies, seed=cfg.seed,
                                  descriptor_levels=cfg.descriptor_levels if described else None)


def _compute_placed(ctx: StageContext, array: Any, fit_rows: np.ndarray) -> dict[str, Any]:
    """Past one machine's memory: only the ``fit_sample`` rows are read here; UMAP is
    fitted on them (graph, scan, fits: exactly as :func:`reduce_array` does), and every
    chunk of galaxies is placed by a task on the cluster (:func:`place_chunk`), which
    writes its own rows of ``embedding`` and ``embedding_2d``."""
    cfg, run, session = ctx.config.reduce, ctx.run, ctx.compute
    if _prepares(cfg):
        raise ReduceError("reduce.descriptors and reduce.projection run on one machine; switch them off "
                          "for a reduction placed on a Dask cluster (or drop reduce.fit_sample)")
    n, width = int(array.shape[0]), int(array.shape[1])
    sample = np.asarray(array.get_orthogonal_selection((fit_rows,)), dtype=np.float32)
    # the other galaxies are placed with UMAP.transform, which needs pynndescent's search
    # index: never the exact k-NN graph of small runs here (the local path does the same)
    result = reduction.reduce_features(sample, progress=ctx.progress,
                                       **{**core_options(cfg), "fit_sample": None, "exact_knn_below": 0})
    start = time.perf_counter()
    place_embeddings(result, fit_rows, features=run.array_path("features"), n=n, chunk=cfg.chunk_size,
                     outputs={name: run.array_path(name) for name in ("embedding", "embedding_2d")},
                     map_2d=cfg.map_2d, progress=ctx.progress,
                     scatter=lambda model: session.client.scatter(model, broadcast=True, hash=False))
    result.timings["place"] = time.perf_counter() - start
    return _summary(run, cfg, (n, width), result)


def _summary(run: RunDir, cfg: ReduceConfig, shape: tuple[int, int], result: ReduceResult) -> dict[str, Any]:
    summary: dict[str, Any] = {"n_galaxies": shape[0], "n_features": shape[1], "dims": result.dims,
                               "seconds": result.timings}
    note = expansion_note(shape[1], result.dims, cfg.method)
    if note is not None:
        log.warning("reduce: %s", note)
        summary["note"] = note
    if result.scan is not None:
        out = run.path / "reduce"
        out.mkdir(exist_ok=True)
        write_csv(result.scan, out / "dims_scan.csv")
        plot_scan(result.scan, out / "dims_scan.png", best=result.dims)
        summary["scan"] = result.scan[["dims", "davies_bouldin"]].to_dict("records")
    log.info("reduce: %d galaxies -> %d-d in %.0f s", shape[0], result.dims, sum(result.timings.values()))
    return summary


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    line = (f"{info.get('n_galaxies', '?')} galaxies reduced from {info.get('n_features', '?')} to "
            f"{info.get('dims', '?')} dimensions -> {run.array_path('embedding')}")
    if "scan" in info:
        line += f"; scan table and plot in {run.path / 'reduce'}"
    if info.get("note"):
        line += f"\nnote: {info['note']}"
    return line


STAGE = Stage(
    name="reduce",
    summary="UMAP reduction of the features (optionally scanning the dimension)",
    description=__doc__.split("\n\n")[0] + (
        "\n\nExamples:\n"
        "  skymorph reduce myrun                 # 300-d UMAP (the paper's d) + 2-D map\n"
        "  skymorph reduce myrun --dims auto     # scan d = 50..500 by Davies-Bouldin\n"
        "  skymorph reduce myrun --fit-sample 20000   # fit on a sample, transform the rest"),
    compute=_compute,
    sections=("reduce",),
    upstream=lambda config: ("encode",),
    outputs=("embedding.zarr",),
    report=_report,
    chunked=True,
)


def reduce(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
           force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """UMAP-reduce the run's ``features`` into ``embedding`` (and ``embedding_2d``).

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory where ``encode`` has run.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the inputs and settings are unchanged.
    progress : bool
        Show progress bars.
    **settings
        Overrides of the ``[reduce]`` settings.

    Returns
    -------
    RunDir
        The run directory, with ``embedding`` (N, d), ``embedding_2d`` (N, 2) and, for
        ``dims = "auto"``, ``reduce/dims_scan.csv`` and ``reduce/dims_scan.png``.

    Raises
    ------
    ReduceError
        NaN features (the message names the galaxies), too few galaxies for the settings.
    RunDirError
        The run directory or its ``features`` are missing.
    """
    return execute("reduce", run_dir, config, force=force, progress=progress, **settings)
