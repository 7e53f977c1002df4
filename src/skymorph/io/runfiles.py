"""The run directory's error and the small file helpers of :class:`skymorph.io.rundir.RunDir`
(JSON and Parquet files that name themselves when damaged, atomic writes, printable names)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SkymorphError


class RunDirError(SkymorphError, RuntimeError):
    """A run directory is missing, incomplete or from an incompatible version."""



def _read_parquet(path: Path, remedy: str) -> pd.DataFrame:
    """A Parquet table of the run; a truncated or damaged one is an error naming it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is damaged ({exc}); {remedy}") from None


def _is_blank_toml(path: Path) -> bool:
    """A settings file with nothing but blanks and comments (``: > config.toml``)."""
    try:
        text = path.read_bytes()
    except OSError:
        return False
    return all(not line.strip() or line.lstrip().startswith(b"#") for line in text.splitlines())


def _command(stage: str, path: Path) -> str:
    """The command line that runs ``stage`` on the run ``path``."""
    if stage == "ingest":
        return f"skymorph ingest INPUT... --out {path}"
    return f"skymorph {stage} {path}"


def printable(value: Any) -> str:
    """``value`` as text that can be written anywhere: the bytes of a file name that
    are not valid UTF-8 (held by Python as surrogates) become ``\\xNN`` escapes."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _read_json(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON file of the run directory; a damaged one is an error naming it."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is damaged ({exc}); delete it and re-run the stage that wrote it "
                          "(or start a new run directory)") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} is damaged (not a JSON object); delete it and re-run the stage")
    return value


def _atomic_write(path: Path, text: str) -> None:
    """:func:`skymorph.io.atomic.write_text_atomic`."""
    from .atomic import write_text_atomic

    write_text_atomic(path, text)


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes, read 1 MiB at a time: a
    fingerprint input that changes when the file's content does, not its name or time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def safe_file_name(name: str) -> str:
    """``name`` as a short file name: every run of other characters than letters, digits,
    ``.``, ``_`` and ``-`` becomes ``_`` (an id may hold ``/`` or spaces), at most 80 of them."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "query"


def source_ids(run: Any, n: int) -> list[str]:
    """The ids of the ``n`` sources of ``run`` (a :class:`~skymorph.io.rundir.RunDir`) as text;
    the row numbers when its sources table is missing or has another length, so that a
    reject can always name its galaxy."""
    try:
        ids = run.sources()["id"].astype(str).tolist()
    except RunDirError:
        ids = []
    return ids if len(ids) == n else [str(i) for i in range(n)]
