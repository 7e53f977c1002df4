"""Where chunk work runs: this machine's process pool, or a Dask cluster.

One setting, ``[compute] scheduler``, chooses:

``local``
    the default: per-galaxy stages use this machine's process pool
    (:mod:`skymorph.core.parallel`) or run in this process; nothing to start.
``synchronous``
    every chunk in this process, in order (debugging, profiling).
``threads``
    a ``dask.distributed`` cluster of threads inside this process (one worker, a
    thread per core) for the array stages (denoise, polar, encode, the placement
    steps of reduce and cluster); ingest and measure keep the local process pool,
    because they capture each galaxy's warnings and warning filters are per process.
``tcp://HOST:PORT`` (any ``dask.distributed`` address)
    an existing Dask cluster: ``dask scheduler`` + ``dask worker`` started by hand,
    a ``dask_jobqueue.SLURMCluster``, a ``LocalCluster``... Its workers must import
    the same skymorph and see the run directory (and the inputs of ingest) at the
    same path: chunk tasks read their input from the run's Zarr arrays and write
    their output to their own region of it, so only small messages cross the
    network.

The executor (:func:`skymorph.stages.execute`) opens a :class:`Session` for the
stage being computed and makes it :func:`current`; the stages and
:func:`skymorph.core.parallel.map_ordered` ask it where to send their chunks.

Heavy state (an encoder, a CAE) is built once per worker process by
:func:`worker_cached`, keyed by the settings that define it, not once per task.
A worker that advertises a GPU (``dask worker ADDRESS --resources GPU=1``) gets
the encoder and CAE tasks (:meth:`Session.gpu_resources`).

A worker that dies mid-task is replaced by Dask, which runs its tasks again
elsewhere; every chunk task writes whole chunks of its own region, so a rerun
writes the same bytes.  What was finished is recorded by the client (see
:mod:`skymorph.io.chunklog`), so a client that dies resumes from there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..errors import SkymorphError

__all__ = ["ComputeError", "Session", "session", "current", "check_scheduler", "worker_cached",
           "run_chunks", "ordered_map", "LOCAL_SCHEDULERS"]

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("local", "synchronous", "threads")
POOL_SCHEDULERS = ("local", "threads")
"""Schedulers under which ingest and measure use this machine's process pool."""


class ComputeError(SkymorphError, RuntimeError):
    """The chosen scheduler cannot be used (no answer, no workers, workers that cannot
    see the run directory, a task that keeps killing its worker)."""


DASK_PROTOCOLS = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
"""Protocols of a Dask scheduler address."""


def check_scheduler(value: str) -> str:
    """``value`` if it names a scheduler, else a :class:`ComputeError` saying what is allowed."""
    if value in LOCAL_SCHEDULERS:
        return value
    if "://" in str(value):
        from urllib.parse import urlsplit

        parts = urlsplit(str(value))
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in DASK_PROTOCOLS:
            raise ComputeError(
                f"compute.scheduler = {value!r}: {parts.scheme}:// is not a Dask protocol (the dashboard's "
                f"http address is not the scheduler's); give the scheduler's, e.g. tcp://HOST:8786")
        if parts.scheme != "inproc" and (not parts.hostname or port == -1):
            raise ComputeError(
                f"compute.scheduler = {value!r} names no host or a bad port; give the scheduler's "
                "address, e.g. tcp://HOST:8786")
        return value
    raise ComputeError(
        f"compute.scheduler = {value!r} is neither local, threads, synchronous nor a Dask scheduler "
        "address such as tcp://HOST:8786")


_CURRENT: ContextVar[Session | None] = ContextVar("skymorph_compute_session", default=None)


def current() -> Session | None:
    """The session of the stage being computed (``None`` outside the executor)."""
    return _CURRENT.get()


@dataclass
class Session:
    """Where the chunks of one stage run.

    ``cache`` (set by the executor) keeps the results of ordered maps on disk so
    that a stage run again after its client died resumes (see
    :class:`skymorph.io.chunklog.ResultCache`).
    """

    scheduler: str = "local"
    client: Any = None
    cluster: Any = None
    cache: Any = None
    _slots: int | None = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        """Chunks go to a Dask cluster."""
        return self.client is not None

    def slots(self) -> int:
        """Task threads of the whole cluster (1 when not distributed)."""
        if not self.distributed:
            return 1
        if self._slots is None:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            self._slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        return self._slots

    def check_one_thread(self) -> None:
        """Refuse workers with several task threads for ingest and measure: those
        capture each galaxy's warnings, and Python's warning filters are shared by a
        process's threads, so a warning could be filed under another galaxy."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        many = {address: w.get("nthreads") for address, w in workers.items() if w.get("nthreads", 1) > 1}
        if many:
            address, count = next(iter(many.items()))
            raise ComputeError(
                f"ingest and measure need Dask workers with one thread each (they capture each "
                f"galaxy's warnings, which Python shares between a process's threads); worker "
                f"{address} has {count}. Start them with `dask worker ADDRESS --nthreads 1 --nworkers "
                "CORES` (LocalCluster(threads_per_worker=1), SLURMCluster(processes=CORES))")

    def gpu_resources(self) -> dict[str, float] | None:
        """``{"GPU": 1}`` when some worker advertises a GPU resource (then encoder
        and CAE tasks go only to those workers), else ``None``."""
        if not self.distributed:
            return None
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return {"GPU": 1} if any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers) else None

    def submit(self, func: Callable[..., Any], *args: Any, resources: dict[str, float] | None = None):
        return self.client.submit(func, *args, pure=False, resources=resources)


@contextlib.contextmanager
def session(scheduler: str = "local", *, connect_timeout: float = 10.0,
            run_path: str | os.PathLike | None = None) -> Iterator[Session]:
    """Open the compute session for ``scheduler`` and make it :func:`current`.

    Parameters
    ----------
    scheduler : str
        ``local``, ``synchronous``, ``threads`` or a scheduler address.
    connect_timeout : float
        Seconds to wait for the scheduler (and for its first worker).
    run_path : path, optional
        The run directory; with a cluster, every worker is asked whether it sees it.

    Raises
    ------
    ComputeError
        The scheduler does not answer in time, has no workers, or its workers cannot
        see the run directory or import skymorph.
    """
    check_scheduler(scheduler)
    opened = Session(scheduler)
    if scheduler == "threads":
        opened = _threads_session()
    elif scheduler not in LOCAL_SCHEDULERS:
        opened = _connect(scheduler, connect_timeout, run_path)
    token = _CURRENT.set(opened)
    try:
        yield opened
    finally:
        _CURRENT.reset(token)
        close(opened)


def close(opened: Session) -> None:
    """Close a session's client (and the cluster it started), quietly."""
    if opened.client is not None:
        opened.client.close()
    if opened.cluster is not None:
        opened.cluster.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_session() -> Session:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=_cores(), processes=False,
                           dashboard_address=":0")
    return Session("threads", client=Client(cluster), cluster=cluster)


def _connect(address: str, timeout: float, run_path: str | os.PathLike | None) -> Session:
    from distributed import Client

    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ComputeError(
            f"no Dask scheduler answered at {address} within {timeout:g} s ({type(exc).__name__}); "
            "start one (`dask scheduler`, then `dask worker ADDRESS` on each machine), check the "
            "address and the firewall, or run with --scheduler local") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError):
            raise ComputeError(f"the Dask scheduler at {address} has no workers (waited {timeout:g} s); "
                               f"start some with `dask worker {address}`") from None
        if run_path is not None:
            _check_workers(client, address, str(run_path))
    except BaseException:
        client.close()
        raise
    return Session(address, client=client)


def _worker_view(path: str) -> tuple[str | None, bool]:
    try:
        from skymorph import __version__
    except ImportError:
        return None, False
    return __version__, os.path.exists(os.path.join(path, "skymorph.json"))


def _check_workers(client: Any, address: str, path: str) -> None:
    from .._version import __version__

    path = os.path.abspath(path)
    try:
        views = client.run(_worker_view, path)
    except Exception as exc:  # noqa: BLE001 - e.g. the workers cannot unpickle skymorph's function
        raise ComputeError(f"the workers of {address} cannot run skymorph ({type(exc).__name__}: {exc}); "
                           f"install the same skymorph ({__version__}) in their environment") from None
    for worker, (version, sees) in views.items():
        if version is None:
            raise ComputeError(f"worker {worker} of {address} cannot import skymorph; install the same "
                               f"skymorph ({__version__}) in the workers' environment")
        if version != __version__:
            raise ComputeError(f"worker {worker} of {address} runs skymorph {version}, this client "
                               f"{__version__}; install the same version on both sides")
        if not sees:
            raise ComputeError(f"worker {worker} of {address} does not see the run directory {path}; "
                               "workers read and write it directly, so it must be on a filesystem they "
                               "share, at the same path")


# --- worker-side state ---------------------------------------------------------------------

_WORKER_STATE: dict[str, Any] = {}
_WORKER_LOCK = threading.Lock()


def worker_cached(key: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per process for each ``key`` (an encoder, a CAE...), then the
    same object for every later task of this worker.  Keep keys to the settings
    that define the object; a few objects are held at most (the oldest is dropped)."""
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            while len(_WORKER_STATE) >= 4:
                _WORKER_STATE.pop(next(iter(_WORKER_STATE)))
            _WORKER_STATE[key] = build()
        return _WORKER_STATE[key]


# --- maps -------------------------------------------------------------------------------------


class _Later:
    """A call made when its result is asked for (the in-process 'future')."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def result(self) -> Any:
        return self.func(*self.args)


def _result(future: Any) -> Any:
    """A task's result; a worker killed over and over is a :class:`ComputeError` that says why."""
    try:
        return future.result()
    except Exception as exc:
        killed = _killed(exc)
        if killed is not None:
            raise killed from None
        raise


def _killed(exc: BaseException) -> ComputeError | None:
    if type(exc).__name__ == "KilledWorker":
        return ComputeError(f"a chunk task killed its Dask worker several times ({exc}); it probably "
                            "runs out of memory there: give the workers more memory or lower the chunk "
                            "size. Finished chunks are kept: run the same command again to resume")
    return None


def ordered_map(func: Callable[..., Any], items: Iterable[Any], args: tuple[Any, ...], *,
                submit: Callable[..., Any] | None, in_flight: int, cache: Any = None
                ) -> Iterator[Any]:
    """``func(item, *args)`` for every item, yielded in order, with at most
    ``in_flight`` submitted ahead.  ``submit(func, *call_args)`` returns something
    with ``.result()`` (a concurrent or Dask future); ``None`` calls in this process.
    With a ``cache`` (a :class:`~skymorph.io.chunklog.ResultCache`), results already
    on disk are not computed again and new ones are stored as they arrive."""
    call = cache.next_call() if cache is not None else None
    pending: deque = deque()

    def take() -> Any:
        index, cached, handle = pending.popleft()
        if cached:
            return cache.get(call, index)
        value = _result(handle)
        if cache is not None:
            cache.put(call, index, value)
        return value

    for index, item in enumerate(items):
        if cache is not None and cache.has(call, index):
            pending.append((index, True, None))
        elif submit is None:
            pending.append((index, False, _Later(func, (item, *args))))
        else:
            pending.append((index, False, submit(func, item, *args)))
        if len(pending) >= max(1, in_flight):
            yield take()
    while pending:
        yield take()


def run_chunks(func: Callable[..., Any], indices: Iterable[int], *args: Any,
               on_done: Callable[[int, Any], None], gpu: bool = False) -> None:
    """Run ``func(index, *args)`` for every chunk index, in this process or on the
    cluster of the current session, and call ``on_done(index, result)`` here as each
    one finishes (in any order on a cluster).  ``func`` writes its own region of the
    output, so ``on_done`` only records it; at most twice the cluster's threads are
    in flight, so memory does not grow with the number of chunks.  ``gpu``: send
    the tasks to GPU workers when the cluster has some."""
    opened = current()
    if opened is None or not opened.distributed:
        for index in indices:
            on_done(index, func(index, *args))
        return
    from distributed import as_completed

    resources = opened.gpu_resources() if gpu else None
    todo = iter(indices)
    in_flight = 2 * opened.slots()
    index_of: dict[Any, int] = {}
    queue = as_completed(loop=opened.client.loop)
    for index in todo:
        future = opened.submit(func, index, *args, resources=resources)
        index_of[future] = index
        queue.add(future)
        if len(index_of) >= in_flight:
            break
    try:
        for future in queue:
            index = index_of.pop(future)
            value = _result(future)
            on_done(index, value)
            nxt = next(todo, None)
            if nxt is not None:
                new = opened.submit(func, nxt, *args, resources=resources)
                index_of[new] = nxt
                queue.add(new)
    finally:
        for future in index_of:
            future.cancel()
