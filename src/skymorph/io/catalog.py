"""Writing the catalog (and other tables) with units, descriptions and provenance.

What an astropy user gets from ``catalog.fits``:

* HDU 1, ``EXTNAME = 'CATALOG'``: one row per galaxy; every column has a
  description (``TCOMMn``, the ``TTYPEn`` card's comment, and astropy's own
  serialised column block, so ``Table.read`` gives ``col.description``) and,
  where one applies, a unit (``TUNITn``: ``pix`` for radii and positions on the
  stamp, ``arcsec`` for r_e where the pixel scale is known, ``deg``, ``rad``,
  ``mag``);
* the primary header: the provenance (``ORIGIN``, ``CREATOR``, ``SKYMVER``,
  ``DATE``, the number of galaxies and input files, the first input files, the
  stages' fingerprints, and every setting as one compact JSON string,
  ``SETTINGS``, that FITS continues over ``CONTINUE`` cards; astropy joins them
  again: ``json.loads(fits.getheader(path)["SETTINGS"])``);
* column names that are unique without regard to case (FITS readers match
  names case-insensitively); a column that only repeats another's name in
  another case and holds nothing is dropped, otherwise the later one is renamed;
* ``morph_type``: the experts' type of a consensus galaxy, :data:`NOCONS` for a
  galaxy the three clusterings disagree on, missing (masked) for a consensus
  galaxy not typed yet; never an empty string.

``catalog.parquet`` holds the same table with the same provenance as schema
metadata (key ``skymorph``) and each column's unit and description as field
metadata; :func:`read_provenance` reads either file back.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from .atomic import atomic_file
from .columns import COLUMNS, NOCONS, column_info  # noqa: F401 - COLUMNS is re-exported

__all__ = ["NOCONS", "CATALOG_EXTNAME", "PROVENANCE_KEY", "column_info", "provenance", "id_dtype",
           "unique_names", "normalise_types", "fits_safe", "write_catalog", "update_catalog",
           "write_parquet", "arrow_schema", "read_provenance", "describe_catalog", "MEASUREMENTS_FILE",
           "MEASURE_COLUMNS"]

log = logging.getLogger(__name__)

CATALOG_EXTNAME = "CATALOG"
PROVENANCE_KEY = "skymorph"
"""Key of the provenance JSON in Parquet schema metadata and Zarr attributes."""

MEASUREMENTS_FILE = "measurements.parquet"
"""The table of every statmorph scalar per galaxy that ``skymorph measure`` writes."""
MEASURE_COLUMNS = [
    "gini", "m20", "concentration", "asymmetry", "smoothness", "multimode", "intensity",
    "deviation", "sersic_n", "sersic_rhalf", "sersic_rhalf_arcsec", "sersic_chi2_dof", "psi", "g2",
    "g2_reliable", "nonparam_ok", "sersic_ok", "rpetro_circ", "rhalf_circ", "rhalf_circ_arcsec",
    "sn_per_pixel", "flag",
    "flag_sersic", "measure_ok", "measure_reason", "measure_linear", "measure_psf", "measure_weights",
    "sersic_n_err", "sersic_rhalf_err", "gini_err", "m20_err", "concentration_err", "asymmetry_err",
    "zeropoint", "mag_petro", "mag_sersic",
]
"""Columns joined onto the catalog (``measurements.parquet`` holds every statmorph scalar)."""

_MAX_INPUT_CARDS = 10


# --- provenance ---------------------------------------------------------------------------


def provenance(run_path: str | os.PathLike, inputs: bool = True) -> dict[str, Any]:
    """What produced a run's outputs: skymorph's version, the date, every setting
    of ``config.toml``, the stages' fingerprints and (``inputs``) a summary of the
    input files read from ``sources.parquet``.

    The settings are read from the file as recorded (no validation), so that a
    record can always be made.
    """
    path = Path(run_path)
    record: dict[str, Any] = {
        "software": "skymorph", "version": __version__,
        "written": datetime.now(UTC).isoformat(timespec="seconds"), "run": path.resolve().name,
    }
    config = path / "config.toml"
    try:
        record["settings"] = tomllib.loads(config.read_text()) if config.exists() else {}
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        record["settings"] = {"unreadable": f"{config.name}: {exc}"}
    stages = {}
    for info in sorted((path / "stages").glob("*.json")):
        try:
            stages[info.stem] = json.loads(info.read_text()).get("fingerprint", "")
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            stages[info.stem] = "damaged"
    record["stages"] = stages
    if inputs and (path / "sources.parquet").exists():
        try:
            origin = pd.read_parquet(path / "sources.parquet", columns=["origin"])["origin"].astype(str)
        except (KeyError, ValueError, OSError):
            origin = pd.Series([], dtype=str)
        files = origin.drop_duplicates()
        suffixes = files.map(lambda f: Path(f).suffix.lower() or "(none)").value_counts()
        record["inputs"] = {
            "n_galaxies": int(len(origin)), "n_files": int(len(files)),
            "kinds": {str(k): int(v) for k, v in suffixes.items()},
            "files": [str(f) for f in files.iloc[:_MAX_INPUT_CARDS]],
        }
    return record


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


# --- the table itself ------------------------------------------------------------------------


def _all_missing(column: pd.Series) -> bool:
    if column.isna().all():
        return True
    if pd.api.types.is_string_dtype(column) or column.dtype == object:
        return bool(column.dropna().astype(str).str.strip().eq("").all())
    return False


def unique_names(table: pd.DataFrame) -> pd.DataFrame:
    """The table with column names unique without regard to case.

    FITS readers (astropy's ``hdul[1].data['Ra']``, TOPCAT, fitsio) match names
    case-insensitively, so ``ra`` beside ``RA`` makes both unreachable.  Of names
    that differ only in case, those whose columns hold nothing (all missing) are
    dropped; if several still hold values, the later ones get a ``_2``, ``_3``...
    suffix (logged).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for name in table.columns:
        groups[str(name).lower()].append(str(name))
    drop: list[str] = []
    rename: dict[str, str] = {}
    taken = {str(n).lower() for n in table.columns}
    for names in groups.values():
        if len(names) < 2:
            continue
        keep = [n for n in names if not _all_missing(table[n])] or names[:1]
        drop += [n for n in names if n not in keep]
        for name in keep[1:]:
            k = 2
            while f"{name}_{k}".lower() in taken:
                k += 1
            rename[name] = f"{name}_{k}"
            taken.add(rename[name].lower())
    if drop:
        log.info("catalog: dropped empty column(s) %s that repeat another column's name in another "
                 "case", ", ".join(drop))
    if rename:
        log.warning("catalog: columns whose names differ only in case renamed: %s",
                    ", ".join(f"{a} -> {b}" for a, b in rename.items()))
    return table.drop(columns=drop).rename(columns=rename)


def normalise_types(table: pd.DataFrame) -> pd.DataFrame:
    """``morph_type`` as the catalog contract has it: :data:`NOCONS` where the
    clusterings disagree (``consensus`` false, else ``cluster`` < 0), missing
    where a consensus galaxy has no type yet; never an empty string."""
    if "morph_type" not in table.columns:
        return table
    types = table["morph_type"].astype(object)
    text = types.where(types.isna(), types.astype(str).str.strip())
    text = text.mask(text.isna() | (text == "") | text.isin(["nan", "None", "<NA>"]), None)
    if "consensus" in table.columns:
        consensus = table["consensus"].astype(object).map(
            lambda v: bool(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else True)
        text = text.mask(~consensus.astype(bool), NOCONS)
    elif "cluster" in table.columns:  # the consensus label is -1 where the clusterings disagree
        text = text.mask(pd.to_numeric(table["cluster"], errors="coerce").lt(0).to_numpy(), NOCONS)
    out = table.copy()
    out["morph_type"] = pd.Series(text.to_numpy(dtype=object), index=table.index, dtype=object)
    return out


def _is_bool_like(column: pd.Series) -> bool:
    values = column.dropna()
    return column.dtype == object and len(values) > 0 and all(
        isinstance(v, (bool, np.bool_)) for v in values)


def fits_safe(table: pd.DataFrame):
    """An astropy Table that FITS can store, missing values masked.

    Strings (object or string dtype) become text columns with missing values
    masked (read back masked); booleans stay booleans where nothing is missing,
    else become 0/1 integers with a null value, because FITS logical columns as
    astropy writes them cannot hold a missing value.
    """
    from astropy.table import Column, MaskedColumn, Table

    out = Table()
    for name in table.columns:
        column = table[name]
        missing = column.isna().to_numpy()
        if pd.api.types.is_bool_dtype(column.dtype) or _is_bool_like(column):
            if missing.any():
                values = column.astype(object).where(~missing, 0).astype(int).to_numpy(np.int16)
                out[name] = MaskedColumn(values, mask=missing, fill_value=-1)
            else:
                out[name] = Column(column.astype(bool).to_numpy())
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            values = np.array([str(v) for v in column.astype(object).where(~missing, "")], dtype=str)
            out[name] = MaskedColumn(values, mask=missing) if missing.any() else Column(values)
        elif pd.api.types.is_extension_array_dtype(column.dtype):
            kind = np.float64 if pd.api.types.is_float_dtype(column.dtype) else np.int64
            values = column.to_numpy(dtype=kind, na_value=0)
            out[name] = MaskedColumn(values, mask=missing) if missing.any() else Column(values)
        else:
            out[name] = Column(column.to_numpy())
    return out


def _primary_header(record: dict[str, Any], n_rows: int):
    from astropy.io import fits

    header = fits.Header()
    _set(header, "ORIGIN", "skymorph", "software that wrote this file")
    _set(header, "CREATOR", f"skymorph {record.get('version', __version__)}", "and its version")
    _set(header, "SKYMVER", record.get("version", __version__), "skymorph version")
    _set(header, "DATE", record.get("written", ""), "UTC date and time the file was written")
    _set(header, "RUNDIR", record.get("run", ""), "run directory (name)")
    _set(header, "NGALAXY", n_rows, "rows of the CATALOG table")
    if record.get("id_dtype"):
        _set(header, "ID_DTYPE", record["id_dtype"], "dtype of the id column; cast ids to it to join")
    inputs = record.get("inputs") or {}
    if inputs:
        _set(header, "NINFILES", inputs.get("n_files", 0), "distinct input files")
        _set(header, "INKINDS", _json(inputs.get("kinds", {})), "input files by suffix")
        for i, name in enumerate(inputs.get("files", [])[:_MAX_INPUT_CARDS], start=1):
            _set(header, f"INFILE{i}", Path(name).name, "input file (first ones)")
    _set(header, "STAGES", _json(record.get("stages", {})), "fingerprint of each stage that ran")
    _set(header, "SETTINGS", _json(record.get("settings", {})), "every setting (config.toml) as JSON")
    header.add_comment("Provenance written by skymorph. SETTINGS and STAGES are JSON strings continued "
                       "over CONTINUE cards; astropy joins them: json.loads(header['SETTINGS']).")
    header.add_comment("Columns: units in TUNITn, descriptions in TCOMMn. morph_type: SPH/ETD/LTD/IRR/UNC "
                       f"by the experts, {NOCONS} = the clusterings disagree, blank = not typed yet.")
    return header


def _card_comment(value: Any, text: str) -> str:
    """``text`` cut to what fits on one 80-character card after ``KEYWORD = value``
    (a string value too long for one card continues over CONTINUE cards, which
    carry the comment whole)."""
    if isinstance(value, str):
        quoted = len(value.replace("'", "''").ljust(8)) + 2
        if quoted > 70:
            return text
        width = max(20, quoted)
    else:
        width = 20
    return text[: max(80 - (10 + width + 3), 0)]


def _set(header, keyword: str, value: Any, comment: str) -> None:
    header[keyword] = (value, _card_comment(value, comment))


def _write_fits(path: Path, table: pd.DataFrame, record: dict[str, Any]) -> None:
    import io

    from astropy.io import fits

    astropy_table = fits_safe(table)
    for name in astropy_table.colnames:
        unit, description = column_info(name)
        astropy_table[name].description = description
        if unit is not None:
            astropy_table[name].unit = unit
    # Table.write (not table_to_hdu) adds astropy's serialised-column block, from which
    # Table.read restores each column's description.
    buffer = io.BytesIO()
    astropy_table.write(buffer, format="fits")
    buffer.seek(0)
    with fits.open(buffer) as written:
        hdu = written[1].copy()
    hdu.name = CATALOG_EXTNAME
    for i, name in enumerate(astropy_table.colnames, start=1):
        description = astropy_table[name].description
        # TCOMMn (long-string convention where needed) is the column comment TOPCAT and
        # fitsio show; the TTYPEn card's comment is what a plain header listing shows.
        _set(hdu.header, f"TTYPE{i}", name, description)
        hdu.header.insert(f"TTYPE{i}", (f"TCOMM{i}", description), after=True)
    _set(hdu.header, "SKYMVER", record.get("version", __version__), "skymorph version")
    hdul = fits.HDUList([fits.PrimaryHDU(header=_primary_header(record, len(table))), hdu])
    with atomic_file(path) as tmp:
        hdul.writeto(tmp, overwrite=True)  # a temporary file a killed process left


def arrow_schema(schema, record: dict[str, Any] | None, units: bool = True):
    """``schema`` with the provenance as schema metadata and, for every field,
    its unit and description as field metadata (``unit``, ``description``)."""
    import pyarrow as pa

    fields = []
    for f in schema:
        unit, description = column_info(f.name)
        meta = dict(f.metadata or {})
        meta[b"description"] = description.encode()
        if units and unit is not None:
            meta[b"unit"] = unit.encode()
        fields.append(f.with_metadata(meta))
    metadata = dict(schema.metadata or {})
    if record is not None:
        metadata[PROVENANCE_KEY.encode()] = _json(record).encode()
    return pa.schema(fields, metadata=metadata)


def write_parquet(path: str | os.PathLike, table: pd.DataFrame, record: dict[str, Any] | None) -> None:
    """Write ``table`` as Parquet (atomically) with units, descriptions and provenance."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.cast(arrow_schema(arrow.schema, record))
    with atomic_file(path) as tmp:
        pq.write_table(arrow, tmp)


def _prepare(table: pd.DataFrame) -> pd.DataFrame:
    return normalise_types(unique_names(table.reset_index(drop=True)))


def id_dtype(ids: pd.Series) -> str:
    """How the catalog stores its ids: ``string`` (text, however the input wrote them), or the
    numeric dtype of an id column that holds numbers."""
    if ids.dtype == object or pd.api.types.is_string_dtype(ids.dtype):
        return "string"
    return str(ids.dtype)


def write_catalog(run_path: str | os.PathLike, table: pd.DataFrame) -> pd.DataFrame:
    """Write a run's catalog as ``catalog.parquet`` and ``catalog.fits``.

    Parameters
    ----------
    run_path : str or Path
        The run directory.
    table : DataFrame
        One row per galaxy.

    Returns
    -------
    DataFrame
        The table as written (names made case-unique, ``morph_type`` normalised).
    """
    path = Path(run_path)
    table = _prepare(table)
    record = provenance(path)
    if "id" in table.columns:
        record["id_dtype"] = id_dtype(table["id"])
    write_parquet(path / "catalog.parquet", table, record)
    _write_fits(path / "catalog.fits", table, record)
    return table


def update_catalog(run_path: str | os.PathLike, columns: pd.DataFrame) -> pd.DataFrame:
    """Join ``columns`` (with an ``id`` column) onto the run's catalog, replacing
    columns of the same name (in any case), and write it back.

    Raises
    ------
    ValueError
        If ``columns`` has no ``id`` column.
    """
    if "id" not in columns.columns:
        raise ValueError("columns to join onto the catalog need an 'id' column")
    path = Path(run_path)
    catalog = pd.read_parquet(path / "catalog.parquet")
    new = {str(c).lower() for c in columns.columns if c != "id"}
    replaced = [c for c in catalog.columns if c != "id" and str(c).lower() in new]
    catalog = catalog.drop(columns=replaced).merge(columns, on="id", how="left")
    return write_catalog(path, catalog)


# --- reading back ------------------------------------------------------------------------------


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a Parquet or FITS file skymorph wrote ({} if none)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_schema(path).metadata or {}
        raw = metadata.get(PROVENANCE_KEY.encode())
        return json.loads(raw) if raw else {}
    from astropy.io import fits

    header = fits.getheader(path, 0)
    if header.get("ORIGIN") != "skymorph":
        return {}
    record: dict[str, Any] = {"software": "skymorph", "version": header.get("SKYMVER"),
                              "written": header.get("DATE"), "run": header.get("RUNDIR")}
    for key, name in (("SETTINGS", "settings"), ("STAGES", "stages")):
        if key in header:
            record[name] = json.loads(header[key])
    return record


def describe_catalog(run_path: str | os.PathLike, width: int = 100) -> list[str]:
    """Lines for ``skymorph info``: rows, types, columns with units, provenance."""
    path = Path(run_path) / "catalog.parquet"
    if not path.exists():
        return []
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    table = pd.read_parquet(path, columns=[c for c in ("morph_type", "consensus", "measure_ok",
                                                       "measure_linear") if c in schema.names])
    lines = [f"  catalog       {len(table)} rows, {len(schema.names)} columns"]
    if "consensus" in table:
        kept = int(table["consensus"].fillna(False).astype(bool).sum())
        lines.append(f"    consensus   {kept} kept, {len(table) - kept} not ({NOCONS})")
    if "morph_type" in table:
        counts = table["morph_type"].fillna("(not typed)").value_counts()
        lines.append("    morph_type  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if "measure_ok" in table:
        ok = int(table["measure_ok"].fillna(False).astype(bool).sum())
        text = f"    measured    {ok} of {len(table)}"
        if "measure_linear" in table and not table["measure_linear"].fillna(True).astype(bool).all():
            text += " (NON-LINEAR pixels: measure_linear false, values unreliable)"
        lines.append(text)
    names = []
    for f in schema:
        unit = (f.metadata or {}).get(b"unit")
        names.append(f"{f.name} [{unit.decode()}]" if unit else f.name)
    line = "    columns     "
    for i, name in enumerate(names):
        piece = name + (", " if i < len(names) - 1 else "")
        if len(line) + len(piece) > width and line.strip():
            lines.append(line.rstrip())
            line = " " * 16
        line += piece
    lines.append(line.rstrip())
    record = read_provenance(path)
    if record:
        lines.append(f"    written     {record.get('written', '?')} by skymorph {record.get('version', '?')}")
        inputs = record.get("inputs") or {}
        if inputs:
            kinds = ", ".join(f"{v} {k}" for k, v in inputs.get("kinds", {}).items())
            lines.append(f"    inputs      {inputs.get('n_galaxies', '?')} galaxies from "
                         f"{inputs.get('n_files', '?')} file(s) ({kinds})")
        settings = record.get("settings") or {}
        lines.append(f"    settings    {sum(len(v) for v in settings.values() if isinstance(v, dict))} "
                     f"recorded in {len(settings)} sections; stages: "
                     f"{', '.join(record.get('stages', {}))}")
    return lines
