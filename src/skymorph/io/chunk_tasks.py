"""The per-chunk work of encode and denoise: read rows of a run's Zarr array, call the
network in :mod:`skymorph.core`, write the result rows.

A chunk task (:func:`encode_chunk`, :func:`denoise_chunk`) takes only paths and settings, so
that it runs the same here or on a Dask worker (which must see the run directory at the same
path); the network is built once per worker (:func:`skymorph.core.compute.worker_cached`).
:func:`encode_chunks` runs encode's chunks there or, with the encoder the stage already built,
in this process, reading the next chunk while the current one is encoded; :func:`denoise_chunks`
runs denoise's, this process using the CAE the stage holds.  :func:`read_sample`
reads a random sample of stamps chunk by chunk (denoise's training sample).

PyTorch is imported only inside the functions (through ``core``), so importing this module
stays light.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import EncodeConfig
from .arrays import iter_chunks
from .chunklog import ChunkLedger, chunk_map, chunk_rows

__all__ = ["encode_chunk", "encode_chunks", "denoise_chunk", "denoise_chunks", "cae_cache_key",
           "read_sample"]


# --- encode ---------------------------------------------------------------------------------


def encode_chunk(i: int, source: str, out: str, n: int, chunk: int, cfg: EncodeConfig,
                 threads: int) -> list[int]:
    """Encode chunk ``i`` of the image array at ``source`` into its rows of the
    features array at ``out`` (a Dask task; the encoder is built once per worker).

    Returns the rows whose image has no finite pixel (their features are NaN).
    """
    import zarr

    from ..core import encoders as _encoders
    from ..core.compute import worker_cached

    key = json.dumps(["encoder", dataclasses.asdict(cfg)], sort_keys=True, default=str)
    encoder = worker_cached(key, lambda: _encoders.build_encoder(cfg))
    if threads and encoder.device.type == "cpu":
        import torch

        torch.set_num_threads(threads)
    rows = chunk_rows(i, n, chunk)
    block = np.asarray(zarr.open_array(store=source, mode="r")[rows], dtype=np.float32)
    feats, empty = encoder.encode(block, int(cfg.batch_size))
    zarr.open_array(store=out, mode="r+")[rows] = feats
    return (np.flatnonzero(empty) + rows.start).tolist()


def encode_chunks(images: Any, source: str, out: str, encoder: Any, cfg: EncodeConfig, *, n: int,
                  chunk: int, threads: int, distributed: bool, ledger: ChunkLedger,
                  done: dict[int, Any], progress: bool) -> dict[int, Any]:
    """Encode the chunks of the image array ``images`` (at path ``source``) that ``done`` lacks
    into the features array at ``out``, recording each in ``ledger``.

    On a Dask cluster (``distributed``) each chunk is an :func:`encode_chunk` task, its worker
    building the encoder from ``cfg`` and using ``threads`` PyTorch threads; here, ``encoder``
    encodes them with ``threads`` threads (0: as they are; restored after), the next chunk read
    while this one is encoded.  Returns every chunk's rows without a finite pixel (the resumed
    chunks' included), as :func:`skymorph.io.chunklog.chunk_map` does.
    """
    if distributed:
        return chunk_map(encode_chunk, n, chunk, source, out, n, chunk, cfg, threads, ledger=ledger,
                         done=done, desc="encode", unit="img", progress=progress, gpu=True)
    import zarr

    from ..core.encoders import torch_threads

    features = zarr.open_array(store=out, mode="r+")
    batch_size = int(cfg.batch_size)

    def read(i: int) -> np.ndarray:
        return np.asarray(images[chunk_rows(i, n, chunk)], dtype=np.float32)

    def encode_block(i: int, block: np.ndarray, bar: Any) -> list[int]:
        # the bar moves per batch: a chunk of a large encoder takes minutes
        feats, empty = encoder.encode(block, batch_size, on_batch=bar.update)
        features[i * chunk : i * chunk + len(block)] = feats
        return (np.flatnonzero(empty) + i * chunk).tolist()

    with torch_threads(threads):
        return chunk_map(encode_chunk, n, chunk, ledger=ledger, done=done, desc="encode", unit="img",
                         progress=progress, read=read, local=encode_block)


# --- denoise --------------------------------------------------------------------------------


def cae_cache_key(model_hash: str, device: str) -> str:
    """The key under which a process holds the CAE of a checkpoint (its file hash) on a device."""
    return f"cae:{model_hash}:{device}"


def denoise_chunk(i: int, stamps: str, out: str, n: int, chunk: int, checkpoint: str, model_hash: str,
                  device: str, batch_size: int) -> None:
    """Denoise chunk ``i`` of the stamps at ``stamps`` into its region of the array at
    ``out`` (the per-chunk task, here or on a Dask worker: the CAE is loaded once per
    worker, on its GPU when it has one)."""
    from pathlib import Path

    import zarr

    from ..core import cae as _cae
    from ..core.compute import worker_cached

    def load() -> Any:
        model, _ = _cae.load_checkpoint(Path(checkpoint), _cae.resolve_device(device))
        return model

    model = worker_cached(cae_cache_key(model_hash, device), load)
    _cae.set_threads()
    rows = chunk_rows(i, n, chunk)
    block = np.asarray(zarr.open_array(store=stamps, mode="r")[rows])
    zarr.open_array(store=out, mode="r+")[rows] = _cae.apply_cae(block, model, batch_size=batch_size)


def denoise_chunks(stamps: str, out: str, model: Any, checkpoint: str, model_hash: str, *, n: int,
                   chunk: int, device: str, batch_size: int, ledger: ChunkLedger, done: dict[int, Any],
                   progress: bool) -> None:
    """Denoise the chunks of the stamps at ``stamps`` that ``done`` lacks into the array at
    ``out``, each a :func:`denoise_chunk` task (here or on the Dask cluster), recorded in
    ``ledger``.  This process uses ``model``, already in memory; a Dask worker loads
    ``checkpoint`` (whose file hash is ``model_hash``) once."""
    from ..core.compute import worker_cached

    worker_cached(cae_cache_key(model_hash, device), lambda: model)
    chunk_map(denoise_chunk, n, chunk, stamps, out, n, chunk, checkpoint, model_hash, device, batch_size,
              ledger=ledger, done=done, desc="denoise: apply CAE", unit="stamp", progress=progress,
              gpu=True)


def read_sample(array: Any, rows: np.ndarray, *, transform: Callable[[np.ndarray], np.ndarray],
                dtype: Any, desc: str, progress: bool) -> np.ndarray:
    """``transform`` of the sorted ``rows`` of ``array``, read chunk by chunk (a random sample
    of a large array costs one pass, not a read per row), stored as ``dtype``."""
    from tqdm.auto import tqdm

    out = np.empty((len(rows), *array.shape[1:]), dtype=dtype)
    filled = 0
    with tqdm(total=len(rows), desc=desc, unit="stamp", disable=not progress) as bar:
        for start, block in iter_chunks(array):
            lo, hi = np.searchsorted(rows, [start, start + len(block)])
            if hi > lo:
                out[filled:filled + hi - lo] = transform(block[rows[lo:hi] - start])
                filled += hi - lo
                bar.update(hi - lo)
    return out
