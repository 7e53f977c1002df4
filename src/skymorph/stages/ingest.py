"""Ingest: turn survey cutouts into a run directory of equal-sized stamps.

Inputs (files, directories or glob patterns):

* per-galaxy images: FITS (first image HDU, or ``hdu``), PNG/JPEG (colour is
  reduced to one band by luminance, 0.299 R + 0.587 G + 0.114 B), NPY;
* stamp collections in the GalSim / COSMOS ``RealGalaxyCatalog`` layout: a FITS
  table whose name contains ``catalog`` with ``IDENT``, ``GAL_FILENAME`` and
  ``GAL_HDU`` columns (a directory holding one is read as that collection; a
  companion ``<catalog>_fits.fits`` table is joined on row order);
* large images (``field=True``): stamps are cut with :class:`astropy.nddata.Cutout2D`
  at the catalog's RA/Dec (through the image WCS) or x/y, or, without a catalog,
  around sources detected with photutils.

Each stamp is centred on its galaxy and cropped or padded to ``stamp_size``.
Padding is Gaussian noise with the stamp's own background level and sigma
(sigma-clipped median and MAD of the stamp's border), never zeros, and is
flagged in the ``sources`` table; NaN pixels inside a usable stamp are filled
the same way and counted.  Unusable inputs are listed in ``rejects.csv`` and
never stop the run.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from scipy import ndimage
from tqdm.auto import tqdm

from ..config import Config, IngestConfig
from ..core.parallel import map_ordered, start_pool
from ..core.sky import ring_background
from ..io.rundir import RunDir
from . import Argument, Stage, StageContext, execute

__all__ = ["ingest", "IngestError", "read_image", "make_stamp", "select_rows", "read_table"]

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = FITS_SUFFIXES + RASTER_SUFFIXES + NPY_SUFFIXES
COLLECTION_COLUMNS = {"IDENT", "GAL_FILENAME", "GAL_HDU"}


class IngestError(ValueError):
    """The inputs cannot be ingested at all (as opposed to one bad galaxy)."""


class Reject(Exception):
    """One input is unusable; the message is the reason written to rejects.csv."""


# --- reading ---------------------------------------------------------------------


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _stem(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _fits_image(hdul: fits.HDUList, hdu: int | None) -> tuple[np.ndarray, int]:
    if hdu is not None:
        if hdu >= len(hdul):
            raise Reject(f"has no HDU {hdu} (it has {len(hdul)}); choose another --hdu")
        candidates = [hdu]
    else:
        candidates = [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) >= 2]
        if not candidates:
            raise Reject("no image HDU (only tables or empty HDUs); is it a catalog?")
    index = candidates[0]
    data = hdul[index].data
    if data is None:
        raise Reject(f"HDU {index} holds no data")
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        raise Reject(f"HDU {index} is {data.ndim}-dimensional; give a 2-D image or choose --hdu")
    return data, index


def read_image(path: str | Path, hdu: int | None = None) -> tuple[np.ndarray, int]:
    """Read one galaxy image as a 2-D float array.

    Parameters
    ----------
    path : str or Path
        FITS, PNG, JPEG or NPY file.
    hdu : int, optional
        FITS HDU to read; the first image HDU by default.

    Returns
    -------
    image : ndarray
        2-D float64 image (colour images reduced to luminance).
    hdu : int
        The HDU read (-1 for non-FITS files).

    Raises
    ------
    Reject
        If the file is unreadable, truncated or holds no 2-D image.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.stat().st_size == 0:
        raise Reject("empty (zero-byte) file")
    try:
        if suffix in FITS_SUFFIXES:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with fits.open(path, memmap=False) as hdul:
                    data, index = _fits_image(hdul, hdu)
                    data = np.array(data, dtype=np.float64)
            for w in caught:
                if "truncat" in str(w.message).lower():
                    raise Reject("truncated FITS file (data shorter than its header says)")
            return data, index
        if suffix in RASTER_SUFFIXES:
            return _read_raster(path), -1
        if suffix in NPY_SUFFIXES:
            data = np.squeeze(np.load(path, allow_pickle=False))
            if data.ndim == 3 and data.shape[-1] in (3, 4):
                data = _luminance(data[..., :3])
            if data.ndim != 2:
                raise Reject(f"NPY array has shape {data.shape}; expected a 2-D image")
            return np.asarray(data, dtype=np.float64), -1
    except Reject:
        raise
    except (OSError, ValueError, TypeError, IndexError, EOFError, KeyError) as exc:
        if suffix in FITS_SUFFIXES and "reshape" in str(exc):
            raise Reject("truncated FITS file (data shorter than its header says)") from None
        kind = {**dict.fromkeys(FITS_SUFFIXES, "FITS"), ".npy": "NPY"}.get(suffix, "image")
        raise Reject(f"unreadable {kind} file: {exc}") from None
    raise Reject(f"unsupported file type {suffix!r}; use FITS, PNG, JPEG or NPY")


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
            return np.asarray(img, dtype=np.float64)
        return _luminance(np.asarray(img.convert("RGB")))


# --- catalogs ----------------------------------------------------------------------


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a catalog (FITS table, CSV or Parquet) into a DataFrame.

    Multi-dimensional FITS columns are dropped; byte strings are decoded.
    """
    path = Path(path)
    if not path.exists():
        raise IngestError(f"catalog {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".txt", ".tsv")):
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        from astropy.table import Table

        table = Table.read(path, format="fits")
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read catalog {path}: {exc}") from None
    scalar = [c for c in table.colnames if table[c].ndim <= 1]
    frame = table[scalar].to_pandas()
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return frame


_BACKTICK = re.compile(r"`([^`]*)`")


def _names_in(expression: str) -> set[str]:
    names = set(_BACKTICK.findall(expression))
    try:
        tree = ast.parse(_BACKTICK.sub("0", expression), mode="eval")
    except SyntaxError as exc:
        raise IngestError(f"selection {expression!r} is not a valid expression: {exc.msg}") from None
    names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names - {"True", "False", "and", "or", "not"}


def select_rows(table: pd.DataFrame, expressions: Sequence[str], source: str = "catalog") -> np.ndarray:
    """Boolean mask of the rows for which every selection expression holds.

    Expressions use column names and Python comparisons, e.g.
    ``"lp_type == 0"``, ``"FLAG_COMBINED == 0"``, ``"0.2 < z < 1.2"``,
    ``"I < 25"``; names that are not identifiers go in backticks.

    Raises
    ------
    IngestError
        If an expression names a column the table does not have (the message
        lists the columns that exist) or cannot be evaluated.
    """
    mask = np.ones(len(table), dtype=bool)
    for expression in expressions:
        missing = sorted(_names_in(expression) - set(map(str, table.columns)))
        if missing:
            raise IngestError(
                f"selection {expression!r} uses column(s) {', '.join(missing)} that {source} "
                f"does not have; its columns are: {', '.join(map(str, table.columns))}"
            )
        try:
            result = table.eval(expression)
        except Exception as exc:  # pandas raises many types for bad expressions
            raise IngestError(f"cannot evaluate selection {expression!r}: {exc}") from None
        mask &= np.asarray(result, dtype=bool)
    return mask


def _require_column(table: pd.DataFrame, column: str | None, what: str, source: str) -> str:
    if column is None or column not in table.columns:
        given = "no column given" if column is None else f"column {column!r} not found"
        raise IngestError(
            f"{what}: {given} in {source}; its columns are: {', '.join(map(str, table.columns))}"
        )
    return column


# --- stamps ------------------------------------------------------------------------


def _peak_near_centre(image: np.ndarray) -> tuple[int, int]:
    h, w = image.shape
    radius = max(2, min(h, w) // 8)
    cy, cx = h // 2, w // 2
    y0, x0 = max(0, cy - radius), max(0, cx - radius)
    window = image[y0 : cy + radius + 1, x0 : cx + radius + 1]
    smooth = ndimage.gaussian_filter(window, 1.5, mode="nearest")
    py, px = np.unravel_index(np.argmax(smooth), smooth.shape)
    return int(y0 + py), int(x0 + px)


def make_stamp(image: np.ndarray, config: IngestConfig, framing: str,
               rng: np.random.Generator, centre: tuple[float, float] | None = None
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Centre, crop or pad (or resample) one image to a square float32 stamp.

    Parameters
    ----------
    image : ndarray
        2-D image; NaN/inf pixels are allowed and get filled.
    config : IngestConfig
        ``stamp_size``, ``min_size``, ``recentre``, ``frame_fraction``.
    framing : {"crop", "resample"}
        Cut at native scale, or cut ``frame_fraction`` of the frame and resample.
    rng : numpy.random.Generator
        Source of the padding / filling noise.
    centre : (y, x), optional
        Galaxy position in pixels; found from the image when not given.

    Returns
    -------
    stamp : ndarray
        ``stamp_size`` x ``stamp_size`` float32.
    info : dict
        ``y``, ``x`` (centre used), ``orig_height``, ``orig_width``, ``padded``,
        ``framing``, ``background``, ``noise_sigma``, ``snr_pixel``, ``nan_filled``.

    Raises
    ------
    Reject
        All-NaN, constant or too small images.
    """
    size = config.stamp_size
    h, w = image.shape
    if h < config.min_size or w < config.min_size:
        raise Reject(f"image is {h}x{w} pixels, smaller than min_size={config.min_size}")
    finite = np.isfinite(image)
    n_bad = int(image.size - np.count_nonzero(finite))
    if n_bad == image.size:
        raise Reject("image is entirely NaN/inf")
    values = image[finite]
    if values.min() == values.max():
        raise Reject(f"image is constant (every pixel = {values.min():g})")
    background, sigma = ring_background(image)
    if n_bad:
        image = image.copy()
        image[~finite] = background + sigma * rng.standard_normal(n_bad)
    if centre is None:
        cy, cx = _peak_near_centre(image) if config.recentre else (h // 2, w // 2)
    else:
        cy, cx = int(round(centre[0])), int(round(centre[1]))
    side = size
    if framing == "resample":
        side = max(config.min_size, int(round(config.frame_fraction * min(h, w))))
    stamp, padded = _cut(image, cy, cx, side, background, sigma, rng)
    if framing == "resample" and side != size:
        from PIL import Image

        stamp = np.asarray(
            Image.fromarray(stamp.astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.LANCZOS if side < size else Image.Resampling.BOX
            )
        )
        background, sigma = ring_background(stamp)
    stamp = stamp.astype(np.float32, copy=False)
    signal = (stamp - background) / sigma if sigma > 0 else np.zeros_like(stamp)
    footprint = signal > 2.0
    info = {
        "y": cy, "x": cx, "orig_height": h, "orig_width": w, "padded": padded,
        "framing": framing, "frame_side": side, "background": background,
        "noise_sigma": sigma,
        "snr_pixel": float(signal[footprint].mean()) if footprint.any() else 0.0,
        "nan_filled": n_bad,
    }
    return stamp, info


def _cut(image: np.ndarray, cy: int, cx: int, side: int, background: float, sigma: float,
         rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    h, w = image.shape
    y0, x0 = cy - side // 2, cx - side // 2
    ys, ye, xs, xe = max(0, y0), min(h, y0 + side), max(0, x0), min(w, x0 + side)
    if ys == y0 and xs == x0 and ye == y0 + side and xe == x0 + side:
        return image[ys:ye, xs:xe].copy(), False
    out = rng.standard_normal((side, side), dtype=np.float32)
    out *= sigma
    out += background
    out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out, True


# --- work items ----------------------------------------------------------------------


@dataclass
class _Item:
    """One galaxy to ingest (picklable, so worker processes can take it)."""

    id: str
    path: str
    hdu: int | None = None
    centre: tuple[float, float] | None = None
    sky: tuple[float, float] | None = None


@dataclass
class _Task:
    """Items read together: one file, a collection's image file, or one field."""

    kind: str  # "file", "collection", "field", "detect"
    path: str
    items: list[_Item] = field(default_factory=list)


def _framing(config: IngestConfig, path: str) -> str:
    if config.framing in ("crop", "resample"):
        return config.framing
    if config.framing != "auto":
        raise IngestError(f"framing must be crop, resample or auto, not {config.framing!r}")
    return "resample" if _suffix(Path(path)) in RASTER_SUFFIXES else "crop"


def _rng(config: IngestConfig, gid: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{config.seed}:{gid}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _process(task: _Task, config: IngestConfig) -> list[tuple]:
    """Worker: returns ``("ok", id, stamp, row)`` or ``("reject", id, origin, reason)``."""
    if task.kind == "detect":
        try:
            task = _detect(task, config)
        except Reject as exc:
            return [("reject", Path(task.path).stem, task.path, str(exc))]
    results: list[tuple] = []
    cache: dict[int | None, tuple[np.ndarray, int]] = {}
    hdul = None
    try:
        if task.kind in ("collection", "field", "detect"):
            try:
                hdul = fits.open(task.path, memmap=True)
            except (OSError, ValueError) as exc:
                reason = f"unreadable FITS file: {exc}"
                return [("reject", it.id, task.path, reason) for it in task.items]
        for item in task.items:
            origin = f"{item.path}[{item.hdu}]" if item.hdu is not None else item.path
            try:
                if hdul is None:
                    image, hdu = read_image(item.path, config.hdu)
                else:
                    if item.hdu not in cache:
                        data, hdu = _fits_image(hdul, item.hdu)
                        cache[item.hdu] = (np.array(data, dtype=np.float64), hdu)
                    image, hdu = cache[item.hdu]
                centre = item.centre
                if centre is not None:
                    image, centre = _window(image, centre, config.stamp_size)
                stamp, info = make_stamp(image, config, _framing(config, item.path),
                                         _rng(config, item.id), centre)
                if centre is not None:
                    info["y"], info["x"] = item.centre
                ra, dec = item.sky if item.sky is not None else (np.nan, np.nan)
                row = {"id": item.id, "origin": item.path, "hdu": hdu, "ra": ra, "dec": dec, **info}
                results.append(("ok", item.id, stamp, row))
            except Reject as exc:
                results.append(("reject", item.id, origin, str(exc)))
            except (OSError, ValueError) as exc:
                results.append(("reject", item.id, origin, f"unreadable: {exc}"))
    finally:
        if hdul is not None:
            hdul.close()
    return results


def _window(image: np.ndarray, centre: tuple[float, float], size: int
            ) -> tuple[np.ndarray, tuple[float, float]]:
    """A Cutout2D around a field position, with its centre in the cutout's pixels.

    The cutout is twice the stamp size so that the background is measured on
    sky rather than on the galaxy; parts outside the field are NaN and become
    noise padding.
    """
    from astropy.nddata import Cutout2D, NoOverlapError

    try:
        cut = Cutout2D(image, (centre[1], centre[0]), (2 * size, 2 * size), mode="partial",
                       fill_value=np.nan, copy=True)
    except NoOverlapError:
        raise Reject(f"position x={centre[1]:.1f}, y={centre[0]:.1f} is outside the image") from None
    x, y = cut.to_cutout_position((centre[1], centre[0]))
    return cut.data, (y, x)


def _detect(task: _Task, config: IngestConfig) -> _Task:
    """Find sources in a field with photutils and return one item per source."""
    from astropy.convolution import convolve
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import (
        SourceCatalog,
        deblend_sources,
        detect_sources,
        make_2dgaussian_kernel,
    )

    image, hdu = read_image(task.path, config.hdu)
    finite = np.isfinite(image)
    if not finite.any():
        raise Reject("field is entirely NaN/inf")
    _, median, std = sigma_clipped_stats(image[finite], sigma=3.0)
    data = np.where(finite, image, median) - median
    kernel = make_2dgaussian_kernel(2.0, size=5)
    smooth = convolve(data, kernel)
    segm = detect_sources(smooth, config.detect_nsigma * std, n_pixels=config.detect_npixels)
    if segm is None:
        raise Reject(f"no sources above {config.detect_nsigma} sigma in the field")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deblending warns about small sources; harmless
        segm = deblend_sources(smooth, segm, n_pixels=config.detect_npixels,
                               contrast=config.detect_contrast, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=smooth)
    wcs = _wcs(task.path, hdu)
    items = []
    for label, x, y in zip(cat.labels, cat.x_centroid, cat.y_centroid, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        sky = None
        if wcs is not None:
            ra, dec = wcs.pixel_to_world_values(x, y)
            sky = (float(ra), float(dec))
        items.append(_Item(f"{_stem(Path(task.path))}_{label}", task.path, hdu,
                           (float(y), float(x)), sky))
    return _Task("field", task.path, items)


def _wcs(path: str, hdu: int | None):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = fits.getheader(path, 0 if hdu is None or hdu < 0 else hdu)
        wcs = WCS(header)
    return wcs if wcs.has_celestial else None


# --- discovery -------------------------------------------------------------------------


def _expand(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Split inputs into image files and collection catalogs; directories are
    searched recursively.  Missing paths and empty directories raise."""
    files: list[Path] = []
    catalogs: list[Path] = []
    for raw in inputs:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise IngestError(f"the pattern {text!r} matches no files; check the path")
        else:
            path = Path(text)
            if not path.exists():
                raise IngestError(f"input {text!r} does not exist; check the path")
            matches = [path]
        for path in matches:
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file()
                               and _suffix(p) in IMAGE_SUFFIXES and not p.name.startswith("."))
                dir_catalogs = [p for p in found if _is_collection(p)]
                if dir_catalogs:
                    catalogs += dir_catalogs
                elif not found:
                    raise IngestError(
                        f"directory {path} contains no image files "
                        f"({', '.join(sorted(set(IMAGE_SUFFIXES)))}); point at the files themselves "
                        "or at a directory that holds them"
                    )
                else:
                    files += found
            elif _is_collection(path):
                catalogs.append(path)
            else:
                files.append(path)
    return files, catalogs


def _is_collection(path: Path) -> bool:
    if "catalog" not in path.name.lower() or _suffix(path) not in FITS_SUFFIXES:
        return False
    try:
        with fits.open(path) as hdul:
            return any(
                isinstance(h, fits.BinTableHDU) and COLLECTION_COLUMNS <= set(h.columns.names)
                for h in hdul
            )
    except (OSError, ValueError):
        return False


def _collection_table(path: Path) -> pd.DataFrame:
    table = read_table(path)
    companion = path.with_name(_stem(path) + "_fits.fits")
    if companion.exists():
        extra = read_table(companion)
        if len(extra) == len(table):
            extra = extra.drop(columns=[c for c in extra.columns if c in table.columns])
            table = pd.concat([table, extra.reset_index(drop=True)], axis=1)
    return table


def _collection_tasks(path: Path, table: pd.DataFrame) -> list[_Task]:
    tasks: dict[str, _Task] = {}
    for row in table.itertuples(index=False):
        image_file = str(path.parent / str(row.GAL_FILENAME).strip())
        task = tasks.setdefault(image_file, _Task("collection", image_file))
        task.items.append(_Item(str(row.IDENT), image_file, int(row.GAL_HDU)))
    return list(tasks.values())


def _plan(files: list[Path], catalogs: list[Path], config: IngestConfig
          ) -> tuple[list[_Task], pd.DataFrame | None, list[dict[str, Any]], dict[str, Any]]:
    """Work out what to read: tasks, the catalog columns per id, early rejects, counts."""
    rejects: list[dict[str, Any]] = []
    tasks: list[_Task] = []
    meta_tables: list[pd.DataFrame] = []
    user = read_table(config.catalog) if config.catalog else None
    summary: dict[str, Any] = {}

    if config.field:
        if user is None:
            tasks = [_Task("detect", str(p)) for p in files]
        else:
            tasks, meta, rejects = _field_tasks(files, user, config)
            meta_tables.append(meta)
    else:
        for catalog in catalogs:
            table = _collection_table(catalog)
            if config.select and user is None:
                keep = select_rows(table, config.select, f"collection catalog {catalog}")
                summary["not_selected"] = summary.get("not_selected", 0) + int((~keep).sum())
                table = table[keep]
            tasks += _collection_tasks(catalog, table)
            meta_tables.append(table.assign(id=table["IDENT"].astype(str)))
        for path in files:
            tasks.append(_Task("file", str(path), [_Item(_stem(path), str(path))]))
        if user is not None:
            tasks, meta, extra_rejects, not_selected = _select_by_catalog(tasks, user, config)
            rejects += extra_rejects
            summary["not_selected"] = not_selected
            meta_tables = [meta]
        elif config.select and files:
            raise IngestError(
                "--select on image files needs a catalog: give --catalog FILE and --id-col COLUMN"
            )
    meta = pd.concat(meta_tables, ignore_index=True) if meta_tables else None
    if meta is not None:
        meta = meta.drop_duplicates("id")
    return tasks, meta, rejects, summary


def _select_by_catalog(tasks: list[_Task], user: pd.DataFrame, config: IngestConfig):
    source = f"catalog {config.catalog}"
    id_col = _require_column(user, config.id_col, "--id-col (the column holding galaxy ids)", source)
    user = user.assign(id=user[id_col].astype(str).str.strip())
    keep = select_rows(user, config.select, source)
    known = set(user["id"])
    selected = set(user["id"][keep])
    rejects, kept, dropped = [], [], 0
    for task in tasks:
        items = []
        for item in task.items:
            if item.id not in known:
                rejects.append({"id": item.id, "origin": item.path, "stage": "ingest",
                                "reason": f"id not found in column {id_col!r} of {source}"})
            elif item.id in selected:
                items.append(item)
            else:
                dropped += 1
        if items:
            kept.append(_Task(task.kind, task.path, items))
    return kept, user[keep], rejects, dropped


def _field_tasks(files: list[Path], user: pd.DataFrame, config: IngestConfig):
    source = f"catalog {config.catalog}"
    id_col = _require_column(user, config.id_col, "--id-col (the column holding galaxy ids)", source)
    if config.select:
        user = user[select_rows(user, config.select, source)]
    ids = user[id_col].astype(str).str.strip().to_numpy()
    use_pixels = config.x_col is not None or config.y_col is not None
    if use_pixels:
        xs = user[_require_column(user, config.x_col, "--x-col", source)].to_numpy(float)
        ys = user[_require_column(user, config.y_col, "--y-col", source)].to_numpy(float)
    else:
        ra = user[_require_column(user, config.ra_col, "--ra-col", source)].to_numpy(float)
        dec = user[_require_column(user, config.dec_col, "--dec-col", source)].to_numpy(float)
    placed = np.zeros(len(user), dtype=bool)
    tasks = []
    for path in files:
        header = fits.getheader(path, config.hdu or 0)
        ny, nx = header.get("NAXIS2", 0), header.get("NAXIS1", 0)
        if use_pixels:
            px, py = xs, ys
            sky = [None] * len(user)
        else:
            wcs = _wcs(str(path), config.hdu)
            if wcs is None:
                raise IngestError(f"{path} has no celestial WCS; give pixel columns with --x-col/--y-col")
            px, py = wcs.world_to_pixel_values(ra, dec)
            sky = list(zip(ra, dec, strict=True))
        inside = ~placed & (px > -0.5) & (px < nx - 0.5) & (py > -0.5) & (py < ny - 0.5)
        items = [_Item(ids[i], str(path), config.hdu, (float(py[i]), float(px[i])), sky[i])
                 for i in np.flatnonzero(inside)]
        placed |= inside
        if items:
            tasks.append(_Task("field", str(path), items))
    rejects = [{"id": ids[i], "origin": str(config.catalog), "stage": "ingest",
                "reason": "catalog position lies outside every field image"}
               for i in np.flatnonzero(~placed)]
    return tasks, user.assign(id=ids), rejects


# --- the stage ---------------------------------------------------------------------------


def _fingerprint_inputs(files: list[Path], catalogs: list[Path], config: IngestConfig) -> str:
    digest = hashlib.sha256()
    for path in [*files, *catalogs, *([Path(config.catalog)] if config.catalog else [])]:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _batches(tasks: list[_Task], size: int) -> Iterator[list[_Task]]:
    batch: list[_Task] = []
    for task in tasks:
        batch.append(task)
        if len(batch) >= size or task.kind != "file":
            yield batch
            batch = []
    if batch:
        yield batch


def _run_batch(batch: list[_Task], config: IngestConfig) -> list[tuple]:
    return [result for task in batch for result in _process(task, config)]


def _extra(ctx: StageContext) -> str:
    inputs = ctx.options.get("inputs")
    if not inputs:
        raise IngestError("no inputs given; name image files, directories or glob patterns")
    files, catalogs = _expand(inputs)
    ctx.state.update(files=files, catalogs=catalogs)
    return _fingerprint_inputs(files, catalogs, ctx.config.ingest)


def _compute(ctx: StageContext) -> dict[str, Any]:
    run, cfg, progress = ctx.run, ctx.config.ingest, ctx.progress
    files, catalogs = ctx.state["files"], ctx.state["catalogs"]
    tasks, meta, early_rejects, summary = _plan(files, catalogs, cfg)
    run.clear_rejects("ingest")
    run.add_rejects(early_rejects)
    n_items = sum(len(t.items) for t in tasks) + sum(t.kind == "detect" for t in tasks)
    workers = cfg.workers or os.cpu_count() or 1
    size = cfg.stamp_size
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    n_rejected = len(early_rejects)
    pool = start_pool(workers, [__name__]) if workers > 1 and n_items > 200 else None
    writer = run.writer("stamps", (size, size), cfg.chunk_size)
    batches = _batches(tasks, 64)
    with pool or nullcontext(), tqdm(total=n_items, desc="ingest", unit="stamp",
                                     disable=not progress) as bar:
        for batch_results in map_ordered(_run_batch, batches, cfg, pool=pool, workers=workers):
            rejects = []
            for result in batch_results:
                if result[0] == "reject":
                    _, gid, origin, reason = result
                    rejects.append({"id": gid, "origin": origin, "stage": "ingest", "reason": reason})
                    continue
                _, gid, stamp, row = result
                if gid in seen:
                    rejects.append({"id": gid, "origin": row["origin"], "stage": "ingest",
                                    "reason": "duplicate id (an earlier input has the same id)"})
                    continue
                seen.add(gid)
                writer.append(stamp)
                rows.append(row)
            n_rejected += run.add_rejects(rejects)
            bar.update(len(batch_results))
    writer.close()
    if not rows:
        raise IngestError(
            f"none of the inputs gave a usable stamp ({n_rejected} rejected); "
            f"see {run.rejects_path} for the reason of each"
        )
    sources = pd.DataFrame(rows)
    if meta is not None:
        meta = meta.rename(columns={c: f"cat_{c}" for c in meta.columns
                                    if c != "id" and c in sources.columns})
        sources = sources.merge(meta, on="id", how="left")
    sources.insert(1, "index", np.arange(len(sources)))
    sources.to_parquet(run.path / "sources.parquet", index=False)
    summary.update(n_stamps=len(rows), n_rejected=n_rejected, stamp_size=size)
    log.info("ingest: %d stamps, %d rejected%s", len(rows), n_rejected,
             f", {summary['not_selected']} not selected" if summary.get("not_selected") else "")
    return summary




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    return (f"{info.get('n_stamps', 0)} stamps written to {run.path / 'stamps.zarr'}; "
            f"{info.get('n_rejected', 0)} inputs rejected (see {run.rejects_path})")


STAGE = Stage(
    name="ingest",
    summary="read cutouts (FITS, PNG/JPEG, NPY, collections, fields) into stamps",
    description=__doc__.split("\n\n")[0],
    compute=_compute,
    sections=("ingest",),
    outputs=("stamps.zarr", "sources.parquet"),
    extra=_extra,
    creates_run=True,
    arguments=(Argument("inputs", "image files, directories (searched recursively) or glob patterns; "
                        "a GalSim RealGalaxyCatalog FITS table reads its whole collection",
                        nargs="+", metavar="INPUT"),),
    report=_report,
    chunked=True,
)


def ingest(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config | None = None, *,
           force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Read cutouts into the run directory ``out``.

    Parameters
    ----------
    inputs : sequence of str or Path
        Files, directories or glob patterns (see the module docstring).
    out : str or Path
        Run directory; created when it does not exist.
    config : Config, optional
        All settings; by default the run's own ``config.toml`` (the defaults for a new run).
    force : bool
        Re-read the inputs even when they and the settings are unchanged.
    progress : bool
        Show a progress bar.

    **settings
        Overrides of the ``[ingest]`` settings, e.g. ``stamp_size=64``.

    Returns
    -------
    RunDir
        The run directory, with ``stamps``, ``sources.parquet`` and ``rejects.csv``.

    Raises
    ------
    IngestError
        If an input path does not exist, a directory holds no images, a catalog
        column is missing, or no input at all yields a usable stamp.
    """
    return execute("ingest", out, config, force=force, progress=progress,
                   options={"inputs": list(inputs)}, **settings)
