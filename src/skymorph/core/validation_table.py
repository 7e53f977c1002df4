"""The validation's table: the run's catalog joined with the user's physical catalog.

The validate stage (:mod:`skymorph.stages.validate`) reads the catalog, the
measurements, the sources and the user's physical catalog; these functions join the
physical catalog on its ids, find the stellar-mass, redshift and magnitude columns and
derive ``log_mass`` and ``r_e`` (kpc when a redshift and a pixel scale are known), and
:class:`PartTable` gives the report's parts the rows they read (the per-type sample, the
kept galaxies, the array rows). Plain tables in, tables and notes out: no run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SkymorphError
from .validation import typed_sample
from .validation_stats import kpc_per_arcsec

__all__ = ["ValidateError", "NAME_CANDIDATES", "find_column", "id_text", "join_physical", "physical_columns",
           "PartTable"]


class ValidateError(SkymorphError, ValueError):
    """The run cannot be validated (no catalog, no morphology types)."""


NAME_CANDIDATES = {
    "mass": ["mass", "stellar_mass", "mstar", "logmass", "log_mass", "lp_mass_med", "lp_mass_best",
             "mass_med", "mass_best", "logm", "log_mstar"],
    "z": ["z", "zphot", "photoz", "z_phot", "lp_zbest", "lp_zpdf", "z_best", "zbest", "redshift", "z_spec"],
    "mag": ["mag", "i_mag", "mag_i", "imag", "mag_auto", "mag_f814w", "f814w"],
}
"""Column names (lower case) tried in turn for each role when the settings name none."""


def find_column(table: pd.DataFrame, explicit: str | None, role: str) -> str | None:
    """The column of ``table`` that holds ``role`` (``mass``, ``z`` or ``mag``).

    Parameters
    ----------
    table : DataFrame
        The assembled catalog.
    explicit : str, optional
        The column the settings name; it must exist.
    role : str
        A key of :data:`NAME_CANDIDATES`, tried case-insensitively when ``explicit`` is None.

    Returns
    -------
    str or None
        The column, or None when no candidate is present.

    Raises
    ------
    ValidateError
        If ``explicit`` is not a column of ``table``.
    """
    if explicit:
        if explicit not in table.columns:
            raise ValidateError(f"{role} column {explicit!r} is not in the catalog; "
                                f"columns are: {', '.join(map(str, table.columns))}")
        return explicit
    lower = {str(c).lower(): c for c in table.columns}
    for name in NAME_CANDIDATES[role]:
        if name in lower:
            return lower[name]
    return None


def id_text(value: Any) -> str:
    """An id as the run writes it: ``12.0`` (a float column) -> ``'12'``, text stripped."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def join_physical(table: pd.DataFrame, physical: pd.DataFrame, *,
                  id_col: str | None) -> tuple[pd.DataFrame, list[str]]:
    """``table`` left-joined with the user's physical catalog on the galaxies' ids.

    Parameters
    ----------
    table : DataFrame
        The run's catalog with a text ``id`` column.
    physical : DataFrame
        The user's catalog (stellar mass, redshift, magnitude, ...).
    id_col : str, optional
        Id column of ``physical`` (default ``id``).

    Returns
    -------
    table : DataFrame
        The joined table; ``physical``'s columns replace same-named ones of ``table``.
    notes : list of str
        How many galaxies matched.

    Raises
    ------
    ValidateError
        If ``physical`` has no such id column.
    """
    notes: list[str] = []
    key = id_col or ("id" if "id" in physical.columns else None)
    if key is None or key not in physical.columns:
        raise ValidateError(f"the physical catalog has no id column {key or 'id'!r}; name it "
                            f"with --id-col (columns: {', '.join(map(str, physical.columns))})")
    phys = physical.copy()
    phys["id"] = phys[key].map(id_text)
    if key != "id":
        phys = phys.drop(columns=[key])
    phys = phys.drop_duplicates("id")
    overlap = [c for c in phys.columns if c != "id" and c in table.columns]
    # the user's catalog wins over same-named columns from the stamps' own catalog
    table = table.drop(columns=overlap).merge(phys, on="id", how="left")
    matched = int(table["id"].isin(phys["id"]).sum())
    notes.append(f"physical catalog: {matched} of {len(table)} galaxies matched on id")
    if matched == 0:
        notes.append("no galaxy matched the physical catalog: check --id-col and the ids")
    return table, notes


def physical_columns(table: pd.DataFrame, *, mass_col: str | None, z_col: str | None, mag_col: str | None,
                     pixel_scale: float | None,
                     physical_given: bool) -> tuple[pd.DataFrame, dict[str, str | None], list[str]]:
    """The mass, redshift and magnitude columns of ``table``, with ``log_mass`` and ``r_e`` added.

    Parameters
    ----------
    table : DataFrame
        The assembled catalog (changed in place and returned).
    mass_col, z_col, mag_col : str, optional
        Columns named by the settings; by default found by :func:`find_column`.
    pixel_scale : float, optional
        Arcsec per pixel; by default the median of a ``PIXEL_SCALE`` column.
    physical_given : bool
        Whether the user gave a physical catalog (else a missing mass says so).

    Returns
    -------
    table : DataFrame
        With ``log_mass`` (log10 of a linear mass) and ``r_e`` (the Sersic half-light
        radius in kpc, or in pixels without a redshift or a pixel scale).
    cols : dict
        ``mass`` (``log_mass`` or None), ``z``, ``mag`` and ``r_e_unit`` (``kpc`` or ``px``).
    notes : list of str
        Which columns are missing and the unit of ``r_e``.

    Raises
    ------
    ValidateError
        If a column named by the settings is not in ``table``.
    """
    notes: list[str] = []
    cols: dict[str, str | None] = {
        "mass": find_column(table, mass_col, "mass"),
        "z": find_column(table, z_col, "z"),
        "mag": find_column(table, mag_col, "mag"),
    }
    if not physical_given and cols["mass"] is None:
        notes.append("no physical catalog given (--physical): stellar-mass parts are skipped")
    if cols["mass"] is not None:
        mass = pd.to_numeric(table[cols["mass"]], errors="coerce")
        if mass.notna().any():
            # stellar masses are either log10(M/Msun) (< 20) or linear
            table["log_mass"] = mass if mass.median() < 20 else np.log10(mass.where(mass > 0))
            cols["mass"] = "log_mass"
        else:
            notes.append(f"mass column {cols['mass']!r} has no numeric value: mass parts skipped")
            cols["mass"] = None
    # r_e: kpc when the redshift and pixel scale are known, else pixels
    table["r_e"] = pd.to_numeric(table.get("sersic_rhalf", np.nan), errors="coerce")
    unit = "px"
    scale = pixel_scale
    if scale is None and "PIXEL_SCALE" in table.columns:
        scale = float(pd.to_numeric(table["PIXEL_SCALE"], errors="coerce").median())
    if "sersic_rhalf" in table.columns:
        if scale is not None and np.isfinite(scale) and cols["z"] is not None:
            z = pd.to_numeric(table[cols["z"]], errors="coerce").to_numpy(float)
            kpc = kpc_per_arcsec(z=z)
            table["r_e"] = table["sersic_rhalf"].to_numpy(float) * scale * kpc
            unit = "kpc"
            notes.append(f"r_e in kpc: Sersic r_e x {scale:g} arcsec/px x Planck18 scale at "
                         f"{cols['z']}")
        else:
            notes.append("r_e in pixels (a redshift column and a pixel scale give kpc)")
    cols["r_e_unit"] = unit
    return table, cols, notes


@dataclass
class PartTable:
    """The assembled catalog as every part of the report reads it.

    Two copies of the same rows, because the parts compute on valid values only but say
    how many raw values the validity flags left out.
    """

    table: pd.DataFrame
    """The assembled catalog, every measured value its family's flag calls invalid set to NaN."""
    raw: pd.DataFrame
    """The same rows with the raw values (to count what was left out)."""
    cols: dict[str, Any]
    """The roles of :func:`physical_columns` (``mass``, ``z``, ``mag``, ``r_e_unit``)."""
    types: list[str]
    """The experts' types (upper case), the unclassified one last."""

    def raw_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The raw values of ``rows`` (rows of :attr:`table`)."""
        return self.raw.loc[rows.index]

    def sample(self, notes: list[str], *, exclude_unc: bool, min_mass: float | None) -> pd.DataFrame:
        """The per-type sample (:func:`~skymorph.core.validation.typed_sample`); its notes go to ``notes``."""
        sample, more = typed_sample(self.table, self.types, self.types[-1], exclude_unc, self.cols["mass"],
                                    min_mass)
        notes.extend(more)
        return sample

    def kept(self) -> np.ndarray | None:
        """Which galaxies are in the consensus sample; None without a ``consensus`` column."""
        if "consensus" not in self.table.columns:
            return None
        return self.table["consensus"].fillna(False).astype(bool).to_numpy()

    def rows(self) -> np.ndarray:
        """Each galaxy's array row (-1: none)."""
        if "index" not in self.table.columns:
            return np.full(len(self.table), -1)
        return pd.to_numeric(self.table["index"], errors="coerce").fillna(-1).to_numpy(int)
