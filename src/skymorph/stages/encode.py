"""Encode: a pretrained network turns every image into a feature vector.

The stage reads the newest image array of the run (``polar`` when the polar stage
is enabled, else ``denoised`` when the denoise stage is enabled, else
``stamps``), encodes it in batches with the chosen encoder (see
:mod:`skymorph.core.encoders` for the registry and the preprocessing: per-image
intensity mapping, resize with the model's own size and interpolation,
normalisation with the model's own statistics, single band replicated to three
channels) and writes ``features`` (N x D float32, same order as the sources).

The work is done chunk by chunk (``encode.chunk_size`` images): after each chunk
is written, the stage's chunk ledger (``stages/encode.partial.jsonl``, see
:mod:`skymorph.io.chunklog`) records it, so a run that
is interrupted (killed, out of time) resumes at the first unfinished chunk and
produces exactly the features an uninterrupted run would.  A resume happens
only with the same encoder, weights, settings, batch size, device, precision
and thread count; anything else starts over.

With a Dask cluster (``[compute] scheduler``) each chunk is a task
(:func:`encode_chunk`): the worker builds the encoder once, reads its chunk from
the run's Zarr array, and writes its rows of ``features`` itself; the client only
records the finished chunks.  Tasks go to GPU workers when the cluster has some.

Images without a single finite pixel (e.g. left empty by an upstream stage) get a
NaN feature row and a line in ``rejects.csv``; they never stop the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, EncodeConfig
from ..io.chunklog import ChunkLedger, chunk_map, chunk_rows, resume_or_create
from ..io.rundir import RunDir, RunDirError
from ..summaries import read_summary, shown
from . import Stage, StageContext, execute, image_source

__all__ = ["encode"]

log = logging.getLogger(__name__)

# encode's resume record before the common ledger (stages/encode.partial.jsonl)
OLD_PARTIAL = "encode.partial.json"


def _source(config: Config) -> tuple[str, str]:
    return image_source(config, "encode")


def _extra(ctx: StageContext) -> dict[str, Any]:
    from ..core import encoders as _encoders

    source, stage = _source(ctx.config)
    if ctx.run.stage_info(stage) is None or not ctx.run.has_array(source):
        raise RunDirError(
            f"encode reads the '{source}' array (the newest image array of the settings: "
            f"denoise.enabled = {ctx.config.denoise.enabled}, polar.enabled = {ctx.config.polar.enabled}), "
            f"but {ctx.run.path} has none: run {ctx.run.command_for(stage)} first, or encode "
            "another array with --set polar.enabled=false (and --set denoise.enabled=false for the "
            "ingested stamps)"
        )
    return {"input": source, "weights": _encoders.weights_identity(ctx.config.encode)}


def _drop_old_partial(run: RunDir) -> None:
    """An older run directory's ``encode.partial.json`` (encode's own resume record before
    the common ledger): not read, but removed with a note, so the stage redoes its chunks."""
    old = run.path / "stages" / OLD_PARTIAL
    if old.exists():
        log.warning("encode: ignoring %s, written by an older skymorph; the chunks it records "
                    "are encoded again", old)
        old.unlink(missing_ok=True)


def _size(rows: slice) -> int:
    return rows.stop - rows.start


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core import encoders as _encoders

    config, run, progress, fingerprint = ctx.config, ctx.run, ctx.progress, ctx.fingerprint
    cfg = config.encode
    source, _ = _source(config)
    t0 = time.perf_counter()
    images = run.open_array(source)
    n = int(images.shape[0])
    if n == 0:
        raise RunDirError(f"the '{source}' array of {run.path} is empty; nothing to encode")
    adapted = None
    if cfg.encoder == "adapted" and not cfg.weights and not cfg.random_init:
        cfg, adapted = _train_adapted(run, images, cfg, fingerprint, progress)
    encoder = _encoders.build_encoder(cfg)
    session = ctx.compute
    distributed = session is not None and session.distributed
    gpu = distributed and session.gpu_resources() is not None
    if distributed:
        # one PyTorch thread per task thread unless told otherwise: the workers' threads
        # already use the cores (start CPU workers with one thread per core)
        threads = 0 if gpu else int(cfg.threads) or 1
        where = f"dask ({'GPU workers' if gpu else 'CPU workers'})"
    else:
        threads = _threads(cfg.threads) if encoder.device.type == "cpu" else 0
        where = str(encoder.device)
    chunk = int(cfg.chunk_size)
    n_chunks = -(-n // chunk)
    key = hashlib.sha256(json.dumps(
        [fingerprint, n, encoder.dim, chunk, int(cfg.batch_size), where,
         encoder.precision, threads, encoder.runtime], default=str).encode()).hexdigest()[:16]

    _drop_old_partial(run)
    ledger = ChunkLedger(run.path, "encode", key)
    out = run.array_path("features")
    # the features array keeps create_array's layout (provenance attributes, a chunk no
    # longer than the array)
    done = resume_or_create(ledger, out, (n, encoder.dim), max(1, min(chunk, n)),
                            create=lambda: run.create_array("features", (n, encoder.dim), chunk))
    if done:
        log.info("encode: resuming, %d of %d chunks already done", len(done), n_chunks)
    log.info("encode: %s (%s weights, %d-d, input %dx%d, %s %s, %s) on %d images of '%s'",
             encoder.name, encoder.weights_source, encoder.dim, *encoder.input_size,
             where, encoder.precision, encoder.runtime, n, source)

    previous_threads = None
    if threads and not distributed:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    n_done_before = sum(_size(chunk_rows(i, n, chunk)) for i in done)
    t1, cpu1 = time.perf_counter(), time.process_time()
    try:
        if distributed:
            infos = chunk_map(encode_chunk, n, chunk, str(run.array_path(source)), str(out), n, chunk, cfg,
                              threads, ledger=ledger, done=done, desc="encode", unit="img",
                              progress=progress, gpu=True)
        else:
            features = _open_writable(run, "features")

            def read(i: int) -> np.ndarray:
                return np.asarray(images[chunk_rows(i, n, chunk)], dtype=np.float32)

            def encode_block(i: int, block: np.ndarray, bar: Any) -> list[int]:
                feats, empty = encoder.encode(block, int(cfg.batch_size), on_batch=bar.update)
                features[i * chunk : i * chunk + len(block)] = feats
                return (np.flatnonzero(empty) + i * chunk).tolist()

            infos = chunk_map(encode_chunk, n, chunk, ledger=ledger, done=done, desc="encode", unit="img",
                              progress=progress, read=read, local=encode_block)
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    elapsed, cpu_elapsed = time.perf_counter() - t1, time.process_time() - cpu1

    empty_rows = sorted(j for rows in infos.values() for j in (rows or ()))
    run.clear_rejects("encode")
    if empty_rows:
        ids = _ids(run, n)
        run.add_rejects({"id": ids[j], "origin": source, "stage": "encode",
                         "reason": f"image {j} of '{source}' has no finite pixel; its features are NaN"}
                        for j in empty_rows)
    n_new = n - n_done_before
    ledger.remove()
    log.info("encode: %d x %d features written (%d rejected, %d resumed)", n, encoder.dim,
             len(empty_rows), n_done_before)
    return dict(n_images=n, dim=encoder.dim, encoder=encoder.name,
                weights=encoder.weights_source, input=source, device=where,
                precision=encoder.precision, runtime=encoder.runtime,
                input_size=list(encoder.input_size), rotations=encoder.rotations,
                n_rejected=len(empty_rows), n_resumed=n_done_before,
                seconds=round(time.perf_counter() - t0, 2),
                encode_seconds=round(elapsed, 3), encode_cpu_seconds=round(cpu_elapsed, 3),
                images_per_s=round(n_new / elapsed, 2) if elapsed > 0 and n_new else None,
                **({"adapted": adapted} if adapted else {}))


def _train_adapted(run: RunDir, images: Any, cfg: Any, key: str, progress: bool) -> tuple[Any, dict]:
    """``encoder = "adapted"`` without ``weights``: train the encoder on this run's images once
    (``RUN_DIR/adapted/checkpoint.pt``, reused while the settings and input are unchanged, e.g.
    by a resumed run; another run reuses it with ``--weights``)."""
    from dataclasses import replace

    from ..core import adapted as _adapted

    path = run.path / "adapted" / "checkpoint.pt"
    try:
        _, blob = _adapted.load_checkpoint(path)
        if blob.get("key") == key:
            info = {**blob["info"], "checkpoint": str(path), "reused": True}
            return replace(cfg, weights=str(path)), _training_record(path.parent, info)
    except (FileNotFoundError, ValueError):
        pass
    net, info = _adapted.train_adapted(images, cfg, progress=progress)
    _adapted.save_checkpoint(path, net, info, key)
    return replace(cfg, weights=str(path)), _training_record(path.parent, {**info, "checkpoint": str(path)})


def _training_record(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The training curve of the adapted encoder in ``RUN_DIR/adapted`` (``training_curve.csv``
    and ``.png``), and what the stage summary keeps of it (the curve per tenth of the steps and
    the convergence note, not every step)."""
    from ..core import adapted as _adapted

    steps = info.get("loss_steps") or info.get("loss") or []
    if "convergence" not in info:  # a checkpoint from before the note
        info = {**info, "convergence": _adapted.convergence(steps)}
    pd.DataFrame({"step": np.arange(1, len(steps) + 1), "loss": steps}).to_csv(
        folder / "training_curve.csv", index=False)
    figure = plot_training_curve(steps, folder / "training_curve.png", note=info["convergence"]["text"])
    record = {k: v for k, v in info.items() if k != "loss_steps"}
    record["curve_figure"] = str(figure)
    return record


def plot_training_curve(losses: Any, path: str | os.PathLike, note: str = "") -> Path:
    """Plot the adapted encoder's loss per step and its running mean (PNG); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(losses, dtype=np.float64)
    steps = np.arange(1, values.size + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    ax.plot(steps, values, color="C0", alpha=0.35, lw=0.8, label="loss per step (one batch)")
    window = max(1, values.size // 20)
    if values.size >= 2 * window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="C0", lw=2, label=f"running mean of {window} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title("Adapted encoder: training curve", fontsize=10)
    if note:
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, va="bottom", wrap=True)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    speed = f", {info['images_per_s']} images/s" if info.get("images_per_s") else ""
    s = read_summary("encode", info)
    text = (f"{shown(s.n_images)} x {shown(s.dim)} features from '{shown(s.input)}' "
            f"with {shown(s.encoder)} ({shown(s.weights)} weights, {shown(s.device)}{speed}) "
            f"written to {run.array_path('features')}; {shown(s.n_rejected)} rejected"
            + (f"; {info['n_resumed']} resumed from an interrupted run" if info.get("n_resumed") else ""))
    adapted = info.get("adapted")
    if adapted and adapted.get("loss"):
        curve = " ".join(f"{v:.3g}" for v in adapted["loss"])
        how = "reused the checkpoint trained" if adapted.get("reused") else "trained"
        text += (f"\nadapted encoder: {how} on {adapted.get('n_train')} stamps, "
                 f"{adapted.get('steps')} steps; "
                 f"loss per tenth of the steps: {curve}\n"
                 f"  {adapted.get('convergence', {}).get('text', '')}; curve: {adapted.get('curve_figure')}")
    return text


STAGE = Stage(
    name="encode",
    summary="encode images with a pretrained network into feature vectors",
    description=__doc__.split("\n\n")[0] + (
        "\n\nInput: 'polar' if polar.enabled, else 'denoised' if denoise.enabled, else 'stamps'."
        "\n\nExamples:\n"
        "  skymorph encode myrun                                  # offline EfficientNet-Lite2\n"
        "  skymorph encode myrun --encoder convnext_xlarge.fb_in22k   # the paper's (hub download)\n"
        "  skymorph encode myrun --encoder convnext_xlarge.fb_in22k --weights convnext_xl_22k.safetensors"),
    compute=_compute,
    sections=("encode",),
    upstream=lambda config: (_source(config)[1],),
    outputs=("features.zarr",),
    extra=_extra,
    report=_report,
    chunked=True,
)


def encode(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
           force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Encode every image of a run into a feature vector.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory holding the input array (see :func:`skymorph.stages.image_source`).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the input and settings are unchanged.
    progress : bool
        Show a progress bar.
    **settings
        Overrides of the ``[encode]`` settings, e.g. ``encoder="efficientnet_lite0"``.

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
    return execute("encode", run_dir, config, force=force, progress=progress, **settings)


def encode_chunk(i: int, source: str, out: str, n: int, chunk: int, cfg: EncodeConfig,
                 threads: int) -> list[int]:
    """Encode chunk ``i`` of the image array at ``source`` into its rows of the
    features array at ``out`` (a Dask task; the encoder is built once per worker).

    Returns the rows whose image has no finite pixel (their features are NaN).
    """
    import dataclasses

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


