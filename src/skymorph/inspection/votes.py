"""The vote store: ``RUN_DIR/inspection/votes.csv``, safe against concurrent writers and crashes."""

from __future__ import annotations

import contextlib
import csv
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_file
from ..io.csvfile import escape_cell, unescape_cell
from .montage import InspectError

VOTE_COLUMNS = ["expert", "cluster", "type", "time", "clustering"]
"""Columns of ``votes.csv``; ``clustering`` is the fingerprint of the clustering the
montages showed, so votes cast on an older clustering are never applied to a new one."""

MAX_EXPERT_NAME = 80
LOCK_TIMEOUT_S = 60.0

def clean_expert(name: Any) -> str:
    """The expert's name with blanks collapsed; checks it is usable.

    Raises
    ------
    InspectError
        If it is not text, empty, longer than ``MAX_EXPERT_NAME`` or holds control characters.
    """
    if not isinstance(name, str):
        raise InspectError("the expert name must be text")
    if len(name) > 4 * MAX_EXPERT_NAME:
        raise InspectError(f"the expert name is longer than {MAX_EXPERT_NAME} characters")
    if any(ord(ch) < 32 and ch not in " \t" or ord(ch) == 127 for ch in name):
        raise InspectError("the expert name contains control characters")
    name = " ".join(name.split())
    if not name:
        raise InspectError("enter your name before voting")
    if len(name) > MAX_EXPERT_NAME:
        raise InspectError(f"the expert name is longer than {MAX_EXPERT_NAME} characters")
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CsvStore:
    """A CSV file of expert input (votes, flags, single-galaxy labels) that is safe against
    concurrent writers and crashes: rewritten whole to a temporary file renamed over it, under a
    thread lock and a :class:`filelock.FileLock`; text cells spreadsheet-safe. Subclasses set
    :attr:`columns`."""

    columns: list[str] = []

    def __init__(self, path: str | os.PathLike) -> None:
        from filelock import FileLock

        self.path = Path(path)
        self._lock = threading.Lock()
        self._file_lock = FileLock(self.path.with_name(f".{self.path.name}.lock"), timeout=LOCK_TIMEOUT_S)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._file_lock:
                yield

    def rows(self) -> list[dict[str, str]]:
        """Every row of the file, text as written."""
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as fh:
            return [{k: unescape_cell(row.get(k) or "") for k in self.columns} for row in csv.DictReader(fh)]

    def _write(self, rows: list[dict[str, str]]) -> None:
        with atomic_file(self.path, unique=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows({k: escape_cell(v) for k, v in row.items()} for row in rows)
            fh.flush()
            os.fsync(fh.fileno())


class VoteStore(CsvStore):
    """The votes file, safe against concurrent writers and crashes.

    Every vote rewrites the whole file to a temporary file and renames it over
    ``votes.csv`` (``os.replace`` is atomic), under a thread lock and an exclusive
    :class:`filelock.FileLock` on a side file, so two experts voting at once (in one
    server or in two processes) never interleave and a crash leaves either the old
    or the new file, never half of one.  The file is read back on every request, so
    a restarted server shows every vote cast before.  Text cells are written
    spreadsheet-safe (:func:`escape_cell`) and read back as cast.

    An expert is identified by the name, case and surrounding blanks ignored.
    """

    columns = VOTE_COLUMNS

    def __init__(self, path: str | os.PathLike, clustering: str = "") -> None:
        super().__init__(path)
        self.clustering = clustering

    def cast(self, expert: str, cluster: int, type_: str) -> dict[str, str]:
        """Record (or replace) ``expert``'s vote for ``cluster``; returns the stored row."""
        expert = clean_expert(expert)
        row = {"expert": expert, "cluster": str(int(cluster)), "type": type_, "time": _now(),
               "clustering": self.clustering}
        key = (expert.casefold(), row["cluster"], self.clustering)
        with self._locked():
            rows = [r for r in self.rows()
                    if (r["expert"].casefold(), r["cluster"], r["clustering"]) != key]
            rows.append(row)
            rows.sort(key=lambda r: (r["clustering"], r["expert"].casefold(), int(r["cluster"] or -1)))
            self._write(rows)
        return row

    def votes_of(self, expert: str) -> dict[int, str]:
        """``{cluster: type}`` cast by ``expert`` on the current clustering."""
        key = clean_expert(expert).casefold()
        return {int(r["cluster"]): r["type"] for r in self.rows()
                if r["expert"].casefold() == key and r["clustering"] in (self.clustering, "")}
