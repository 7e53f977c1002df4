"""Planning what ``skymorph ingest`` reads: tasks from the inputs found, catalog matching and selection.

:func:`plan` turns the files and collection catalogs that :func:`skymorph.io.inputs.expand_inputs`
found into tasks (:class:`~skymorph.io.inputs.Task`: one per file, collection image file or
field), matches them against the user's catalog (``--catalog``, ``--id-col``: ids, positions in
fields, ``--select`` expressions) and lists what is rejected before any pixel is read;
:func:`batches` groups the tasks for the worker processes.  Only the headers of fields are read
here (their size and WCS), never pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from ..config import IngestConfig
from ..errors import SkymorphError
from .inputs import (
    InputFiles,
    Item,
    Task,
    celestial_wcs,
    collection_files,
    collection_table,
    collection_tasks,
)
from .readers import stem_of as _stem
from .selection import SelectionError, evaluate_selection
from .tables import TableError
from .tables import read_table as _read_table

__all__ = ["IngestError", "read_table", "select_rows", "plan", "batches"]


class IngestError(SkymorphError, ValueError):
    """The inputs cannot be ingested at all (as opposed to one bad galaxy)."""


# --- catalogs ----------------------------------------------------------------------


def read_table(path: str | Path, id_col: str | None = None) -> pd.DataFrame:
    """Read a catalog (FITS table, CSV or Parquet) with :func:`skymorph.io.tables.read_table`
    (``id_col`` as exact text; multi-dimensional FITS columns dropped, byte strings decoded)."""
    try:
        return _read_table(path, id_col=id_col, what="catalog")
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


# --- tasks -------------------------------------------------------------------------------


def plan(found: InputFiles, config: IngestConfig
         ) -> tuple[list[Task], pd.DataFrame | None, list[dict[str, Any]], dict[str, Any]]:
    """Work out what to read: tasks, the catalog columns per id, early rejects, counts.

    Parameters
    ----------
    found : InputFiles
        What :func:`skymorph.io.inputs.expand_inputs` found, with its ``companions`` set.
    config : IngestConfig
        The ``[ingest]`` settings (``field``, ``catalog``, ``id_col``, ``select``, the
        position columns, ``hdu``).

    Returns
    -------
    tasks : list of Task
        What the workers read, in input order.
    meta : DataFrame or None
        The catalog columns of each ``id`` (the user's catalog or the collection tables),
        joined to ``sources.parquet``; ``None`` without a catalog.
    rejects : list of dict
        Rows of ``rejects.csv`` known before any image is read.
    summary : dict
        ``not_selected``: how many galaxies ``select`` left out, when it did.

    Raises
    ------
    IngestError
        If a catalog or one of its columns is missing, a selection cannot be evaluated,
        a field has no celestial WCS for RA/Dec positions, or ``select`` is given for image
        files without a catalog.
    """
    files, catalogs = found.files, found.catalogs
    rejects: list[dict[str, Any]] = [{**row, "stage": "ingest"} for row in (*found.rejects, *found.strays)]
    tasks: list[Task] = []
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
            tasks = [Task("detect", str(p), error_map=found.companions.get(str(p))) for p in files]
        else:
            tasks, meta, field_rejects = _field_tasks(files, user, config, found.companions)
            rejects += field_rejects
            meta_tables.append(meta)
    else:
        for catalog in catalogs:
            try:
                table = collection_table(catalog)
            except TableError as exc:
                raise IngestError(str(exc)) from None
            named |= collection_files(catalog, table)
            if config.select and user is None:
                keep = select_rows(table, config.select, f"collection catalog {catalog}")
                summary["not_selected"] = summary.get("not_selected", 0) + int((~keep).sum())
                table = table[keep]
            tasks += collection_tasks(catalog, table)
            meta_tables.append(table.assign(id=table["IDENT"].astype(str)))
        for path in found.beside:
            if path not in named:
                found_in = next(c for c in catalogs if c.parent == path.parent)
                rejects.append({"id": _stem(path), "origin": str(path), "stage": "ingest",
                                "reason": f"lies beside the collection catalog {found_in.name} but is "
                                          "none of its files; give it as an input of its own to ingest it"})
        for path in files:
            tasks.append(Task("file", str(path), [Item(_stem(path), str(path),
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


def _select_by_catalog(tasks: list[Task], user: pd.DataFrame, config: IngestConfig):
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
            kept.append(Task(task.kind, task.path, items))
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
            wcs = None if use_pixels else celestial_wcs(str(path), config.hdu)
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
        items = [Item(ids[i], str(path), config.hdu, (float(py[i]), float(px[i])), sky[i],
                       error_map=error_map)
                 for i in np.flatnonzero(inside)]
        placed |= inside
        if items:
            tasks.append(Task("field", str(path), items, error_map))
    rejects += [{"id": ids[i], "origin": str(config.catalog), "stage": "ingest",
                 "reason": "catalog position lies outside every readable field image"}
                for i in np.flatnonzero(~placed)] + ambiguous
    return tasks, user.assign(id=ids), rejects


def batches(tasks: list[Task], size: int) -> Iterator[list[Task]]:
    """Up to ``size`` single-file tasks per batch; a collection file or a field, which holds
    many galaxies already, is a batch of its own."""
    batch: list[Task] = []
    for task in tasks:
        batch.append(task)
        if len(batch) >= size or task.kind != "file":
            yield batch
            batch = []
    if batch:
        yield batch
