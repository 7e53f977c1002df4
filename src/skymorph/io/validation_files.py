"""The validation report's reads from a run directory and the files it writes there.

The validate stage (:mod:`skymorph.stages.validate`) calls these for what its parts read
(the typed catalog with its measurements and sources, the arrays behind the example
stamps and the maps, the extension's and the evaluation's records, the stage records)
and to write ``report/report.html`` and ``report/validation.json``.  The table work
(joining the physical catalog, the derived columns) is
:mod:`skymorph.core.validation_table`'s, the numbers :mod:`skymorph.core.validation_parts`'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.validation import normalise_types
from ..core.validation_table import ValidateError, join_physical, physical_columns
from .rundir import RunDir, RunDirError

__all__ = ["MAP_SOURCES", "user_table", "typed_table", "stamp_reader", "map_source", "map_arrays",
           "extend_report", "evaluation_record", "stage_records", "write_report"]

MAP_SOURCES = ("embedding", "features")
"""The arrays the t-SNE map is computed from when present, in this order of preference."""


def user_table(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A table the user gave (``--physical``, ``--gzh``): a DataFrame as it is, else the file read.

    Raises
    ------
    ValidateError
        If the file cannot be read as a catalog.
    """
    if isinstance(source, pd.DataFrame):
        return source
    from .tables import TableError, read_table

    try:
        return read_table(source, what="catalog")
    except TableError as exc:
        raise ValidateError(str(exc)) from None


def _typed_catalog(run: RunDir, types: list[str]) -> pd.DataFrame:
    """The run's catalog with text ids and normalised types; refused without any expert type."""
    try:
        catalog = run.catalog()
    except RunDirError as exc:
        raise ValidateError(f"{exc}; validate needs the typed catalog (morph_type)") from None
    if "morph_type" not in catalog.columns:
        raise ValidateError(
            f"the catalog of {run.path} has no morph_type column: name the clusters first "
            f"(`skymorph inspect serve {run.path}` then `skymorph inspect merge {run.path}`)")
    morph_type = normalise_types(catalog["morph_type"])
    if not morph_type.isin(types).any():
        raise ValidateError(
            f"morph_type is empty for every galaxy of {run.path}; merge the experts' votes "
            f"(`skymorph inspect merge {run.path}`) before validating")
    return catalog.assign(id=catalog["id"].astype(str), morph_type=morph_type)


def _with_measurements(run: RunDir, table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``table`` with the measurements: measure joins them when the catalog existed, else here."""
    from .catalog import MEASURE_COLUMNS, MEASUREMENTS_FILE

    mpath = run.path / MEASUREMENTS_FILE
    if "gini" in table.columns:
        return table
    if not mpath.exists():
        notes.append(f"no measurements: run `skymorph measure {run.path}` for the per-type "
                     "parameters, the ETG/LTG tests and the parameter completeness curves")
        return table
    import pyarrow.parquet as pq

    present = set(pq.read_schema(mpath).names)  # an older skymorph wrote fewer columns
    m = pd.read_parquet(mpath, columns=["id", *[c for c in MEASURE_COLUMNS if c in present]]).assign(
        id=lambda d: d["id"].astype(str))
    return table.merge(m, on="id", how="left")


def _with_sources(run: RunDir, table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``table`` with the sources table's columns it lacks (S/N, array rows)."""
    try:
        sources = run.sources()
    except RunDirError:
        notes.append("no sources table: S/N and array rows are unavailable")
        return table
    sources = sources.assign(id=sources["id"].astype(str))
    extra = [c for c in sources.columns if c not in table.columns and c != "id"]
    return table.merge(sources[["id", *extra]], on="id", how="left")


def typed_table(run: RunDir, physical: str | os.PathLike | pd.DataFrame | None, *, id_col: str | None,
                types: list[str], mass_col: str | None, z_col: str | None, mag_col: str | None,
                pixel_scale: float | None) -> tuple[pd.DataFrame, dict[str, str | None], list[str]]:
    """The catalog joined with the measurements, the sources and the user's physical catalog.

    Parameters
    ----------
    run : RunDir
        The run; its catalog must have ``morph_type``.
    physical : str, Path or DataFrame, optional
        The user's catalog of physical quantities.
    id_col : str, optional
        Id column of ``physical`` (default ``id``).
    types : list of str
        The experts' types (upper case): at least one galaxy must have one.
    mass_col, z_col, mag_col, pixel_scale
        ``[validate]``'s settings, for :func:`~skymorph.core.validation_table.physical_columns`.

    Returns
    -------
    table : DataFrame
        One row per catalog galaxy, raw values.
    cols : dict
        The roles' columns and the unit of ``r_e``.
    notes : list of str
        What is missing or how it was joined, in the order found.

    Raises
    ------
    ValidateError
        Without a catalog, without ``morph_type`` or any type, or a physical catalog
        without its id column.
    """
    notes: list[str] = []
    table = _with_sources(run, _with_measurements(run, _typed_catalog(run, types), notes), notes)
    if physical is not None:
        table, more = join_physical(table, user_table(physical), id_col=id_col)
        notes.extend(more)
    table, cols, more = physical_columns(table, mass_col=mass_col, z_col=z_col, mag_col=mag_col,
                                         pixel_scale=pixel_scale, physical_given=physical is not None)
    return table, cols, notes + more


def stamp_reader(run: RunDir) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving the stamps (float32) at array rows; the array is opened now, so that a
    damaged one fails before any galaxy is drawn."""
    array = run.open_array("stamps")
    return lambda rows: np.asarray(array.get_orthogonal_selection(rows), dtype=np.float32)


def map_source(run: RunDir) -> str | None:
    """The first array of :data:`MAP_SOURCES` the run has (None: none)."""
    return next((n for n in MAP_SOURCES if run.has_array(n)), None)


def map_arrays(run: RunDir, rows: np.ndarray, *,
               source: str | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``embedding_2d`` (when the run has it) and ``source`` (float32) at array ``rows``."""
    umap = (np.asarray(run.open_array("embedding_2d").get_orthogonal_selection(rows))
            if run.has_array("embedding_2d") else None)
    data = (np.asarray(run.open_array(source).get_orthogonal_selection(rows), dtype=np.float32)
            if source is not None else None)
    return umap, data


def extend_report(run: RunDir) -> dict[str, Any] | None:
    """``extend/extend.json`` (None: extend has not run)."""
    path = run.path / "extend" / "extend.json"
    return json.loads(path.read_text()) if path.exists() else None


def evaluation_record(run: RunDir) -> tuple[dict[str, Any] | None, str]:
    """``evaluation/evaluation.json`` (None: evaluate has not run) and extend's fingerprint.

    The fingerprint is read only when the evaluation has final types to compare with the
    extension (else '').
    """
    path = run.path / "evaluation" / "evaluation.json"
    found = json.loads(path.read_text()) if path.exists() else None
    current = ((run.stage_info("extend") or {}).get("fingerprint", "") if found and found.get("final_types")
               else "")
    return found, current


def stage_records(run: RunDir, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What each stage of ``names`` that ran recorded; ``{"damaged": True}`` for an unreadable record."""
    records = {}
    for name in names:
        try:
            info = run.stage_info(name)
        except RunDirError:
            info = {"damaged": True}
        if info is not None:
            records[name] = info
    return records


def write_report(run: RunDir, page: str, numbers: dict[str, Any]) -> Path:
    """Write ``report/report.html`` and ``report/validation.json``; the page's path."""
    out_dir = run.path / "report"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    (out_dir / "validation.json").write_text(json.dumps(numbers, indent=2))
    return path
