"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "write_text_atomic"]


@contextmanager
def atomic_file(path: str | os.PathLike, *, unique: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends.

    A reader sees the old file or the new one, never half a file, and an error in the block
    (a full disk, a writer that fails) leaves the old one in place: the temporary file is
    removed either way.  The folder of ``path`` must exist.

    Parameters
    ----------
    path : str or PathLike
        The file to write.
    unique : bool
        Name the temporary file after the process and thread too, for a file that several
        threads or processes may write at once (the last rename wins, whole).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import pandas as pd
    >>> from skymorph.io.atomic import atomic_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "top.csv"
    >>> with atomic_file(path) as tmp:
    ...     pd.DataFrame({"id": ["a", "b"]}).to_csv(tmp, index=False)
    >>> path.read_text().split(), sorted(p.name for p in path.parent.iterdir())
    (['id', 'a', 'b'], ['top.csv'])
    """
    path = Path(path)
    suffix = f".{os.getpid()}.{threading.get_ident()}.tmp" if unique else ".tmp"
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skymorph.io.atomic import write_text_atomic
    >>> path = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.json", "{}")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{}', ['a.json'])
    """
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
