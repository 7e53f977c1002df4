"""Plain-text tables for what the command line prints (no skymorph imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "",
               gap: int = 2) -> str:
    """Rows as aligned text columns, each as wide as its longest cell.

    The first column is left-aligned (names: types, classes, clusters), the others
    right-aligned (numbers); no cell is ever cut, so a long type name widens its
    column instead of running into the next one.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : sequence of sequences
        Cells, already formatted or converted with ``str``.
    indent : str
        Put before every line.
    gap : int
        Blanks between columns.

    Returns
    -------
    str
        The lines, joined by newlines (no trailing newline).
    """
    table = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    n = max(len(r) for r in table)
    table = [r + [""] * (n - len(r)) for r in table]
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    sep = " " * gap
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append((indent + sep.join(cells)).rstrip())
    return "\n".join(lines)
