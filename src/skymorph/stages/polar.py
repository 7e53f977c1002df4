"""Polar: the adaptive polar coordinate transform (APCT, Fang et al. 2023) of every stamp.

The science (pole, polar axis, rays, mirror, edge cases) is in
:mod:`skymorph.core.apct`.  This stage reads ``denoised`` (or ``stamps`` when
denoise is off), unpacks the ``[polar]`` settings and applies
:func:`~skymorph.core.apct.apct_torch` chunk by chunk (here or on a Dask cluster,
resuming from finished chunks), writing ``polar``; :func:`polar_figure` draws the
paper's Fig. 2.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, PolarConfig
from ..core.apct import apct, apct_torch, output_shape
from ..io.rundir import RunDir, iter_chunks
from . import Argument, Stage, StageContext, apct_options, execute, image_source

__all__ = ["polar", "core_options", "polar_figure"]

log = logging.getLogger(__name__)

FIGURE_NAME = "fig2_preprocessing.png"


core_options = apct_options
"""The keyword arguments of :func:`skymorph.core.apct.apct` that the ``[polar]`` settings give
(:func:`skymorph.stages.apct_options`, shared with ``similar --image``)."""


def _shape(stamp_size: int, cfg: PolarConfig) -> tuple[int, int]:
    return output_shape(stamp_size, angle_step=cfg.angle_step, n_rays=cfg.n_rays, n_radii=cfg.n_radii,
                        mirror=cfg.mirror)


# --- figure ----------------------------------------------------------------------------


def _pick_examples(run: RunDir, n: int) -> np.ndarray:
    """The ``n`` galaxies with the highest central flux (well-resolved examples),
    shown in order of decreasing flux."""
    stamps = run.open_array("stamps")
    size = stamps.shape[-1]
    lo, hi = size // 2 - size // 8, size // 2 + size // 8
    flux = np.concatenate([blk[:, lo:hi, lo:hi].sum(axis=(1, 2))
                           for _, blk in iter_chunks(stamps, 1024)])
    flux = np.nan_to_num(flux, nan=-np.inf)
    return np.argsort(-flux, kind="stable")[:n]


def _stretch(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = max(hi - lo, 1e-12)
    return np.arcsinh(np.clip((img - lo) / span, 0, None) * 10.0) / np.arcsinh(10.0)


def polar_figure(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
                 n: int = 6, path: str | os.PathLike | None = None) -> Path:
    """The paper's Fig. 2: original | denoised | polar image for ``n`` real galaxies.

    The galaxies with the highest central flux are shown; the pole (+) and the
    polar axis (line) are drawn on the image the APCT used.  The polar image is
    recomputed with the current settings.

    Parameters
    ----------
    run_dir : str, Path or RunDir
    config : Config, optional
    n : int
        Number of galaxies (six in the paper).
    path : str or Path, optional
        Output PNG; default ``RUN_DIR/figures/fig2_preprocessing.png``.

    Returns
    -------
    Path
        The PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = config or Config()
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    picks = _pick_examples(run, n)
    stamps = np.asarray(run.open_array("stamps").get_orthogonal_selection((np.sort(picks),)))
    order = np.argsort(np.argsort(picks))  # rows of the sorted read, in ``picks`` order
    stamps = stamps[order]
    denoised_on = config.denoise.enabled and run.has_array("denoised")
    if denoised_on:
        den = np.asarray(run.open_array("denoised").get_orthogonal_selection((np.sort(picks),)))[order]
    else:
        den = stamps
    pol, pole, axis = apct(den, return_geometry=True, **core_options(config.polar))
    ids = run.sources()["id"].astype(str).to_numpy()[picks]
    ncol = 2 if len(picks) > 1 else 1
    nrow = math.ceil(len(picks) / ncol)
    fig, axes = plt.subplots(nrow, 3 * ncol, figsize=(3.0 * 3 * ncol, 3.1 * nrow), squeeze=False)
    for a in axes.flat:
        a.set_axis_off()
    s = stamps.shape[-1]
    for k in range(len(picks)):
        row, base = divmod(k, ncol)
        ax = axes[row, 3 * base:3 * base + 3]
        lo = float(np.nanpercentile(stamps[k], 5))
        hi = float(np.nanpercentile(den[k], 99.9))
        ax[0].imshow(_stretch(stamps[k], lo, hi), origin="lower", cmap="gray", vmin=0, vmax=1)
        ax[0].set_title(f"{ids[k]}", fontsize=8)
        ax[1].imshow(_stretch(den[k], lo, hi), origin="lower", cmap="gray", vmin=0, vmax=1)
        y0, x0 = pole[k]
        ax[1].plot([x0], [y0], "r+", ms=8)
        r = s / 2
        ax[1].plot([x0, x0 + r * math.cos(axis[k])], [y0, y0 + r * math.sin(axis[k])], "r-", lw=0.8)
        ax[1].set_xlim(-0.5, s - 0.5)
        ax[1].set_ylim(-0.5, s - 0.5)
        ax[1].set_title("denoised" if denoised_on else "stamp (denoise off)", fontsize=8)
        ax[2].imshow(_stretch(pol[k], lo, hi), origin="upper", cmap="gray", vmin=0, vmax=1,
                     aspect="auto")
        ax[2].set_title(f"APCT {pol.shape[1]}x{pol.shape[2]} (pole: {config.polar.pole})", fontsize=8)
    fig.suptitle("original | denoised | adaptive polar transform", fontsize=10)
    fig.tight_layout()
    out = Path(path) if path is not None else run.path / "figures" / FIGURE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def polar_chunk(i: int, source: str, out: str, n: int, chunk: int, cfg: PolarConfig) -> int:
    """APCT of chunk ``i`` of the image array at ``source``, written to its region of
    the array at ``out`` (the per-chunk task, here or on a Dask worker); returns how
    many of its stamps had non-finite pixels."""
    import torch
    import zarr

    from ..core.cae import set_threads

    set_threads()
    from ..io.chunklog import chunk_rows

    rows = chunk_rows(i, n, chunk)
    block = np.asarray(zarr.open_array(store=source, mode="r")[rows], dtype=np.float32)
    n_nonfinite = int((~np.isfinite(block)).any(axis=(1, 2)).sum())
    parts = []
    options = core_options(cfg)
    for b in range(0, len(block), cfg.batch_size):
        with torch.inference_mode():
            batch = torch.from_numpy(block[b:b + cfg.batch_size])
            parts.append(apct_torch(batch, owned=True, **options).numpy())
    zarr.open_array(store=out, mode="r+")[rows] = np.concatenate(parts)
    return n_nonfinite


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..io.chunklog import ChunkLedger, chunk_map, resume_or_create

    cfg, run = ctx.config.polar, ctx.run
    source, _ = image_source(ctx.config, "polar")
    images = run.open_array(source)
    n, s = images.shape[0], images.shape[-1]
    rows, cols = _shape(s, cfg)
    chunk = images.chunks[0]
    n_chunks = -(-n // chunk)
    ledger = ChunkLedger(run.path, "polar", f"{ctx.fingerprint}|{n}|{chunk}|{cfg.batch_size}")
    out = run.array_path("polar")
    done = resume_or_create(ledger, out, (n, rows, cols), chunk)
    if done:
        log.info("polar: resuming, %d of %d chunks already done", len(done), n_chunks)
    counts = chunk_map(polar_chunk, n, chunk, str(run.array_path(source)), str(out), n, chunk, cfg,
                       ledger=ledger, done=done, desc="polar", unit="stamp", progress=ctx.progress)
    log.info("polar: %d stamps -> %d x %d polar images from '%s' (pole: %s)",
             n, rows, cols, source, cfg.pole)
    return dict(n_stamps=n, input=source, rows=rows, cols=cols, pole=cfg.pole,
                n_nonfinite_stamps=int(sum(counts.values())), n_chunks_resumed=len(done))


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    text = (f"{info.get('n_stamps', 0)} polar images ({info.get('rows')} x {info.get('cols')}, "
            f"pole: {info.get('pole')}) written to {run.array_path('polar')}")
    if options.get("figure"):
        text += f"\nfigure: {polar_figure(run, run.config())}"
    return text


STAGE = Stage(
    name="polar",
    summary="adaptive polar coordinate transform (rotation invariance)",
    description=__doc__.split("\n\n")[0],
    compute=_compute,
    sections=("polar",),
    upstream=lambda config: (image_source(config, "polar")[1],),
    outputs=("polar.zarr",),
    extra=lambda ctx: {"input": image_source(ctx.config, "polar")[0]},
    switch="polar.enabled",
    arguments=(Argument("--figure", "also draw the paper's Fig. 2 (stamps, denoised, polar) for a few "
                        "bright galaxies into RUN_DIR/figures/", action="store_true"),),
    report=_report,
    chunked=True,
)


def polar(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
          force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Apply the APCT to every stamp of a run directory.

    Reads ``denoised`` (or ``stamps`` when ``config.denoise.enabled`` is off)
    and writes ``polar`` (N x rows x cols float32, same order), streaming
    ``config.polar.batch_size`` stamps at a time so memory does not grow with N.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory after ``ingest`` (and ``denoise`` when enabled).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the inputs and settings are unchanged.
    progress : bool
        Show a progress bar.
    **settings
        Overrides of the ``[polar]`` settings.

    Returns
    -------
    RunDir

    Raises
    ------
    RunDirError
        If the run directory or the input array is missing.
    ValueError
        If a polar setting is invalid.
    """
    return execute("polar", run_dir, config, force=force, progress=progress, **settings)
