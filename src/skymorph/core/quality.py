"""Which measured quantities are valid: one validity flag per family of quantities.

statmorph flags its non-parametric measurements (``flag``: 0 good, 1 suspect,
2 bad, 4 catastrophic) apart from its Sersic fit (``flag_sersic``: 0 good,
1 suspect, 2 bad, 4 failed).  A bad Sersic fit (e.g. n = 202 where the fit ran away)
says nothing about the Gini coefficient of the same galaxy, and a good fit says nothing
of G2 on a faint stamp.  So each quantity is used only where the flag of its own
family says it is valid:

==============  ====================================================================
family          valid where
==============  ====================================================================
``nonparam``    statmorph's ``flag`` is 0 or 1: Gini, M20, C, A, S, M, I, D, the
                radii, Psi (``nonparam_ok``; ``measure_ok`` is the same flag)
``sersic``      ``flag_sersic`` is 0 or 1 and n is finite: Sersic n, r_e and the
                other Sersic parameters (``sersic_ok``)
``g2``          ``g2_reliable``: the non-parametric flag, a finite G2 and S/N per
                pixel at least ``measure.g2_min_sn``
==============  ====================================================================

The catalog keeps every raw value; :func:`valid_values` blanks (NaN) the invalid ones
of a table and :func:`exclusions` counts what was blanked and why, for the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MAX_FLAG", "FAMILY_FLAGS", "FAMILY_REASONS", "family_of", "validity", "valid_values",
           "exclusions"]

MAX_FLAG = 1
"""Largest statmorph flag (``flag``, ``flag_sersic``) of a valid value: 0 good, 1 suspect."""

FAMILY_FLAGS = {"nonparam": "nonparam_ok", "sersic": "sersic_ok", "g2": "g2_reliable"}
"""Family -> the catalog column that says where its values are valid."""

FAMILY_REASONS = {
    "nonparam": "statmorph flag >= 2, bad, or not measured",
    "sersic": "flag_sersic >= 2, a bad fit such as n run away to its bound, or no fit",
    "g2": "g2_reliable false: S/N per pixel below measure.g2_min_sn, or not measured",
}
"""Why a value of each family is left out, in words for the report."""

_G2 = {"g2"}


def family_of(column: str) -> str | None:
    """The family whose flag decides where ``column`` is valid (None: no flag applies).

    ``sersic_*`` columns, ``r_e`` (derived from the Sersic r_e) and ``mag_sersic``
    belong to ``sersic``; ``g2`` to ``g2``; statmorph's other quantities, Psi and
    ``mag_petro`` to ``nonparam``.
    """
    from .morphometry import STATMORPH_QUANTITIES

    name = column[:-4] if column.endswith("_err") else column
    if column in FAMILY_FLAGS.values():
        return None
    if name in _G2:
        return "g2"
    if name.startswith("sersic_") or name in ("r_e", "mag_sersic"):
        return "sersic"
    if name in STATMORPH_QUANTITIES or name in ("psi", "mag_petro", "rhalf_circ_arcsec"):
        return "nonparam"
    return None


def _bool(table: pd.DataFrame, column: str, default: bool) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), default)
    values = table[column].astype(object)
    return values.where(values.notna(), default).astype(bool).to_numpy()


def _number(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(float)


def validity(table: pd.DataFrame, *, g2_min_sn: float = 3.0) -> pd.DataFrame:
    """The validity flag of every family, from the raw flags of a measurement table.

    Parameters
    ----------
    table : DataFrame
        Rows with ``flag``, ``flag_sersic`` and ``sersic_n`` (statmorph), ``g2`` and
        ``sn_per_pixel``; a missing column counts as not measured.
    g2_min_sn : float
        Smallest S/N per pixel at which G2 is reliable (``measure.g2_min_sn``).

    Returns
    -------
    DataFrame
        ``nonparam_ok``, ``sersic_ok`` and ``g2_reliable`` (bool), on ``table``'s index.
    """
    flag = _number(table, "flag")
    flag_sersic = _number(table, "flag_sersic")
    if "flag" not in table.columns and "measure_ok" in table.columns:
        nonparam = _bool(table, "measure_ok", False)  # a table without statmorph's flag
    else:
        nonparam = (flag >= 0) & (flag <= MAX_FLAG)
    if "flag_sersic" in table.columns:
        sersic = (flag_sersic >= 0) & (flag_sersic <= MAX_FLAG)
    else:  # a table without the fit's own flag: the fit is as valid as the measurement
        sersic = nonparam.copy()
    sersic = sersic & np.isfinite(_number(table, "sersic_n"))
    g2 = nonparam & np.isfinite(_number(table, "g2")) & (_number(table, "sn_per_pixel") >= g2_min_sn)
    return pd.DataFrame({"nonparam_ok": nonparam, "sersic_ok": sersic, "g2_reliable": g2}, index=table.index)


def _flags(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The validity flag of each family: the table's own columns, derived where missing
    (tables from before these columns existed); every value is valid where no flag exists."""
    if not {"flag", "measure_ok", *FAMILY_FLAGS.values()} & set(table.columns):
        return {family: np.ones(len(table), dtype=bool) for family in FAMILY_FLAGS}
    derived = validity(table) if any(c not in table.columns for c in FAMILY_FLAGS.values()) else None
    out = {}
    for family, column in FAMILY_FLAGS.items():
        if column in table.columns:
            out[family] = _bool(table, column, False)
        else:
            out[family] = derived[column].to_numpy()
    return out


def valid_values(table: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A copy of ``table`` with every value its family's flag calls invalid set to NaN.

    Parameters
    ----------
    table : DataFrame
        Measurements (or a catalog holding them).
    columns : list of str, optional
        Columns to blank; default: every column with a family (:func:`family_of`).

    Returns
    -------
    DataFrame
        The copy; the flags and every other column are unchanged.
    """
    flags = _flags(table)
    out = table.copy()
    for col in columns if columns is not None else list(table.columns):
        family = family_of(str(col))
        if family is None or col not in out.columns:
            continue
        values = pd.to_numeric(out[col], errors="coerce")
        out[col] = values.where(flags[family], np.nan)
    return out


def exclusions(table: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
    """How many galaxies with a raw value of each column are left out, and why.

    Returns
    -------
    dict
        column -> ``family``, ``n_raw`` (finite raw values), ``n_valid`` (finite and
        valid), ``n_excluded`` and ``reason`` (:data:`FAMILY_REASONS`).
    """
    flags = _flags(table) if len(table) else {}
    out: dict[str, dict[str, Any]] = {}
    for col in columns:
        family = family_of(col)
        if family is None or col not in table.columns:
            continue
        raw = np.isfinite(pd.to_numeric(table[col], errors="coerce").to_numpy(float))
        valid = raw & flags[family] if len(table) else raw
        out[col] = {"family": family, "n_raw": int(raw.sum()), "n_valid": int(valid.sum()),
                    "n_excluded": int(raw.sum() - valid.sum()), "reason": FAMILY_REASONS[family]}
    return out
