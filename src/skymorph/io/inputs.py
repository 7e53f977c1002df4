"""Finding the input files of ``skymorph ingest``: image files, stamp collections, companion error maps.

Directories are searched recursively (symbolic links followed, each directory once);
every path given or found is either an input or a row of rejects (dangling links, link
loops, FIFOs, directories that cannot be listed, files that are not images), so an
unreadable input never stops a run.  :class:`TaskReader` then reads the images of one
:class:`Task` (a file, a collection's image file or a field) with their error maps and PSFs.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from ..errors import SkymorphError
from .readers import (
    DEFAULT_MAX_PIXELS,
    FITS_SUFFIXES,
    IMAGE_SUFFIXES,
    NPY_SUFFIXES,
    GalaxyImage,
    Reject,
    error_hdu,
    fits_image,
    header_zeropoint,
    read_error_map,
    read_galaxy,
    stem_of,
    suffix_of,
)
from .tables import read_table

__all__ = ["InputFiles", "InputError", "expand_inputs", "companion_files", "is_collection",
           "COLLECTION_COLUMNS", "Item", "Task", "TaskReader", "celestial_wcs", "collection_table",
           "collection_files", "collection_tasks"]

COLLECTION_COLUMNS = {"IDENT", "GAL_FILENAME", "GAL_HDU"}
"""Columns of a GalSim / COSMOS ``RealGalaxyCatalog`` table (a stamp collection)."""


class InputError(SkymorphError, ValueError):
    """The inputs name nothing to read (a missing path, a directory without images, a bad
    ``error_maps`` setting)."""


@dataclass
class InputFiles:
    """What the inputs hold: image files, collection catalogs, files beside a catalog (its own
    images, PSFs... or strays), inputs that cannot be read (rows with ``id``, ``origin`` and
    ``reason``), and what was skipped."""

    files: list[Path] = field(default_factory=list)
    catalogs: list[Path] = field(default_factory=list)
    beside: list[Path] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    strays: list[dict[str, Any]] = field(default_factory=list)
    """Files in a searched directory that are not images (rejects, but no reason to
    call the directory one of images)."""
    companions: dict[str, str] = field(default_factory=dict)

    def fingerprint(self, catalog: str | None = None) -> str:
        """What makes the inputs the same inputs: path, size and modification time of every
        file found (and of the ``catalog`` file), and the reason of every reject."""
        digest = hashlib.sha256()
        companions = [Path(p) for p in self.companions.values() if p]
        paths = [*self.files, *self.catalogs, *self.beside, *companions,
                 *([Path(catalog)] if catalog else [])]
        for path in paths:
            st = path.stat()
            digest.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
        for row in self.rejects + self.strays:
            digest.update(f"{row['origin']}|{row['reason']}\n".encode(errors="surrogateescape"))
        return digest.hexdigest()[:16]

    def reject(self, path: Path, reason: str) -> None:
        self.rejects.append({"id": stem_of(path), "origin": str(path), "reason": reason})


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


def _walk(root: Path, found: InputFiles) -> int:
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
            image = suffix_of(path) in IMAGE_SUFFIXES
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
                suffix = suffix_of(path) or "no suffix"
                hint = "; save each image of the .npz archive as .npy" if suffix == ".npz" else ""
                found.strays.append({
                    "id": stem_of(path), "origin": str(path),
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
        catalogs = [p for p in paths if is_collection(p)]
        found.catalogs += catalogs
        # a collection's directory holds its image and PSF files: they are read through
        # its catalog, and anything else there is checked against it in ingest_plan.plan
        (found.beside if catalogs else found.files).extend(p for p in paths if p not in catalogs)
    return count() - before


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> InputFiles:
    """Find the image files, collection catalogs and unreadable paths of the inputs;
    directories are searched recursively.  Missing paths and directories without
    any image raise."""
    found = InputFiles()
    for raw in inputs:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"the pattern {text!r} matches no files; check the path")
        else:
            if not os.path.lexists(text):
                raise InputError(f"input {text!r} does not exist; check the path")
            matches = [text]
        for match in matches:
            path = Path(match)
            kind, info = _classify(path)
            if kind == "reject":
                found.reject(path, info)
            elif kind == "dir":
                if not _walk(path, found):
                    raise InputError(
                        f"directory {path} contains no image files "
                        f"({', '.join(sorted(set(IMAGE_SUFFIXES)))}); point at the files themselves "
                        "or at a directory that holds them"
                    )
            elif is_collection(path):
                found.catalogs.append(path)
            else:
                found.files.append(path)
    return found


def is_collection(path: Path) -> bool:
    if "catalog" not in path.name.lower() or suffix_of(path) not in FITS_SUFFIXES:
        return False
    try:
        with fits.open(path) as hdul:
            return any(
                isinstance(h, fits.BinTableHDU) and COLLECTION_COLUMNS <= set(h.columns.names)
                for h in hdul
            )
    except (OSError, ValueError):
        return False


def companion_files(files: list[Path], setting: str | None) -> dict[str, str]:
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
            raise InputError(f"ingest.error_maps {setting!r} is neither a directory nor a pattern "
                              "with {stem}, e.g. 'rms/{stem}_rms.fits'")
        names = {e.name: e.path for e in os.scandir(directory) if e.is_file()}
        for path in files:
            candidates = [path.name] + [stem_of(path) + s for s in FITS_SUFFIXES + NPY_SUFFIXES]
            match = next((names[c] for c in candidates if c in names), "")
            out[str(path)] = match if match and not os.path.samefile(match, path) else ""
        return out
    if not any(ch in text for ch in "*?["):
        for path in files:
            candidate = text.replace("{stem}", stem_of(path)).replace("{name}", path.name)
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
        candidate = by_key.get(stem_of(path) if "{stem}" in text else path.name, "")
        if candidate and not os.path.samefile(candidate, path):
            out[str(path)] = candidate
    return out


# --- what to read, and reading it -------------------------------------------------------


@dataclass
class Item:
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
class Task:
    """Items read together: one file, a collection's image file, or one field."""

    kind: str  # "file", "collection", "field", "detect"
    path: str
    items: list[Item] = field(default_factory=list)
    error_map: str | None = None


def _fits_length(path: str) -> int | None:
    return None if path.lower().endswith((".gz", ".fz")) else os.stat(path).st_size


def collection_table(path: Path) -> pd.DataFrame:
    """A collection catalog, joined row by row with its companion ``<catalog>_fits.fits`` table
    when that has as many rows (:func:`skymorph.io.tables.read_table`; raises its ``TableError``)."""
    table = read_table(path, what="catalog")
    companion = path.with_name(stem_of(path) + "_fits.fits")
    if companion.exists():
        extra = read_table(companion, what="catalog")
        if len(extra) == len(table):
            extra = extra.drop(columns=[c for c in extra.columns if c in table.columns])
            table = pd.concat([table, extra.reset_index(drop=True)], axis=1)
    return table


def collection_files(path: Path, table: pd.DataFrame) -> set[Path]:
    """Files a collection catalog names (images, PSFs, noise correlation functions)."""
    named = {path, path.with_name(stem_of(path) + "_fits.fits")}
    for column in ("GAL_FILENAME", "PSF_FILENAME", "NOISE_FILENAME"):
        if column in table.columns:
            named |= {path.parent / str(name).strip() for name in table[column].unique()}
    return named


def collection_tasks(path: Path, table: pd.DataFrame) -> list[Task]:
    """One task per image file of a collection, one item per catalog row (its HDU, and its PSF
    and noise variance when the catalog has those columns)."""
    tasks: dict[str, Task] = {}
    has_psf = {"PSF_FILENAME", "PSF_HDU"} <= set(table.columns)
    has_noise = "NOISE_VARIANCE" in table.columns
    for row in table.itertuples(index=False):
        image_file = str(path.parent / str(row.GAL_FILENAME).strip())
        task = tasks.setdefault(image_file, Task("collection", image_file))
        psf = (str(path.parent / str(row.PSF_FILENAME).strip()), int(row.PSF_HDU)) if has_psf else None
        noise = float(row.NOISE_VARIANCE) if has_noise else None
        task.items.append(Item(str(row.IDENT), image_file, int(row.GAL_HDU), noise_variance=noise,
                                psf=psf))
    return list(tasks.values())


class TaskReader:
    """Reads the images of one task, keeping open files and whole fields for its items."""

    def __init__(self, task: Task, *, hdu: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 error_map_kind: str = "auto") -> None:
        self.task, self.hdu, self.max_pixels, self.error_map_kind = task, hdu, max_pixels, error_map_kind
        self.files: dict[str, tuple[fits.HDUList, int | None]] = {}
        self.cache: dict[Any, Any] = {}

    def close(self) -> None:
        for hdul, _ in self.files.values():
            hdul.close()

    def _open(self, path: str) -> tuple[fits.HDUList, int | None]:
        if path not in self.files:
            self.files[path] = (fits.open(path, memmap=True), _fits_length(path))
        return self.files[path]

    def read(self, item: Item) -> GalaxyImage:
        if self.task.kind == "file":
            image = read_galaxy(item.path, self.hdu, max_pixels=self.max_pixels)
        else:
            key = ("image", item.hdu)
            if key not in self.cache:
                hdul, size = self._open(self.task.path)
                data, index = fits_image(hdul, item.hdu, self.max_pixels, size)
                image = GalaxyImage(np.array(data, dtype=np.float64), index, linear=True,
                                    zeropoint=header_zeropoint(hdul[index].header, hdul[0].header))
                if self.task.kind != "collection" and len(hdul) > 1:
                    image.rms, image.rms_source, image.note = error_hdu(
                        hdul, index, image.data.shape, self.max_pixels)
                self.cache[key] = image
            cached = self.cache[key]
            image = GalaxyImage(cached.data, cached.hdu, cached.linear, cached.rms, cached.rms_source,
                                note=cached.note, zeropoint=cached.zeropoint)
        notes = [image.note] if image.note else []
        if item.error_map:
            if item.error_map not in self.cache:
                try:
                    self.cache[item.error_map] = read_error_map(
                        item.error_map, self.error_map_kind, image.data.shape, self.max_pixels)
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
                    data, _ = fits_image(hdul, psf_hdu, self.max_pixels, size)
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


def celestial_wcs(path: str, hdu: int | None):
    """The celestial WCS of a FITS image's header (``astropy.wcs.WCS``), or ``None``."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = fits.getheader(path, 0 if hdu is None or hdu < 0 else hdu)
        wcs = WCS(header)
    return wcs if wcs.has_celestial else None
