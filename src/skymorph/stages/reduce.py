"""Reduce: UMAP of the encoder features, optionally scanning the output dimension.

The paper (section 3.3) reduces the 2048-d ConvNeXt features to d = 300 with UMAP and
picks d as the minimum of the Davies-Bouldin index of K-means (k = 20) over
d = 50, 100, ..., 500.  Here:

* the k-NN graph does not depend on d, so it is built once (pynndescent, through
  ``umap.umap_.nearest_neighbors``) and handed to every UMAP fit as ``precomputed_knn``;
* the scan only has to *rank* d, so it embeds a seeded random sample of
  ``scan_sample`` galaxies (the Davies-Bouldin index of a random sample estimates
  that of the whole set) with that sample's graph built once, and computes the
  spectral initialisation once, for the largest d, using its first d columns for
  every smaller d (UMAP's spectral init for d dimensions is exactly the first d
  non-trivial Laplacian eigenvectors).  At 10^5 galaxies the whole scan costs a
  fraction of one 300-d fit instead of ~9 fits;
* with ``fit_sample`` UMAP is fitted on a sample and every other galaxy is placed
  with ``UMAP.transform`` (the route to more galaxies than one machine can fit);
* a 2-D UMAP on the same graph gives ``embedding_2d`` for maps.

Outputs in ``RUN_DIR``: ``embedding`` (N, d) and ``embedding_2d`` (N, 2) float32
arrays, and with ``dims = "auto"`` ``reduce/dims_scan.csv`` and ``reduce/dims_scan.png``.
Everything is seeded: the same features and settings give the same embedding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config, ReduceConfig
from ..io.rundir import RunDir
from . import Stage, StageContext, execute

__all__ = [
    "reduce",
    "reduce_array",
    "ReduceError",
    "ReduceResult",
    "check_features",
    "knn_graph",
    "fit_umap",
    "scan_dims",
    "plot_scan",
]

log = logging.getLogger(__name__)


class ReduceError(ValueError):
    """The features cannot be reduced (NaN rows, too few galaxies, bad settings)."""


@dataclass
class ReduceResult:
    """What :func:`reduce_array` computed."""

    embedding: np.ndarray
    """(N, d) float32 embedding."""
    dims: int
    """The dimension used (scanned or given)."""
    embedding_2d: np.ndarray | None = None
    """(N, 2) float32 map, when asked for."""
    scan: pd.DataFrame | None = None
    """The dimension scan (``dims``, ``davies_bouldin``, ``seconds``), when ``dims = "auto"``."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each step."""
    models: dict[int, Any] = field(default_factory=dict)
    """The fitted UMAP of each output dimension and its fitted rows' embedding."""


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


def check_features(features: np.ndarray, ids: Sequence[Any] | None = None) -> None:
    """Refuse features that UMAP cannot embed, saying which galaxies are at fault.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    ids : sequence, optional
        Galaxy ids in row order (the ``sources`` table's ``id``), used in the message.

    Raises
    ------
    ReduceError
        If the array is not 2-D, or some rows hold NaN or infinite values.
    """
    if features.ndim != 2:
        raise ReduceError(f"features must be a 2-D (galaxies x features) array, got shape {features.shape}")
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:
        names = [str(ids[i]) if ids is not None else str(i) for i in bad[:10]]
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ReduceError(
            f"{bad.size} of {features.shape[0]} galaxies have NaN or infinite features "
            f"(ids {', '.join(names)}{more}); re-run `skymorph encode` on them or drop them "
            "from the input before reducing"
        )


def _check_sizes(n: int, dims: Sequence[int], cfg: ReduceConfig, what: str) -> None:
    if n <= cfg.n_neighbors:
        raise ReduceError(
            f"{what} has {n} galaxies but UMAP needs more than n_neighbors={cfg.n_neighbors}; "
            "give more galaxies or lower --n-neighbors"
        )
    too_big = [d for d in dims if d + 1 >= n]
    if too_big:
        raise ReduceError(
            f"cannot embed {n} galaxies ({what}) in {max(too_big)} dimensions: the spectral "
            f"initialisation needs fewer dimensions than galaxies - 1; lower --dims / the grid"
        )


def _fit_dims(n: int, cfg: ReduceConfig) -> ReduceConfig:
    """Cap the output dimension (or the scan grid) for small samples.

    The paper's d = 300 suits 10^5 galaxies; UMAP's spectral start cannot give more
    dimensions than galaxies - 1, and a run of a few hundred galaxies should still
    work with the default settings.  A fixed d is capped at n // 2; scan entries
    above that are dropped.  Both are logged.
    """
    cap = max(2, n // 2)
    if cfg.dims == "auto":
        grid = [d for d in cfg.dims_grid if d <= cap]
        if len(grid) < len(cfg.dims_grid):
            log.warning("reduce: %d galaxies: scanning d in %s only (at most n/2 = %d)", n, grid, cap)
        return replace(cfg, dims_grid=grid or [cap])
    if int(cfg.dims) > cap:
        log.warning("reduce: %d dimensions is too many for %d galaxies; using n/2 = %d", cfg.dims, n, cap)
        return replace(cfg, dims=cap)
    return cfg


def knn_graph(features: np.ndarray, cfg: ReduceConfig) -> tuple[np.ndarray, np.ndarray, Any]:
    """The k-NN graph UMAP needs, built once (pynndescent, seeded, single-threaded).

    Parameters
    ----------
    features : ndarray, shape (N, D)
    cfg : ReduceConfig
        ``n_neighbors``, ``metric`` and ``seed`` are used.

    Returns
    -------
    tuple
        ``(indices, distances, search_index)``, to pass as UMAP's ``precomputed_knn``;
        the search index lets ``UMAP.transform`` place new galaxies.
    """
    if features.shape[0] <= cfg.exact_knn_below and not cfg.fit_sample:
        return _exact_knn(features, cfg)
    umap = _umap_module()
    with _umap_warnings():
        indices, dists, index = umap.umap_.nearest_neighbors(
            features, n_neighbors=cfg.n_neighbors, metric=cfg.metric, metric_kwds={},
            angular=False, random_state=np.random.RandomState(cfg.seed), low_memory=True,
            use_pynndescent=True, n_jobs=1, verbose=False,
        )
    return indices, dists, index


def _exact_knn(features: np.ndarray, cfg: ReduceConfig) -> tuple[np.ndarray, np.ndarray, None]:
    """Brute-force k-NN (scikit-learn): exact, and in small runs far cheaper than
    compiling pynndescent's numba code (about a minute, once per process).  Each
    galaxy is its own first neighbour, as in UMAP's own graphs.  No search index:
    ``UMAP.transform`` is not needed without ``fit_sample``."""
    from sklearn.neighbors import NearestNeighbors

    k = min(cfg.n_neighbors, features.shape[0])
    search = NearestNeighbors(n_neighbors=k, metric=cfg.metric, algorithm="brute").fit(features)
    dists, indices = search.kneighbors(features)
    return indices.astype(np.int32), dists.astype(np.float32), None


def fit_umap(features: np.ndarray, n_components: int, cfg: ReduceConfig,
             knn: tuple | None = None, init: np.ndarray | str = "spectral",
             n_epochs: int | None = None) -> tuple[np.ndarray, Any]:
    """One seeded UMAP fit.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    n_components : int
        Output dimension.
    cfg : ReduceConfig
    knn : tuple, optional
        A graph from :func:`knn_graph` for these rows; built here when missing.
    init : ndarray or str
        UMAP's ``init`` (an (N, n_components) array or ``"spectral"``).
    n_epochs : int, optional
        Overrides ``cfg.n_epochs``.

    Returns
    -------
    embedding : ndarray, shape (N, n_components), float32
    model : umap.UMAP
        The fitted model (its ``transform`` places new galaxies when ``knn`` carries a search index).
    """
    umap = _umap_module()
    if knn is None:
        knn = knn_graph(features, cfg)
    model = umap.UMAP(
        n_components=n_components, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
        metric=cfg.metric, n_epochs=n_epochs if n_epochs is not None else cfg.n_epochs,
        init=init, random_state=cfg.seed, n_jobs=1, precomputed_knn=knn, low_memory=True,
        verbose=False,
    )
    with _umap_warnings():
        embedding = model.fit_transform(features)
    return np.ascontiguousarray(embedding, dtype=np.float32), model


def _spectral_init(features: np.ndarray, knn: tuple, dim: int, cfg: ReduceConfig) -> np.ndarray:
    """Spectral layout of the fuzzy graph with ``dim`` components, scaled as UMAP does;
    its first d columns are UMAP's spectral init for any d <= dim."""
    umap = _umap_module()
    from umap.spectral import spectral_layout

    state = np.random.RandomState(cfg.seed)
    with _umap_warnings():
        graph, _, _ = umap.umap_.fuzzy_simplicial_set(
            features, cfg.n_neighbors, state, cfg.metric, knn_indices=knn[0], knn_dists=knn[1],
        )
        layout = spectral_layout(features, graph, dim, state, metric=cfg.metric)
    return umap.umap_.noisy_scale_coords(layout, state, max_coord=10, noise=0.0001)


def scan_dims(features: np.ndarray, cfg: ReduceConfig, knn: tuple | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Davies-Bouldin index of K-means (``cfg.scan_k`` clusters) on the UMAP embedding
    for every d of ``cfg.dims_grid``.

    Call it on the galaxies to scan (the stage passes a ``scan_sample`` of them). The
    k-NN graph and the spectral initialisation are computed once and shared by every d.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    cfg : ReduceConfig
    knn : tuple, optional
        Graph of these rows from :func:`knn_graph`; built here when missing.
    progress : bool
        Show a progress bar over d.

    Returns
    -------
    DataFrame
        One row per d: ``dims``, ``davies_bouldin``, ``seconds`` (embedding + K-means).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import davies_bouldin_score

    grid = sorted({int(d) for d in cfg.dims_grid})
    if not grid:
        raise ReduceError("reduce.dims_grid is empty; give the dimensions to scan")
    _check_sizes(features.shape[0], grid, cfg, "the scan sample")
    if features.shape[0] < cfg.scan_k:
        raise ReduceError(f"the scan needs at least scan_k={cfg.scan_k} galaxies, got {features.shape[0]}")
    if knn is None:
        knn = knn_graph(features, cfg)
    init = _spectral_init(features, knn, max(grid), cfg)
    epochs = cfg.scan_epochs if cfg.scan_epochs is not None else cfg.n_epochs
    rows = []
    for d in tqdm(grid, desc="reduce: scan d", disable=not progress):
        start = time.perf_counter()
        embedding, _ = fit_umap(features, d, cfg, knn=knn, init=init[:, :d], n_epochs=epochs)
        labels = KMeans(n_clusters=cfg.scan_k, n_init=3, random_state=cfg.seed).fit_predict(embedding)
        score = float(davies_bouldin_score(embedding, labels))
        rows.append({"dims": d, "davies_bouldin": score, "seconds": time.perf_counter() - start})
        log.info("reduce: d=%d Davies-Bouldin %.4f", d, score)
    return pd.DataFrame(rows)


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


def _sample(n: int, size: int | None, seed: int, salt: int) -> np.ndarray:
    """Sorted seeded random subset of ``range(n)`` (all rows when ``size`` is None or >= n)."""
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(n, size=size, replace=False))


def _embed_all(features: np.ndarray, fit_rows: np.ndarray, n_components: int, cfg: ReduceConfig,
               knn: tuple, init: Any = "spectral", progress: bool = True,
               models: dict[int, Any] | None = None) -> np.ndarray:
    """Fit on ``fit_rows`` and ``transform`` every other row, chunk by chunk of the
    output array (``cfg.chunk_size`` galaxies: the same blocks whether they are placed
    here or on a Dask cluster by :func:`place_chunk`, so both give the same bytes)."""
    fitted, model = fit_umap(features[fit_rows], n_components, cfg, knn=knn, init=init)
    if models is not None:
        models[n_components] = (model, fitted)
    n = features.shape[0]
    if fit_rows.size == n:
        return fitted
    out = np.empty((n, n_components), dtype=np.float32)
    for start in tqdm(range(0, n, cfg.chunk_size), desc=f"reduce: transform ({n_components}-d)",
                      disable=not progress):
        stop = min(n, start + cfg.chunk_size)
        out[start:stop] = _place(features[start:stop], start, fit_rows, fitted, model)
    return out


def _place(block: np.ndarray, start: int, fit_rows: np.ndarray, fitted: np.ndarray, model: Any) -> np.ndarray:
    """Embedding of galaxies ``start .. start + len(block)``: the fit's own rows keep
    their fitted coordinates, the others are placed with ``UMAP.transform``."""
    stop = start + len(block)
    lo, hi = np.searchsorted(fit_rows, [start, stop])
    own = fit_rows[lo:hi] - start
    out = np.empty((len(block), fitted.shape[1]), dtype=np.float32)
    out[own] = fitted[lo:hi]
    rest = np.setdiff1d(np.arange(len(block)), own, assume_unique=True)
    if rest.size:
        with _umap_warnings():
            out[rest] = model.transform(np.ascontiguousarray(block[rest], dtype=np.float32))
    return out


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
        zarr.open_array(store=path, mode="r+")[start:stop] = _place(block, start, fit_rows, fitted, model)


def reduce_array(features: np.ndarray, cfg: ReduceConfig, ids: Sequence[Any] | None = None,
                 progress: bool = True, scaled: bool = False) -> ReduceResult:
    """Reduce a features array in memory (the work of :func:`reduce`, without a run directory).

    Parameters
    ----------
    features : ndarray, shape (N, D)
    cfg : ReduceConfig
    ids : sequence, optional
        Galaxy ids for error messages.
    progress : bool
    scaled : bool
        The features are already scaled as they should be compared (hybrid blocks or a
        projection, :func:`skymorph.core.hybrid.prepare_features`): ``pca`` and ``none`` do
        not standardise them column by column.

    Returns
    -------
    ReduceResult

    Raises
    ------
    ReduceError
        NaN rows, fewer galaxies than the settings need, or an unknown ``dims``.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    check_features(features, ids)
    n = features.shape[0]
    if cfg.method != "umap":
        return _linear(features, cfg, scaled=scaled)
    if isinstance(cfg.dims, str) and cfg.dims != "auto":
        try:
            cfg = replace(cfg, dims=int(cfg.dims))
        except ValueError:
            raise ReduceError(f"reduce.dims must be an integer or 'auto', got {cfg.dims!r}") from None
    timings: dict[str, float] = {}
    fit_rows = _sample(n, cfg.fit_sample, cfg.seed, 1)
    cfg = _fit_dims(fit_rows.size, cfg)
    if cfg.dims != "auto":
        _check_sizes(fit_rows.size, [int(cfg.dims)], cfg, "the fit sample")

    # one bar over the steps: UMAP's optimiser has no per-epoch callback to hook a finer one
    steps = ["k-NN graph", *(["dimension scan"] if cfg.dims == "auto" else []), "UMAP",
             *(["2-D map"] if cfg.map_2d else [])]
    bar = tqdm(total=len(steps), desc="reduce", unit="step", disable=not progress)
    bar.set_postfix_str(steps[0])

    def advance() -> None:
        bar.update()
        if bar.n < len(steps):
            bar.set_postfix_str(steps[bar.n])
    start = time.perf_counter()
    knn = knn_graph(features[fit_rows], cfg)
    timings["knn"] = time.perf_counter() - start
    log.info("reduce: k-NN graph of %d galaxies in %.1f s", fit_rows.size, timings["knn"])
    advance()

    scan = None
    dims = cfg.dims
    if dims == "auto":
        start = time.perf_counter()
        scan_rows = _sample(fit_rows.size, cfg.scan_sample, cfg.seed, 2)
        # The fit graph serves the scan when the scan covers the same galaxies.
        scan_knn = knn if scan_rows.size == fit_rows.size else None
        scan = scan_dims(features[fit_rows[scan_rows]], cfg, knn=scan_knn, progress=progress)
        dims = int(scan.loc[scan["davies_bouldin"].idxmin(), "dims"])
        timings["scan"] = time.perf_counter() - start
        log.info("reduce: lowest Davies-Bouldin at d=%d (scan %.1f s)", dims, timings["scan"])
        _check_sizes(fit_rows.size, [dims], cfg, "the fit sample")
        advance()

    start = time.perf_counter()
    models: dict[int, Any] = {}
    embedding = _embed_all(features, fit_rows, int(dims), cfg, knn, progress=progress, models=models)
    timings["umap"] = time.perf_counter() - start
    advance()
    embedding_2d = None
    if cfg.map_2d:
        start = time.perf_counter()
        embedding_2d = _embed_all(features, fit_rows, 2, cfg, knn, progress=progress, models=models)
        timings["umap_2d"] = time.perf_counter() - start
        advance()
    bar.close()
    return ReduceResult(embedding=embedding, dims=int(dims), embedding_2d=embedding_2d,
                        scan=scan, timings=timings, models=models)


def _linear(features: np.ndarray, cfg: ReduceConfig, scaled: bool = False) -> ReduceResult:
    """``method = "pca"`` / ``"none"``: standardised features (as given when ``scaled``), optionally
    projected on their first ``dims`` principal components (the 2-D map stays a UMAP of the features)."""
    start = time.perf_counter()
    x = features - features.mean(0)
    if not scaled:
        x /= np.maximum(x.std(0), 1e-12)
    dims = x.shape[1]
    if cfg.method == "pca":
        from sklearn.decomposition import PCA

        dims = min(int(cfg.dims) if cfg.dims != "auto" else 50, *x.shape)
        x = PCA(dims, random_state=cfg.seed).fit_transform(x)
    timings = {cfg.method: time.perf_counter() - start}
    embedding_2d = None
    if cfg.map_2d:
        start = time.perf_counter()
        rows = _sample(x.shape[0], cfg.fit_sample, cfg.seed, 1)
        embedding_2d = _embed_all(features, rows, 2, cfg, knn_graph(features[rows], cfg), progress=False)
        timings["umap_2d"] = time.perf_counter() - start
    return ReduceResult(embedding=np.ascontiguousarray(x, dtype=np.float32), dims=int(dims),
                        embedding_2d=embedding_2d, scan=None, timings=timings)


def _write(run: RunDir, name: str, data: np.ndarray, chunk: int) -> None:
    array = run.create_array(name, data.shape, chunk)
    for start in range(0, data.shape[0], chunk):
        array[start:start + chunk] = data[start:start + chunk]


def _compute(ctx: StageContext) -> dict[str, Any]:
    cfg, run = ctx.config.reduce, ctx.run
    session = ctx.compute
    array = run.open_array("features")
    n = int(array.shape[0])
    fit_rows = _sample(n, cfg.fit_sample, cfg.seed, 1)
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
        check_features(features, ids)
        features, extra = _prepare(ctx, features)
    result = reduce_array(features, cfg, ids=ids, progress=ctx.progress, scaled=prepared)
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
    from . import image_source

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
    if cfg.projection == "nuisance":
        if image_source(ctx.config, "encode")[0] != "stamps":
            raise ReduceError("reduce.projection = nuisance copies the stamps the encoder reads, but this "
                              "run encodes denoised or polar images; switch denoise and polar off or use "
                              "--projection whiten")
        from ..core.encoders import build_encoder
        from ..core.nuisance import augment

        start = time.perf_counter()
        rows = _sample(n, cfg.nuisance_sample, cfg.seed, 7)
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
    result = reduce_array(sample, replace(cfg, fit_sample=None, exact_knn_below=0), progress=ctx.progress)
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


def _summary(run: RunDir, cfg: ReduceConfig, shape: tuple[int, int], result: ReduceResult) -> dict[str, Any]:
    features_shape = shape
    summary: dict[str, Any] = {"n_galaxies": features_shape[0], "n_features": features_shape[1],
                               "dims": result.dims, "seconds": result.timings}
    if result.scan is not None:
        out = run.path / "reduce"
        out.mkdir(exist_ok=True)
        result.scan.to_csv(out / "dims_scan.csv", index=False)
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
