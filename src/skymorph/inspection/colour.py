"""Colour views of galaxies whose input was a colour image (SDSS gri JPEGs, DECaLS PNGs).

Ingest reduces colour to luminance (the encoder and the measurements work on one band);
the experts should still see the colours they are used to.  The colour view is rebuilt
from the input file with the stamp's own geometry, recorded in ``sources.parquet``
(centre ``y``, ``x``; ``frame_side`` pixels of the input per stamp; ``resample`` or
``crop``), so it shows exactly the galaxy and framing of the stamp.  Inputs that are
grey (one channel, or three equal ones) or no longer readable get no colour view.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .montage import DISPLAY_SCALED_SUFFIXES

__all__ = ["read_rgb", "colour_cut", "colour_stamps"]

GREY_TOLERANCE = 6.0
"""Largest difference between channels (8-bit levels) of the 99th-percentile pixel below which an
RGB file counts as grey (JPEG noise of a grey image saved as RGB stays within a few levels; the
gz1_sdss gri cutouts reach 12 to 64)."""


def read_rgb(path: str | Path) -> np.ndarray | None:
    """The file's pixels as ``H x W x 3`` uint8 when it holds colour, else ``None``.

    Grey files (one channel, or RGB with equal channels up to JPEG noise) and files that
    cannot be read give ``None``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return None
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        return None
    # most of a cutout is dark sky, grey in any file: judge the most colourful 1% of the pixels
    x = rgb.astype(np.int16)
    spread = np.maximum(np.abs(x[..., 0] - x[..., 1]), np.abs(x[..., 1] - x[..., 2]))
    return rgb if np.percentile(spread, 99) > GREY_TOLERANCE else None


def colour_cut(rgb: np.ndarray, *, y: int, x: int, side: int, size: int) -> np.ndarray:
    """The ``side`` square of ``rgb`` centred on (``y``, ``x``), resampled to ``size``.

    The same square as ingest cuts for the stamp (padding outside the image is black),
    resampled as ingest resamples (Lanczos when enlarging, box average when shrinking).

    Parameters
    ----------
    rgb : ndarray
        ``H x W x 3`` uint8.
    y, x : int
        Centre of the stamp in the input's pixels.
    side : int
        Input pixels across the stamp.
    size : int
        Stamp side in pixels.

    Returns
    -------
    ndarray
        ``size x size x 3`` uint8.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    y0, x0 = int(y) - side // 2, int(x) - side // 2
    ys, ye, xs, xe = max(0, y0), min(h, y0 + side), max(0, x0), min(w, x0 + side)
    out = np.zeros((side, side, 3), np.uint8)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = rgb[ys:ye, xs:xe]
    if side != size:
        method = Image.Resampling.LANCZOS if side < size else Image.Resampling.BOX
        out = np.asarray(Image.fromarray(out, mode="RGB").resize((size, size), method))
    return out


def colour_stamps(sources: pd.DataFrame, stamps: Iterable[int], size: int) -> dict[int, np.ndarray]:
    """Colour views (``size x size x 3`` uint8) of the given stamp indices that have one.

    Parameters
    ----------
    sources : DataFrame
        The run's ``sources.parquet`` (``index``, ``origin``, ``y``, ``x``, ``frame_side``).
    stamps : iterable of int
        Stamp indices wanted.
    size : int
        Stamp side in pixels.
    """
    wanted = {int(s) for s in stamps}
    if not wanted or "origin" not in sources.columns or not {"y", "x"} <= set(sources.columns):
        return {}
    index = sources["index"].to_numpy(np.int64) if "index" in sources.columns else np.arange(len(sources))
    out: dict[int, np.ndarray] = {}
    cache: dict[str, Any] = {}
    for pos in np.flatnonzero(np.isin(index, list(wanted))):
        row = sources.iloc[pos]
        origin = str(row["origin"] or "")
        if not origin.lower().endswith(DISPLAY_SCALED_SUFFIXES):
            continue
        if origin not in cache:
            cache[origin] = read_rgb(origin)
        rgb = cache[origin]
        if rgb is None:
            continue
        side = row.get("frame_side")
        side = int(side) if pd.notna(side) and int(side) > 0 else size
        out[int(index[pos])] = colour_cut(rgb, y=int(row["y"]), x=int(row["x"]), side=side, size=size)
    return out
