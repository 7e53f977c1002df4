"""Answering 'more like this': the search index kept under a key, a new cutout's features, the
table of neighbours.

The searches themselves are :mod:`skymorph.core.search`; the ``similar`` stage
(:mod:`skymorph.stages.similar`) reads the run, unpacks the settings and writes what these
functions return.  Plain arrays and tables in and out; the index lives in a folder the caller
names (the stage: ``RUN_DIR/similar/index/``).

:func:`stored_index`
    The index stored in a folder, if it was built under the same key.
:func:`build_index`
    Build the index of an array, store it under a key and load it back (memory-mapped).
:func:`cutout_features`
    The features of one new stamp, made by the run's own denoise / polar steps and encoder.
:func:`neighbour_table`
    The neighbours of every query as one table, the query itself at rank 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .search import IVFIndex, SearchError, build_ivf

__all__ = ["stored_index", "build_index", "cutout_features", "neighbour_table"]


def stored_index(folder: str | os.PathLike, *, key: str) -> IVFIndex | None:
    """The index stored in ``folder`` when it was built under ``key``; else ``None``.

    Parameters
    ----------
    folder : str or Path
        Where :func:`build_index` stored it.
    key : str
        :func:`skymorph.core.search.index_key` of the searched array and the index settings.

    Returns
    -------
    IVFIndex or None
        ``None`` where there is none, its key differs or it is damaged (it is then rebuilt).

    See Also
    --------
    build_index

    Examples
    --------
    >>> import tempfile
    >>> from skymorph.core.similar import stored_index
    >>> stored_index(tempfile.mkdtemp(), key="abc") is None
    True
    """
    meta = Path(folder) / "index.json"
    if meta.exists():
        try:
            if json.loads(meta.read_text()).get("key") == key:
                return IVFIndex.load(folder)
        except (ValueError, SearchError):  # a damaged index is built again
            pass
    return None


def build_index(x: Any, folder: str | os.PathLike, *, key: str, metric: str, seed: int) -> IVFIndex:
    """Build the inverted-file index of ``x``, store it in ``folder`` under ``key`` and load it.

    Parameters
    ----------
    x : array-like, shape (N, D)
        The searched rows (a zarr array is read once).
    folder : str or Path
        Where the index is stored.
    key : str
        What :func:`stored_index` checks before reusing it.
    metric : {"cosine", "euclidean"}
        Distance the index answers in.
    seed : int
        Seed of the K-means that splits the rows into lists.

    Returns
    -------
    IVFIndex
        Loaded from ``folder`` (its rows memory-mapped), as every later query loads it.

    See Also
    --------
    skymorph.core.search.build_ivf, stored_index

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skymorph.core.similar import build_index, stored_index
    >>> folder = tempfile.mkdtemp()
    >>> x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    >>> index = build_index(x, folder, key="abc", metric="euclidean", seed=0)
    >>> rows, _ = index.search(x[:1], n=1, probe=index.n_lists)
    >>> int(rows[0, 0]), stored_index(folder, key="abc") is not None
    (0, True)
    """
    index = build_ivf(np.asarray(x[:], dtype=np.float32), metric=metric, seed=seed)
    index.info["key"] = key
    index.save(folder)
    return IVFIndex.load(folder)


def cutout_features(stamp: np.ndarray, *, encoder: Any, cae_model: Any = None,
                    polar: dict[str, Any] | None = None) -> np.ndarray | None:
    """The features of one stamp, made the way the run made its own.

    Parameters
    ----------
    stamp : ndarray, shape (S, S)
        A stamp cut like the run's (:func:`skymorph.core.stamps.make_stamp`).
    encoder : Encoder
        The run's encoder (:func:`skymorph.core.encoders.build_encoder`).
    cae_model : torch module, optional
        The run's denoising autoencoder, where it denoises its stamps.
    polar : dict, optional
        Keyword arguments of :func:`skymorph.core.apct.apct`, where the run turns its stamps
        into polar images.

    Returns
    -------
    ndarray, shape (D,) or None
        ``None`` where the stamp has no finite pixel.

    See Also
    --------
    skymorph.core.encoders.Encoder.encode

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.similar import cutout_features
    >>> class Mean:  # a stand-in encoder: one feature, the mean
    ...     def encode(self, images, batch_size):
    ...         return images.mean(axis=(1, 2))[:, None], ~np.isfinite(images).any(axis=(1, 2))
    >>> cutout_features(np.ones((4, 4)), encoder=Mean()).tolist()
    [1.0]
    """
    images = stamp[None].astype(np.float32)
    if cae_model is not None:
        from .cae import apply_cae

        images = apply_cae(images, cae_model)
    if polar is not None:
        from .apct import apct

        images = apct(images, **polar)
    features, empty = encoder.encode(images, 1)
    return None if empty[0] else features[0]


def neighbour_table(found: np.ndarray, dist: np.ndarray, *, names: Sequence[str], rows: Sequence[int],
                    table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The neighbours of every query as one table.

    Parameters
    ----------
    found, dist : ndarray, shape (Q, n)
        Rows and distances of each query's neighbours (``-1`` rows are no neighbour), as
        :func:`skymorph.core.search.exact_neighbors` and :meth:`IVFIndex.search` give them.
    names : sequence of str
        Name of each query.
    rows : sequence of int
        Row of each query in ``table``; ``-1`` for a query from outside it (a new image),
        which gets no rank-0 line.
    table : DataFrame
        The searched galaxies: ``id`` and ``columns``, one row per searched row.
    columns : sequence of str
        Columns of ``table`` copied to every line.

    Returns
    -------
    DataFrame
        ``query``, ``rank`` (0: the query itself), ``id``, ``row``, ``distance`` and
        ``columns``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from skymorph.core.similar import neighbour_table
    >>> table = pd.DataFrame({"id": ["a", "b", "c"], "cluster": [0, 1, 1]})
    >>> t = neighbour_table(np.array([[2, -1]]), np.array([[0.5, np.inf]]), names=["b"], rows=[1],
    ...                     table=table, columns=["cluster"])
    >>> t[["rank", "id", "distance", "cluster"]].values.tolist()
    [[0, 'b', 0.0, 1], [1, 'c', 0.5, 1]]
    """
    lines = []
    for i, name in enumerate(names):
        if rows[i] >= 0:
            lines.append({"query": name, "rank": 0, "row": int(rows[i]), "distance": 0.0})
        keep = found[i] >= 0
        lines += [{"query": name, "rank": r + 1, "row": int(row), "distance": float(d)}
                  for r, (row, d) in enumerate(zip(found[i][keep], dist[i][keep], strict=True))]
    result = pd.DataFrame(lines)
    result.insert(2, "id", table["id"].astype(str).to_numpy()[result["row"].to_numpy()])
    for col in columns:
        result[col] = table[col].to_numpy()[result["row"].to_numpy()]
    return result
