"""Reduce: UMAP of the encoder features, optionally scanning the output dimension.

The paper (section 3.3) reduces the 2048-d ConvNeXt features to d = 300 with UMAP and
picks d by the lowest Davies-Bouldin index of K-means (k = 20) over d = 50, ..., 500;
the science is in :mod:`skymorph.core.reduction`.  This stage reads ``features``,
unpacks the ``[reduce]`` settings, calls
:func:`~skymorph.core.reduction.reduce_features` (or, with ``fit_sample`` on a Dask
cluster, fits on the sample here and places every chunk on the cluster) and writes
the arrays.

Outputs in ``RUN_DIR``: ``embedding`` (N, d) and ``embedding_2d`` (N, 2) float32
arrays, and with ``dims = "auto"`` ``reduce/dims_scan.csv`` and ``reduce/dims_scan.png``.
Everything is seeded: the same features and settings give the same embedding.
"""

from __future__ import annotations

import logging
import os
import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config, ReduceConfig
from ..core.reduction import (
    ReduceError,
    ReduceResult,
    check_features,
    place_rows,
    reduce_features,
    sample_rows,
)
from ..io.csvfile import write_csv
from ..io.rundir import RunDir
from . import Stage, StageContext, execute

__all__ = ["reduce", "core_options", "plot_scan", "ReduceError", "ReduceResult"]

log = logging.getLogger(__name__)


def core_options(cfg: ReduceConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.reduction.reduce_features` that the
    ``[reduce]`` settings give."""
    return dict(method=cfg.method, dims=cfg.dims, dims_grid=list(cfg.dims_grid), n_neighbors=cfg.n_neighbors,
                min_dist=cfg.min_dist, metric=cfg.metric, n_epochs=cfg.n_epochs,
                exact_knn_below=cfg.exact_knn_below, scan_k=cfg.scan_k, scan_sample=cfg.scan_sample,
                scan_epochs=cfg.scan_epochs, map_2d=cfg.map_2d, fit_sample=cfg.fit_sample,
                chunk_size=cfg.chunk_size, seed=cfg.seed)


def plot_scan(scan: pd.DataFrame, path: str | PathLike, best: int | None = None) -> Path:
    """Plot the Davies-Bouldin index against d (PNG) and return the file path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(scan["dims"], scan["davies_bouldin"], "o-", color="C0")
    if best is not None:
        row = scan[scan["dims"] == best].iloc[0]
        ax.plot([best], [row["davies_bouldin"]], "o", color="C3", ms=10, mfc="none",
                label=f"lowest: d = {best}")
        ax.legend(frameon=False)
    ax.set_xlabel("UMAP dimension d")
    ax.set_ylabel("Davies-Bouldin index (K-means)")
    ax.set_title("Choice of the UMAP dimension")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def place_chunk(i: int, features: str, outputs: list[tuple[str, Any]], n: int, chunk: int,
                fit_rows: np.ndarray) -> None:
    """Place chunk ``i`` of the features array at ``features`` into each output array
    (``(path, (model, fitted))`` pairs): a Dask task; the fitted models are sent once
    to every worker."""
    import zarr

    start, stop = i * chunk, min(n, (i + 1) * chunk)
    block = np.asarray(zarr.open_array(store=features, mode="r")[start:stop], dtype=np.float32)
    check_features(block)
    for path, (model, fitted) in outputs:
        zarr.open_array(store=path, mode="r+")[start:stop] = place_rows(block, start, fit_rows, fitted, model)


def _write(run: RunDir, name: str, data: np.ndarray, chunk: int) -> None:
    array = run.create_array(name, data.shape, chunk)
    for start in range(0, data.shape[0], chunk):
        array[start:start + chunk] = data[start:start + chunk]


def _compute(ctx: StageContext) -> dict[str, Any]:
    cfg, run = ctx.config.reduce, ctx.run
    session = ctx.compute
    array = run.open_array("features")
    n = int(array.shape[0])
    fit_rows = sample_rows(n, cfg.fit_sample, seed=cfg.seed, salt=1)
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
        import shutil

        shutil.rmtree(run.array_path("descriptors"))
    if prepared:
        check_features(features, ids=ids)
        features, extra = _prepare(ctx, features)
    result = reduce_features(features, ids=ids, progress=ctx.progress, scaled=prepared,
                             **core_options(cfg))
    result.timings.update(extra)
    chunk = cfg.chunk_size
    _write(run, "embedding", result.embedding, chunk)
    if result.embedding_2d is not None:
        _write(run, "embedding_2d", result.embedding_2d, chunk)
    return _summary(run, cfg, features.shape, result)


def _prepares(cfg: ReduceConfig) -> bool:
    """Whether the features are prepared (descriptors or a projection) before the reduction."""
    return cfg.descriptors > 0 or cfg.projection != "none"


def _prepare(ctx: StageContext, features: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Hybrid blocks and projection (:func:`skymorph.core.hybrid.prepare_features`): the shape
    descriptors of the stamps (written as the ``descriptors`` array) and, for the nuisance
    projection, the encoder features of nuisance copies of a seeded sample of stamps."""
    from ..core.descriptors import descriptors_at_levels
    from ..core.hybrid import prepare_features

    cfg, run = ctx.config.reduce, ctx.run
    timings: dict[str, float] = {}
    stamps = run.open_array("stamps")
    n = features.shape[0]
    descriptors = copies = copy_desc = rows = None
    if cfg.descriptors > 0:
        start = time.perf_counter()
        parts, names = [], []
        for lo in range(0, n, cfg.chunk_size):
            block = np.asarray(stamps[lo:lo + cfg.chunk_size], dtype=np.float32)
            values, names = descriptors_at_levels(block, levels=cfg.descriptor_levels)
            parts.append(values)
        descriptors = np.vstack(parts)
        units = ["pix" if name.split("_")[0] in ("r20", "r50", "r80") else "" for name in names]
        array = run.create_array("descriptors", descriptors.shape, cfg.chunk_size, attributes={
            "columns": names, "units": units,
            "note": "cheap shape descriptors used as clustering features (skymorph.core.descriptors); "
                    "not physical measurements: `skymorph measure` gives those"})
        array[:] = descriptors
        timings["descriptors"] = time.perf_counter() - start
    if cfg.projection == "nuisance":  # config.CROSS_RULES: the encoder reads the stamps
        from ..core.encoders import build_encoder
        from ..core.nuisance import augment

        start = time.perf_counter()
        rows = sample_rows(n, cfg.nuisance_sample, seed=cfg.seed, salt=7)
        sample = np.asarray(stamps.get_orthogonal_selection((rows,)), dtype=np.float32)
        copied = augment(sample, copies=cfg.nuisance_copies, seed=cfg.seed)
        encoder = build_encoder(ctx.config.encode)
        copies = np.stack([encoder.encode(c, int(ctx.config.encode.batch_size))[0] for c in copied])
        if not np.isfinite(copies).all():  # copies of empty stamps: drop those galaxies
            ok = np.isfinite(copies).all(axis=(0, 2))
            rows, copies, copied = rows[ok], copies[:, ok], copied[:, ok]
        if descriptors is not None:
            copy_desc = np.stack([descriptors_at_levels(c, levels=cfg.descriptor_levels)[0] for c in copied])
        timings["nuisance_copies"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        prepared = prepare_features(features, descriptors, descriptor_weight=cfg.descriptors,
                                    deep_dims=cfg.deep_dims, projection=cfg.projection,
                                    projection_dims=cfg.projection_dims, copies=copies,
                                    copy_descriptors=copy_desc, rows=rows)
    except ValueError as exc:
        raise ReduceError(f"cannot prepare the features: {exc}") from None
    timings["prepare"] = time.perf_counter() - start
    return prepared, timings


def _compute_placed(ctx: StageContext, array: Any, fit_rows: np.ndarray) -> dict[str, Any]:
    """Past one machine's memory: only the ``fit_sample`` rows are read here; UMAP is
    fitted on them (graph, scan, fits: exactly as :func:`reduce_array` does), and every
    chunk of galaxies is placed by a task on the cluster (:func:`place_chunk`), which
    writes its own rows of ``embedding`` and ``embedding_2d``."""
    from ..core.compute import run_chunks
    from ..io.chunklog import create_chunked

    cfg, run, session = ctx.config.reduce, ctx.run, ctx.compute
    if _prepares(cfg):
        raise ReduceError("reduce.descriptors and reduce.projection run on one machine; switch them off "
                          "for a reduction placed on a Dask cluster (or drop reduce.fit_sample)")
    n, width = int(array.shape[0]), int(array.shape[1])
    sample = np.asarray(array.get_orthogonal_selection((fit_rows,)), dtype=np.float32)
    # the other galaxies are placed with UMAP.transform, which needs pynndescent's search
    # index: never the exact k-NN graph of small runs here (the local path does the same)
    result = reduce_features(sample, progress=ctx.progress,
                             **{**core_options(cfg), "fit_sample": None, "exact_knn_below": 0})
    start = time.perf_counter()
    chunk = cfg.chunk_size
    outputs = []
    for name, dims in (("embedding", result.dims), ("embedding_2d", 2)):
        if dims in result.models and (name == "embedding" or cfg.map_2d):
            path = run.array_path(name)
            create_chunked(path, (n, dims), chunk)
            outputs.append((str(path), session.client.scatter(result.models[dims], broadcast=True,
                                                              hash=False)))
    bar = tqdm(total=n, desc="reduce: place", unit="galaxy", disable=not ctx.progress)
    with bar:
        run_chunks(place_chunk, range(-(-n // chunk)), str(run.array_path("features")), outputs, n, chunk,
                   fit_rows, on_done=lambda i, _: bar.update(min(n, (i + 1) * chunk) - i * chunk))
    result.timings["place"] = time.perf_counter() - start
    return _summary(run, cfg, (n, width), result)


def expansion_note(n_features: int, dims: int, method: str = "umap") -> str | None:
    """A warning when the "reduction" has more dimensions than the features it starts from.

    UMAP accepts it (e.g. 128-d adapted-encoder features to the paper's 300-d), but it
    reduces nothing: the extra axes only carry the optimiser's layout.  ``None`` when
    ``dims`` is no more than ``n_features``.
    """
    if method != "umap" or int(dims) <= int(n_features):
        return None
    return (f"UMAP to {dims} dimensions from {n_features}-d features reduces nothing (the output has "
            f"more axes than the input); consider --dims {max(2, int(n_features) // 2)} or "
            f"--set reduce.method=\"none\"")


def _summary(run: RunDir, cfg: ReduceConfig, shape: tuple[int, int], result: ReduceResult) -> dict[str, Any]:
    features_shape = shape
    summary: dict[str, Any] = {"n_galaxies": features_shape[0], "n_features": features_shape[1],
                               "dims": result.dims, "seconds": result.timings}
    note = expansion_note(features_shape[1], result.dims, cfg.method)
    if note is not None:
        log.warning("reduce: %s", note)
        summary["note"] = note
    if result.scan is not None:
        out = run.path / "reduce"
        out.mkdir(exist_ok=True)
        write_csv(result.scan, out / "dims_scan.csv")
        plot_scan(result.scan, out / "dims_scan.png", best=result.dims)
        summary["scan"] = result.scan[["dims", "davies_bouldin"]].to_dict("records")
    log.info("reduce: %d galaxies -> %d-d in %.0f s", features_shape[0], result.dims,
             sum(result.timings.values()))
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
