"""Denoise: a convolutional autoencoder (CAE, paper Table 1) trained on the run's
own stamps removes the pixel noise before the polar transform and the encoder.

The CAE (``skymorph.core.cae``) is conv 5x5 -> max-pool 2 -> conv 5x5 -> max-pool 2
-> fully connected 40-d latent, and a mirrored decoder (fully connected ->
unpooling -> deconvolution, twice).  Its 40 numbers per stamp cannot hold
pixel noise, so the reconstruction keeps the galaxy and drops the noise.

Per-stamp normalisation (inverted on output): ``y = (x - offset) / scale`` with
``offset`` the median of the stamp's border frame (the sky) and ``scale`` the
peak of the 3 x 3 box-smoothed, sky-subtracted stamp, floored at 3 x the
border's robust noise sigma (constant stamps: 1).  Every galaxy, faint or
bright, reaches the network with its peak near 1 on a sky near 0; the output is
``y_hat * scale + offset`` in the stamp's own units.

Training uses a random sample of ``train_sample`` stamps (all of them in small
runs) with ``validation_fraction`` held out for early stopping; the trained
model goes to ``RUN_DIR/cae/checkpoint.pt`` (architecture included) with its
loss curve (``loss_curve.png``, ``history.json``), and another run can reuse it
with ``--cae-checkpoint``.  Inference streams every stamp (the last partial
batch included) to the ``denoised`` array.

Denoised stamps are **not photometric**: the MSE autoencoder does not conserve
flux (on the 12 bright bundled COSMOS galaxies the aperture flux ratio ranged
0.74-1.31 per galaxy, and its median 0.89-1.08 over seeds and thread counts).
They feed the encoder only; ``measure`` always reads the ingested stamps, and the
stage summary records ``photometric: false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import Config, DenoiseConfig
from ..core.compute import worker_cached
from ..core.sky import border_sky
from ..io.chunklog import ChunkLedger, chunk_map, chunk_rows, resume_or_create
from ..io.rundir import RunDir, iter_chunks
from . import Stage, StageContext, execute

__all__ = ["denoise", "apply_cae", "load_cae", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)

CAE_DIR = "cae"
CHECKPOINT_NAME = "checkpoint.pt"
_ARCH_FIELDS = ("channels", "kernel_size", "latent_dim", "unpool")
# Settings that change the result (device and inference batch size do not).


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_cae(path: str | os.PathLike, device: str = "auto"):
    """Load a CAE written by :func:`denoise` (``RUN_DIR/cae/checkpoint.pt``).

    Returns
    -------
    model : skymorph.core.cae.CAE
        In evaluation mode on ``device``; ``model.arch`` holds its settings.
    """
    from ..core import cae as _cae

    model, _ = _cae.load_checkpoint(Path(path), _cae.resolve_device(device))
    return model


def apply_cae(stamps: np.ndarray, model, batch_size: int = 32) -> np.ndarray:
    """Denoise a block of stamps with a trained CAE: :func:`skymorph.core.cae.apply_cae`
    (kept here, loading torch only when called, for the scripts that import it from the stage)."""
    from ..core import cae as _cae

    return _cae.apply_cae(stamps, model, batch_size=batch_size)


def _training_sample(stamps, n: int, rng: np.random.Generator, progress: bool) -> np.ndarray:
    """Normalised float16 copies of ``n`` random stamps, read chunk by chunk."""
    from ..core import cae as _cae

    total = stamps.shape[0]
    pick = np.sort(rng.choice(total, size=n, replace=False)) if n < total else np.arange(total)
    out = np.empty((len(pick), *stamps.shape[1:]), dtype=np.float16)
    filled = 0
    with tqdm(total=len(pick), desc="denoise: read sample", unit="stamp", disable=not progress) as bar:
        for start, block in iter_chunks(stamps):
            lo, hi = np.searchsorted(pick, [start, start + len(block)])
            if hi > lo:
                y, _, _ = _cae.normalise(block[pick[lo:hi] - start])
                out[filled:filled + hi - lo] = y
                filled += hi - lo
                bar.update(hi - lo)
    return out


def _plot_history(history: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(epochs, history["train_loss"], "o-", ms=3, label="training")
    if history.get("has_validation"):
        ax.plot(epochs, history["val_loss"], "s-", ms=3, label="validation (held out)")
    ax.axvline(history["best_epoch"], color="0.5", ls=":", label=f"best epoch {history['best_epoch']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (normalised units)")
    ax.set_yscale("log")
    ax.set_title("CAE loss", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _model_key(model_hash: str, device: str) -> str:
    return f"cae:{model_hash}:{device}"


def denoise_chunk(i: int, stamps: str, out: str, n: int, chunk: int, checkpoint: str, model_hash: str,
                  device: str, batch_size: int) -> None:
    """Denoise chunk ``i`` of the stamps at ``stamps`` into its region of the array at
    ``out`` (the per-chunk task, here or on a Dask worker: the CAE is loaded once per
    worker, on its GPU when it has one)."""
    import zarr

    from ..core import cae as _cae

    model = worker_cached(_model_key(model_hash, device), lambda: load_cae(checkpoint, device))
    _cae.set_threads()
    rows = chunk_rows(i, n, chunk)
    block = np.asarray(zarr.open_array(store=stamps, mode="r")[rows])
    zarr.open_array(store=out, mode="r+")[rows] = apply_cae(block, model, batch_size)


def _train(run: RunDir, stamps, cfg: DenoiseConfig, device, progress: bool):
    from ..core import cae as _cae

    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.train_sample, stamps.shape[0])
    sample = _training_sample(stamps, n, rng, progress)
    order = rng.permutation(len(sample))
    n_val = int(round(cfg.validation_fraction * len(sample))) if len(sample) >= 2 else 0
    if cfg.validation_fraction > 0 and len(sample) >= 2:
        n_val = min(max(n_val, 1), len(sample) - 1)
    val, train = sample[np.sort(order[:n_val])], sample[np.sort(order[n_val:])]
    steps_per_pass = math.ceil(len(train) / cfg.batch_size)
    repeats = max(1, math.ceil(cfg.min_steps / (cfg.epochs * steps_per_pass)))
    arch = {"stamp_size": int(stamps.shape[-1]), **{k: getattr(cfg, k) for k in _ARCH_FIELDS}}
    bar = tqdm(total=cfg.epochs, desc="denoise: train CAE", unit="epoch", disable=not progress)

    def report(epoch: int, train_loss: float, val_loss: float) -> None:
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.3g}", val=f"{val_loss:.3g}")

    with bar:
        model, history = _cae.train_cae(
            train, val, arch, epochs=cfg.epochs, batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, patience=cfg.patience, device=device, seed=cfg.seed,
            augment=cfg.augment, repeats=repeats, progress=report)
    history.update(n_train=len(train), n_val=len(val), repeats=repeats, has_validation=len(val) > 0,
                   device=str(device))
    folder = run.path / CAE_DIR
    folder.mkdir(exist_ok=True)
    ckpt = folder / CHECKPOINT_NAME
    _cae.save_checkpoint(ckpt, model, history, {
        "normalisation": "y = (x - border median) / max(3x3-smoothed peak, 3 x border sigma)",
        "trained_on": str(run.path.resolve()), "n_train": len(train), "n_val": len(val),
        "settings": {k: v for k, v in vars(cfg).items() if k not in ("checkpoint", "enabled")},
    })
    (folder / "history.json").write_text(json.dumps(history, indent=2, default=float))
    _plot_history(history, folder / "loss_curve.png")
    return model, history, ckpt


def _checkpoint(cfg: DenoiseConfig) -> Path | None:
    checkpoint = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"CAE checkpoint {checkpoint} does not exist (give the "
                                "cae/checkpoint.pt of a run that was denoised)")
    return checkpoint


def _extra(ctx: StageContext) -> dict[str, Any] | None:
    """The checkpoint's hash when one is given.  The checkpoint is loaded and
    checked here, before the run's current outputs are touched."""
    cfg = ctx.config.denoise
    checkpoint = _checkpoint(cfg)
    if checkpoint is None:
        return None
    from ..core import cae as _cae

    model, _ = _cae.load_checkpoint(checkpoint, _cae.resolve_device(cfg.device))
    size = ctx.run.open_array("stamps").shape[-1]
    if model.arch["stamp_size"] != size:
        raise _cae.CAEError(f"the CAE in {checkpoint} was trained on {model.arch['stamp_size']}-pixel "
                            f"stamps; this run has {size}-pixel stamps (train a new one: drop "
                            "--cae-checkpoint)")
    ctx.state["model"] = model
    return {"checkpoint": _file_hash(checkpoint)}


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core import cae as _cae

    run, cfg, progress = ctx.run, ctx.config.denoise, ctx.progress
    checkpoint = _checkpoint(cfg)
    stamps = run.open_array("stamps")
    device = _cae.resolve_device(cfg.device)
    n, size = stamps.shape[0], stamps.shape[-1]
    model = ctx.state.get("model")
    _cae.set_threads()
    summary: dict[str, Any] = {"n_stamps": n, "device": str(device), "photometric": False}
    if model is not None:
        differs = {k: model.arch[k] for k in _ARCH_FIELDS if model.arch[k] != getattr(cfg, k)}
        if differs:
            log.info("denoise: using the checkpoint's architecture %s, not the [denoise] settings", differs)
        summary.update(trained=False, checkpoint=str(checkpoint.resolve()), arch=model.arch)
    else:
        model, history, ckpt = _train(run, stamps, cfg, device, progress)
        summary.update(trained=True, checkpoint=str(ckpt), arch=model.arch,
                       best_epoch=history["best_epoch"], epochs_run=history["epochs_run"],
                       best_val_loss=history["best_val_loss"], stopped_early=history["stopped_early"],
                       n_train=history["n_train"], n_val=history["n_val"],
                       train_seconds=round(history["seconds"], 2),
                       train_stamps_per_s=round(history["train_stamps_per_s"], 1))
    t0 = time.perf_counter()
    chunk = stamps.chunks[0]
    n_chunks = -(-n // chunk)
    model_path = (checkpoint if checkpoint is not None else run.path / CAE_DIR / CHECKPOINT_NAME).resolve()
    model_hash = _file_hash(model_path)
    ledger = ChunkLedger(run.path, "denoise", f"{ctx.fingerprint}|{model_hash}|{n}|{chunk}|"
                                              f"{cfg.inference_batch_size}|{device}")
    out = run.array_path("denoised")
    done = resume_or_create(ledger, out, (n, size, size), chunk)
    if done:
        log.info("denoise: resuming, %d of %d chunks already done", len(done), n_chunks)
    # this process reuses the model in memory; Dask workers load the checkpoint once each
    worker_cached(_model_key(model_hash, cfg.device), lambda: model)
    chunk_map(denoise_chunk, n, chunk, str(run.array_path("stamps")), str(out), n, chunk, str(model_path),
              model_hash, cfg.device, cfg.inference_batch_size, ledger=ledger, done=done,
              desc="denoise: apply CAE", unit="stamp", progress=progress, gpu=True)
    seconds = time.perf_counter() - t0
    # the noise before and after, on a seeded sample of at most 10^4 stamps
    picks = np.sort(np.random.default_rng(0).permutation(n)[:10000])
    denoised = run.open_array("denoised")
    summary.update(inference_seconds=round(seconds, 2),
                   inference_stamps_per_s=round(n / max(seconds, 1e-9), 1),
                   n_chunks_resumed=len(done),
                   sky_sigma_in=float(np.median(border_sky(np.asarray(
                       stamps.get_orthogonal_selection((picks,))))[1])),
                   sky_sigma_out=float(np.median(border_sky(np.asarray(
                       denoised.get_orthogonal_selection((picks,))))[1])))
    log.info("denoise: %d stamps, sky noise %.3g -> %.3g (median border sigma)", n,
             summary["sky_sigma_in"], summary["sky_sigma_out"])
    return summary




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    how = (f"trained a CAE ({info.get('n_train')} stamps, best epoch {info.get('best_epoch')} of "
           f"{info.get('epochs_run')}, {info.get('train_seconds')} s); checkpoint {info.get('checkpoint')}"
           if info.get("trained") else f"used the CAE in {info.get('checkpoint')}")
    return (f"{info.get('n_stamps', 0)} stamps denoised into {run.array_path('denoised')}: {how}\n"
            f"sky noise (median border sigma): {info.get('sky_sigma_in', float('nan')):.3g} -> "
            f"{info.get('sky_sigma_out', float('nan')):.3g}")


STAGE = Stage(
    name="denoise",
    summary="train the convolutional autoencoder and denoise every stamp",
    description=(__doc__.split("\n\n")[0] + "\n\nExamples:\n"
                 "  skymorph denoise myrun\n"
                 "  skymorph denoise otherrun --cae-checkpoint myrun/cae/checkpoint.pt\n"
                 "  skymorph denoise myrun --epochs 60 --train-sample 20000"),
    compute=_compute,
    sections=("denoise",),
    upstream=lambda config: ("ingest",),
    outputs=("denoised.zarr",),
    extra=_extra,
    switch="denoise.enabled",
    report=_report,
    chunked=True,
)


def denoise(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
            force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Train (or load) the CAE and denoise every stamp of a run directory.

    Stamps are normalised per stamp before the CAE sees them and mapped back
    afterwards: ``y = (x - offset) / scale``, where ``offset`` is the median of
    the stamp's border frame (``max(2, S // 20)`` pixels wide) and ``scale`` is
    the peak of the 3 x 3 box-smoothed, offset-subtracted stamp, floored at 3 x
    the frame's robust noise sigma (1 for a constant stamp).  Output pixels are
    ``y_hat * scale + offset``, in the stamps' units.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory after ``ingest``.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.  With
        ``denoise.checkpoint`` set, that CAE is used and nothing is trained.
    force : bool
        Recompute even when the stamps and settings are unchanged.
    progress : bool
        Show progress bars.
    **settings
        Overrides of the ``[denoise]`` settings, e.g. ``epochs=60``.

    Returns
    -------
    RunDir
        With ``denoised.zarr`` (N x S x S float32) and, when trained,
        ``cae/checkpoint.pt``, ``cae/loss_curve.png`` and ``cae/history.json``.

    Raises
    ------
    RunDirError
        If the run directory or its stamps are missing.
    FileNotFoundError
        If ``denoise.checkpoint`` names a missing file.
    ValueError
        If a setting is invalid, or the checkpoint is not a skymorph CAE or was
        trained on another stamp size.
    """
    return execute("denoise", run_dir, config, force=force, progress=progress, **settings)
