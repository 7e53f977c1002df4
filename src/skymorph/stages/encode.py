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
:mod:`skymorph.io.chunklog`) records it, so a run that is interrupted (killed, out
of time) resumes at the first unfinished chunk and produces exactly the features
an uninterrupted run would.  A resume happens
only with the same encoder, weights, settings, batch size, device, precision
and thread count; anything else starts over.

With a Dask cluster (``[compute] scheduler``) each chunk is a task
(:func:`skymorph.io.chunk_tasks.encode_chunk`): the worker builds the encoder once, reads its chunk from
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
from dataclasses import replace
from typing import Any

from ..config import Config, EncodeConfig
from ..io.chunk_tasks import encode_chunk, encode_chunks  # noqa: F401
from ..io.chunklog import ChunkLedger, chunk_rows, drop_old_record, resume_or_create
from ..io.rundir import RunDir, RunDirError
from ..io.runfiles import source_ids
from ..report.training import plot_training_curve, write_training_curve  # noqa: F401
from ..summaries import read_summary, shown
from . import Stage, StageContext, execute, image_source

__all__ = ["encode"]  # encode_chunk and plot_training_curve, here before issue 18, still import from here

log = logging.getLogger(__name__)

# encode's resume record before the common ledger (stages/encode.partial.jsonl): an older
# run directory's is removed with a note, and the stage redoes its chunks
OLD_PARTIAL = "encode.partial.json"


def _extra(ctx: StageContext) -> dict[str, Any]:
    from ..core import encoders as _encoders

    source, stage = image_source(ctx.config, "encode")
    if ctx.run.stage_info(stage) is None or not ctx.run.has_array(source):
        raise RunDirError(
            f"encode reads the '{source}' array (the newest image array of the settings: "
            f"denoise.enabled = {ctx.config.denoise.enabled}, polar.enabled = {ctx.config.polar.enabled}), "
            f"but {ctx.run.path} has none: run {ctx.run.command_for(stage)} first, or encode "
            "another array with --set polar.enabled=false (and --set denoise.enabled=false for the "
            "ingested stamps)"
        )
    return {"input": source, "weights": _encoders.weights_identity(ctx.config.encode)}


def _resume(run: RunDir, key: str, n: int, dim: int, chunk: int) -> tuple[ChunkLedger, dict[int, Any]]:
    """The chunk ledger under ``key`` and the chunks it records as done, on a features array
    that still holds them; else a new ledger and a new array."""
    if drop_old_record(run.path / "stages" / OLD_PARTIAL):
        log.warning("encode: ignoring %s, written by an older skymorph; the chunks it records "
                    "are encoded again", run.path / "stages" / OLD_PARTIAL)
    ledger = ChunkLedger(run.path, "encode", key)
    # the features array keeps create_array's layout (provenance attributes, a chunk no
    # longer than the array)
    done = resume_or_create(ledger, run.array_path("features"), (n, dim), max(1, min(chunk, n)),
                            create=lambda: run.create_array("features", (n, dim), chunk))
    if done:
        log.info("encode: resuming, %d of %d chunks already done", len(done), -(-n // chunk))
    return ledger, done


def _reject_empty(run: RunDir, infos: dict[int, Any], n: int, source: str) -> int:
    """Record the images without a finite pixel (their features are NaN) in ``rejects.csv``,
    where this stage's rejects of an earlier run are replaced; return how many."""
    empty_rows = sorted(j for rows in infos.values() for j in (rows or ()))
    run.clear_rejects("encode")
    if empty_rows:
        ids = source_ids(run, n)
        run.add_rejects({"id": ids[j], "origin": source, "stage": "encode",
                         "reason": f"image {j} of '{source}' has no finite pixel; its features are NaN"}
                        for j in empty_rows)
    return len(empty_rows)


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core import encoders as _encoders

    run, cfg, progress = ctx.run, ctx.config.encode, ctx.progress
    source, _ = image_source(ctx.config, "encode")
    t0 = time.perf_counter()
    images = run.open_array(source)
    n = int(images.shape[0])
    if n == 0:
        raise RunDirError(f"the '{source}' array of {run.path} is empty; nothing to encode")
    adapted = None
    if cfg.encoder == "adapted" and not cfg.weights and not cfg.random_init:
        cfg, adapted = _train_adapted(run, images, cfg, ctx.fingerprint, progress)
    encoder = _encoders.build_encoder(cfg)
    distributed, threads, where = _encoders.placement(ctx.compute, threads=cfg.threads, device=encoder.device)
    chunk = int(cfg.chunk_size)
    key = hashlib.sha256(json.dumps(
        [ctx.fingerprint, n, encoder.dim, chunk, int(cfg.batch_size), where,
         encoder.precision, threads, encoder.runtime], default=str).encode()).hexdigest()[:16]

    ledger, done = _resume(run, key, n, encoder.dim, chunk)
    log.info("encode: %s (%s weights, %d-d, input %dx%d, %s %s, %s) on %d images of '%s'",
             encoder.name, encoder.weights_source, encoder.dim, *encoder.input_size,
             where, encoder.precision, encoder.runtime, n, source)

    n_resumed = sum(chunk_rows(i, n, chunk).stop - i * chunk for i in done)
    t1, cpu1 = time.perf_counter(), time.process_time()
    infos = encode_chunks(images, str(run.array_path(source)), str(run.array_path("features")), encoder,
                          cfg, n=n, chunk=chunk, threads=threads, distributed=distributed, ledger=ledger,
                          done=done, progress=progress)
    elapsed, cpu_elapsed = time.perf_counter() - t1, time.process_time() - cpu1

    n_rejected = _reject_empty(run, infos, n, source)
    n_new = n - n_resumed
    ledger.remove()
    log.info("encode: %d x %d features written (%d rejected, %d resumed)", n, encoder.dim,
             n_rejected, n_resumed)
    return dict(n_images=n, dim=encoder.dim, encoder=encoder.name,
                weights=encoder.weights_source, input=source, device=where,
                precision=encoder.precision, runtime=encoder.runtime,
                input_size=list(encoder.input_size), rotations=encoder.rotations,
                n_rejected=n_rejected, n_resumed=n_resumed,
                seconds=round(time.perf_counter() - t0, 2),
                encode_seconds=round(elapsed, 3), encode_cpu_seconds=round(cpu_elapsed, 3),
                images_per_s=round(n_new / elapsed, 2) if elapsed > 0 and n_new else None,
                **({"adapted": adapted} if adapted else {}))


def _train_adapted(run: RunDir, images: Any, cfg: EncodeConfig, key: str,
                   progress: bool) -> tuple[EncodeConfig, dict[str, Any]]:
    """``encoder = "adapted"`` without ``weights``: train the encoder on this run's images once
    (``RUN_DIR/adapted/checkpoint.pt``, reused while the settings and input are unchanged, e.g.
    by a resumed run; another run reuses it with ``--weights``).  The summary keeps the curve
    per tenth of the steps; every step goes to ``training_curve.csv`` and ``.png``."""
    from ..core import adapted as _adapted

    path = run.path / "adapted" / "checkpoint.pt"
    info = _adapted.train_or_reuse(images, cfg, checkpoint=path, key=key, progress=progress)
    steps = info.pop("loss_steps", None) or info.get("loss") or []
    info["curve_figure"] = str(write_training_curve(path.parent, steps, note=info["convergence"]["text"]))
    return replace(cfg, weights=str(path)), info


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
    upstream=lambda config: (image_source(config, "encode")[1],),
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
