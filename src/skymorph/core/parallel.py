"""Process pools shared by the per-galaxy stages (ingest, measure)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["start_pool", "map_ordered"]


def _context(preload: Sequence[str]) -> BaseContext:
    """``fork`` while this process has a single thread (workers start at once);
    otherwise ``forkserver`` with ``preload`` imported once in the server, since
    forking a process that runs threads (Zarr's I/O loop, a notebook's) can
    deadlock; ``spawn`` where neither exists."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context
    return multiprocessing.get_context("spawn")


def start_pool(workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, all started before this function returns
    (fork-based pools start their workers on the first submit: do it now, before
    Zarr or tqdm start threads here)."""
    pool = ProcessPoolExecutor(workers, mp_context=_context(preload))
    for future in [pool.submit(os.getpid) for _ in range(workers)]:
        future.result()
    return pool


def map_ordered(func: Callable[..., Any], items: Iterable[Any], *args: Any,
                pool: ProcessPoolExecutor | None = None, workers: int = 1) -> Iterator[Any]:
    """``func(item, *args)`` for every item, in order, in ``pool`` (or here when
    ``pool`` is None), with at most ``2 * workers`` items in flight so that memory
    does not grow with the number of items."""
    if pool is None:
        for item in items:
            yield func(item, *args)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(func, item, *args))
        if len(pending) >= 2 * workers:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
