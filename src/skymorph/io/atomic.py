"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename.

    A reader sees the old file or the new one, never half a file, and a full disk
    leaves the old one in place (the temporary file is removed either way).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skymorph.io.atomic import write_text_atomic
    >>> path = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.json", "{}")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{}', ['a.json'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
