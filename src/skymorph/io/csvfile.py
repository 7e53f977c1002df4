"""Every CSV file skymorph writes, made safe to open in a spreadsheet (CSV injection).

A text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or CR would be taken by a
spreadsheet for a formula (``=HYPERLINK(...)`` in a galaxy id taken from a file name);
such a cell is written after a single quote, and so is one that starts with a quote, so
that :func:`unescape_cell` gives back exactly the text written.  Numbers are written as
numbers: a negative value is not text and is left alone.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

__all__ = ["escape_cell", "unescape_cell", "safe_frame", "write_csv", "read_csv"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def escape_cell(text: str) -> str:
    """A text cell made safe for spreadsheets (see the module docstring)."""
    if text.startswith((*_FORMULA_START, _QUOTE)):
        return _QUOTE + text
    return text


def unescape_cell(text: str) -> str:
    """The text :func:`escape_cell` was given."""
    if text.startswith(_QUOTE) and text[1:].startswith((*_FORMULA_START, _QUOTE)):
        return text[1:]
    return text


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def _escape_value(value: Any) -> Any:
    return escape_cell(value) if isinstance(value, str) else value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and column names) are escaped; numeric
    columns are untouched."""
    out = frame.copy()
    for column in out.columns:
        if _is_text(out[column]):
            out[column] = out[column].map(_escape_value)
    out.columns = [_escape_value(c) for c in out.columns]
    return out


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, **kwargs: Any) -> None:
    """``frame.to_csv(path, index=False)`` with every text cell escaped."""
    kwargs.setdefault("index", False)
    safe_frame(frame).to_csv(path, **kwargs)


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """A CSV written by :func:`write_csv`, text cells as they were before escaping."""
    frame = pd.read_csv(path, **kwargs)
    for column in frame.columns:
        if _is_text(frame[column]):
            frame[column] = frame[column].map(lambda v: unescape_cell(v) if isinstance(v, str) else v)
    frame.columns = [unescape_cell(c) if isinstance(c, str) else c for c in frame.columns]
    return frame
