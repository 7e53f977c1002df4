"""Row selections (``--select "0.2 < z < 1.2"``) parsed to a whitelist and evaluated safely.

A selection is stored in ``config.toml`` and so travels with a shared run directory; it
must never run code.  The expression is parsed with :mod:`ast` and only these nodes are
allowed: column names (bare identifiers, or any name in backticks), numbers, strings,
``True``/``False``, comparisons (chained too), ``and``/``or``/``not``, ``&``/``|``/``~``,
arithmetic (``+ - * / // % **``, unary minus) and calls of the functions in
:data:`FUNCTIONS`.  Attribute access (``z.values``), subscripts, lambdas, comprehensions
and every other call are refused before anything is evaluated, and the evaluator walks
the tree itself with numpy (no ``eval``, no pandas ``eval``).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import SkymorphError

__all__ = ["SelectionError", "FUNCTIONS", "parse_selection", "column_names", "evaluate_selection"]

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs, "log10": np.log10, "log": np.log, "sqrt": np.sqrt, "exp": np.exp,
    "isnan": np.isnan, "isfinite": np.isfinite, "floor": np.floor, "ceil": np.ceil,
}
"""The functions a selection may call (one argument each, applied per row)."""

_BACKTICK = re.compile(r"`([^`]*)`")
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow, ast.BitAnd: operator.and_, ast.BitOr: operator.or_}
_MAX_LENGTH = 1000


class SelectionError(SkymorphError, ValueError):
    """A selection expression is not allowed, names a missing column, or is not a yes/no test."""


def _parse(expression: str) -> tuple[ast.Expression, dict[str, str]]:
    """The tree of ``expression``, with each backticked name replaced by a placeholder."""
    if not isinstance(expression, str):
        raise SelectionError(f"a selection must be text, not {type(expression).__name__}")
    if len(expression) > _MAX_LENGTH:
        raise SelectionError(f"selection is longer than {_MAX_LENGTH} characters; split it into "
                             "several --select options")
    quoted: dict[str, str] = {}

    def placeholder(match: re.Match) -> str:
        key = f"__col{len(quoted)}__"
        quoted[key] = match[1]
        return key

    text = _BACKTICK.sub(placeholder, expression)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        msg = getattr(exc, "msg", str(exc))
        raise SelectionError(f"selection {expression!r} is not a valid expression ({msg}); write e.g. "
                             "\"0.2 < z < 1.2\" or \"FLAG == 0 and I < 25\"") from None
    for node in ast.walk(tree):
        _check_node(node, expression, quoted)
    return tree, quoted


def _refuse(expression: str, what: str) -> SelectionError:
    return SelectionError(
        f"selection {expression!r} uses {what}, which a selection may not; use column names, numbers, "
        f"strings, comparisons, and/or/not, arithmetic and the functions {', '.join(FUNCTIONS)}")


def _check_node(node: ast.AST, expression: str, quoted: dict[str, str]) -> None:
    if isinstance(node, ast.Name) and node.id.startswith("__") and node.id not in quoted:
        raise _refuse(expression, f"the name {node.id!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            for key, column in quoted.items():
                name = name.replace(key, f"`{column}`")
            raise _refuse(expression, f"a call of {name!r}")
        if len(node.args) != 1 or node.keywords:
            raise SelectionError(f"selection {expression!r}: {node.func.id}() takes one argument")
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool | int | float | str) and not isinstance(node.value, complex):
            return
        raise _refuse(expression, f"the constant {node.value!r}")
    allowed = (ast.Expression, ast.Name, ast.Load, ast.Compare, ast.BoolOp, ast.And, ast.Or,
               ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.Invert, ast.BinOp, *_COMPARE, *_BINARY)
    if not isinstance(node, allowed):
        what = {ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "a lambda"}.get(
            type(node), f"{type(node).__name__} syntax")
        raise _refuse(expression, what)


def parse_selection(expression: str) -> None:
    """Check that ``expression`` is a selection of the allowed form (no columns looked up).

    Raises
    ------
    SelectionError
        Invalid syntax, or anything outside the whitelist (attribute access, calls of
        functions not in :data:`FUNCTIONS`, subscripts...).
    """
    _parse(expression)


def column_names(expression: str) -> set[str]:
    """The column names ``expression`` reads (after checking it, see :func:`parse_selection`)."""
    tree, quoted = _parse(expression)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(quoted.get(node.id, node.id))
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return names - (calls - set(quoted.values()))


def evaluate_selection(expression: str, columns: Mapping[str, Any], n_rows: int,
                       source: str = "the table") -> np.ndarray:
    """Boolean mask of the rows for which ``expression`` holds.

    Parameters
    ----------
    expression : str
        The selection, e.g. ``"0.2 < z < 1.2 and FLAG == 0"``; names that are not
        identifiers go in backticks.
    columns : mapping
        Column name -> array of ``n_rows`` values (a DataFrame works).
    n_rows : int
        Number of rows.
    source : str
        What the columns come from, for messages.

    Returns
    -------
    ndarray of bool, shape (n_rows,)

    Raises
    ------
    SelectionError
        A disallowed expression, a column ``columns`` lacks (the message lists those it
        has), a value that cannot be compared, or a result that is not a yes/no per row.
    """
    tree, quoted = _parse(expression)
    available = [str(c) for c in columns]
    missing = sorted(column_names(expression) - set(available))
    if missing:
        raise SelectionError(f"selection {expression!r} uses column(s) {', '.join(missing)} that {source} "
                             f"does not have; its columns are: {', '.join(available)}")

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            name = quoted.get(node.id, node.id)
            if name in ("True", "False"):
                return name == "True"
            return np.asarray(columns[name])
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](value(node.args[0]))
        if isinstance(node, ast.UnaryOp):
            operand = value(node.operand)
            if isinstance(node.op, ast.Not | ast.Invert) and _is_bool(operand):
                return np.logical_not(operand)
            if isinstance(node.op, ast.Not):
                raise SelectionError(f"selection {expression!r}: 'not' needs a yes/no test")
            return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}[
                type(node.op)](operand)
        if isinstance(node, ast.BoolOp):
            parts = [value(v) for v in node.values]
            if not all(_is_bool(p) for p in parts):
                raise SelectionError(f"selection {expression!r}: 'and'/'or' join yes/no tests, e.g. "
                                     "\"z > 0.2 and z < 1.2\"")
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = parts[0]
            for p in parts[1:]:
                out = combine(out, p)
            return out
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Compare):
            left, out = value(node.left), True
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = value(comparator)
                out = np.logical_and(out, _COMPARE[type(op)](left, right))
                left = right
            return out
        raise _refuse(expression, f"{type(node).__name__} syntax")  # pragma: no cover - checked in _parse

    try:
        with np.errstate(all="ignore"):
            result = value(tree)
    except SelectionError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise SelectionError(f"cannot evaluate selection {expression!r} on {source}: {exc}") from None
    if not _is_bool(result):
        raise SelectionError(f"selection {expression!r} gives values, not a yes/no test per row; compare "
                             "them, e.g. \"z + 1 > 1.5\"")
    mask = np.broadcast_to(np.asarray(result, dtype=bool), (n_rows,))
    return mask.copy()


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_) or (isinstance(value, np.ndarray) and value.dtype == bool)
