"""Reduction of encoder features: UMAP (the paper), PCA, the k-NN graph and the dimension scan.

The paper (section 3.3) reduces the 2048-d ConvNeXt features to d = 300 with UMAP and
picks d as the minimum of the Davies-Bouldin index of K-means (k = 20) over
d = 50, 100, ..., 500.  Here:

* the k-NN graph does not depend on d, so it is built once (:func:`knn_graph`:
  pynndescent through ``umap.umap_.nearest_neighbors``, or an exact brute-force graph
  for small inputs) and handed to every UMAP fit as ``precomputed_knn``;
* the scan (:func:`scan_dims`) only has to *rank* d, so it embeds a seeded random
  sample of ``scan_sample`` galaxies with that sample's graph built once, and computes
  the spectral initialisation once, for the largest d, using its first d columns for
  every smaller d (UMAP's spectral init for d dimensions is exactly the first d
  non-trivial Laplacian eigenvectors);
* with ``fit_sample`` UMAP is fitted on a sample and every other galaxy is placed
  with ``UMAP.transform`` (:func:`place_rows`, the route to more galaxies than one
  machine can fit);
* a 2-D UMAP on the same graph gives ``embedding_2d`` for maps.

The graph, the single fit and the spectral start live in :mod:`skymorph.core.umap_fit`
(re-exported here); this module scans d, samples the fit rows and places the others.
Everything is seeded: the same features and settings give the same embedding.  The
functions work on NumPy arrays (no run directory, no settings object); the ``reduce``
stage (:mod:`skymorph.stages.reduce`) reads ``features``, calls
:func:`reduce_features` and writes the arrays.  Every default is the default of the
``[reduce]`` settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import SkymorphError
from .umap_fit import (  # noqa: F401 - re-exported: public names of this module before the split
    _fit,
    _spectral_init,
    _Umap,
    _umap_warnings,
    fit_umap,
    knn_graph,
)

__all__ = [
    "ReduceError",
    "ReduceResult",
    "check_features",
    "expansion_note",
    "knn_graph",
    "fit_umap",
    "scan_dims",
    "sample_rows",
    "place_rows",
    "standardise",
    "reduce_features",
]

log = logging.getLogger(__name__)

METHODS = ("umap", "pca", "none")


class ReduceError(SkymorphError, ValueError):
    """The features cannot be reduced (NaN rows, too few galaxies, bad settings)."""


@dataclass
class ReduceResult:
    """What :func:`reduce_features` computed."""

    embedding: np.ndarray
    """(N, d) float32 embedding."""
    dims: int
    """The dimension used (scanned or given)."""
    embedding_2d: np.ndarray | None = None
    """(N, 2) float32 map, when asked for."""
    scan: Any = None
    """The dimension scan (a DataFrame: ``dims``, ``davies_bouldin``, ``seconds``), when ``dims="auto"``."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each step."""
    models: dict[int, Any] = field(default_factory=dict)
    """The fitted UMAP of each output dimension and its fitted rows' embedding."""


def check_features(features: np.ndarray, *, ids: Sequence[Any] | None = None) -> None:
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

    See Also
    --------
    reduce_features

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import check_features
    >>> x = np.ones((3, 2))
    >>> x[1, 0] = np.nan
    >>> check_features(x, ids=["a", "b", "c"])
    Traceback (most recent call last):
    ...
    skymorph.core.reduction.ReduceError: 1 of 3 galaxies have NaN or infinite features (ids b); ...
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


def _check_sizes(n: int, dims: Sequence[int], n_neighbors: int, what: str) -> None:
    if n <= n_neighbors:
        raise ReduceError(
            f"{what} has {n} galaxies but UMAP needs more than n_neighbors={n_neighbors}; "
            "give more galaxies or lower --n-neighbors"
        )
    too_big = [d for d in dims if d + 1 >= n]
    if too_big:
        raise ReduceError(
            f"cannot embed {n} galaxies ({what}) in {max(too_big)} dimensions: the spectral "
            f"initialisation needs fewer dimensions than galaxies - 1; lower --dims / the grid"
        )


def _fit_dims(n: int, dims: int | str, dims_grid: Sequence[int]) -> tuple[int | str, list[int]]:
    """Cap the output dimension (or the scan grid) for small samples.

    The paper's d = 300 suits 10^5 galaxies; UMAP's spectral start cannot give more
    dimensions than galaxies - 1, and a run of a few hundred galaxies should still
    work with the default settings.  A fixed d is capped at n // 2; scan entries
    above that are dropped.  Both are logged.
    """
    cap = max(2, n // 2)
    if dims == "auto":
        grid = [d for d in dims_grid if d <= cap]
        if len(grid) < len(dims_grid):
            log.warning("reduce: %d galaxies: scanning d in %s only (at most n/2 = %d)", n, grid, cap)
        return dims, grid or [cap]
    if int(dims) > cap:
        log.warning("reduce: %d dimensions is too many for %d galaxies; using n/2 = %d", dims, n, cap)
        return cap, list(dims_grid)
    return dims, list(dims_grid)


def _scan(features: np.ndarray, dims_grid: Sequence[int], scan_k: int, scan_epochs: int | None, p: _Umap,
          knn: tuple | None, progress: bool) -> Any:
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.metrics import davies_bouldin_score

    grid = sorted({int(d) for d in dims_grid})
    if not grid:
        raise ReduceError("reduce.dims_grid is empty; give the dimensions to scan")
    _check_sizes(features.shape[0], grid, p.n_neighbors, "the scan sample")
    if features.shape[0] < scan_k:
        raise ReduceError(f"the scan needs at least scan_k={scan_k} galaxies, got {features.shape[0]}")
    if knn is None:
        knn = knn_graph(features, n_neighbors=p.n_neighbors, metric=p.metric, seed=p.seed,
                        exact_knn_below=p.exact_knn_below)
    init = _spectral_init(features, knn, max(grid), p)
    epochs = scan_epochs if scan_epochs is not None else p.n_epochs
    rows = []
    for d in tqdm(grid, desc="reduce: scan d", disable=not progress):
        start = time.perf_counter()
        embedding, _ = _fit(features, d, p, knn=knn, init=init[:, :d], n_epochs=epochs)
        labels = KMeans(n_clusters=scan_k, n_init=3, random_state=p.seed).fit_predict(embedding)
        score = float(davies_bouldin_score(embedding, labels))
        rows.append({"dims": d, "davies_bouldin": score, "seconds": time.perf_counter() - start})
        log.info("reduce: d=%d Davies-Bouldin %.4f", d, score)
    return pd.DataFrame(rows)


def scan_dims(features: np.ndarray, *, dims_grid: Sequence[int] = tuple(range(50, 501, 50)), scan_k: int = 20,
              n_neighbors: int = 30, min_dist: float = 0.1, metric: str = "euclidean",
              n_epochs: int | None = None, scan_epochs: int | None = None, seed: int = 42,
              exact_knn_below: int = 4096, knn: tuple | None = None, progress: bool = True) -> Any:
    """Davies-Bouldin index of K-means (``scan_k`` clusters) on the UMAP embedding for every d.

    Call it on the galaxies to scan (the stage passes a ``scan_sample`` of them).  The
    k-NN graph and the spectral initialisation are computed once and shared by every d.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    dims_grid : sequence of int
        Dimensions to try (the paper: 50, 100, ..., 500).
    scan_k : int
        K-means clusters whose Davies-Bouldin index ranks the dimensions.
    n_neighbors, min_dist, metric, n_epochs, seed, exact_knn_below : see :func:`fit_umap`.
    scan_epochs : int, optional
        Epochs of each scan embedding; None uses ``n_epochs``.
    knn : tuple, optional
        Graph of these rows from :func:`knn_graph`; built here when missing.
    progress : bool
        Show a progress bar over d.

    Returns
    -------
    pandas.DataFrame
        One row per d: ``dims``, ``davies_bouldin``, ``seconds`` (embedding + K-means).

    Raises
    ------
    ReduceError
        An empty grid, too few galaxies for ``n_neighbors``, ``scan_k`` or the largest d.

    See Also
    --------
    reduce_features : runs the scan for ``dims="auto"`` and keeps the lowest index.
    sklearn.metrics.davies_bouldin_score

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import scan_dims
    >>> x = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    >>> scan = scan_dims(x, dims_grid=[2, 3], scan_k=3, n_epochs=20, progress=False)  # doctest: +SKIP
    >>> scan["dims"].tolist()  # doctest: +SKIP
    [2, 3]
    """
    p = _Umap(n_neighbors, min_dist, metric, n_epochs, seed, exact_knn_below)
    return _scan(features, dims_grid, scan_k, scan_epochs, p, knn, progress)


def sample_rows(n: int, size: int | None, *, seed: int = 42, salt: int = 1) -> np.ndarray:
    """Sorted seeded random subset of ``range(n)`` (all rows when ``size`` is None or >= n).

    Parameters
    ----------
    n : int
        Number of rows.
    size : int or None
        Rows to draw.
    seed, salt : int
        The generator is ``numpy.random.default_rng([seed, salt])``: the fit sample uses
        salt 1, the scan sample salt 2.

    Returns
    -------
    ndarray of int64

    Examples
    --------
    >>> from skymorph.core.reduction import sample_rows
    >>> sample_rows(5, None).tolist(), len(sample_rows(100, 10, seed=0))
    ([0, 1, 2, 3, 4], 10)
    """
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(n, size=size, replace=False))


def _embed_all(features: np.ndarray, fit_rows: np.ndarray, n_components: int, p: _Umap, chunk_size: int,
               knn: tuple, init: Any = "spectral", progress: bool = True,
               models: dict[int, Any] | None = None) -> np.ndarray:
    """Fit on ``fit_rows`` and ``transform`` every other row, block by block of
    ``chunk_size`` galaxies (the same blocks whether they are placed here or on a Dask
    cluster by the stage, so both give the same bytes)."""
    fitted, model = _fit(features[fit_rows], n_components, p, knn=knn, init=init)
    if models is not None:
        models[n_components] = (model, fitted)
    n = features.shape[0]
    if fit_rows.size == n:
        return fitted
    out = np.empty((n, n_components), dtype=np.float32)
    for start in tqdm(range(0, n, chunk_size), desc=f"reduce: transform ({n_components}-d)",
                      disable=not progress):
        stop = min(n, start + chunk_size)
        out[start:stop] = place_rows(features[start:stop], start, fit_rows, fitted, model)
    return out


def place_rows(block: np.ndarray, start: int, fit_rows: np.ndarray, fitted: np.ndarray,
               model: Any) -> np.ndarray:
    """Embedding of galaxies ``start .. start + len(block)`` by a UMAP fitted on ``fit_rows``.

    The fit's own rows keep their fitted coordinates, the others are placed with
    ``UMAP.transform``.

    Parameters
    ----------
    block : ndarray, shape (B, D)
        Features of the galaxies.
    start : int
        Row of the block's first galaxy.
    fit_rows : ndarray of int
        Sorted rows the model was fitted on.
    fitted : ndarray, shape (len(fit_rows), d)
        Their fitted embedding.
    model : umap.UMAP
        The fitted model (its graph must carry a search index).

    Returns
    -------
    ndarray, shape (B, d), float32

    See Also
    --------
    reduce_features : fits with ``fit_sample`` and places every block with this.
    """
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


def expansion_note(n_features: int, dims: int, method: str = "umap") -> str | None:
    """A warning when the "reduction" has more dimensions than the features it starts from.

    UMAP accepts it (e.g. 128-d adapted-encoder features to the paper's 300-d), but it
    reduces nothing: the extra axes only carry the optimiser's layout.

    Parameters
    ----------
    n_features : int
        Width of the features.
    dims : int
        Dimensions of the reduction.
    method : str
        The reduction method; only ``umap`` can expand.

    Returns
    -------
    str or None
        The warning, or ``None`` when ``dims`` is no more than ``n_features``.

    See Also
    --------
    reduce_features : the reduction.

    Examples
    --------
    >>> from skymorph.core.reduction import expansion_note
    >>> expansion_note(1280, 300) is None
    True
    >>> expansion_note(128, 300)
    'UMAP to 300 dimensions from 128-d features reduces nothing ... --dims 64 or --set reduce.method="none"'
    """
    if method != "umap" or int(dims) <= int(n_features):
        return None
    return (f"UMAP to {dims} dimensions from {n_features}-d features reduces nothing (the output has "
            f"more axes than the input); consider --dims {max(2, int(n_features) // 2)} or "
            f"--set reduce.method=\"none\"")


def standardise(features: np.ndarray) -> np.ndarray:
    """Features minus their mean, divided by their standard deviation (floored at 1e-12).

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import standardise
    >>> standardise(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    x = features - features.mean(0)
    x /= np.maximum(x.std(0), 1e-12)
    return x


def reduce_features(features: np.ndarray, *, method: str = "umap", dims: int | str = 300,
                    dims_grid: Sequence[int] = tuple(range(50, 501, 50)), n_neighbors: int = 30,
                    min_dist: float = 0.1, metric: str = "euclidean", n_epochs: int | None = None,
                    exact_knn_below: int = 4096, scan_k: int = 20, scan_sample: int = 20000,
                    scan_epochs: int | None = None, map_2d: bool = True, fit_sample: int | None = None,
                    chunk_size: int = 8192, seed: int = 42, ids: Sequence[Any] | None = None,
                    progress: bool = True, scaled: bool = False) -> ReduceResult:
    """Reduce a features array in memory: UMAP (optionally scanning d), PCA, or standardisation.

    Parameters
    ----------
    features : ndarray, shape (N, D)
    method : {"umap", "pca", "none"}
        ``umap`` (the paper); ``pca``: ``dims`` principal components of the standardised
        features (50 for ``dims="auto"``); ``none``: the standardised features.  The 2-D
        map is a UMAP of the features in every case.
    dims : int or "auto"
        Output dimension, or ``"auto"`` to scan ``dims_grid`` (:func:`scan_dims`) and keep the
        lowest Davies-Bouldin index.  Capped at N / 2 for small samples (logged).
    dims_grid : sequence of int
        Dimensions the scan tries.
    n_neighbors, min_dist, metric, n_epochs, seed : see :func:`fit_umap`.
    exact_knn_below : int
        See :func:`knn_graph`; ignored (pynndescent) when ``fit_sample`` is given.
    scan_k, scan_epochs : see :func:`scan_dims`.
    scan_sample : int
        Galaxies (a seeded sample of the fit rows) that the scan embeds.
    map_2d : bool
        Also compute the 2-D embedding.
    fit_sample : int, optional
        Fit UMAP on this many galaxies (seeded) and place the rest with ``UMAP.transform``.
    chunk_size : int
        Galaxies placed at a time.
    ids : sequence, optional
        Galaxy ids for error messages.
    progress : bool
        Show progress bars.
    scaled : bool
        The features are already scaled as they should be compared (hybrid blocks or a
        projection, :func:`skymorph.core.hybrid.prepare_features`): ``pca`` and ``none``
        keep that scale instead of standardising every column.

    Returns
    -------
    ReduceResult

    Raises
    ------
    ReduceError
        NaN rows, fewer galaxies than the settings need, or an unknown ``dims``.

    See Also
    --------
    fit_umap, scan_dims, knn_graph

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.reduction import reduce_features
    >>> x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    >>> result = reduce_features(x, method="pca", dims=3, map_2d=False)
    >>> result.embedding.shape, result.dims
    ((40, 3), 3)
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    check_features(features, ids=ids)
    n = features.shape[0]
    if method != "umap":
        return _linear(features, method, dims, map_2d, fit_sample, seed, chunk_size,
                       _Umap(n_neighbors, min_dist, metric, n_epochs, seed,
                             0 if fit_sample else exact_knn_below), scaled=scaled)
    if isinstance(dims, str) and dims != "auto":
        try:
            dims = int(dims)
        except ValueError:
            raise ReduceError(f"reduce.dims must be an integer or 'auto', got {dims!r}") from None
    p = _Umap(n_neighbors, min_dist, metric, n_epochs, seed, 0 if fit_sample else exact_knn_below)
    timings: dict[str, float] = {}
    fit_rows = sample_rows(n, fit_sample, seed=seed, salt=1)
    dims, dims_grid = _fit_dims(fit_rows.size, dims, dims_grid)
    if dims != "auto":
        _check_sizes(fit_rows.size, [int(dims)], n_neighbors, "the fit sample")

    # one bar over the steps: UMAP's optimiser has no per-epoch callback to hook a finer one
    steps = ["k-NN graph", *(["dimension scan"] if dims == "auto" else []), "UMAP",
             *(["2-D map"] if map_2d else [])]
    bar = tqdm(total=len(steps), desc="reduce", unit="step", disable=not progress)
    bar.set_postfix_str(steps[0])

    def advance() -> None:
        bar.update()
        if bar.n < len(steps):
            bar.set_postfix_str(steps[bar.n])
    start = time.perf_counter()
    knn = knn_graph(features[fit_rows], n_neighbors=n_neighbors, metric=metric, seed=seed,
                    exact_knn_below=p.exact_knn_below)
    timings["knn"] = time.perf_counter() - start
    log.info("reduce: k-NN graph of %d galaxies in %.1f s", fit_rows.size, timings["knn"])
    advance()

    scan = None
    if dims == "auto":
        start = time.perf_counter()
        scan_rows = sample_rows(fit_rows.size, scan_sample, seed=seed, salt=2)
        # The fit graph serves the scan when the scan covers the same galaxies.
        scan_knn = knn if scan_rows.size == fit_rows.size else None
        scan = _scan(features[fit_rows[scan_rows]], dims_grid, scan_k, scan_epochs, p, scan_knn, progress)
        dims = int(scan.loc[scan["davies_bouldin"].idxmin(), "dims"])
        timings["scan"] = time.perf_counter() - start
        log.info("reduce: lowest Davies-Bouldin at d=%d (scan %.1f s)", dims, timings["scan"])
        _check_sizes(fit_rows.size, [dims], n_neighbors, "the fit sample")
        advance()

    start = time.perf_counter()
    models: dict[int, Any] = {}
    embedding = _embed_all(features, fit_rows, int(dims), p, chunk_size, knn, progress=progress,
                           models=models)
    timings["umap"] = time.perf_counter() - start
    advance()
    embedding_2d = None
    if map_2d:
        start = time.perf_counter()
        embedding_2d = _embed_all(features, fit_rows, 2, p, chunk_size, knn, progress=progress, models=models)
        timings["umap_2d"] = time.perf_counter() - start
        advance()
    bar.close()
    return ReduceResult(embedding=embedding, dims=int(dims), embedding_2d=embedding_2d,
                        scan=scan, timings=timings, models=models)


def _linear(features: np.ndarray, method: str, dims: int | str, map_2d: bool, fit_sample: int | None,
            seed: int, chunk_size: int, p: _Umap, scaled: bool = False) -> ReduceResult:
    """``method = "pca"`` / ``"none"``: standardised (or, ``scaled``, only centred) features,
    optionally projected on their first ``dims`` principal components (the 2-D map stays a
    UMAP of the features)."""
    if method not in METHODS:
        raise ReduceError(f"reduce.method must be one of {', '.join(METHODS)}, got {method!r}")
    start = time.perf_counter()
    x = features - features.mean(0) if scaled else standardise(features)
    out_dims = x.shape[1]
    if method == "pca":
        from sklearn.decomposition import PCA

        out_dims = min(int(dims) if dims != "auto" else 50, *x.shape)
        x = PCA(out_dims, random_state=seed).fit_transform(x)
    timings = {method: time.perf_counter() - start}
    embedding_2d = None
    if map_2d:
        start = time.perf_counter()
        rows = sample_rows(x.shape[0], fit_sample, seed=seed, salt=1)
        knn = knn_graph(features[rows], n_neighbors=p.n_neighbors, metric=p.metric, seed=seed,
                        exact_knn_below=p.exact_knn_below)
        embedding_2d = _embed_all(features, rows, 2, p, chunk_size, knn, progress=False)
        timings["umap_2d"] = time.perf_counter() - start
    return ReduceResult(embedding=np.ascontiguousarray(x, dtype=np.float32), dims=int(out_dims),
                        embedding_2d=embedding_2d, scan=None, timings=timings)
