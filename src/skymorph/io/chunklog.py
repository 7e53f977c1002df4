"""What a chunked stage has finished, so that a stage run again resumes there.

Two records, both under ``RUN_DIR/stages/`` and both removed when the stage
finishes:

:class:`ChunkLedger` (``<stage>.partial.jsonl``)
    for stages whose chunk tasks write their own region of a Zarr array (polar,
    denoise inference): a header line with a key (the stage fingerprint and
    everything else that decides the bytes written), then one line per finished
    chunk, appended and fsynced only once the chunk is on disk.  A torn last line
    (a kill while writing it) is ignored; a chunk written but not recorded is
    simply redone, and writes the same bytes.
:class:`ResultCache` (``<stage>.parts/<fingerprint>/``)
    for stages whose tasks return results that the client writes in order (ingest,
    measure, through :func:`skymorph.core.parallel.map_ordered`): each task's
    result is pickled to its own file as it arrives, and a stage run again with
    the same fingerprint reads those instead of computing them.

:func:`chunk_map` is the one chunk loop of the chunked stages (polar, denoise,
encode): it skips the chunks the ledger records, runs the rest, records each and
shows progress.  (``encode`` used to keep its own ``encode.partial.json``; an
older run directory's file is ignored with a note, and the stage redoes its chunks.)
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_file

__all__ = ["ChunkLedger", "ResultCache", "chunk_map", "chunk_rows", "chunk_slices", "clear_parts",
           "create_chunked", "drop_old_record", "open_chunked", "resume_or_create"]


class ChunkLedger:
    """Append-only record of the finished chunks of one stage.

    Parameters
    ----------
    run_path : path
        The run directory.
    stage : str
        Stage name (the file is ``stages/<stage>.partial.jsonl``).
    key : str
        What must match for a resume (fingerprint, shapes, chunking...).
    """

    def __init__(self, run_path: str | os.PathLike, stage: str, key: str) -> None:
        self.path = Path(run_path) / "stages" / f"{stage}.partial.jsonl"
        self.key = key
        self.done: dict[int, Any] = {}

    def resume(self) -> dict[int, Any]:
        """The chunks recorded under the same key (index -> info); empty otherwise."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            return {}
        if header.get("key") != self.key:
            return {}
        done: dict[int, Any] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # torn last line
                break
            done[int(entry["chunk"])] = entry.get("info")
        self.done = done
        return dict(done)

    def start(self) -> None:
        """Start a new record (forgetting any other)."""
        self.path.parent.mkdir(exist_ok=True)
        with atomic_file(self.path) as tmp, tmp.open("w") as fh:
            fh.write(json.dumps({"key": self.key}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done = {}

    def record(self, chunk: int, info: Any = None) -> None:
        """Record that ``chunk`` is on disk (call only after its write returned)."""
        with self.path.open("a") as fh:
            fh.write(json.dumps({"chunk": int(chunk), "info": info}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[int(chunk)] = info

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ResultCache:
    """Task results of one stage run, kept on disk until the stage finishes.

    Results are keyed by ``(call, index)``: the n-th ordered map of the stage and
    the position of the item in it, which are the same when the same stage runs
    again with the same fingerprint (its plan of work is deterministic).
    """

    def __init__(self, run_path: str | os.PathLike, stage: str, fingerprint: str) -> None:
        parts = Path(run_path) / "stages" / f"{stage}.parts"
        if parts.is_dir():  # results of other settings or inputs are of no use
            for old in parts.iterdir():
                if old.name != fingerprint:
                    shutil.rmtree(old, ignore_errors=True)
        self.root = parts / fingerprint
        self._calls = 0
        self.n_reused = 0

    def next_call(self) -> int:
        self._calls += 1
        return self._calls - 1

    def _path(self, call: int, index: int) -> Path:
        return self.root / f"{call}-{index}.pkl"

    def has(self, call: int, index: int) -> bool:
        return self._path(call, index).exists()

    def get(self, call: int, index: int) -> Any:
        with self._path(call, index).open("rb") as fh:
            value = pickle.load(fh)
        self.n_reused += 1
        return value

    def put(self, call: int, index: int, value: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path(call, index)) as tmp, tmp.open("wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)


def clear_parts(run_path: str | os.PathLike, stage: str) -> None:
    """Remove a finished stage's resume records."""
    stages = Path(run_path) / "stages"
    shutil.rmtree(stages / f"{stage}.parts", ignore_errors=True)
    (stages / f"{stage}.partial.jsonl").unlink(missing_ok=True)


def drop_old_record(path: str | os.PathLike) -> bool:
    """Remove a resume record that an older skymorph wrote in another format (never read:
    its chunks are simply redone); True when there was one, for the stage's note."""
    path = Path(path)
    if not path.exists():
        return False
    path.unlink(missing_ok=True)
    return True


def create_chunked(path: str | os.PathLike, shape: tuple[int, ...], chunk: int,
                   dtype: str = "float32") -> Any:
    """A new (overwritten) uncompressed Zarr array chunked by ``chunk`` galaxies along
    axis 0, filled with NaN until written: the layout :class:`~skymorph.io.rundir.ArrayWriter`
    gives, written region by region by chunk tasks instead of appended."""
    import zarr

    return zarr.create_array(store=str(path), shape=tuple(shape), chunks=(int(chunk), *shape[1:]),
                             dtype=dtype, fill_value=np.nan if np.dtype(dtype).kind == "f" else 0,
                             overwrite=True, compressors=None)


def open_chunked(path: str | os.PathLike, shape: tuple[int, ...], chunk: int) -> Any:
    """The array at ``path`` opened for writing when it has this shape and chunking, else ``None``."""
    import zarr

    try:
        array = zarr.open_array(store=str(path), mode="r+")
    except Exception:  # noqa: BLE001 - missing or unreadable: start over
        return None
    if tuple(array.shape) != tuple(shape) or int(array.chunks[0]) != int(chunk):
        return None
    return array


def resume_or_create(ledger: ChunkLedger, path: str | os.PathLike, shape: tuple[int, ...], chunk: int,
                     create: Callable[[], Any] | None = None) -> dict[int, Any]:
    """The chunks ``ledger`` records as finished when the array at ``path`` still holds them;
    otherwise an empty dict, after creating the array afresh (with ``create`` when given,
    else :func:`create_chunked`) and starting a new ledger."""
    done = ledger.resume()
    if done and open_chunked(path, shape, chunk) is not None:
        return done
    if create is not None:
        create()
    else:
        create_chunked(path, shape, chunk)
    ledger.start()
    return {}


def chunk_rows(i: int, n: int, chunk: int) -> slice:
    """The rows of chunk ``i`` of ``n`` rows cut in chunks of ``chunk``."""
    return slice(i * chunk, min(n, (i + 1) * chunk))


def chunk_slices(n: int, chunk: int) -> list[slice]:
    """The row slices of ``n`` rows cut in chunks of ``chunk`` (the last one shorter)."""
    return [chunk_rows(i, n, chunk) for i in range(-(-n // chunk))]


def chunk_map(task: Callable[..., Any], n: int, chunk: int, *args: Any, ledger: ChunkLedger,
              done: dict[int, Any], desc: str, unit: str = "item", progress: bool = True,
              gpu: bool = False, read: Callable[[int], Any] | None = None,
              local: Callable[[int, Any, Any], Any] | None = None) -> dict[int, Any]:
    """Run the chunks of ``n`` rows that ``done`` (from :func:`resume_or_create`) lacks.

    By default each chunk is ``task(i, *args)`` through
    :func:`skymorph.core.compute.run_chunks` (here or on the cluster); the task writes
    its own rows of the output and returns the info recorded for the chunk.  With
    ``read`` and ``local`` (in this process only) the next chunk is read by
    ``read(i)`` while ``local(i, block, bar)`` works on the current one (prefetch) and
    writes its rows, returning the info.  Each chunk is recorded in ``ledger`` only
    after it returned, so a kill in between redoes it.  Returns the info of every
    chunk, the resumed ones included.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    todo = [i for i in range(-(-n // chunk)) if i not in done]
    infos = dict(done)

    def size(i: int) -> int:
        rows = chunk_rows(i, n, chunk)
        return rows.stop - rows.start

    with tqdm(total=n, initial=sum(size(i) for i in done), desc=desc, unit=unit,
              disable=not progress) as bar:
        def finished(i: int, info: Any, update: bool = True) -> None:
            ledger.record(i, info)
            infos[i] = info
            if update:
                bar.update(size(i))

        if read is not None and local is not None:
            # the next chunk is read (and decompressed) while this one is worked on
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(read, todo[0]) if todo else None
                for pos, i in enumerate(todo):
                    block = pending.result()
                    if pos + 1 < len(todo):
                        pending = pool.submit(read, todo[pos + 1])
                    finished(i, local(i, block, bar), update=False)
        else:
            from ..core.compute import run_chunks

            run_chunks(task, todo, *args, on_done=finished, gpu=gpu)
    return infos
