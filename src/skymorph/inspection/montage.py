"""Member sampling, the display stretch, montage drawing and the HTML gallery.

Display of a stamp depends on what the input file held:

* **display-scaled inputs** (8-bit JPEG/PNG, recognised by the suffix of the
  ``origin`` column of ``sources.parquet``) were already stretched by whoever made
  them; they are shown as they are, a linear min-max of their values
  (:func:`linear`), with no second stretch on top;
* **linear inputs** (FITS, NPY) get a Lupton-style asinh stretch (:func:`stretch`):
  the median of the stamp is subtracted as the background, the white point ``s``
  is the ``stretch_percentile``-th percentile of the pixels of the *central
  segment* (the connected region, of at least 10 pixels, above 1.5 noise sigma of
  the stamp smoothed by a 1.5-pixel Gaussian, that holds the stamp's centre; the
  stamp's maximum where there is none), and pixels are shown as
  ``asinh(x / b) / asinh(s / b)`` clipped to [0, 1], with the softening
  ``b = max(asinh_softening * s, stretch_noise_sigmas * sigma)`` and ``sigma`` the
  stamp's noise (1.4826 x MAD).  Taking the white point from the galaxy's own
  pixels rather than from the whole stamp keeps its core from saturating (with the
  default 99.9: under 5% of the central segment at the white point on every COSMOS
  stamp, where a whole-stamp 99.5th percentile whitened a quarter of it), and the
  asinh lifts the faint outskirts without turning the noise of faint stamps into
  white speckle.

``inspect.stretch`` (``auto``, ``asinh`` or ``linear``) picks between the two;
``auto`` decides per stamp as above.  Each stamp is scaled on its own, so a faint
galaxy can be seen beside a bright one: the montage shows shapes, not fluxes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, InspectConfig
from ..core.scores import sample_members
from ..errors import SkymorphError
from ..io.atomic import atomic_file, write_text_atomic
from ..io.rundir import RunDir, RunDirError
from ._templates import render

log = logging.getLogger("skymorph.inspection")

HEADER_PX = 36
GAP_PX = 2
DISPLAY_SCALED_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Inputs with these suffixes hold display-scaled 8-bit values: shown without a stretch."""
STRETCH_MODES = ("auto", "asinh", "linear")


class InspectError(SkymorphError, ValueError):
    """Inputs of the inspection step are unusable (no consensus clusters, bad vote file...)."""


# --- sampling ---------------------------------------------------------------------------------


def consensus_labels(catalog: pd.DataFrame) -> np.ndarray:
    """The consensus cluster of every catalog row, -1 where the three clusterings disagree.

    Raises
    ------
    InspectError
        If the catalog lacks the ``cluster`` / ``consensus`` columns.
    """
    missing = [c for c in ("id", "cluster", "consensus") if c not in catalog.columns]
    if missing:
        raise InspectError(
            f"the catalog has no {', '.join(missing)} column(s) (it has: {', '.join(catalog.columns)}); "
            "run `skymorph cluster RUN_DIR` first"
        )
    labels = pd.to_numeric(catalog["cluster"], errors="coerce").fillna(-1).to_numpy(np.int64)
    keep = catalog["consensus"].fillna(False).to_numpy(bool)
    return np.where(keep & (labels >= 0), labels, -1)


def clustering_fingerprint(catalog: pd.DataFrame) -> str:
    """Short hash of the ids and consensus labels: changes whenever the clustering does."""
    labels = consensus_labels(catalog)
    digest = hashlib.sha256()
    digest.update("\n".join(catalog["id"].astype(str)).encode())
    digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()[:12]


# --- display ----------------------------------------------------------------------------------


def central_segment(data: np.ndarray, nsigma: float = 1.5, smooth: float = 1.5,
                    min_pixels: int = 10) -> np.ndarray | None:
    """Mask of the galaxy at the stamp's centre: the connected region of the Gaussian-smoothed
    (``smooth`` px) stamp above ``nsigma`` times the smoothed stamp's noise that holds the centre,
    or else the nearest within a quarter of the stamp; ``None`` when no region of at least
    ``min_pixels`` stands out.  ``data`` is background-subtracted and finite."""
    from scipy import ndimage

    smoothed = ndimage.gaussian_filter(data, smooth)
    sigma = 1.4826 * np.median(np.abs(smoothed - np.median(smoothed)))
    if not sigma > 0:
        return None
    labels, n = ndimage.label(smoothed > nsigma * sigma)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    labels[sizes[labels] < min_pixels] = 0
    if not labels.any():
        return None
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    if labels[cy, cx]:
        return labels == labels[cy, cx]
    yy, xx = np.nonzero(labels)
    dist = (yy - cy) ** 2 + (xx - cx) ** 2
    i = int(dist.argmin())
    if dist[i] > (min(data.shape) / 4) ** 2:
        return None
    return labels == labels[yy[i], xx[i]]


def stretch(image: np.ndarray, percentile: float = 99.9, softening: float = 0.05,
            noise_sigmas: float = 2.0) -> np.ndarray:
    """Per-stamp Lupton-style asinh display stretch to [0, 1] (see the module docstring).

    Parameters
    ----------
    image : ndarray
        2-D image in linear flux units; NaNs are shown as the background.
    percentile : float
        Percentile ``s`` of the central segment's background-subtracted pixels that
        maps to 1 (the stamp's maximum when no segment stands out of the noise).
    softening : float
        ``a``: the stretch is linear below ``max(a s, noise_sigmas sigma)``, and
        logarithmic above; larger values are closer to a linear stretch.
    noise_sigmas : float
        Lower bound of the linear range in units of the stamp's noise ``sigma``
        (1.4826 x the median absolute deviation), so that faint, noisy stamps
        do not turn their noise into white speckle.

    Returns
    -------
    ndarray
        float32 image in [0, 1].
    """
    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.float32)
    data = np.where(finite, data - np.median(data[finite]), 0.0)
    sigma = 1.4826 * np.median(np.abs(data[finite]))
    segment = central_segment(data)
    values = data[segment & finite] if segment is not None else np.zeros(0)
    scale = np.percentile(values, percentile) if values.size else np.max(data[finite])
    if not scale > 0:
        scale = np.max(data[finite])
    if not scale > 0:
        return np.zeros(data.shape, np.float32)
    soft = max(softening * scale, noise_sigmas * sigma, 1e-12 * scale)
    out = np.arcsinh(data / soft) / np.arcsinh(scale / soft)
    return np.clip(np.where(finite, out, 0.0), 0.0, 1.0).astype(np.float32)


def linear(image: np.ndarray) -> np.ndarray:
    """Linear min-max scaling to [0, 1], for inputs that are already display-scaled."""
    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.float32)
    lo, hi = data[finite].min(), data[finite].max()
    if not hi > lo:
        return np.zeros(data.shape, np.float32)
    return np.clip(np.where(finite, (data - lo) / (hi - lo), 0.0), 0.0, 1.0).astype(np.float32)


def uses_asinh(cfg: InspectConfig, display_scaled: bool) -> bool:
    """Whether a stamp is shown with the asinh stretch (else linearly) under ``inspect.stretch``."""
    if cfg.stretch not in STRETCH_MODES:
        raise InspectError(f"inspect.stretch must be one of {', '.join(STRETCH_MODES)} (got {cfg.stretch!r})")
    return cfg.stretch == "asinh" or (cfg.stretch == "auto" and not display_scaled)


def display(image: np.ndarray, cfg: InspectConfig, display_scaled: bool = False,
            softening: float | None = None) -> np.ndarray:
    """One stamp as shown to the experts, in [0, 1] (float32).

    Parameters
    ----------
    image : ndarray
        The stamp.
    cfg : InspectConfig
        ``stretch``, ``stretch_percentile``, ``asinh_softening``, ``stretch_noise_sigmas``.
    display_scaled : bool
        The input file was a display-scaled 8-bit image (JPEG/PNG).
    softening : float, optional
        Overrides ``asinh_softening`` (the live stretch control of the web application).
    """
    if not uses_asinh(cfg, display_scaled):
        return linear(image)
    soft = cfg.asinh_softening if softening is None else softening
    return stretch(image, cfg.stretch_percentile, soft, cfg.stretch_noise_sigmas)


def _origin_column(sources: pd.DataFrame) -> str | None:
    return next((c for c in ("origin", "file", "path") if c in sources.columns), None)


def _per_stamp(run: RunDir, n_stamps: int, column: Any, fill: Any, dtype: Any) -> np.ndarray:
    out = np.full(n_stamps, fill, dtype=dtype)
    try:
        sources = run.sources()
    except (RunDirError, OSError, ValueError):
        return out
    index = sources["index"].to_numpy(np.int64) if "index" in sources else np.arange(len(sources))
    ok = (index >= 0) & (index < n_stamps)
    values = column(sources)
    if values is not None:
        out[index[ok]] = np.asarray(values)[ok]
    return out


def display_scaled_stamps(run: RunDir, n_stamps: int) -> np.ndarray:
    """Per stamp index: whether its input was a display-scaled 8-bit image (.jpg/.jpeg/.png)."""
    def column(sources: pd.DataFrame) -> np.ndarray | None:
        name = _origin_column(sources)
        if name is None:
            return None
        suffix = sources[name].fillna("").astype(str).str.lower()
        return suffix.str.endswith(DISPLAY_SCALED_SUFFIXES).to_numpy()

    return _per_stamp(run, n_stamps, column, False, bool)


def stamp_pixel_scales(run: RunDir, n_stamps: int, stamp_side: int) -> np.ndarray:
    """Per stamp index: arcsec per stamp pixel (NaN unknown), from the sources' ``PIXEL_SCALE``
    (arcsec per input pixel) and, for resampled stamps, ``frame_side`` input pixels per stamp."""
    def column(sources: pd.DataFrame) -> np.ndarray | None:
        name = next((c for c in ("PIXEL_SCALE", "pixel_scale") if c in sources.columns), None)
        if name is None:
            return None
        scale = pd.to_numeric(sources[name], errors="coerce").to_numpy(np.float64)
        if "frame_side" in sources.columns:
            side = pd.to_numeric(sources["frame_side"], errors="coerce").to_numpy(np.float64)
            scale = scale * np.where(side > 0, side / stamp_side, 1.0)
        return np.where(scale > 0, scale, np.nan)

    return _per_stamp(run, n_stamps, column, np.nan, np.float64)


def to_png(image01: np.ndarray, size: int | None = None) -> bytes:
    """An image in [0, 1] as an 8-bit greyscale PNG (resampled to ``size`` when given)."""
    from PIL import Image

    img = Image.fromarray(np.round(image01 * 255).astype(np.uint8), mode="L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- montages -----------------------------------------------------------------------------------


def _geometry(n_shown: int, cfg: InspectConfig) -> dict[str, int]:
    cols = max(1, min(cfg.grid_cols, n_shown))
    rows = max(1, math.ceil(n_shown / cols))
    cell = cfg.thumb_px
    return {
        "cols": cols, "rows": rows, "cell": cell, "gap": GAP_PX, "header": HEADER_PX,
        # at least four cells wide, so that the title of a small cluster is not cut
        "width": max(cols, min(cfg.grid_cols, 4)) * cell + (cols + 1) * GAP_PX,
        "height": HEADER_PX + rows * cell + (rows + 1) * GAP_PX,
    }


def _cell_origin(i: int, geom: dict[str, int]) -> tuple[int, int]:
    row, col = divmod(i, geom["cols"])
    step = geom["cell"] + geom["gap"]
    return geom["gap"] + col * step, geom["header"] + geom["gap"] + row * step


def _render_montage(images: np.ndarray, scaled: np.ndarray, title: str,
                    cfg: InspectConfig, colour: list[np.ndarray | None] | None = None
                    ) -> tuple[Any, dict[str, int]]:
    from PIL import Image, ImageDraw, ImageFont

    geom = _geometry(len(images), cfg)
    colour = colour if colour is not None else [None] * len(images)
    mode = "RGB" if any(c is not None for c in colour) else "L"
    grey = (lambda v: (v, v, v)) if mode == "RGB" else (lambda v: v)
    canvas = Image.new(mode, (geom["width"], geom["height"]), color=grey(60))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, geom["width"], geom["header"]], fill=grey(20))
    font = ImageFont.load_default(size=20)
    draw.text((8, 7), title, fill=grey(235), font=font)
    for i, (image, is_scaled) in enumerate(zip(images, scaled, strict=True)):
        if colour[i] is not None:  # a colour input, shown in its own colours
            thumb = Image.fromarray(colour[i], mode="RGB")
        else:
            shown = display(image, cfg, bool(is_scaled))
            thumb = Image.fromarray(np.round(shown * 255).astype(np.uint8), mode="L").convert(mode)
        if thumb.size != (geom["cell"], geom["cell"]):
            thumb = thumb.resize((geom["cell"], geom["cell"]), Image.Resampling.LANCZOS)
        canvas.paste(thumb, _cell_origin(i, geom))
    return canvas, geom


# --- query and anomaly grids (``skymorph similar``, ``anomaly``, ``subdivide``) ----------------

SHOWN_COLUMNS = ("cluster", "consensus", "morph_type", "morph_type_final", "subcluster", "special_type",
                 "anomaly_score")
"""Catalog columns that the grids' tables show when the run has them."""


def galaxy_table(run: RunDir) -> pd.DataFrame:
    """The catalog when the run has one, else the sources table (one row per array row)."""
    if (run.path / "catalog.parquet").exists():
        return run.catalog()
    return run.sources()


def draw_grid(run: RunDir, config: Config, rows: np.ndarray, title: str, path: Path,
              first: np.ndarray | None = None) -> None:
    """A montage of the stamps of ``rows`` (rows of :func:`galaxy_table`; ``first``: an extra
    stamp shown first, e.g. the query image of ``skymorph similar --image``)."""
    table = galaxy_table(run)
    images = run.open_array(config.inspect.array)
    idx = _stamp_index(table)[rows]
    order = np.argsort(idx, kind="stable")
    pixels = np.empty((len(idx), *images.shape[1:]), dtype=np.float32)
    if len(idx):
        pixels[order] = np.asarray(images.oindex[idx[order]], dtype=np.float32)
    scaled = display_scaled_stamps(run, images.shape[0])[idx] if len(idx) else np.zeros(0, bool)
    if first is not None:
        pixels = np.concatenate([first[None].astype(np.float32), pixels])
        scaled = np.concatenate([[bool(scaled[0]) if len(scaled) else False], scaled])
    canvas, _ = _render_montage(pixels, scaled, title, config.inspect)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")


def inspection_dir(run: RunDir) -> Path:
    """``RUN_DIR/inspection`` (created when missing)."""
    path = run.path / "inspection"
    path.mkdir(exist_ok=True)
    return path


def _stamp_index(catalog: pd.DataFrame) -> np.ndarray:
    if "index" in catalog.columns:
        return catalog["index"].to_numpy(np.int64)
    return np.arange(len(catalog))


def _manifest_path(run: RunDir) -> Path:
    return run.path / "inspection" / "montages.json"


def load_manifest(run_dir: str | os.PathLike | RunDir) -> dict[str, Any]:
    """The montage manifest (clusters, sampled members and grid geometry).

    Raises
    ------
    RunDirError
        If the montages have not been drawn.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = _manifest_path(run)
    if not path.exists():
        raise RunDirError(f"{run.path} has no montages yet; run `skymorph inspect montage {run.path}`")
    return json.loads(path.read_text())


MONTAGE_SETTINGS = ("per_cluster", "seed", "grid_cols", "thumb_px", "array", "stretch",
                    "stretch_percentile", "asinh_softening", "stretch_noise_sigmas")


def montage_settings(config: Config) -> dict[str, Any]:
    """The settings that change the montages (part of the montage stage's fingerprint)."""
    return {k: getattr(config.inspect, k) for k in MONTAGE_SETTINGS}


def draw_montages(run: RunDir, config: Config, progress: bool = True) -> dict[str, Any]:
    """Draw one montage per consensus cluster and an HTML gallery of them.

    Writes ``RUN_DIR/inspection/montages/cluster_NNN.png`` (a ``grid_cols``-wide
    grid of up to ``per_cluster`` members drawn by :func:`sample_members`, each
    shown by :func:`display`), ``montages.json`` (which galaxy is in which cell)
    and ``index.html`` (the gallery).  The montage stage
    (:func:`skymorph.stages.inspect.montage`) calls this when the clustering or the
    montage settings changed.

    Parameters
    ----------
    run : RunDir
        Run directory with a catalog (``skymorph cluster``).
    config : Config
        Settings (the ``inspect`` section).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``n_clusters`` and ``n_consensus``.

    Raises
    ------
    InspectError
        If no galaxy is in a consensus cluster.
    RunDirError
        If the run has no catalog or no image array.
    """
    from tqdm.auto import tqdm

    cfg = config.inspect
    catalog = run.catalog()
    labels = consensus_labels(catalog)
    clustering = clustering_fingerprint(catalog)
    settings = montage_settings(config)
    out = inspection_dir(run)
    if not (labels >= 0).any():
        raise InspectError(
            f"no galaxy of {run.path} is in a consensus cluster (all {len(labels)} have cluster = -1); "
            "nothing to inspect"
        )
    if cfg.array not in ("stamps", "denoised"):
        raise InspectError(f"inspect.array must be 'stamps' or 'denoised' (got {cfg.array!r})")
    uses_asinh(cfg, False)  # checks inspect.stretch before anything is drawn
    images = run.open_array(cfg.array)
    stamp_index = _stamp_index(catalog)
    if stamp_index.size and stamp_index.max() >= images.shape[0]:
        raise RunDirError(
            f"the catalog refers to stamp {stamp_index.max()} but {cfg.array} holds {images.shape[0]}; "
            "re-run `skymorph cluster` on this run directory"
        )
    scaled = display_scaled_stamps(run, images.shape[0])
    samples = sample_members(labels, cfg.per_cluster, cfg.seed)
    sizes = Counter(labels[labels >= 0].tolist())
    mdir = out / "montages"
    mdir.mkdir(exist_ok=True)
    for old in mdir.glob("cluster_*.png"):
        old.unlink()
    ids = catalog["id"].astype(str).to_numpy()
    # one sorted read of every sampled stamp: random members of every cluster touch most
    # chunks, so reading cluster by cluster would decompress the whole array once per cluster
    wanted = np.unique(np.concatenate([stamp_index[rows] for rows in samples.values()]))
    pixels = np.asarray(images.oindex[wanted], dtype=np.float32)
    entries = []
    # colour inputs shown as they are are shown in their colours (not when a stretch is forced)
    as_they_are = wanted[scaled[wanted]] if not uses_asinh(cfg, True) else wanted[:0]
    colours = _colour_views(run, as_they_are, int(images.shape[-1]))
    numbers = display_numbers(samples)
    for cluster, rows in tqdm(samples.items(), desc="montage", unit="cluster", disable=not progress):
        stamps_idx = stamp_index[rows]
        block = pixels[np.searchsorted(wanted, stamps_idx)]
        title = f"cluster {numbers[cluster]}  |  {sizes[cluster]} galaxies  |  {len(rows)} shown"
        colour = [colours.get(int(i)) for i in stamps_idx]
        canvas, geom = _render_montage(block, scaled[stamps_idx], title, cfg, colour)
        name = f"montages/cluster_{cluster:03d}.png"
        with atomic_file(out / name) as tmp:
            canvas.save(tmp, format="PNG")
        entries.append({
            "cluster": cluster, "size": int(sizes[cluster]), "n_shown": len(rows), "png": name,
            "rows": rows.tolist(), "stamp_index": stamps_idx.tolist(), "ids": ids[rows].tolist(),
            "geometry": geom, "number": numbers[cluster], "colour": [c is not None for c in colour],
        })
    manifest = {"clustering": clustering, "array": cfg.array, "n_galaxies": len(catalog),
                "n_consensus": int((labels >= 0).sum()), **settings, "clusters": entries}
    write_text_atomic(_manifest_path(run), json.dumps(manifest, indent=1))
    (out / "index.html").write_text(gallery_html(run, manifest, int(scaled[stamp_index].sum())))
    return {"n_clusters": len(entries), "n_consensus": manifest["n_consensus"]}




def display_numbers(clusters: Any) -> dict[int, int]:
    """What the experts see as the cluster numbers: 0, 1, ... n - 1 over the consensus clusters
    in the order of their ids, with no gap where a cluster of the clustering kept no galaxy (the
    catalog's ids run over every cluster; where none is missing, number and id are the same).
    Votes and the catalog keep the ids."""
    return {int(c): i for i, c in enumerate(sorted(int(c) for c in clusters))}


def _colour_views(run: RunDir, stamps: np.ndarray, size: int) -> dict[int, np.ndarray]:
    """Colour views of the display-scaled stamps whose input holds colour (see :mod:`.colour`)."""
    if not stamps.size:
        return {}
    from .colour import colour_stamps

    try:
        sources = run.sources()
    except (RunDirError, OSError, ValueError):
        return {}
    return colour_stamps(sources, stamps.tolist(), size)


def gallery_html(run: RunDir, manifest: dict[str, Any], n_display_scaled: int = 0) -> str:
    """The HTML gallery of the montages (jinja2 template ``gallery.html``, autoescaped)."""
    how = {"asinh": "per-stamp asinh stretch", "linear": "per-stamp linear min-max scaling",
           "auto": "per-stamp asinh stretch of linear inputs"
                   + (", display-scaled JPEG/PNG inputs as they are" if n_display_scaled else "")}
    summary = (f'{len(manifest["clusters"])} consensus clusters, {manifest["n_consensus"]} of '
               f'{manifest["n_galaxies"]} galaxies kept; up to {manifest["per_cluster"]} random members '
               f'per cluster (seed {manifest["seed"]}), {how.get(manifest.get("stretch", "auto"), "")}.')
    return render("gallery.html", title=run.path.name, summary=summary, clusters=manifest["clusters"])
