"""Similarity search: the galaxies nearest to a query in a run's feature space.

Plain array functions; the ``similar`` stage (:mod:`skymorph.stages.similar`) reads the
run's ``features`` (or ``embedding``) and writes the answer.

Two routes give the same kind of answer, ``(rows, distances)`` of the ``n`` nearest rows:

* :func:`exact_neighbors` - brute force in blocks (a matrix product per block), used below
  ``similar.exact_below`` galaxies;
* :class:`IVFIndex` - an inverted-file index stored beside the run: the rows are split into
  about sqrt(N) lists by (spherical, for the cosine metric) K-means, stored sorted by list in
  one ``.npy`` file that is memory-mapped, and a query scans only the ``probe`` lists whose
  centres are nearest, so it reads a few MB instead of the whole array and needs no
  compilation.  ``benchmarks/bench_similar.py`` measures it against pynndescent (recall@50,
  build time and memory, query time in a fresh process): pynndescent's searcher is compiled by
  numba in every new process, which alone takes longer than the 1 s a query may take.

Metrics: ``cosine`` (1 - cosine similarity; rows are L2-normalised once) and ``euclidean``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SkymorphError

__all__ = ["METRICS", "SearchError", "index_key", "normalise", "exact_neighbors", "IVFIndex", "build_ivf",
           "neighbor_precision", "class_lift"]

METRICS = ("cosine", "euclidean")


class SearchError(SkymorphError, ValueError):
    """A query cannot be answered (unknown metric, too few galaxies, a damaged index)."""


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise SearchError(f"similar.metric must be one of {', '.join(METRICS)} (got {metric!r})")


def index_key(upstream: str | None, *, metric: str, seed: int, space: str) -> str:
    """The key a stored index is reused under: the fingerprint of the searched array's stage and
    the index settings (a different key rebuilds the index)."""
    import hashlib

    text = json.dumps([upstream, metric, seed, space])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalise(x: np.ndarray, *, metric: str) -> np.ndarray:
    """The rows as the metric compares them: L2-normalised for ``cosine``, unchanged else.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    metric : {"cosine", "euclidean"}

    Returns
    -------
    ndarray of float32, shape (N, D)
    """
    _check_metric(metric)
    x = np.asarray(x, dtype=np.float32)
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norm > 0, norm, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def _distances(q: np.ndarray, x: np.ndarray, metric: str, x_sq: np.ndarray | None = None) -> np.ndarray:
    """Distances between normalised queries (m, D) and rows (b, D), shape (m, b)."""
    dot = q @ x.T
    if metric == "cosine":
        return np.maximum(1.0 - dot, 0.0)
    xs = (x * x).sum(axis=1) if x_sq is None else x_sq
    sq = (q * q).sum(axis=1)[:, None] + xs[None, :] - 2.0 * dot
    return np.sqrt(np.maximum(sq, 0.0))


def _top(dist: np.ndarray, rows: np.ndarray, n: int, exclude: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` smallest distances per query row (ties by row number), self rows left out."""
    m = dist.shape[0]
    out_rows = np.full((m, n), -1, dtype=np.int64)
    out_dist = np.full((m, n), np.inf, dtype=np.float32)
    for i in range(m):
        d, r = dist[i], rows
        if exclude is not None and exclude[i] >= 0:
            keep = r != exclude[i]
            d, r = d[keep], r[keep]
        k = min(n, d.size)
        if k == 0:
            continue
        part = np.argpartition(d, k - 1)[:k] if k < d.size else np.arange(d.size)
        order = np.lexsort((r[part], d[part]))
        out_rows[i, :k] = r[part][order]
        out_dist[i, :k] = d[part][order]
    return out_rows, out_dist


def exact_neighbors(x: np.ndarray, queries: np.ndarray, *, n: int, metric: str = "cosine",
                    exclude: np.ndarray | None = None, block: int = 16384,
                    normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` nearest rows of ``x`` to each query, by brute force.

    Parameters
    ----------
    x : ndarray, shape (N, D)
        The searched rows (NaN rows are never returned).
    queries : ndarray, shape (M, D)
    n : int
        Neighbours per query.
    metric : {"cosine", "euclidean"}
    exclude : ndarray of int, shape (M,), optional
        A row of ``x`` to leave out of each query's answer (the query itself; -1: none).
    block : int
        Rows compared at a time (bounds the memory to M x block distances).
    normalised : bool
        ``x`` and ``queries`` already went through :func:`normalise`.

    Returns
    -------
    rows : ndarray of int64, shape (M, n)
        Row numbers, nearest first; -1 where fewer than ``n`` rows exist.
    distances : ndarray of float32, shape (M, n)
    """
    if n < 1:
        raise SearchError(f"n must be at least 1 (got {n})")
    xn = x if normalised else normalise(x, metric=metric)
    q = queries if normalised else normalise(np.atleast_2d(queries), metric=metric)
    best_rows = np.full((q.shape[0], 0), -1, dtype=np.int64)
    best_dist = np.zeros((q.shape[0], 0), dtype=np.float32)
    for start in range(0, xn.shape[0], block):
        chunk = np.asarray(xn[start:start + block], dtype=np.float32)
        ok = np.isfinite(chunk).all(axis=1)
        rows = np.flatnonzero(ok) + start
        if not rows.size:
            continue
        dist = _distances(q, chunk[ok], metric)
        dist = np.concatenate([best_dist, dist], axis=1)
        rows_all = np.concatenate([best_rows, np.broadcast_to(rows, (q.shape[0], rows.size))], axis=1)
        best_rows, best_dist = _top_rows(dist, rows_all, n, exclude)
    if best_rows.shape[1] < n:
        pad = n - best_rows.shape[1]
        best_rows = np.pad(best_rows, ((0, 0), (0, pad)), constant_values=-1)
        best_dist = np.pad(best_dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return best_rows, best_dist


def _top_rows(dist: np.ndarray, rows: np.ndarray, n: int, exclude: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_top` with a row list per query (the running best + a new block)."""
    m = dist.shape[0]
    out_rows, out_dist = [], []
    for i in range(m):
        r, d = _top(dist[i:i + 1], rows[i], n, None if exclude is None else exclude[i:i + 1])
        keep = r[0] >= 0
        out_rows.append(r[0][keep])
        out_dist.append(d[0][keep])
    k = min(len(a) for a in out_rows)
    return (np.stack([a[:k] for a in out_rows]).astype(np.int64),
            np.stack([a[:k] for a in out_dist]).astype(np.float32))


# --- the stored approximate index -------------------------------------------------------------


@dataclass
class IVFIndex:
    """An inverted-file index: rows grouped by their nearest K-means centre.

    ``data`` holds the normalised rows sorted by list (a memory map when loaded),
    ``order`` the original row number of each stored row, ``offsets`` where each
    list starts, ``centres`` the list centres.
    """

    metric: str
    centres: np.ndarray
    offsets: np.ndarray
    order: np.ndarray
    data: np.ndarray
    sq_norms: np.ndarray
    info: dict[str, Any]

    @property
    def n_lists(self) -> int:
        return int(self.centres.shape[0])

    def search(self, queries: np.ndarray, *, n: int, probe: int = 16,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` nearest stored rows of each query, scanning its ``probe`` nearest lists.

        Parameters
        ----------
        queries : ndarray, shape (M, D)
            Raw (un-normalised) query vectors.
        n : int
        probe : int
            Lists scanned per query (more: higher recall, slower).
        exclude : ndarray of int, shape (M,), optional
            Original row to leave out of each answer (-1: none).

        Returns
        -------
        rows, distances : as :func:`exact_neighbors`.
        """
        q = normalise(np.atleast_2d(queries), metric=self.metric)
        probe = max(1, min(int(probe), self.n_lists))
        centre_d = _distances(q, self.centres, self.metric)
        rows_out = np.full((q.shape[0], n), -1, dtype=np.int64)
        dist_out = np.full((q.shape[0], n), np.inf, dtype=np.float32)
        for i in range(q.shape[0]):
            lists = np.argsort(centre_d[i], kind="stable")[:probe]
            # grow the probe until the scanned lists hold enough rows
            while True:
                spans = [(int(self.offsets[j]), int(self.offsets[j + 1])) for j in np.sort(lists)]
                size = sum(b - a for a, b in spans)
                if size > n or len(lists) >= self.n_lists:
                    break
                lists = np.argsort(centre_d[i], kind="stable")[:len(lists) * 2]
            stored = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.empty(0, np.int64)
            block = np.asarray(self.data[stored], dtype=np.float32)
            dist = _distances(q[i:i + 1], block, self.metric, self.sq_norms[stored])
            r, d = _top(dist, self.order[stored], n, None if exclude is None else exclude[i:i + 1])
            rows_out[i], dist_out[i] = r[0], d[0]
        return rows_out, dist_out

    def save(self, folder: str | os.PathLike) -> None:
        """Write the index to ``folder`` (``data.npy`` plus the small arrays and ``index.json``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("centres", "offsets", "order", "sq_norms", "data"):
            tmp = folder / f".{name}.npy.tmp"
            with tmp.open("wb") as fh:
                np.save(fh, np.asarray(getattr(self, name)))
            os.replace(tmp, folder / f"{name}.npy")
        tmp = folder / ".index.json.tmp"
        tmp.write_text(json.dumps({"metric": self.metric, **self.info}, indent=1))
        os.replace(tmp, folder / "index.json")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> IVFIndex:
        """Open a saved index; ``data`` is memory-mapped (nothing large is read)."""
        folder = Path(folder)
        try:
            info = json.loads((folder / "index.json").read_text())
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if name == "data" else None)
                      for name in ("centres", "offsets", "order", "sq_norms", "data")}
        except (OSError, ValueError) as exc:
            raise SearchError(f"the search index in {folder} is unreadable ({exc}); delete the folder "
                              "and search again to rebuild it") from None
        metric = info.pop("metric")
        return cls(metric=metric, info=info, **arrays)


def _lloyd(x: np.ndarray, k: int, *, metric: str, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """K-means centres of ``x`` by Lloyd's iterations from ``k`` seeded rows (spherical for cosine).

    The lists only need to be roughly balanced and compact (a query scans several of them), so
    a random start and a few float32 matrix-product iterations do; scikit-learn's k-means++ start
    and float64 convergence took 14 min for 20,000 x 2048 rows into 316 lists here.
    """
    from scipy import sparse

    centres = x[np.sort(rng.choice(len(x), k, replace=False))].copy()
    for _ in range(iterations):
        assign = _distances(x, centres, metric).argmin(axis=1)
        counts = np.bincount(assign, minlength=k)
        members = sparse.csr_matrix((np.ones(len(x), np.float32), (assign, np.arange(len(x)))),
                                    shape=(k, len(x)))
        sums = np.asarray(members @ x)
        filled = counts > 0
        # an empty list keeps its old centre rather than collapsing to the origin
        centres[filled] = sums[filled] / counts[filled, None]
        if metric == "cosine":
            centres = normalise(centres, metric="cosine")
    return centres.astype(np.float32)


def build_ivf(x: np.ndarray, *, metric: str = "cosine", n_lists: int | None = None, seed: int = 0,
              train_sample: int = 20000, iterations: int = 15) -> IVFIndex:
    """Build an :class:`IVFIndex` of the finite rows of ``x``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    metric : {"cosine", "euclidean"}
    n_lists : int, optional
        Number of lists; default ``round(sqrt(N))`` (at least 1).
    seed : int
        Seed of the K-means sample and initialisation.
    train_sample : int
        Rows (a seeded sample) the K-means centres are fitted on.
    iterations : int
        Lloyd iterations of the K-means that makes the lists.

    Returns
    -------
    IVFIndex
    """
    start = time.perf_counter()
    xn = normalise(x, metric=metric)
    ok = np.flatnonzero(np.isfinite(xn).all(axis=1))
    if ok.size < 2:
        raise SearchError(f"only {ok.size} galaxies have finite features; nothing to index")
    n_lists = int(n_lists or max(1, round(np.sqrt(ok.size))))
    n_lists = min(n_lists, ok.size)
    rng = np.random.default_rng(seed)
    sample = ok if ok.size <= train_sample else np.sort(rng.choice(ok, train_sample, replace=False))
    centres = _lloyd(xn[sample], n_lists, metric=metric, iterations=iterations, rng=rng)
    assign = np.empty(ok.size, dtype=np.int64)
    for a in range(0, ok.size, 16384):
        block = xn[ok[a:a + 16384]]
        assign[a:a + 16384] = _distances(block, centres, metric).argmin(axis=1)
    sort = np.argsort(assign, kind="stable")
    order = ok[sort]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=n_lists))]).astype(np.int64)
    data = xn[order]
    return IVFIndex(metric=metric, centres=centres, offsets=offsets, order=order.astype(np.int64),
                    data=data, sq_norms=(data * data).sum(axis=1).astype(np.float32),
                    info={"n_rows": int(ok.size), "n_lists": n_lists, "seed": seed,
                          "seconds_build": round(time.perf_counter() - start, 3)})


# --- how well the neighbours share a class ------------------------------------------------------


def neighbor_precision(neighbors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per query: the fraction of its neighbours that carry the query's label.

    Parameters
    ----------
    neighbors : ndarray of int, shape (M, k)
        Neighbour rows of each query (row ``i`` is galaxy ``i``'s list); -1 entries are ignored.
    labels : ndarray, shape (N,)

    Returns
    -------
    ndarray of float, shape (M,)
    """
    labels = np.asarray(labels)
    valid = neighbors >= 0
    same = (labels[np.where(valid, neighbors, 0)] == labels[: neighbors.shape[0], None]) & valid
    return same.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def class_lift(x: np.ndarray, labels: np.ndarray, *, ks: tuple[int, ...] = (10, 50),
               metric: str = "cosine") -> pd.DataFrame:
    """Precision@k of the exact neighbours per class, against the class's base rate.

    Every labelled galaxy is a query (itself left out); the precision of a class is the
    mean over its galaxies of the fraction of their ``k`` nearest labelled galaxies in
    the same class, and the lift is that precision over the class's share of the
    other labelled galaxies (the precision of neighbours drawn at random).

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Features of the labelled galaxies only.
    labels : ndarray, shape (N,)
    ks : tuple of int
    metric : {"cosine", "euclidean"}

    Returns
    -------
    DataFrame
        One row per class: ``class``, ``n``, ``base_rate`` and ``precision@k`` /
        ``lift@k`` per ``k``.
    """
    labels = np.asarray(labels).astype(str)
    kmax = max(ks)
    rows, _ = exact_neighbors(x, x, n=kmax, metric=metric, exclude=np.arange(len(labels)))
    out = []
    n = len(labels)
    for cls in sorted(set(labels)):
        members = labels == cls
        base = (members.sum() - 1) / (n - 1)
        row: dict[str, Any] = {"class": cls, "n": int(members.sum()), "base_rate": float(base)}
        for k in ks:
            precision = float(neighbor_precision(rows[:, :k], labels)[members].mean())
            row[f"precision@{k}"] = precision
            row[f"lift@{k}"] = precision / base if base > 0 else float("nan")
        out.append(row)
    return pd.DataFrame(out)
