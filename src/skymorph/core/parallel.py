"""Process pools shared by the per-galaxy stages (ingest, measure).

Both helpers follow the compute session of the stage (:mod:`skymorph.core.compute`):
with ``[compute] scheduler = "local"`` they use this machine's processes; with a
Dask cluster (or ``synchronous``) :func:`start_pool` starts nothing and
:func:`map_ordered` sends every item there (or runs it here), so the stages call
them the same way whatever the scheduler.  A session's result cache makes the map
resumable: results already on disk from an interrupted run are not recomputed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from multiprocessing.context import BaseContext
from typing import Any

from . import compute

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

    With a Dask cluster or the ``synchronous`` scheduler (see
    :mod:`skymorph.core.compute`) nothing is started: the returned context gives
    ``None`` and :func:`map_ordered` sends the work where the session says.

    Raises
    ------
    RuntimeError
        If the workers cannot start (the message says what to do).
    """
    session = compute.current()
    if session is not None and session.scheduler not in compute.POOL_SCHEDULERS:
        return nullcontext(None)  # type: ignore[return-value]
    context = _context(preload)
    pool = ProcessPoolExecutor(workers, mp_context=context)
    # forked workers import nothing of the script, but they copy a hidden __main__ and keep it
    # (then e.g. astropy's first import there fails): hide it only for forkserver and spawn
    forked = context.get_start_method() == "fork"
    try:
        with nullcontext() if forked else _main_module_hidden():
            for future in [pool.submit(os.getpid) for _ in range(workers)]:
                future.result()
    except BrokenProcessPool as exc:
        pool.shutdown(cancel_futures=True)
        raise compute.ComputeError(f"the {workers} worker processes could not start ({exc}); "
                                   "run with --workers 1 to work in this process") from None
    return pool


def map_ordered(func: Callable[..., Any], items: Iterable[Any], *args: Any,
                pool: ProcessPoolExecutor | None = None, workers: int = 1) -> Iterator[Any]:
    """``func(item, *args)`` for every item, in order, in ``pool`` (or here when
    ``pool`` is None), with at most ``2 * workers`` items in flight so that memory
    does not grow with the number of items.

    Inside a stage whose scheduler is a Dask cluster the items go to the cluster
    (twice its threads in flight) and ``pool`` is ignored; with ``synchronous`` they
    run here.  Under ``threads`` the process pool is used as under ``local``: ingest and
    measure capture each galaxy's warnings, and Python's warning filters are
    per process, so their tasks must not share a process (for the same reason a Dask
    cluster must run them on one-thread workers).  Results of an interrupted run of
    the same stage are read back from its result cache instead of being computed
    again."""
    session = compute.current()
    cache = session.cache if session is not None else None
    if session is not None and session.scheduler not in compute.POOL_SCHEDULERS:
        if session.distributed:
            session.check_one_thread()
            yield from compute.ordered_map(func, items, args, submit=session.submit,
                                           in_flight=2 * session.slots(), cache=cache)
        else:  # synchronous
            yield from compute.ordered_map(func, items, args, submit=None, in_flight=1, cache=cache)
        return
    if pool is None or not isinstance(pool, ProcessPoolExecutor):
        yield from compute.ordered_map(func, items, args, submit=None, in_flight=1, cache=cache)
        return
    try:
        yield from compute.ordered_map(func, items, args, submit=pool.submit, in_flight=2 * workers,
                                       cache=cache)
    except BrokenProcessPool as exc:
        raise compute.ComputeError(f"a worker process died ({exc}); the finished chunks are kept: run the "
                                   "same command again to resume, with --workers 1 if it repeats") from None
