"""Denoise: a convolutional autoencoder (CAE, paper Table 1) trained on the run's
own stamps removes the pixel noise before the polar transform and the encoder.

The science is in :mod:`skymorph.core.cae`: the CAE (conv 5x5 -> max-pool 2, twice -> a
40-d latent that cannot hold pixel noise, and a mirrored decoder), the per-stamp
normalisation (inverted on output, see :func:`denoise`), the split and the training
(:func:`~skymorph.core.cae.fit_cae`).  This stage reads ``stamps``, unpacks the
``[denoise]`` settings and writes the outputs.

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

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, DenoiseConfig
from ..core.sky import border_sky
from ..io.chunk_tasks import denoise_chunk, denoise_chunks, read_sample  # noqa: F401 - denoise_chunk: was here
from ..io.chunklog import ChunkLedger, resume_or_create
from ..io.rundir import RunDir
from ..io.runfiles import file_digest
from ..report.training import plot_cae_history
from . import Stage, StageContext, execute

__all__ = ["denoise", "apply_cae", "load_cae", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)

CAE_DIR = "cae"
CHECKPOINT_NAME = "checkpoint.pt"
_ARCH_FIELDS = ("channels", "kernel_size", "latent_dim", "unpool")
# what the stage summary keeps of a training's history, as it is
_HISTORY = ("best_epoch", "epochs_run", "best_val_loss", "stopped_early", "n_train", "n_val")


def core_options(cfg: DenoiseConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.cae.fit_cae` that the ``[denoise]`` settings
    give (the architecture and the training; the sample size, device and seed are used here)."""
    return dict(channels=cfg.channels, kernel_size=cfg.kernel_size, latent_dim=cfg.latent_dim,
                unpool=cfg.unpool, epochs=cfg.epochs, batch_size=cfg.batch_size, min_steps=cfg.min_steps,
                learning_rate=cfg.learning_rate, augment=cfg.augment,
                validation_fraction=cfg.validation_fraction, patience=cfg.patience, seed=cfg.seed)


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


def _train(run: RunDir, stamps: Any, cfg: DenoiseConfig, device: Any, progress: bool):
    """Train a CAE on a seeded sample of the run's stamps, and write it with its loss curve
    to ``RUN_DIR/cae``."""
    from tqdm.auto import tqdm

    from ..core import cae as _cae

    rng = np.random.default_rng(cfg.seed)
    rows = _cae.sample_rows(stamps.shape[0], n=min(cfg.train_sample, stamps.shape[0]), rng=rng)
    sample = read_sample(stamps, rows, transform=lambda block: _cae.normalise(block)[0], dtype=np.float16,
                         desc="denoise: read sample", progress=progress)
    bar = tqdm(total=cfg.epochs, desc="denoise: train CAE", unit="epoch", disable=not progress)

    def report(epoch: int, train_loss: float, val_loss: float) -> None:
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.3g}", val=f"{val_loss:.3g}")

    with bar:
        model, history = _cae.fit_cae(sample, device=device, rng=rng, progress=report, **core_options(cfg))
    folder = run.path / CAE_DIR
    folder.mkdir(exist_ok=True)
    ckpt = folder / CHECKPOINT_NAME
    _cae.save_checkpoint(ckpt, model, history, {
        "normalisation": "y = (x - border median) / max(3x3-smoothed peak, 3 x border sigma)",
        "trained_on": str(run.path.resolve()), "n_train": history["n_train"], "n_val": history["n_val"],
        "settings": {k: v for k, v in vars(cfg).items() if k not in ("checkpoint", "enabled")},
    })
    (folder / "history.json").write_text(json.dumps(history, indent=2, default=float))
    plot_cae_history(history, folder / "loss_curve.png")
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
    _cae.check_stamp_size(model, ctx.run.open_array("stamps").shape[-1], source=checkpoint)
    ctx.state["model"] = model
    return {"checkpoint": file_digest(checkpoint)}


def _sky_sigma(array: Any, rows: np.ndarray) -> float:
    """The median border noise sigma of the stamps ``rows`` of ``array``."""
    return float(np.median(border_sky(np.asarray(array.get_orthogonal_selection((rows,))))[1]))


def _model(run: RunDir, stamps: Any, cfg: DenoiseConfig, model: Any, checkpoint: Path | None,
           device: Any, progress: bool) -> tuple[Any, dict[str, Any]]:
    """The CAE given by ``--cae-checkpoint`` (``model``, loaded by :func:`_extra`) or else one
    trained on this run's stamps, and what the summary says of it."""
    if model is not None:
        differs = {k: model.arch[k] for k in _ARCH_FIELDS if model.arch[k] != getattr(cfg, k)}
        if differs:
            log.info("denoise: using the checkpoint's architecture %s, not the [denoise] settings", differs)
        return model, dict(trained=False, checkpoint=str(checkpoint.resolve()), arch=model.arch)
    model, history, ckpt = _train(run, stamps, cfg, device, progress)
    kept = {k: history[k] for k in _HISTORY}
    return model, dict(trained=True, checkpoint=str(ckpt), arch=model.arch, **kept,
                       train_seconds=round(history["seconds"], 2),
                       train_stamps_per_s=round(history["train_stamps_per_s"], 1))


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core import cae as _cae

    run, cfg, progress = ctx.run, ctx.config.denoise, ctx.progress
    checkpoint = _checkpoint(cfg)
    stamps = run.open_array("stamps")
    device = _cae.resolve_device(cfg.device)
    n, size = stamps.shape[0], stamps.shape[-1]
    _cae.set_threads()
    summary: dict[str, Any] = {"n_stamps": n, "device": str(device), "photometric": False}
    model, about = _model(run, stamps, cfg, ctx.state.get("model"), checkpoint, device, progress)
    summary.update(about)
    t0 = time.perf_counter()
    chunk = stamps.chunks[0]
    model_path = (checkpoint if checkpoint is not None else run.path / CAE_DIR / CHECKPOINT_NAME).resolve()
    model_hash = file_digest(model_path)
    ledger = ChunkLedger(run.path, "denoise", f"{ctx.fingerprint}|{model_hash}|{n}|{chunk}|"
                                              f"{cfg.inference_batch_size}|{device}")
    out = run.array_path("denoised")
    done = resume_or_create(ledger, out, (n, size, size), chunk)
    if done:
        log.info("denoise: resuming, %d of %d chunks already done", len(done), -(-n // chunk))
    denoise_chunks(str(run.array_path("stamps")), str(out), model, str(model_path), model_hash, n=n,
                   chunk=chunk, device=cfg.device, batch_size=cfg.inference_batch_size, ledger=ledger,
                   done=done, progress=progress)
    seconds = time.perf_counter() - t0
    # the noise before and after, on a seeded sample of at most 10^4 stamps
    picks = np.sort(np.random.default_rng(0).permutation(n)[:10000])
    summary.update(inference_seconds=round(seconds, 2),
                   inference_stamps_per_s=round(n / max(seconds, 1e-9), 1),
                   n_chunks_resumed=len(done),
                   sky_sigma_in=_sky_sigma(stamps, picks),
                   sky_sigma_out=_sky_sigma(run.open_array("denoised"), picks))
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
