"""Flags on single galaxies: an expert marks one galaxy (an artefact, a merger, a star, a
mistyped neighbour...) and leaves a comment.

The flags live beside the votes, ``RUN_DIR/inspection/flags.csv``, with the vote store's
guarantees (:class:`~skymorph.inspection.votes.VoteStore`: atomic rewrite, thread and file
lock, spreadsheet-safe cells).  A flag belongs to a galaxy, not to a clustering, so it
survives re-clustering.  :func:`flag_columns` turns them into the catalog's ``expert_flag``
and ``expert_comment`` columns (written by ``inspect merge``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .montage import InspectError
from .votes import CsvStore, _now, clean_expert

__all__ = ["FLAG_COLUMNS", "MAX_COMMENT", "FlagStore", "flag_columns", "clean_comment"]

FLAG_COLUMNS = ["expert", "id", "stamp", "comment", "time"]
"""Columns of ``flags.csv``: who flagged which galaxy (catalog ``id`` and stamp index), why."""
MAX_COMMENT = 1000


def clean_comment(text: object) -> str:
    """The comment with blanks collapsed; checks it is usable.

    Raises
    ------
    InspectError
        If it is not text, longer than ``MAX_COMMENT`` or holds control characters
        other than line breaks and tabs.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InspectError("the comment must be text")
    if len(text) > MAX_COMMENT:
        raise InspectError(f"the comment is longer than {MAX_COMMENT} characters")
    if any(ord(ch) < 32 and ch not in "\t\n\r" or ord(ch) == 127 for ch in text):
        raise InspectError("the comment contains control characters")
    return " ".join(text.split())


class FlagStore(CsvStore):
    """``flags.csv``: one row per (expert, galaxy), replaced when the expert edits it; written
    under the same locks and atomic rewrite as the votes (the vote store's ``_locked``)."""

    columns = FLAG_COLUMNS

    def set_flag(self, expert: str, galaxy_id: str, stamp: int, comment: str | None,
                 flagged: bool = True) -> dict[str, str] | None:
        """Flag (or, with ``flagged=False``, unflag) one galaxy for ``expert``; returns the row."""
        expert = clean_expert(expert)
        comment = clean_comment(comment)
        key = (expert.casefold(), str(galaxy_id))
        row = {"expert": expert, "id": str(galaxy_id), "stamp": str(int(stamp)), "comment": comment,
               "time": _now()}
        with self._locked():
            rows = [r for r in self.rows() if (r["expert"].casefold(), r["id"]) != key]
            if flagged:
                rows.append(row)
            rows.sort(key=lambda r: (r["expert"].casefold(), r["id"]))
            self._write(rows)
        return row if flagged else None

    def flags_of(self, expert: str) -> dict[str, str]:
        """``{galaxy id: comment}`` flagged by ``expert``."""
        key = clean_expert(expert).casefold()
        return {r["id"]: r["comment"] for r in self.rows() if r["expert"].casefold() == key}


def flag_columns(ids: pd.Series, path: str | os.PathLike) -> pd.DataFrame:
    """The catalog columns of the experts' flags.

    Parameters
    ----------
    ids : Series
        The catalog's ``id`` column.
    path : path
        ``flags.csv``; no file means no flag.

    Returns
    -------
    DataFrame
        ``id``, ``expert_flag`` (bool: at least one expert flagged the galaxy) and
        ``expert_comment`` (``"name: comment"`` of every expert who flagged it, joined
        by ``" | "``; empty when none).
    """
    rows = FlagStore(Path(path)).rows() if Path(path).exists() else []
    by_id: dict[str, list[str]] = {}
    for r in rows:
        note = f"{r['expert']}: {r['comment']}" if r["comment"] else r["expert"]
        by_id.setdefault(r["id"], []).append(note)
    text = ids.astype(str)
    comments = text.map(lambda i: " | ".join(by_id.get(i, []))).astype(object)
    return pd.DataFrame({"id": ids, "expert_flag": text.isin(by_id).to_numpy(np.bool_),
                         "expert_comment": comments.to_numpy()})
