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
never stop the run: every path given or found in a directory is either a stamp
or a row there (dangling links, link loops, FIFOs, directories that cannot be
listed, images larger than ``max_pixels``, complex or boolean arrays, stamps
mostly NaN/inf).

Besides ``stamps`` the run gets, in the same order:

* ``sources.parquet`` column ``linear``: ``True`` where pixels are proportional to
  flux (FITS, NPY, collections), ``False`` for PNG/JPEG (display-scaled, clipped);
* array ``rms`` (N x S x S float32): the 1-sigma error of every stamp pixel, cut
  and padded exactly like the stamp, from an error-map HDU of the same FITS file
  (EXTNAME WHT/WEIGHT/IVAR as inverse variance, RMS/ERR/SIGMA/NOISE, VAR/VARIANCE),
  from companion files (``error_maps``), or, for collections, the catalog's
  ``NOISE_VARIANCE``.  A stamp without any error map is NaN throughout; inside a
  map, pixels that carry no measurement (padding, NaN-filled pixels, zero weight)
  are ``inf``;
* array ``psf`` (N x P x P float32, P = ``psf_size``, odd): each stamp's PSF with
  its peak on the central pixel, cropped or zero-padded and normalised to sum 1,
  from a collection's ``PSF_FILENAME`` / ``PSF_HDU`` columns or a ``PSF`` HDU of
  the galaxy's own FITS file; NaN for stamps without one.

``rms`` and ``psf`` are written only when at least one stamp has one; the
``sources`` columns ``has_rms``, ``rms_source``, ``has_psf``, ``psf_source`` and
``psf_flux_fraction`` say which stamps have them and where they came from.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import re
import shutil
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from tqdm.auto import tqdm

from ..config import Config, ConfigError, IngestConfig
from ..core.detect import detect_sources_in
from ..core.parallel import map_ordered, start_pool
from ..core.stamps import field_window, make_stamp, prepare_psf, resolve_framing, stamp_rng
from ..errors import SkymorphError
from ..io.readers import (
    FITS_SUFFIXES,
    IMAGE_SUFFIXES,
    NPY_SUFFIXES,
    RASTER_SUFFIXES,
    GalaxyImage,
    Reject,
    error_hdu,
    fits_image,
    header_zeropoint,
    read_error_map,
    read_galaxy,
    read_image,
)
from ..io.readers import stem_of as _stem
from ..io.readers import suffix_of as _suffix
from ..io.rundir import RunDir, printable
from ..io.selection import SelectionError, evaluate_selection, parse_selection
from . import Argument, Stage, StageContext, execute, stamp_options

__all__ = ["ingest", "IngestError", "Reject", "read_image", "make_stamp", "prepare_psf", "select_rows",
           "read_table"]

log = logging.getLogger(__name__)

COLLECTION_COLUMNS = {"IDENT", "GAL_FILENAME", "GAL_HDU"}


class IngestError(SkymorphError, ValueError):
    """The inputs cannot be ingested at all (as opposed to one bad galaxy)."""


# --- catalogs ----------------------------------------------------------------------


def read_table(path: str | Path, id_col: str | None = None) -> pd.DataFrame:
    """Read a catalog (FITS table, CSV or Parquet) with :func:`skymorph.io.tables.read_table`
    (``id_col`` as exact text; multi-dimensional FITS columns dropped, byte strings decoded)."""
    from ..io.tables import TableError
    from ..io.tables import read_table as _read

    try:
        return _read(path, id_col=id_col, what="catalog")
    except TableError as exc:
        raise IngestError(str(exc)) from None


def select_rows(table: pd.DataFrame, expressions: Sequence[str], source: str = "catalog") -> np.ndarray:
    """Boolean mask of the rows for which every selection expression holds.

    Expressions use column names and Python comparisons, e.g.
    ``"lp_type == 0"``, ``"FLAG_COMBINED == 0"``, ``"0.2 < z < 1.2"``,
    ``"I < 25"``; names that are not identifiers go in backticks.  They are parsed
    to a whitelist and evaluated without ``eval`` (:mod:`skymorph.io.selection`).

    Raises
    ------
    IngestError
        If an expression is not allowed (attribute access, calls other than a few
        numeric functions), names a column the table does not have (the message
        lists the columns that exist), or is not a yes/no test per row.
    """
    mask = np.ones(len(table), dtype=bool)
    for expression in expressions:
        try:
            mask &= evaluate_selection(expression, table, len(table), source)
        except SelectionError as exc:
            raise IngestError(str(exc)) from None
    return mask


def _require_column(table: pd.DataFrame, column: str | None, what: str, source: str) -> str:
    if column is None or column not in table.columns:
        given = "no column given" if column is None else f"column {column!r} not found"
        raise IngestError(
            f"{what}: {given} in {source}; its columns are: {', '.join(map(str, table.columns))}"
        )
    return column


# --- work items ----------------------------------------------------------------------


@dataclass
class _Item:
    """One galaxy to ingest (picklable, so worker processes can take it)."""

    id: str
    path: str
    hdu: int | None = None
    centre: tuple[float, float] | None = None
    sky: tuple[float, float] | None = None
    noise_variance: float | None = None
    """A collection catalog's NOISE_VARIANCE (one value for the whole stamp)."""
    psf: tuple[str, int] | None = None
    """A collection catalog's PSF file and HDU."""
    error_map: str | None = None
    """Companion error-map file (``error_maps``); ``""``: asked for, none found."""


@dataclass
class _Task:
    """Items read together: one file, a collection's image file, or one field."""

    kind: str  # "file", "collection", "field", "detect"
    path: str
    items: list[_Item] = field(default_factory=list)
    error_map: str | None = None


def _fits_size(path: str) -> int | None:
    return None if path.lower().endswith((".gz", ".fz")) else os.stat(path).st_size


class _Reader:
    """Reads the images of one task, keeping open files and whole fields for its items."""

    def __init__(self, task: _Task, config: IngestConfig) -> None:
        self.task, self.config = task, config
        self.files: dict[str, tuple[fits.HDUList, int | None]] = {}
        self.cache: dict[Any, Any] = {}

    def close(self) -> None:
        for hdul, _ in self.files.values():
            hdul.close()

    def _open(self, path: str) -> tuple[fits.HDUList, int | None]:
        if path not in self.files:
            self.files[path] = (fits.open(path, memmap=True), _fits_size(path))
        return self.files[path]

    def read(self, item: _Item) -> GalaxyImage:
        config = self.config
        if self.task.kind == "file":
            image = read_galaxy(item.path, config.hdu, max_pixels=config.max_pixels)
        else:
            key = ("image", item.hdu)
            if key not in self.cache:
                hdul, size = self._open(self.task.path)
                data, index = fits_image(hdul, item.hdu, config.max_pixels, size)
                image = GalaxyImage(np.array(data, dtype=np.float64), index, linear=True,
                                    zeropoint=header_zeropoint(hdul[index].header, hdul[0].header))
                if self.task.kind != "collection" and len(hdul) > 1:
                    image.rms, image.rms_source, image.note = error_hdu(
                        hdul, index, image.data.shape, config.max_pixels)
                self.cache[key] = image
            cached = self.cache[key]
            image = GalaxyImage(cached.data, cached.hdu, cached.linear, cached.rms, cached.rms_source,
                                note=cached.note, zeropoint=cached.zeropoint)
        notes = [image.note] if image.note else []
        if item.error_map:
            if item.error_map not in self.cache:
                try:
                    self.cache[item.error_map] = read_error_map(
                        item.error_map, config.error_map_kind, image.data.shape, config.max_pixels)
                except Reject as exc:
                    self.cache[item.error_map] = str(exc)
                except Exception as exc:  # the stamp is kept, without its error map
                    self.cache[item.error_map] = f"error map {item.error_map} unreadable: {exc}"
            found = self.cache[item.error_map]
            if isinstance(found, str):
                notes.append(found)
            else:
                image.rms, image.rms_source = found
        elif item.error_map == "" and image.rms is None:
            notes.append("no file matches ingest.error_maps")
        if item.noise_variance is not None:
            if np.isfinite(item.noise_variance) and item.noise_variance > 0:
                image.rms = np.full(image.data.shape, np.sqrt(item.noise_variance))
                image.rms_source = "catalog NOISE_VARIANCE"
            else:
                notes.append(f"catalog NOISE_VARIANCE is {item.noise_variance:g}")
        if item.psf is not None:
            psf_path, psf_hdu = item.psf
            key = ("psf", psf_path, psf_hdu)
            if key not in self.cache:
                try:
                    hdul, size = self._open(psf_path)
                    data, _ = fits_image(hdul, psf_hdu, config.max_pixels, size)
                    self.cache[key] = np.array(data, dtype=np.float64)
                except Reject as exc:
                    self.cache[key] = f"PSF {psf_path}[{psf_hdu}]: {exc}"
                except Exception as exc:  # the stamp is kept, without its PSF
                    self.cache[key] = f"PSF {psf_path}[{psf_hdu}] unreadable: {exc}"
            found = self.cache[key]
            if isinstance(found, str):
                notes.append(found)
            else:
                image.psf, image.psf_source = found, f"{psf_path}[{psf_hdu}]"
        image.note = "; ".join(notes)
        return image


def _process(task: _Task, config: IngestConfig) -> list[tuple]:
    """Worker: returns ``("ok", id, stamp, row, rms, psf)`` or ``("reject", id, origin, reason)``."""
    if task.kind == "detect":
        try:
            task = _detect(task, config)
        except Reject as exc:
            return [("reject", _stem(Path(task.path)), task.path, str(exc))]
        except MemoryError:
            return [("reject", _stem(Path(task.path)), task.path,
                     "ran out of memory detecting sources; lower ingest.max_pixels or --workers")]
        except Exception as exc:  # one bad field never stops the run
            return [("reject", _stem(Path(task.path)), task.path, f"unreadable field: {exc}")]
    results: list[tuple] = []
    reader = _Reader(task, config)
    try:
        for item in task.items:
            origin = f"{item.path}[{item.hdu}]" if item.hdu is not None else item.path
            try:
                results.append(_one(reader, item, config))
            except Reject as exc:
                results.append(("reject", item.id, origin, str(exc)))
            except MemoryError:
                results.append(("reject", item.id, origin, "ran out of memory reading it; lower "
                                "ingest.max_pixels or --workers"))
            except Exception as exc:  # one bad galaxy never stops the run, whatever it raises
                results.append(("reject", item.id, origin, f"unreadable: {type(exc).__name__}: {exc}"))
    finally:
        reader.close()
    return results


def _one(reader: _Reader, item: _Item, config: IngestConfig) -> tuple:
    image = reader.read(item)
    data, rms, valid = image.data, image.rms, None
    centre = item.centre
    if centre is not None:
        data, rms, valid, centre = field_window(data, centre=centre, size=config.stamp_size, rms=rms)
    framing = resolve_framing(config.framing, raster=_suffix(Path(item.path)) in RASTER_SUFFIXES)
    stamp, info, rms_stamp = make_stamp(data, framing=framing, rng=stamp_rng(item.id, seed=config.seed),
                                        centre=centre, rms=rms, valid=valid, **stamp_options(config))
    if centre is not None:
        info["y"], info["x"] = item.centre
    psf, flux_fraction, note = None, np.nan, image.note
    if image.psf is not None:
        zoom = config.stamp_size / info["frame_side"] if framing == "resample" else 1.0
        try:
            psf, flux_fraction = prepare_psf(image.psf, size=config.psf_size, zoom=zoom)
        except Reject as exc:
            note = "; ".join(n for n in (note, f"PSF {image.psf_source} unusable: {exc}") if n)
    ra, dec = item.sky if item.sky is not None else (np.nan, np.nan)
    row = {"id": item.id, "origin": item.path, "hdu": image.hdu, "ra": ra, "dec": dec, **info,
           "linear": image.linear,
           "has_rms": rms_stamp is not None, "rms_source": image.rms_source if rms_stamp is not None else "",
           "has_psf": psf is not None, "psf_source": image.psf_source if psf is not None else "",
           "psf_flux_fraction": flux_fraction, "note": note, "zeropoint": image.zeropoint}
    row = {k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
    return ("ok", row["id"], stamp, row, rms_stamp, psf)


def _detect(task: _Task, config: IngestConfig) -> _Task:
    """Find sources in a field with photutils and return one item per source."""
    image, hdu = read_image(task.path, config.hdu, config.max_pixels)
    labels, xs, ys = detect_sources_in(image, nsigma=config.detect_nsigma, npixels=config.detect_npixels,
                                       contrast=config.detect_contrast)
    wcs = _wcs(task.path, hdu)
    items = []
    for label, x, y in zip(labels, xs, ys, strict=True):
        sky = None
        if wcs is not None:
            ra, dec = wcs.pixel_to_world_values(x, y)
            sky = (float(ra), float(dec))
        items.append(_Item(f"{_stem(Path(task.path))}_{label}", task.path, hdu,
                           (float(y), float(x)), sky, error_map=task.error_map))
    return _Task("field", task.path, items, task.error_map)


def _wcs(path: str, hdu: int | None):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = fits.getheader(path, 0 if hdu is None or hdu < 0 else hdu)
        wcs = WCS(header)
    return wcs if wcs.has_celestial else None


# --- discovery -------------------------------------------------------------------------


@dataclass
class _Found:
    """What the inputs hold: image files, collection catalogs, files beside a catalog
    (its own images, PSFs... or strays), inputs that cannot be read, and what was skipped."""

    files: list[Path] = field(default_factory=list)
    catalogs: list[Path] = field(default_factory=list)
    beside: list[Path] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    strays: list[dict[str, Any]] = field(default_factory=list)
    """Files in a searched directory that are not images (rejects, but no reason to
    call the directory one of images)."""
    companions: dict[str, str] = field(default_factory=dict)

    def reject(self, path: Path, reason: str) -> None:
        self.rejects.append({"id": _stem(path), "origin": str(path), "stage": "ingest", "reason": reason})


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _classify(path: Path) -> tuple[str, os.stat_result | None]:
    """``("file", stat)``, ``("dir", stat)`` or ``("reject", reason)`` for one path
    (symbolic links followed)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "reject", f"symbolic link loop ({path.name} -> {_readlink(path)})"
        if os.path.islink(path):
            return "reject", (f"dangling symbolic link: its target {_readlink(path)!r} does not exist "
                              f"({exc.strerror})")
        return "reject", f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "dir", st
    if stat.S_ISREG(st.st_mode):
        return "file", st
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a plain file")
    return "reject", f"{kind}, not a regular file; ingest reads image files"


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _walk(root: Path, found: _Found) -> int:
    """Every image file under ``root`` (links followed, each directory once); what
    cannot be listed or read becomes a reject.  Returns how many paths it added."""
    def count() -> int:
        return len(found.files) + len(found.rejects) + len(found.catalogs) + len(found.beside)

    before = count()
    seen: set[tuple[int, int]] = set()
    stack, files = [root], []
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                found.reject(directory, "directory already searched through another path (a "
                             "symbolic link loop, or a second link to it); not searched again")
                continue
            seen.add(key)
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            found.reject(directory, f"directory cannot be listed ({exc.strerror or exc}); the files "
                         "in it were not read")
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                found.skipped["hidden"] += 1
                continue
            image = _suffix(path) in IMAGE_SUFFIXES
            if entry.is_symlink():
                kind, info = _classify(path)
            else:
                try:
                    kind = ("dir" if entry.is_dir(follow_symlinks=False)
                            else "file" if entry.is_file(follow_symlinks=False) else None)
                except OSError:
                    kind = None
                if kind is None:
                    kind, info = _classify(path)
            if kind == "dir":
                stack.append(path)
            elif not image:
                suffix = _suffix(path) or "no suffix"
                hint = "; save each image of the .npz archive as .npy" if suffix == ".npz" else ""
                found.strays.append({
                    "id": _stem(path), "origin": str(path), "stage": "ingest",
                    "reason": f"not an image file ({suffix}); ingest reads FITS, PNG, JPEG and NPY "
                              f"files{hint}"})
            elif kind == "file":
                files.append(path)
            else:
                found.reject(path, info)
    files.sort()
    by_directory: dict[Path, list[Path]] = {}
    for path in files:
        by_directory.setdefault(path.parent, []).append(path)
    for paths in by_directory.values():
        catalogs = [p for p in paths if _is_collection(p)]
        found.catalogs += catalogs
        # a collection's directory holds its image and PSF files: they are read through
        # its catalog, and anything else there is checked against it in _plan
        (found.beside if catalogs else found.files).extend(p for p in paths if p not in catalogs)
    return count() - before


def _expand(inputs: Sequence[str | os.PathLike]) -> _Found:
    """Find the image files, collection catalogs and unreadable paths of the inputs;
    directories are searched recursively.  Missing paths and directories without
    any image raise."""
    found = _Found()
    for raw in inputs:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise IngestError(f"the pattern {text!r} matches no files; check the path")
        else:
            if not os.path.lexists(text):
                raise IngestError(f"input {text!r} does not exist; check the path")
            matches = [text]
        for match in matches:
            path = Path(match)
            kind, info = _classify(path)
            if kind == "reject":
                found.reject(path, info)
            elif kind == "dir":
                if not _walk(path, found):
                    raise IngestError(
                        f"directory {path} contains no image files "
                        f"({', '.join(sorted(set(IMAGE_SUFFIXES)))}); point at the files themselves "
                        "or at a directory that holds them"
                    )
            elif _is_collection(path):
                found.catalogs.append(path)
            else:
                found.files.append(path)
    return found


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


def _companions(files: list[Path], setting: str | None) -> dict[str, str]:
    """Companion error map of each image file (``error_maps``): a directory holding a
    file of the image's name (or stem with a FITS/NPY suffix), or a pattern with
    ``{stem}`` / ``{name}`` and optional wildcards.  Images without one map to ``""``."""
    if not setting:
        return {}
    text = os.path.expanduser(setting)
    out = dict.fromkeys(map(str, files), "")
    if "{stem}" not in text and "{name}" not in text:
        directory = Path(text)
        if not directory.is_dir():
            raise IngestError(f"ingest.error_maps {setting!r} is neither a directory nor a pattern "
                              "with {stem}, e.g. 'rms/{stem}_rms.fits'")
        names = {e.name: e.path for e in os.scandir(directory) if e.is_file()}
        for path in files:
            candidates = [path.name] + [_stem(path) + s for s in FITS_SUFFIXES + NPY_SUFFIXES]
            match = next((names[c] for c in candidates if c in names), "")
            out[str(path)] = match if match and not os.path.samefile(match, path) else ""
        return out
    if not any(ch in text for ch in "*?["):
        for path in files:
            candidate = text.replace("{stem}", _stem(path)).replace("{name}", path.name)
            if os.path.isfile(candidate) and not os.path.samefile(candidate, path):
                out[str(path)] = candidate
        return out
    # one glob for all files, then the stem read back from each match (a glob per file
    # would list the directory once per image)
    pattern = re.escape(text).replace(r"\{stem\}", "(?P<stem>.+)").replace(r"\{name\}", "(?P<name>.+)")
    pattern = pattern.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    regex = re.compile(pattern + r"\Z")
    by_key: dict[str, str] = {}
    for match in sorted(glob.glob(text.replace("{stem}", "*").replace("{name}", "*"))):
        m = regex.match(match)
        if m:
            by_key.setdefault(m.groupdict().get("stem") or m.groupdict().get("name"), match)
    for path in files:
        candidate = by_key.get(_stem(path) if "{stem}" in text else path.name, "")
        if candidate and not os.path.samefile(candidate, path):
            out[str(path)] = candidate
    return out


def _collection_table(path: Path) -> pd.DataFrame:
    table = read_table(path)
    companion = path.with_name(_stem(path) + "_fits.fits")
    if companion.exists():
        extra = read_table(companion)
        if len(extra) == len(table):
            extra = extra.drop(columns=[c for c in extra.columns if c in table.columns])
            table = pd.concat([table, extra.reset_index(drop=True)], axis=1)
    return table


def _collection_files(path: Path, table: pd.DataFrame) -> set[Path]:
    """Files a collection catalog names (images, PSFs, noise correlation functions)."""
    named = {path, path.with_name(_stem(path) + "_fits.fits")}
    for column in ("GAL_FILENAME", "PSF_FILENAME", "NOISE_FILENAME"):
        if column in table.columns:
            named |= {path.parent / str(name).strip() for name in table[column].unique()}
    return named


def _collection_tasks(path: Path, table: pd.DataFrame) -> list[_Task]:
    tasks: dict[str, _Task] = {}
    has_psf = {"PSF_FILENAME", "PSF_HDU"} <= set(table.columns)
    has_noise = "NOISE_VARIANCE" in table.columns
    for row in table.itertuples(index=False):
        image_file = str(path.parent / str(row.GAL_FILENAME).strip())
        task = tasks.setdefault(image_file, _Task("collection", image_file))
        psf = (str(path.parent / str(row.PSF_FILENAME).strip()), int(row.PSF_HDU)) if has_psf else None
        noise = float(row.NOISE_VARIANCE) if has_noise else None
        task.items.append(_Item(str(row.IDENT), image_file, int(row.GAL_HDU), noise_variance=noise,
                                psf=psf))
    return list(tasks.values())


def _plan(found: _Found, config: IngestConfig
          ) -> tuple[list[_Task], pd.DataFrame | None, list[dict[str, Any]], dict[str, Any]]:
    """Work out what to read: tasks, the catalog columns per id, early rejects, counts."""
    files, catalogs = found.files, found.catalogs
    rejects: list[dict[str, Any]] = list(found.rejects) + list(found.strays)
    tasks: list[_Task] = []
    meta_tables: list[pd.DataFrame] = []
    user = read_table(config.catalog, config.id_col) if config.catalog else None
    summary: dict[str, Any] = {}
    named: set[Path] = set()
    if config.field:
        for catalog in catalogs:
            rejects.append({"id": _stem(catalog), "origin": str(catalog), "stage": "ingest",
                            "reason": "a stamp collection catalog; field=True reads large images, so "
                                      "ingest collections in a run without --field"})
        files = files + found.beside
        if user is None:
            tasks = [_Task("detect", str(p), error_map=found.companions.get(str(p))) for p in files]
        else:
            tasks, meta, field_rejects = _field_tasks(files, user, config, found.companions)
            rejects += field_rejects
            meta_tables.append(meta)
    else:
        for catalog in catalogs:
            table = _collection_table(catalog)
            named |= _collection_files(catalog, table)
            if config.select and user is None:
                keep = select_rows(table, config.select, f"collection catalog {catalog}")
                summary["not_selected"] = summary.get("not_selected", 0) + int((~keep).sum())
                table = table[keep]
            tasks += _collection_tasks(catalog, table)
            meta_tables.append(table.assign(id=table["IDENT"].astype(str)))
        for path in found.beside:
            if path not in named:
                found_in = next(c for c in catalogs if c.parent == path.parent)
                rejects.append({"id": _stem(path), "origin": str(path), "stage": "ingest",
                                "reason": f"lies beside the collection catalog {found_in.name} but is "
                                          "none of its files; give it as an input of its own to ingest it"})
        for path in files:
            tasks.append(_Task("file", str(path), [_Item(_stem(path), str(path),
                                                         error_map=found.companions.get(str(path)))]))
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
    repeated = _repeated(user["id"])
    selected = set(user["id"][keep]) - set(repeated)
    rejects, kept, dropped = [], [], 0
    for task in tasks:
        items = []
        for item in task.items:
            if item.id in repeated:
                rejects.append({"id": item.id, "origin": item.path, "stage": "ingest",
                                "reason": f"id appears {repeated[item.id]} times in column {id_col!r} of "
                                          f"{source}, so its catalog row is ambiguous; keep one row per id"})
            elif item.id not in known:
                rejects.append({"id": item.id, "origin": item.path, "stage": "ingest",
                                "reason": f"id not found in column {id_col!r} of {source}"})
            elif item.id in selected:
                items.append(item)
            else:
                dropped += 1
        if items:
            kept.append(_Task(task.kind, task.path, items))
    return kept, user[keep], rejects, dropped


def _repeated(ids: pd.Series) -> dict[str, int]:
    """Ids that appear more than once, and how often."""
    counts = ids.value_counts()
    return {str(k): int(v) for k, v in counts[counts > 1].items()}


def _field_tasks(files: list[Path], user: pd.DataFrame, config: IngestConfig, companions: dict[str, str]):
    source = f"catalog {config.catalog}"
    id_col = _require_column(user, config.id_col, "--id-col (the column holding galaxy ids)", source)
    if config.select:
        user = user[select_rows(user, config.select, source)]
    ids = user[id_col].astype(str).str.strip()
    repeated = _repeated(ids)
    ambiguous = [{"id": gid, "origin": str(config.catalog), "stage": "ingest",
                  "reason": f"id appears {n} times in column {id_col!r} of {source}, so its position is "
                            "ambiguous; keep one row per id"} for gid, n in repeated.items()]
    user, ids = user[~ids.isin(repeated).to_numpy()], ids[~ids.isin(repeated)].to_numpy()
    use_pixels = config.x_col is not None or config.y_col is not None
    if use_pixels:
        xs = user[_require_column(user, config.x_col, "--x-col", source)].to_numpy(float)
        ys = user[_require_column(user, config.y_col, "--y-col", source)].to_numpy(float)
    else:
        ra = user[_require_column(user, config.ra_col, "--ra-col", source)].to_numpy(float)
        dec = user[_require_column(user, config.dec_col, "--dec-col", source)].to_numpy(float)
    placed = np.zeros(len(user), dtype=bool)
    tasks, rejects = [], []
    for path in files:
        try:
            header = fits.getheader(path, config.hdu or 0)
            wcs = None if use_pixels else _wcs(str(path), config.hdu)
        except (OSError, ValueError, IndexError, KeyError, TypeError) as exc:
            rejects.append({"id": _stem(path), "origin": str(path), "stage": "ingest",
                            "reason": f"unreadable field image: {exc}"})
            continue
        ny, nx = header.get("NAXIS2", 0), header.get("NAXIS1", 0)
        if use_pixels:
            px, py = xs, ys
            sky = [None] * len(user)
        else:
            if wcs is None:
                raise IngestError(f"{path} has no celestial WCS; give pixel columns with --x-col/--y-col")
            px, py = wcs.world_to_pixel_values(ra, dec)
            sky = list(zip(ra, dec, strict=True))
        inside = ~placed & (px > -0.5) & (px < nx - 0.5) & (py > -0.5) & (py < ny - 0.5)
        error_map = companions.get(str(path))
        items = [_Item(ids[i], str(path), config.hdu, (float(py[i]), float(px[i])), sky[i],
                       error_map=error_map)
                 for i in np.flatnonzero(inside)]
        placed |= inside
        if items:
            tasks.append(_Task("field", str(path), items, error_map))
    rejects += [{"id": ids[i], "origin": str(config.catalog), "stage": "ingest",
                 "reason": "catalog position lies outside every readable field image"}
                for i in np.flatnonzero(~placed)] + ambiguous
    return tasks, user.assign(id=ids), rejects


# --- the stage ---------------------------------------------------------------------------


def _fingerprint_inputs(found: _Found, config: IngestConfig) -> str:
    digest = hashlib.sha256()
    companions = [Path(p) for p in found.companions.values() if p]
    paths = [*found.files, *found.catalogs, *found.beside, *companions,
             *([Path(config.catalog)] if config.catalog else [])]
    for path in paths:
        st = path.stat()
        digest.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
    for row in found.rejects + found.strays:
        digest.update(f"{row['origin']}|{row['reason']}\n".encode(errors="surrogateescape"))
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
    found = _expand(inputs)
    cfg = ctx.config.ingest
    found.companions = _companions(found.files + (found.beside if cfg.field else []), cfg.error_maps)
    ctx.state["found"] = found
    return _fingerprint_inputs(found, cfg)


class _OptionalArray:
    """An array of the run written only once some stamp has a value for it: NaN for
    the stamps before that and for every stamp without one, in stamp order."""

    def __init__(self, run: RunDir, name: str, shape: tuple[int, int], chunk: int) -> None:
        self.run, self.name, self.shape, self.chunk = run, name, shape, chunk
        self.nan = np.full(shape, np.nan, dtype=np.float32)
        self.before = 0
        self.count = 0
        self.writer = None
        shutil.rmtree(run.array_path(name), ignore_errors=True)  # never leave a stale one

    def append(self, item: np.ndarray | None) -> None:
        if item is None:
            if self.writer is None:
                self.before += 1
            else:
                self.writer.append(self.nan)
            return
        if self.writer is None:
            self.writer = self.run.writer(self.name, self.shape, self.chunk)
            for _ in range(self.before):
                self.writer.append(self.nan)
        self.writer.append(item)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _compute(ctx: StageContext) -> dict[str, Any]:
    run, cfg, progress = ctx.run, ctx.config.ingest, ctx.progress
    found: _Found = ctx.state["found"]
    tasks, meta, early_rejects, summary = _plan(found, cfg)
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
    rms = _OptionalArray(run, "rms", (size, size), cfg.chunk_size)
    psf = _OptionalArray(run, "psf", (cfg.psf_size, cfg.psf_size), cfg.chunk_size)
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
                _, gid, stamp, row, rms_stamp, kernel = result
                if gid in seen:
                    rejects.append({"id": gid, "origin": row["origin"], "stage": "ingest",
                                    "reason": "duplicate id (an earlier input has the same id)"})
                    continue
                seen.add(gid)
                writer.append(stamp)
                rms.append(rms_stamp)
                psf.append(kernel)
                rows.append(row)
            n_rejected += run.add_rejects(rejects)
            bar.update(len(batch_results))
    writer.close()
    rms.close()
    psf.close()
    if not rows and summary.get("not_selected") and n_rejected == 0:
        raise IngestError(f"the selection {' and '.join(map(repr, cfg.select))} keeps none of the "
                          f"{summary['not_selected']} galaxies; loosen --select")
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
    n_linear = int(sources["linear"].sum())
    summary.update(
        n_stamps=len(rows), n_rejected=n_rejected, stamp_size=size,
        n_linear=n_linear, n_nonlinear=len(rows) - n_linear,
        n_rms=rms.count, rms_sources=_kinds(sources.loc[sources["has_rms"], "rms_source"]),
        n_psf=psf.count, psf_size=cfg.psf_size,
        psf_sources=_kinds(sources.loc[sources["has_psf"], "psf_source"]),
        n_notes=int((sources["note"] != "").sum()),
    )
    if found.skipped:
        summary["skipped"] = dict(sorted(found.skipped.items()))
    log.info("ingest: %d stamps (%d linear, %d display-scaled PNG/JPEG; %d with an error map, %d "
             "with a PSF), %d rejected%s", len(rows), n_linear, len(rows) - n_linear, rms.count,
             psf.count, n_rejected,
             f", {summary['not_selected']} not selected" if summary.get("not_selected") else "")
    return summary


def _kinds(sources: pd.Series) -> dict[str, int]:
    """Counts of where error maps / PSFs came from, by kind rather than by file."""

    def kind(source: str) -> str:
        if m := re.fullmatch(r"HDU \d+ (.*)", source):
            return f"HDU {m[1]}"
        if m := re.fullmatch(r"file .* \((\w+)\)", source):
            return f"companion file ({m[1]})"
        if m := re.fullmatch(r"(.*)\[-?\d+\]", source):
            return Path(m[1]).name
        return source

    return {str(k): int(v) for k, v in sources.map(kind).value_counts().items()}


def _check(config: Config) -> None:
    for expression in config.ingest.select or ():
        try:
            parse_selection(expression)  # before config.toml records it
        except SelectionError as exc:
            raise IngestError(str(exc)) from None
    if config.ingest.psf_size % 2 == 0:
        raise ConfigError(f"ingest.psf_size must be odd (the PSF's peak on the central pixel), "
                          f"not {config.ingest.psf_size}")


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    text = (f"{info.get('n_stamps', 0)} stamps written to {run.path / 'stamps.zarr'}; "
            f"{info.get('n_rejected', 0)} inputs rejected (see {run.rejects_path})")
    if info.get("n_nonlinear"):
        text += (f"; {info['n_nonlinear']} from PNG/JPEG (display-scaled, linear=False in "
                 "sources.parquet: not for photometry)")
    if info.get("n_rms") or info.get("n_psf"):
        text += f"; {info.get('n_rms', 0)} with an error map (rms), {info.get('n_psf', 0)} with a PSF (psf)"
    return text


STAGE = Stage(
    name="ingest",
    summary="read cutouts (FITS, PNG/JPEG, NPY, collections, fields) into stamps",
    description=__doc__.split("\n\n")[0],
    compute=_compute,
    sections=("ingest",),
    outputs=("stamps.zarr", "sources.parquet"),
    extra=_extra,
    check=_check,
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
        The run directory, with ``stamps``, ``sources.parquet`` and ``rejects.csv``,
        and ``rms`` / ``psf`` when any stamp has an error map / a PSF.

    Raises
    ------
    IngestError
        If an input path does not exist, a directory holds no images, a catalog
        column is missing, or no input at all yields a usable stamp.
    """
    return execute("ingest", out, config, force=force, progress=progress,
                   options={"inputs": list(inputs)}, **settings)
