"""The package's HTML, CSS and JavaScript files, and jinja2 rendering of its HTML templates."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any


@cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("skymorph.inspection", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    """Render the HTML template ``templates/NAME`` (every value is HTML-escaped)."""
    return _environment().get_template(name).render(**context)


def read_static(name: str) -> bytes:
    """A file of ``templates/`` as it is (CSS, JavaScript, the application page)."""
    return resources.files("skymorph.inspection").joinpath("templates", name).read_bytes()
