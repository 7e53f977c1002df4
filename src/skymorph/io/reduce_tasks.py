"""Reduce on a Dask cluster: place every chunk of a run's features into its embeddings.

Past one machine's memory the reduce stage fits UMAP on a sample of the features, then
:func:`place_embeddings` sends one :func:`place_chunk` task per chunk of galaxies to the
cluster; each task reads its own rows of the features array and writes its own rows of
every output array, so no array crosses the network whole.  The science,
:func:`skymorph.core.reduction.place_rows`, is in ``core``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.compute import run_chunks
from ..core.reduction import ReduceResult, check_features, place_rows
from .chunklog import create_chunked

__all__ = ["place_chunk", "place_embeddings"]


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


def place_embeddings(result: ReduceResult, fit_rows: np.ndarray, *, features: Path,
                     outputs: dict[str, Path], n: int, chunk: int, map_2d: bool,
                     scatter: Callable[[Any], Any], progress: bool = True) -> None:
    """Create the output arrays of the models ``result`` fitted on the rows ``fit_rows``
    and fill them chunk by chunk with :func:`place_chunk` tasks.

    Parameters
    ----------
    result : ReduceResult
        The reduction of the ``fit_rows`` sample (its ``models`` by dimension).
    fit_rows : ndarray of int
        The rows of the features it was fitted on (placed as fitted, not transformed).
    features : Path
        The run's ``features`` array.
    outputs : dict
        ``{"embedding": path, "embedding_2d": path}``: where each array goes; the 2-D map
        only with ``map_2d``.
    n, chunk : int
        Galaxies, and galaxies per task (the arrays' chunk length).
    scatter : callable
        Sends a fitted model to every worker once and returns its handle (the Dask
        client's ``scatter``).
    progress : bool
        Show a progress bar.
    """
    placed = []
    for name, dims in (("embedding", result.dims), ("embedding_2d", 2)):
        if dims in result.models and (name == "embedding" or map_2d):
            create_chunked(outputs[name], (n, dims), chunk)
            placed.append((str(outputs[name]), scatter(result.models[dims])))
    with tqdm(total=n, desc="reduce: place", unit="galaxy", disable=not progress) as bar:
        run_chunks(place_chunk, range(-(-n // chunk)), str(features), placed, n, chunk, fit_rows,
                   on_done=lambda i, _: bar.update(min(n, (i + 1) * chunk) - i * chunk))
