"""One reader for the tables users give: catalogs, truth tables, physical catalogs.

CSV/TSV, Parquet and FITS tables are read into a DataFrame; identifier columns are
always text, read exactly: an 18-digit SDSS objid keeps every digit whatever the
format, a blank id is ``""`` (it never turns the column into floating point), and
``"007"`` stays ``"007"``.  Every stage that matches ids between tables (ingest's
``--catalog``, evaluate's ``--truth``, validate's physical catalog) reads them here,
so one file gives the same ids everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SkymorphError

__all__ = ["TableError", "read_table", "read_labels", "ids_as_text"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".tab")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


class TableError(SkymorphError, ValueError):
    """A table is missing, unreadable, or its id column cannot be read exactly."""


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


def ids_as_text(column: pd.Series, *, name: str = "id", source: str = "the table") -> pd.Series:
    """Identifiers as exact, stripped text (``""`` where missing).

    Integers are written in full; floating-point ids are accepted only when every one
    is a whole number below 2^53 (above that float64 has already lost digits).

    Parameters
    ----------
    column : Series
        The id column as read (integers, floats, text or bytes).
    name, source : str
        Column and table, for the message.

    Returns
    -------
    Series of str

    Raises
    ------
    TableError
        Floating-point ids that cannot be exact.

    Examples
    --------
    >>> import pandas as pd
    >>> from skymorph.io.tables import ids_as_text
    >>> ids_as_text(pd.Series([587722981741363294, 7])).tolist()
    ['587722981741363294', '7']
    >>> ids_as_text(pd.Series([12.0, None])).tolist()
    ['12', '']
    """
    if pd.api.types.is_bool_dtype(column):
        return column.astype(str)
    if pd.api.types.is_integer_dtype(column):
        return column.map(lambda v: "" if pd.isna(v) else str(int(v))).astype(object)
    if pd.api.types.is_float_dtype(column):
        values = column.dropna()
        if (values % 1 == 0).all() and (values.abs() < 2**53).all():
            return column.map(lambda v: "" if pd.isna(v) else str(int(v))).astype(object)
        raise TableError(
            f"id column {name!r} of {source} is stored as floating point, which cannot hold long "
            "integer ids exactly (e.g. 18-digit SDSS objids); store the ids as integers or text"
        )
    return column.map(_text).astype(object)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    with path.open("rb") as handle:
        head = handle.read(6)
    return "fits" if head == b"SIMPLE" or head[:2] == b"\x1f\x8b" else "csv"


def read_table(path: str | os.PathLike, *, id_col: str | None = None, text_columns: Sequence[str] = (),
               what: str = "table") -> pd.DataFrame:
    """Read a CSV/TSV, Parquet or FITS table, with its id column as exact text.

    Parameters
    ----------
    path : str or Path
        ``.parquet``/``.pq``, ``.csv``/``.txt`` (comma), ``.tsv``/``.tab`` (tab), FITS
        (``.fits``, ``.fit``, ``.fts``, gzipped too); another suffix is read as FITS when
        the file starts like one, else as CSV.
    id_col : str, optional
        The identifier column: text, exactly (see :func:`ids_as_text`).  A column that
        does not exist is left for the caller to report (with the columns there are).
    text_columns : sequence of str
        Other columns to read as stripped text (``""`` where missing), e.g. labels.
    what : str
        What the table is, for messages (``"catalog"``, ``"truth file"``).

    Returns
    -------
    DataFrame
        Multi-dimensional FITS columns are dropped; byte strings are decoded.

    Raises
    ------
    TableError
        The file is missing or unreadable, or its ids cannot be read exactly.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skymorph.io.tables import read_table
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = path.write_text("objid,mag\\n587722981741363294,17.5\\n,18.0\\n")
    >>> table = read_table(path, id_col="objid")
    >>> table["objid"].tolist(), table["mag"].tolist()
    (['587722981741363294', ''], [17.5, 18.0])
    """
    path = Path(path)
    if not path.exists():
        raise TableError(f"{what} {path} does not exist")
    if not path.is_file():
        raise TableError(f"{what} {path} is not a file; give the table's file")
    text = ([id_col] if id_col else []) + list(text_columns)
    try:
        kind = _kind(path)
        if kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "csv":
            sep = "\t" if path.name.lower().endswith((".tsv", ".tab")) else ","
            frame = pd.read_csv(path, sep=sep, dtype={c: str for c in text}, keep_default_na=True)
        else:
            from astropy.table import Table

            table = Table.read(path, format="fits")
            scalar = [c for c in table.colnames if table[c].ndim <= 1]
            frame = table[scalar].to_pandas()
            for col in frame.columns:
                if frame[col].dtype == object:
                    frame[col] = frame[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read {what} {path}: {exc}") from None
    for col in text:
        if col in frame.columns:
            frame[col] = (ids_as_text(frame[col], name=col, source=f"{what} {path}") if col == id_col
                          else frame[col].map(_text).astype(object))
    return frame


def read_labels(truth: str | os.PathLike | pd.DataFrame, *, id_col: str, label_col: str) -> pd.DataFrame:
    """Read a table of known labels (classes) as ``id`` and ``label`` text columns.

    Parameters
    ----------
    truth : str, Path or DataFrame
        CSV, TSV, Parquet or FITS table (see :func:`read_table`), or a DataFrame.
    id_col, label_col : str
        Columns holding the galaxy id (matched to the catalog's ``id``) and the label.

    Returns
    -------
    DataFrame
        ``id``, ``label`` (empty string where the label is missing), one row per id
        (``attrs["n_rows"]``: the rows before duplicates were dropped).

    Raises
    ------
    TableError
        The file is missing or unreadable, a column does not exist (the message lists
        the columns), or one id has two different labels.

    Examples
    --------
    >>> import pandas as pd
    >>> from skymorph.io.tables import read_labels
    >>> table = pd.DataFrame({"objid": [587722981741363294, 7], "class": ["E", None]})
    >>> read_labels(table, id_col="objid", label_col="class").to_dict("list")
    {'id': ['587722981741363294', '7'], 'label': ['E', '']}
    """
    if isinstance(truth, pd.DataFrame):
        table, source = truth.copy(), "the truth table"
    else:
        source = str(truth)
        table = read_table(truth, id_col=id_col, text_columns=(label_col,), what="truth file")
    for role, col in (("id", id_col), ("label", label_col)):
        if col not in table.columns:
            raise TableError(f"{source} has no {role} column {col!r}; its columns are: "
                             f"{', '.join(map(str, table.columns))}")
    out = pd.DataFrame({
        "id": ids_as_text(table[id_col], name=id_col, source=source),
        "label": table[label_col].map(_text).astype(object),
    })
    out = out[out["id"] != ""]
    conflicting = out.groupby("id")["label"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        raise TableError(f"{len(conflicting)} id(s) of {source} have more than one label "
                         f"(e.g. {', '.join(conflicting.index[:3])}); keep one row per galaxy")
    n_rows = len(out)
    out = out.drop_duplicates("id").reset_index(drop=True)
    out.attrs["n_rows"] = n_rows
    return out
