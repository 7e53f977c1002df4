"""The validation report: figures (:mod:`.figures`) and the HTML page (jinja2 templates).

Plain results in (the dictionaries of :mod:`skymorph.core.validation` and
:class:`~skymorph.report.figures.Figure` objects), one self-contained HTML page out:
figures are embedded, nothing is fetched from the network and every value from the
run (ids, column names, expert names, notes) is HTML-escaped by the template engine
(``autoescape``).  No run directory and no argparse here: the validate stage reads
the run and writes the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .figures import Figure

__all__ = ["Section", "Figure", "render", "fmt"]


@dataclass
class Section:
    """One part of the report."""

    key: str
    """Which part (selects the template macro) and the HTML id."""
    title: str
    result: dict[str, Any] | None = None
    """The part's numbers; None when it was skipped (``notes`` says why)."""
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` significant digits; a dash for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def _percent(value: Any, digits: int = 0) -> str:
    if value is None or value != value:
        return "–"
    return f"{100 * value:.{digits}f}%"


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("skymorph.report", "templates"),
        autoescape=True,  # every value from the run is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly instead of printing nothing
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["percent"] = _percent
    return env


def render(context: dict[str, Any]) -> str:
    """The report page.

    Parameters
    ----------
    context : dict
        ``run_path``, ``version``, ``generated``, ``settings`` (rows of ``label``,
        ``value``, ``source``), ``config_toml``, ``stages`` (name -> summary dict),
        ``warnings`` (shown prominently at the top), ``notes``, ``sections`` (list of
        :class:`Section`), ``labels`` (type -> words) and ``confidence``.

    Returns
    -------
    str
        The HTML page.
    """
    return _environment().get_template("report.html.j2").render(**context)
