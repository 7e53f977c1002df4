"""Encode: a pretrained network turns every image into a feature vector.

The stage reads the newest image array of the run (``polar`` when the polar stage
is enabled, else ``denoised`` when the denoise stage is enabled, else
``stamps``), encodes it in batches with the chosen encoder (see
:mod:`skymorph.core.encoders` for the registry and the preprocessing: per-image
intensity mapping, resize with the model's own size and interpolation,
normalisation with the model's own statistics, single band replicated to three
channels) and writes ``features`` (N x D float32, same order as the sources).

The work is done chunk by chunk (``encode.chunk_size`` images): after each chunk
is written, ``stages/encode.partial.json`` records it atomically, so a run that
is interrupted (killed, out of time) resumes at the first unfinished chunk and
produces exactly the features an uninterrupted run would.  A resume happens
only with the same encoder, weights, settings, batch size, device, precision
and thread count; anything else starts over.

Images without a single finite pixel (e.g. left empty by an upstream stage) get a
NaN feature row and a line in ``rejects.csv``; they never stop the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import Config
from ..io.rundir import RunDir, RunDirError

__all__ = ["encode", "input_array"]

log = logging.getLogger(__name__)

PARTIAL = "encode.partial.json"
# settings that change how the work is cut and run, not what it computes: they are
# left out of the stage fingerprint (so a bigger batch does not recompute a finished
# run) but are part of the resume key (so resumed chunks match bit for bit)
_EXECUTION_KEYS = ("batch_size", "chunk_size", "device", "threads")


def input_array(config: Config) -> tuple[str, str]:
    """Array the encode stage reads and the stage that writes it.

    ``polar`` (polar stage) when ``config.polar.enabled``, else ``denoised``
    (denoise stage) when ``config.denoise.enabled``, else ``stamps`` (ingest).
    """
    if config.polar.enabled:
        return "polar", "polar"
    if config.denoise.enabled:
        return "denoised", "denoise"
    return "stamps", "ingest"


def _check_input(run: RunDir, config: Config) -> tuple[str, str]:
    name, stage = input_array(config)
    why = {
        "polar": "polar.enabled is true",
        "denoised": "polar.enabled is false and denoise.enabled is true",
        "stamps": "polar and denoise are disabled",
    }[name]
    if run.stage_info(stage) is None or not run.has_array(name):
        hint = {
            "polar": "or encode the stamps directly with --set polar.enabled=false "
                     "(and --set denoise.enabled=false to skip denoising too)",
            "denoised": "or encode the raw stamps with --set denoise.enabled=false",
            "stamps": "",
        }[name]
        raise RunDirError(
            f"encode reads the '{name}' array ({why}), but {run.path} has none: run "
            f"`skymorph {stage} {run.path}` first{', ' + hint if hint else ''}"
        )
    return name, stage


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_partial(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def encode(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
           progress: bool = True) -> RunDir:
    """Encode every image of a run into a feature vector.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory holding the input array (see :func:`input_array`).
    config : Config, optional
        Settings (the ``encode`` section, and ``polar.enabled`` / ``denoise.enabled``
        to choose the input); defaults to ``Config()``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    RunDir
        The run directory, with ``features`` (N x D float32).

    Raises
    ------
    RunDirError
        If the input array has not been written (the message names the stage to run).
    skymorph.core.encoders.EncoderError
        (a ``ValueError``) for an unknown encoder name (close names are listed),
        a missing or unfitting weights file, pretrained weights that can be neither
        downloaded nor found locally, or unusable settings.
    """
    from ..core import encoders as _encoders

    config = config or Config()
    cfg = config.encode
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    _encoders.check_settings(cfg)
    source, upstream = _check_input(run, config)
    settings = {k: v for k, v in vars(cfg).items() if k not in _EXECUTION_KEYS}
    fingerprint = run.fingerprint(
        "encode", config, [], upstream=[upstream],
        extra={"input": source, "settings": settings, "weights": _encoders.weights_identity(cfg)},
    )
    if run.is_current("encode", fingerprint) and run.has_array("features"):
        log.info("encode: input and settings unchanged, reusing %s", run.array_path("features"))
        return run

    images = run.open_array(source)
    n = int(images.shape[0])
    if n == 0:
        raise RunDirError(f"the '{source}' array of {run.path} is empty; nothing to encode")
    t0 = time.perf_counter()
    encoder = _encoders.build_encoder(cfg)
    threads = _threads(cfg.threads) if encoder.device.type == "cpu" else 0
    chunk = int(cfg.chunk_size)
    n_chunks = -(-n // chunk)
    key = hashlib.sha256(json.dumps(
        [fingerprint, n, encoder.dim, chunk, int(cfg.batch_size), str(encoder.device),
         encoder.precision, threads], default=str).encode()).hexdigest()[:16]

    partial_path = run.path / "stages" / PARTIAL
    partial = _read_partial(partial_path)
    resumable = (partial is not None and partial.get("key") == key and run.has_array("features")
                 and tuple(run.open_array("features").shape) == (n, encoder.dim))
    run.invalidate("encode")
    run.record_config(config)
    if resumable:
        features = _open_writable(run, "features")
        log.info("encode: resuming, %d of %d chunks already done", len(partial["done"]), n_chunks)
    else:
        features = run.create_array("features", (n, encoder.dim), chunk)
        partial = {"key": key, "fingerprint": fingerprint, "n": n, "dim": encoder.dim,
                   "chunk_size": chunk, "done": [], "empty": {}}
        partial_path.parent.mkdir(exist_ok=True)
        _write_json(partial_path, partial)
    done = set(partial["done"])
    todo = [i for i in range(n_chunks) if i not in done]
    log.info("encode: %s (%s weights, %d-d, input %dx%d, %s %s) on %d images of '%s'",
             encoder.name, encoder.weights_source, encoder.dim, *encoder.input_size,
             encoder.device, encoder.precision, n, source)

    def read(i: int) -> np.ndarray:
        return np.asarray(images[i * chunk : min(n, (i + 1) * chunk)], dtype=np.float32)

    previous_threads = None
    if threads:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    n_done_before = n - sum(min(n, (i + 1) * chunk) - i * chunk for i in todo)
    t1, cpu1 = time.perf_counter(), time.process_time()
    try:
        # the next chunk is read (and decompressed) while this one is encoded
        with ThreadPoolExecutor(1) as pool, tqdm(total=n, initial=n_done_before, desc="encode",
                                                 unit="img", disable=not progress) as bar:
            pending = pool.submit(read, todo[0]) if todo else None
            for pos, i in enumerate(todo):
                block = pending.result()
                if pos + 1 < len(todo):
                    pending = pool.submit(read, todo[pos + 1])
                feats, empty = encoder.encode(block, int(cfg.batch_size))
                features[i * chunk : i * chunk + len(block)] = feats
                # recorded only once the chunk is on disk: a kill in between redoes it
                partial["done"].append(i)
                if empty.any():
                    partial["empty"][str(i)] = (np.flatnonzero(empty) + i * chunk).tolist()
                _write_json(partial_path, partial)
                bar.update(len(block))
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    elapsed, cpu_elapsed = time.perf_counter() - t1, time.process_time() - cpu1

    empty_rows = sorted(j for rows in partial["empty"].values() for j in rows)
    run.clear_rejects("encode")
    if empty_rows:
        ids = _ids(run, n)
        run.add_rejects({"id": ids[j], "origin": source, "stage": "encode",
                         "reason": f"image {j} of '{source}' has no finite pixel; its features are NaN"}
                        for j in empty_rows)
    n_new = n - n_done_before
    run.mark_done("encode", fingerprint, n_images=n, dim=encoder.dim, encoder=encoder.name,
                  weights=encoder.weights_source, input=source, device=str(encoder.device),
                  precision=encoder.precision, n_rejected=len(empty_rows), n_resumed=n_done_before,
                  seconds=round(time.perf_counter() - t0, 2),
                  encode_seconds=round(elapsed, 3), encode_cpu_seconds=round(cpu_elapsed, 3),
                  images_per_s=round(n_new / elapsed, 2) if elapsed > 0 and n_new else None)
    partial_path.unlink(missing_ok=True)
    log.info("encode: %d x %d features written (%d rejected, %d resumed)", n, encoder.dim,
             len(empty_rows), n_done_before)
    return run


def _threads(requested: int) -> int:
    if requested:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _open_writable(run: RunDir, name: str):
    import zarr

    return zarr.open_array(store=str(run.array_path(name)), mode="r+")


def _ids(run: RunDir, n: int) -> list[str]:
    try:
        ids = run.sources()["id"].astype(str).tolist()
    except RunDirError:
        ids = []
    return ids if len(ids) == n else [str(i) for i in range(n)]


# --- command line ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``skymorph encode``."""
    s = argparse.SUPPRESS
    parser.description = __doc__.split("\n\n")[0] + (
        "\n\nInput: 'polar' if polar.enabled, else 'denoised' if denoise.enabled, else 'stamps'."
        "\n\nExamples:\n"
        "  skymorph encode myrun                                  # offline EfficientNet-Lite2\n"
        "  skymorph encode myrun --encoder convnext_xlarge.fb_in22k   # the paper's (hub download)\n"
        "  skymorph encode myrun --encoder convnext_xlarge.fb_in22k --weights convnext_xl_22k.safetensors\n"
        "  skymorph encode myrun --set polar.enabled=false --set denoise.enabled=false  # raw stamps"
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    parser.add_argument("--encoder", dest="encode.encoder", default=s, metavar="NAME",
                        help="efficientnet_lite2 or efficientnet_lite0 (offline ImageNet weights, "
                        "1280-d), convnext_xlarge.fb_in22k (the paper's, 2048-d) or any timm model "
                        "name (default efficientnet_lite2)")
    parser.add_argument("--weights", dest="encode.weights", default=s, metavar="FILE",
                        help="local weights (.safetensors or PyTorch state dict) instead of a hub "
                        "download (default: none)")
    parser.add_argument("--random-init", dest="encode.random_init", action="store_true", default=s,
                        help="random weights, for tests and speed checks only (default off)")
    parser.add_argument("--batch-size", dest="encode.batch_size", type=int, default=s, metavar="N",
                        help="images per forward pass (default 64)")
    parser.add_argument("--device", dest="encode.device", default=s, metavar="D",
                        help="auto, cpu, cuda or cuda:N (default auto: the GPU when there is one)")
    parser.add_argument("--precision", dest="encode.precision", choices=["auto", "fp32", "bf16", "fp16"],
                        default=s, help="autocast precision (default auto: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--threads", dest="encode.threads", type=int, default=s, metavar="N",
                        help="CPU threads (default 0: every core)")
    parser.add_argument("--chunk-size", dest="encode.chunk_size", type=int, default=s, metavar="N",
                        help="images per written chunk, the unit of resuming (default 1024)")
    parser.add_argument("--scaling", dest="encode.scaling", choices=["percentile", "minmax"], default=s,
                        help="per-image mapping of float pixels to the 0..255 range (default "
                        "percentile: encode.percentiles, 0.1 and 99.9, map to 0 and 255)")
    parser.add_argument("--aspect", dest="encode.aspect", choices=["stretch", "pad"], default=s,
                        help="stretch to the model's square input (default, the paper's) or pad "
                        "the short axis with sky")
    parser.add_argument("--rotations", dest="encode.rotations", type=int, choices=[1, 2, 4], default=s,
                        help="average features over this many right-angle rotations (default 1; "
                        "4 gives rotation invariance without the polar transform)")


def main(args: argparse.Namespace, config: Config) -> int:
    """Run ``skymorph encode``."""
    run = encode(args.run_dir, config)
    info = run.stage_info("encode") or {}
    speed = f", {info['images_per_s']} images/s" if info.get("images_per_s") else ""
    print(f"{info.get('n_images', 0)} x {info.get('dim', 0)} features from '{info.get('input')}' "
          f"with {info.get('encoder')} ({info.get('weights')} weights, {info.get('device')}{speed}) "
          f"written to {run.array_path('features')}; {info.get('n_rejected', 0)} rejected"
          + (f"; {info['n_resumed']} resumed from an interrupted run" if info.get("n_resumed") else ""))
    return 0
