"""Zarr arrays of a run written and read chunk by chunk along the galaxy axis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

if TYPE_CHECKING:
    from .rundir import RunDir

# Zarr skips writing a chunk whose every value is the fill value (NaN); a chunk of
# all-NaN items (e.g. error maps of stamps that have none) would then read as lost.
_KEEP_EMPTY_CHUNKS = {"write_empty_chunks": True}


class ArrayWriter:
    """Append blocks of items to a Zarr array chunk by chunk.

    Memory stays at one chunk whatever the number of items: the buffer is
    flushed to disk each time it fills.
    """

    def __init__(self, path: Path, item_shape: tuple[int, ...], chunk: int,
                 dtype: str = "float32", attributes: dict[str, Any] | None = None) -> None:
        self.item_shape = tuple(item_shape)
        self.chunk = int(chunk)
        self.dtype = np.dtype(dtype)
        self.array = zarr.create_array(
            store=str(path), shape=(0, *self.item_shape), chunks=(self.chunk, *self.item_shape),
            dtype=self.dtype, fill_value=np.nan if self.dtype.kind == "f" else 0, overwrite=True,
            compressors=None, config=_KEEP_EMPTY_CHUNKS, attributes=attributes,
        )
        self._buffer = np.empty((self.chunk, *self.item_shape), dtype=self.dtype)
        self._filled = 0
        self.count = 0

    def append(self, item: np.ndarray) -> None:
        """Add one item."""
        self._buffer[self._filled] = item
        self._filled += 1
        self.count += 1
        if self._filled == self.chunk:
            self._flush()

    def extend(self, items: np.ndarray) -> None:
        """Add a block of items."""
        for item in items:
            self.append(item)

    def _flush(self) -> None:
        if self._filled:
            self.array.append(self._buffer[: self._filled], axis=0)
            self._filled = 0

    def close(self) -> zarr.Array:
        """Write what is buffered and return the array."""
        self._flush()
        return self.array

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OptionalArrayWriter:
    """An array of the run written only once some stamp has a value for it: NaN for
    the stamps before that and for every stamp without one, in stamp order (ingest's
    ``rms`` and ``psf``).  A stale array of that name is removed at once."""

    def __init__(self, run: RunDir, name: str, shape: tuple[int, int], chunk: int) -> None:
        self.run, self.name, self.shape, self.chunk = run, name, shape, chunk
        self.nan = np.full(shape, np.nan, dtype=np.float32)
        self.before = 0
        self.count = 0
        self.writer = None
        shutil.rmtree(run.array_path(name), ignore_errors=True)  # never leave a stale one

    def append(self, item: np.ndarray | None) -> None:
        if item is None:
            if self.writer is None:
                self.before += 1
            else:
                self.writer.append(self.nan)
            return
        if self.writer is None:
            self.writer = self.run.writer(self.name, self.shape, self.chunk)
            for _ in range(self.before):
                self.writer.append(self.nan)
        self.writer.append(item)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def iter_chunks(array: zarr.Array | np.ndarray, size: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)`` over axis 0, ``size`` items at a time (the
    array's own chunk length by default)."""
    n = array.shape[0]
    if size is None:
        size = array.chunks[0] if hasattr(array, "chunks") else 1024
    for start in range(0, n, size):
        yield start, np.asarray(array[start : start + size])



def write_rows(run: RunDir, name: str, data: np.ndarray, chunk: int) -> zarr.Array:
    """Write ``data`` as the new array ``name`` of ``run`` (:meth:`RunDir.create_array`,
    chunked by ``chunk`` items), one chunk at a time along axis 0."""
    array = run.create_array(name, data.shape, chunk)
    for start in range(0, data.shape[0], chunk):
        array[start:start + chunk] = data[start:start + chunk]
    return array


def input_stage(name: str) -> str:
    """The stage that writes the per-galaxy input array ``name`` (``features`` or ``embedding``)."""
    return "encode" if name == "features" else "reduce"


def galaxy_array(run: RunDir, name: str, n: int, *, error: type[Exception], hint: str = "") -> zarr.Array:
    """The run's array ``name``, checked to hold one row per catalog row (``n``).

    Raises
    ------
    error
        The array is missing (the message names the stage that writes it, then ``hint``) or
        its rows do not match the catalog's.
    """
    from .rundir import RunDirError

    try:
        array = run.open_array(name)
    except RunDirError:
        raise error(f"{run.path} has no '{name}' array; run `skymorph {input_stage(name)} {run.path}` "
                    f"first{hint}") from None
    if array.shape[0] != n:
        raise error(f"the '{name}' array has {array.shape[0]} rows but the catalog {n}; re-run the "
                    "pipeline stages")
    return array
