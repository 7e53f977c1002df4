"""Process pools shared by the per-galaxy stages (ingest, measure)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
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


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep forkserver/spawn workers from re-running the user's script.

    Those start methods import the parent's ``__main__`` file in every worker
    (``multiprocessing.spawn.prepare``); a script without an
    ``if __name__ == "__main__":`` guard would then run again in each worker,
    against the same run directory.  The workers only run skymorph's own
    functions, so they need nothing from ``__main__``: hide its file and spec
    while the workers start.
    """
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        for name in saved:
            setattr(main, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def start_pool(workers: int, preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, all started before this function returns
    (fork-based pools start their workers on the first submit: do it now, before
    Zarr or tqdm start threads here).

    Raises
    ------
    RuntimeError
        If the workers cannot start (the message says what to do).
    """
    context = _context(preload)
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        with _main_module_hidden():
            for future in [pool.submit(os.getpid) for _ in range(workers)]:
                future.result()
    except BrokenProcessPool as exc:
        pool.shutdown(cancel_futures=True)
        raise RuntimeError(f"the {workers} worker processes could not start ({exc}); "
                           "run with --workers 1 to work in this process") from None
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
    try:
        for item in items:
            pending.append(pool.submit(func, item, *args))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise RuntimeError(f"a worker process died ({exc}); nothing of this stage was recorded as "
                           "finished: run the same command again, with --workers 1 if it repeats") from None
    try:
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise RuntimeError(f"a worker process died ({exc}); nothing of this stage was recorded as "
                           "finished: run the same command again, with --workers 1 if it repeats") from None
