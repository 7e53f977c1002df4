"""Polar: the adaptive polar coordinate transform (APCT, Fang et al. 2023).

For each stamp:

1. **Pole.**  ``pole="brightest"`` (the paper): the brightest pixel.  Several
   equal maxima: the one nearest the stamp centre, then the first in row-major
   order.  ``"centre"``: the stamp centre ((S-1)/2, (S-1)/2), where ingest puts
   the galaxy.  ``"peak-near-centre"``: the brightest pixel of the
   Gaussian-smoothed stamp within ``pole_radius`` x S of the centre, so that a
   foreground star, a bright neighbour or a hot pixel elsewhere cannot take the
   pole.
2. **Polar axis.**  From the pole towards the faintest pixel (ties: the one
   nearest the centre, then row-major order).  When the faintest pixel is the
   pole itself (a constant stamp) the axis points along +x.
3. **Rays.**  ``n_rays`` rays (default ``floor(2 pi / angle_step)`` = 125 for
   0.05 rad), the k-th at angle ``axis + k * angle_step`` counter-clockwise as
   displayed with the origin at the lower left (row index = y upwards, the FITS
   convention): ``x = x0 + r cos(t)``, ``y = y0 + r sin(t)``.  Each ray is
   sampled at ``n_radii`` radii ``r_j = (j + 1/2) * max_radius / n_radii``
   (default 50 samples 1 px apart out to half the stamp width) by bilinear
   interpolation.  Samples outside the stamp take the stamp's background (the
   median of its border frame), never pixels from the opposite edge; near the
   edge bilinear weights blend towards that background.
4. **Stacking and mirror.**  Ray k becomes row k; with ``mirror`` the image is
   ``[flipped profile | profile]``: ``2 * n_radii`` columns whose centre two
   columns are the samples nearest the pole (no constant or zero column).

A rotation of the stamp rotates the pole and the faintest pixel with it, so
right-angle rotations leave the output unchanged up to a cyclic shift of rows;
other angles change it by interpolation only (see ``tests/test_polar.py``).

Edge cases are defined, never errors: a brightest pixel on the border gives
rays that leave the stamp at once (background samples); a constant stamp gives
a constant image of that value; non-finite pixels are replaced by the
background before anything else.

The transform is vectorised over a batch with :func:`torch.nn.functional.grid_sample`
(no Python loop per pixel or per ray); :func:`apct` works on NumPy arrays for
notebooks and tests, :func:`polar` on a run directory.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import Config, PolarConfig
from ..io.rundir import RunDir, iter_chunks
from . import Argument, Stage, StageContext, execute, image_source

__all__ = ["polar", "apct", "polar_geometry", "polar_figure", "POLES", "output_shape"]

log = logging.getLogger(__name__)

POLES = ("brightest", "centre", "peak-near-centre")
FIGURE_NAME = "fig2_preprocessing.png"


def _section(config: Config | PolarConfig | None) -> PolarConfig:
    if config is None:
        return PolarConfig()
    if isinstance(config, PolarConfig):
        return config
    return config.polar


def _check(cfg: PolarConfig) -> None:
    if cfg.pole not in POLES:
        raise ValueError(f"polar.pole must be one of {', '.join(POLES)}; got {cfg.pole!r}")
    if not (0 < cfg.angle_step <= math.pi):
        raise ValueError(f"polar.angle_step must be in (0, pi] radians, got {cfg.angle_step}")
    for name in ("n_rays", "n_radii"):
        value = getattr(cfg, name)
        if value is not None and int(value) < 1:
            raise ValueError(f"polar.{name} must be a positive integer or unset, got {value}")
    if cfg.max_radius is not None and not cfg.max_radius > 0:
        raise ValueError(f"polar.max_radius must be positive or unset, got {cfg.max_radius}")
    if cfg.batch_size < 1:
        raise ValueError(f"polar.batch_size must be positive, got {cfg.batch_size}")


def output_shape(stamp_size: int, config: Config | PolarConfig | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the APCT image of an ``stamp_size`` square stamp."""
    cfg = _section(config)
    rows = int(cfg.n_rays) if cfg.n_rays else int(math.floor(2 * math.pi / cfg.angle_step + 1e-9))
    radii = int(cfg.n_radii) if cfg.n_radii else max(1, stamp_size // 2)
    return rows, radii * (2 if cfg.mirror else 1)


def _background(x, finite: bool = True):
    """Median of each stamp's border frame (torch, (B,S,S) -> (B,))."""
    import torch

    s = x.shape[-1]
    b = max(1, min(max(2, s // 20), s // 2))
    frame = torch.cat([x[:, :b].flatten(1), x[:, -b:].flatten(1),
                       x[:, b:-b, :b].flatten(1), x[:, b:-b, -b:].flatten(1)], dim=1)
    if finite:
        return frame.median(dim=1).values
    return frame.nanmedian(dim=1).values.nan_to_num(0.0)


def _extreme_nearest_centre(x, d2, largest: bool):
    """Flat index of each stamp's max (or min); ties go to the pixel nearest the
    centre, then to the first in row-major order (argmin returns the first)."""
    import torch

    flat = x.flatten(1)
    idx = flat.argmax(1) if largest else flat.argmin(1)
    value = flat.gather(1, idx[:, None])
    # Ties are rare on real data: resolve them only for the stamps that have them.
    tied = ((flat == value).sum(1) > 1).nonzero().flatten()
    if len(tied):
        sub = flat[tied]
        score = torch.where(sub == value[tied], d2.flatten()[None, :], float("inf"))
        idx = idx.clone()
        idx[tied] = score.argmin(1)
    return idx


def _gaussian_blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    half = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    h = x[:, None]
    h = F.conv2d(F.pad(h, (half, half, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    h = F.conv2d(F.pad(h, (0, 0, half, half), mode="replicate"), k.view(1, 1, -1, 1))
    return h[:, 0]


def polar_geometry(x, cfg: PolarConfig):
    """Pole (y, x) and axis angle of each stamp of a (B, S, S) torch tensor
    whose non-finite pixels are already replaced."""
    import torch

    b, s, _ = x.shape
    c = (s - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32, device=x.device),
                            torch.arange(s, dtype=torch.float32, device=x.device), indexing="ij")
    d2 = (yy - c) ** 2 + (xx - c) ** 2
    if cfg.pole == "brightest":
        idx = _extreme_nearest_centre(x, d2, largest=True)
        pole = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    elif cfg.pole == "centre":
        pole = torch.full((b, 2), c, dtype=torch.float32, device=x.device)
    else:
        smooth = _gaussian_blur(x, float(cfg.pole_smooth))
        radius = max(0.5, float(cfg.pole_radius) * s)
        outside = d2 > radius ** 2
        smooth = smooth.masked_fill(outside[None], float("-inf"))
        idx = _extreme_nearest_centre(smooth, d2, largest=True)
        pole = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    idx = _extreme_nearest_centre(x, d2, largest=False)
    faint = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    dy, dx = (faint - pole).unbind(1)
    same = (dy.abs() < 1e-6) & (dx.abs() < 1e-6)
    angle = torch.where(same, torch.zeros_like(dy), torch.atan2(dy, dx))
    return pole, angle


def _apct_torch(x, cfg: PolarConfig, geometry: bool = False, owned: bool = False):
    """APCT of a (B, S, S) float32 torch tensor; ``owned`` lets it subtract the
    background in place instead of copying the stamps."""
    import torch
    import torch.nn.functional as F

    b, s, s2 = x.shape
    if s != s2:
        raise ValueError(f"APCT needs square stamps, got {s} x {s2}")
    if bool(torch.isfinite(x).all()):
        bg = _background(x)
    else:
        bg = _background(torch.where(torch.isfinite(x), x, float("nan")), finite=False)
        x = torch.where(torch.isfinite(x), x, bg[:, None, None])
        owned = True
    pole, axis = polar_geometry(x, cfg)
    rows, cols = output_shape(s, cfg)
    n_r = cols // 2 if cfg.mirror else cols
    r_max = float(cfg.max_radius) if cfg.max_radius else s / 2.0
    radii = (torch.arange(n_r, dtype=torch.float32, device=x.device) + 0.5) * (r_max / n_r)
    steps = torch.arange(rows, dtype=torch.float32, device=x.device) * float(cfg.angle_step)
    theta = axis[:, None] + steps[None, :]                                    # (B, rows)
    # Normalised grid coordinates straight away (align_corners=True maps -1/+1
    # to the centres of the first/last pixels): one fused op per axis.
    scale = 2.0 / max(s - 1, 1)
    grid = torch.empty((b, rows, n_r, 2), dtype=torch.float32, device=x.device)
    for i, (trig, centre) in enumerate(((torch.cos, pole[:, 1]), (torch.sin, pole[:, 0]))):
        grid[..., i] = torch.addcmul((centre * scale - 1.0)[:, None, None],
                                     (trig(theta) * scale)[:, :, None], radii[None, None, :])
    # Samples outside the stamp must be the background: sample (x - bg) with
    # zero padding and add bg back.
    x = x.sub_(bg[:, None, None]) if owned else x - bg[:, None, None]
    profile = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)[:, 0]
    if cfg.mirror:
        out = torch.empty((b, rows, 2 * n_r), dtype=torch.float32, device=x.device)
        out[..., n_r:] = profile.add_(bg[:, None, None])
        out[..., :n_r] = profile.flip(-1)
    else:
        out = profile.add_(bg[:, None, None])
    if geometry:
        return out, pole, axis
    return out


def apct(stamps: np.ndarray, config: Config | PolarConfig | None = None, *,
         return_geometry: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive polar coordinate transform of a batch of stamps.

    Parameters
    ----------
    stamps : ndarray, shape (B, S, S) or (S, S)
        Square images (any float dtype).
    config : Config or PolarConfig, optional
        Settings (the ``polar`` section); the paper's defaults when omitted.
    return_geometry : bool
        Also return the pole ``(B, 2)`` as (row, column) and the polar axis
        angle ``(B,)`` in radians.

    Returns
    -------
    ndarray, shape (B, rows, cols) float32
        ``rows = n_rays`` (125), ``cols = 2 * n_radii`` (S with the defaults);
        a 2-D input gives a 2-D output.

    Notes
    -----
    See the module docstring for the pole, axis, sampling and edge-case rules.
    """
    import torch

    cfg = _section(config)
    _check(cfg)
    arr = np.asarray(stamps, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"apct expects stamps of shape (B, S, S), got {np.shape(stamps)}")
    if arr.shape[0] == 0:
        rows, cols = output_shape(arr.shape[-1], cfg)
        empty = np.zeros((0, rows, cols), np.float32)
        return (empty, np.zeros((0, 2)), np.zeros(0)) if return_geometry else empty
    with torch.inference_mode():
        out, pole, axis = _apct_torch(torch.from_numpy(np.ascontiguousarray(arr)), cfg, geometry=True,
                                      owned=arr is not stamps and arr.base is None)
    out = out.numpy()
    if single:
        out = out[0]
    if return_geometry:
        return out, pole.numpy(), axis.numpy()
    return out


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
    pol, pole, axis = apct(den, config, return_geometry=True)
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
    start, stop = i * chunk, min(n, (i + 1) * chunk)
    block = np.asarray(zarr.open_array(store=source, mode="r")[start:stop], dtype=np.float32)
    n_nonfinite = int((~np.isfinite(block)).any(axis=(1, 2)).sum())
    parts = []
    for b in range(0, len(block), cfg.batch_size):
        with torch.inference_mode():
            parts.append(_apct_torch(torch.from_numpy(block[b:b + cfg.batch_size]), cfg, owned=True).numpy())
    zarr.open_array(store=out, mode="r+")[start:stop] = np.concatenate(parts)
    return n_nonfinite


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.compute import run_chunks
    from ..io.chunklog import ChunkLedger, resume_or_create

    cfg, run = ctx.config.polar, ctx.run
    source, _ = image_source(ctx.config, "polar")
    images = run.open_array(source)
    n, s = images.shape[0], images.shape[-1]
    rows, cols = output_shape(s, cfg)
    chunk = images.chunks[0]
    n_chunks = -(-n // chunk)
    ledger = ChunkLedger(run.path, "polar", f"{ctx.fingerprint}|{n}|{chunk}|{cfg.batch_size}")
    out = run.array_path("polar")
    done = resume_or_create(ledger, out, (n, rows, cols), chunk)
    if done:
        log.info("polar: resuming, %d of %d chunks already done", len(done), n_chunks)
    counts = dict(done)
    with tqdm(total=n, initial=sum(min(n, (i + 1) * chunk) - i * chunk for i in done), desc="polar",
              unit="stamp", disable=not ctx.progress) as bar:
        def finished(i: int, n_nonfinite: int) -> None:
            ledger.record(i, n_nonfinite)
            counts[i] = n_nonfinite
            bar.update(min(n, (i + 1) * chunk) - i * chunk)

        run_chunks(polar_chunk, [i for i in range(n_chunks) if i not in done], str(run.array_path(source)),
                   str(out), n, chunk, cfg, on_done=finished)
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
    check=lambda config: _check(config.polar),
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
