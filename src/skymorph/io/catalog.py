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
import re
import tomllib
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__

__all__ = ["NOCONS", "CATALOG_EXTNAME", "PROVENANCE_KEY", "column_info", "provenance", "id_dtype",
           "unique_names", "normalise_types", "fits_safe", "write_catalog", "update_catalog",
           "write_parquet", "arrow_schema", "read_provenance", "describe_catalog", "MEASUREMENTS_FILE",
           "MEASURE_COLUMNS"]

log = logging.getLogger(__name__)

NOCONS = "NOCONS"
"""``morph_type`` of a galaxy whose K-means, BIRCH and ward labels disagree (not
kept by the consensus vote).  Not the experts' ``UNC``, which names a consensus
cluster the experts could not type."""
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

# Units of image fluxes are those of the input pixels (e-/s for HST drizzled
# images, nanomaggies, ADU...): skymorph does not know them, so no TUNIT is claimed.
_IMG = "in the input images' pixel units"

COLUMNS: dict[str, tuple[str | None, str]] = {
    # ingest
    "id": (None, "galaxy identifier (the input catalog's, else the file stem), stored as text: cast the ids "
                 "of another table to text to join (pandas: .astype(str)); the dtype is in ID_DTYPE"),
    "index": (None, "row of the galaxy in the run's stamp arrays (0-based)"),
    "origin": (None, "input file the stamp was cut from"),
    "hdu": (None, "FITS HDU of the input image"),
    "ra": ("deg", "right ascension (ICRS) of the stamp centre"),
    "dec": ("deg", "declination (ICRS) of the stamp centre"),
    "x": ("pix", "x of the galaxy in its input image (0-based)"),
    "y": ("pix", "y of the galaxy in its input image (0-based)"),
    "orig_height": ("pix", "height of the input image"),
    "orig_width": ("pix", "width of the input image"),
    "padded": (None, "the input was smaller than the stamp and was padded"),
    "framing": (None, "crop (native scale) or resample (frame resampled to the stamp)"),
    "frame_side": ("pix", "side of the input frame that became the stamp (input pixels)"),
    "background": (None, f"background level of the stamp, {_IMG}"),
    "noise_sigma": (None, f"background standard deviation of the stamp, {_IMG}"),
    "snr_pixel": (None, "ingest's mean signal-to-noise per pixel of the galaxy"),
    "nan_filled": (None, "number of NaN pixels ingest filled with noise"),
    "linear": (None, "stamp pixels are linear in flux (FITS/NPY); false for display-scaled PNG/JPEG"),
    "stamp_flux": (None, f"flux in the stamp, {_IMG}"),
    "nonfinite_fraction": (None, "fraction of the stamp's pixels that were NaN or infinite in the input"),
    "has_rms": (None, "the stamp has a per-pixel error map in the run's rms array"),
    "rms_source": (None, "where the stamp's error map came from (HDU, companion file, catalog noise)"),
    "has_psf": (None, "the stamp has a PSF in the run's psf array"),
    "psf_source": (None, "where the stamp's PSF came from (collection file, PSF HDU)"),
    "psf_flux_fraction": (None, "fraction of the PSF's flux kept after cropping it to ingest.psf_size"),
    "note": (None, "ingest's remark on the stamp (e.g. an unusable PSF); empty when none"),
    # GalSim RealGalaxyCatalog columns (the bundled COSMOS collection)
    "IDENT": (None, "input catalog identifier"),
    "RA": ("deg", "right ascension from the input catalog"),
    "DEC": ("deg", "declination from the input catalog"),
    "MAG": ("mag", "magnitude from the input catalog"),
    "BAND": (None, "filter of the input catalog's images"),
    "PIXEL_SCALE": ("arcsec / pix", "pixel scale of the input images (input catalog)"),
    "ZPHOT": (None, "photometric redshift from the input catalog"),
    # cluster, inspection, extend
    "cluster_kmeans": (None, "K-means cluster label"),
    "cluster_birch": (None, "BIRCH cluster label, mapped to the K-means labels by plurality"),
    "cluster_agglomerative": (None, "agglomerative (ward) cluster label, mapped to the K-means labels"),
    "cluster": (None, "consensus cluster label; -1 where the three clusterings disagree"),
    "consensus": (None, "K-means, BIRCH and ward agree (the galaxy is kept)"),
    "morph_type": (None, "experts' type of the consensus cluster (SPH, ETD, LTD, IRR, UNC); "
                         f"{NOCONS} = no consensus; missing = not typed yet"),
    "type_flag": (None, "how the cluster's type was decided (inspect merge)"),
    "type_agreement": (None, "fraction of the experts who voted for the cluster's type"),
    "expert_flag": (None, "an expert flagged this galaxy in the voting app (inspection/flags.csv)"),
    "expert_comment": (None, "the flagging experts' comments, 'name: comment' joined by ' | '"),
    "morph_type_final": (None, "type of every galaxy: experts' where kept, else the extended classifier's; "
                               "OOD = outside the classifier's training distribution (extend.ood_final)"),
    "type_source": (None, "experts (the experts' type), extended (the classifier's), ood (extended, "
                          "but outside the training distribution: seen by no expert, not confident) or "
                          "taught (an expert typed the galaxy itself)"),
    "morph_type_ml": (None, "the extension classifier's type (every galaxy, training ones included)"),
    "ml_probability": (None, "the classifier's probability of morph_type_ml (not a p_<TYPE> column)"),
    "ml_confident": (None, "ml_probability >= extend.confidence_threshold and not out of distribution"),
    "ml_ood": (None, "farther from the training galaxies than extend.ood_quantile of them are from theirs"),
    "ml_ood_distance": (None, "mean distance to the nearest training galaxies (extend's OOD test)"),
    # measure
    "xc_centroid": ("pix", "x of the flux-weighted centroid (statmorph, 0-based stamp pixels)"),
    "yc_centroid": ("pix", "y of the flux-weighted centroid (statmorph)"),
    "ellipticity_centroid": (None, "ellipticity about the centroid (statmorph)"),
    "elongation_centroid": (None, "elongation about the centroid (statmorph)"),
    "orientation_centroid": ("rad", "orientation about the centroid (statmorph, from +x)"),
    "xc_asymmetry": ("pix", "x of the centre that minimises the asymmetry (statmorph)"),
    "yc_asymmetry": ("pix", "y of the centre that minimises the asymmetry (statmorph)"),
    "ellipticity_asymmetry": (None, "ellipticity about the asymmetry centre (statmorph)"),
    "elongation_asymmetry": (None, "elongation about the asymmetry centre (statmorph)"),
    "orientation_asymmetry": ("rad", "orientation about the asymmetry centre (statmorph, from +x)"),
    "flux_circ": (None, f"flux within 2 circular Petrosian radii, {_IMG}"),
    "flux_ellip": (None, f"flux within 2 elliptical Petrosian radii, {_IMG}"),
    "rpetro_circ": ("pix", "circular Petrosian radius (statmorph)"),
    "rpetro_ellip": ("pix", "elliptical Petrosian semi-major axis (statmorph)"),
    "rmax_circ": ("pix", "distance of the farthest segment pixel from the centre (statmorph)"),
    "rmax_ellip": ("pix", "elliptical semi-major axis reaching the farthest pixel (statmorph)"),
    "rhalf_circ": ("pix", "circular half-light radius (statmorph, non-parametric)"),
    "rhalf_ellip": ("pix", "elliptical half-light semi-major axis (statmorph)"),
    "r20": ("pix", "radius holding 20% of the light (statmorph)"),
    "r50": ("pix", "radius holding 50% of the light (statmorph)"),
    "r80": ("pix", "radius holding 80% of the light (statmorph)"),
    "gini": (None, "Gini coefficient of the pixel fluxes (Lotz et al. 2004)"),
    "m20": (None, "M20, second moment of the brightest 20% of the light (Lotz et al. 2004)"),
    "gini_m20_bulge": (None, "Gini-M20 bulge statistic F(G, M20) (Snyder et al. 2015)"),
    "gini_m20_merger": (None, "Gini-M20 merger statistic S(G, M20) (Snyder et al. 2015)"),
    "sn_per_pixel": (None, "mean signal-to-noise per pixel of the galaxy (statmorph)"),
    "concentration": (None, "concentration C = 5 log10(r80 / r20) (Conselice 2003)"),
    "asymmetry": (None, "rotational asymmetry A (Conselice 2003), background-corrected: can be negative "
                        "for faint, smooth galaxies (the sky's asymmetry exceeds the galaxy's)"),
    "smoothness": (None, "smoothness (clumpiness) S (Conselice 2003)"),
    "multimode": (None, "multimode M (Freeman et al. 2013)"),
    "intensity": (None, "intensity I (Freeman et al. 2013)"),
    "deviation": (None, "deviation D (Freeman et al. 2013)"),
    "rms_asymmetry2": (None, "RMS asymmetry squared (Sazonova et al. 2024)"),
    "outer_asymmetry": (None, "asymmetry outside the half-light ellipse (Wen et al. 2014)"),
    "shape_asymmetry": (None, "asymmetry of the binary segment (Pawlik et al. 2016)"),
    "sersic_amplitude": (None, f"Sersic surface brightness at r_e, {_IMG} per pixel"),
    "sersic_rhalf": ("pix", "Sersic effective (half-light) radius r_e, semi-major axis"),
    "sersic_n": (None, "Sersic index n of the single-Sersic fit"),
    "sersic_xc": ("pix", "x of the Sersic model centre"),
    "sersic_yc": ("pix", "y of the Sersic model centre"),
    "sersic_ellip": (None, "ellipticity of the Sersic model"),
    "sersic_theta": ("rad", "position angle of the Sersic model (from +x)"),
    "sersic_chi2_dof": (None, "reduced chi^2 of the Sersic fit"),
    "sersic_aic": (None, "Akaike information criterion of the Sersic fit"),
    "sersic_bic": (None, "Bayesian information criterion of the Sersic fit"),
    "sky_mean": (None, f"mean of statmorph's sky pixels, {_IMG}"),
    "sky_median": (None, f"median of statmorph's sky pixels, {_IMG}"),
    "sky_sigma": (None, f"standard deviation of statmorph's sky pixels, {_IMG}"),
    "xmin_stamp": ("pix", "statmorph's sub-stamp: first column"),
    "ymin_stamp": ("pix", "statmorph's sub-stamp: first row"),
    "xmax_stamp": ("pix", "statmorph's sub-stamp: last column"),
    "ymax_stamp": ("pix", "statmorph's sub-stamp: last row"),
    "nx_stamp": ("pix", "statmorph's sub-stamp: width"),
    "ny_stamp": ("pix", "statmorph's sub-stamp: height"),
    "flag": (None, "statmorph flag: 0 good, 1 suspect, 2 bad, 4 catastrophic; -1 not measured"),
    "flag_sersic": (None, "statmorph Sersic flag: 0 good, 1 suspect, 2 bad, 4 failed; -1 no fit"),
    "flag_doublesersic": (None, "statmorph double-Sersic flag; -1 no fit"),
    "psi": (None, "multiplicity Psi (Law et al. 2007)"),
    "g2": (None, "gradient asymmetry G2 (Rosa et al. 2018), noise tolerance as in the settings"),
    "g2_reliable": (None, "G2 is valid: nonparam_ok, G2 finite and S/N per pixel >= measure.g2_min_sn"),
    "nonparam_ok": (None, "non-parametric values (Gini, M20, C, A, S, M, I, D, radii, Psi) are valid: "
                          "statmorph flag 0 (good) or 1 (suspect)"),
    "sersic_ok": (None, "Sersic values (n, r_e, ...) are valid: flag_sersic 0 (good) or 1 (suspect) and "
                        "n finite; raw values of bad fits are kept"),
    "segment_area": ("pix2", "pixels in the galaxy's segment"),
    "measure_ok": (None, "statmorph measured the galaxy with flag 0 (good) or 1 (suspect), so its "
                         "non-parametric values are valid (= nonparam_ok); Sersic: sersic_ok, "
                         "G2: g2_reliable"),
    "measure_reason": (None, "why a galaxy was not measured, or statmorph's flag >= 2 reason"),
    "measure_warnings": (None, "statmorph's warnings"),
    "measure_linear": (None, "measured on linear pixels; false: display-scaled PNG/JPEG, values unreliable"),
    "measure_psf": (None, "PSF used in the Sersic fits: none, file, or array (per stamp)"),
    "measure_weights": (None, "per-pixel errors used: noise_sigma (constant), gain, rms array, or the "
                              "named weight array"),
    "zeropoint": ("mag", "photometric zero point of the stamp's pixel units (measure.zeropoint, else "
                         "the input header's MAGZERO / PHOTZP); NaN: unknown"),
    "mag_petro": ("mag", "zeropoint - 2.5 log10(flux_circ): flux within 2 circular Petrosian radii"),
    "mag_sersic": ("mag", "zeropoint - 2.5 log10(total flux of the Sersic model); valid where sersic_ok"),
    "stamp_pixel_scale": ("arcsec / pix", "pixel scale of the stamp (input scale x frame / stamp size)"),
    "sersic_rhalf_arcsec": ("arcsec", "Sersic effective radius r_e (semi-major axis)"),
    "rhalf_circ_arcsec": ("arcsec", "circular half-light radius (statmorph, non-parametric)"),
}
"""Unit and description of every column skymorph writes (and of the GalSim
RealGalaxyCatalog columns the bundled data carry)."""

_PATTERNS: list[tuple[str, str | None, str]] = [
    (r"^sersic_(rhalf|xc|yc)_err$", "pix", "1-sigma error of sersic_\\1 from the fit's covariance matrix"),
    (r"^sersic_theta_err$", "rad", "1-sigma error of sersic_theta from the fit's covariance matrix"),
    (r"^sersic_(\w+)_err$", None, "1-sigma error of sersic_\\1 from the fit's covariance matrix"),
    (r"^(gini|m20|concentration|asymmetry|smoothness|multimode|intensity|deviation)_err$", None,
     "1-sigma error of \\1 by noise resampling (measure.resamples; NaN when off)"),
    (r"^doublesersic_(xc|yc|rhalf\d)$", "pix", "double-Sersic model parameter (statmorph)"),
    (r"^doublesersic_theta\d$", "rad", "double-Sersic component position angle (statmorph)"),
    (r"^doublesersic_", None, "double-Sersic model parameter (statmorph)"),
    (r"^p_([A-Za-z0-9_]+)$", None, "probability of type \\1 (extend); the p_<TYPE> of a galaxy sum to 1"),
    (r"^HSC_[a-zA-Z]$", "mag", "HSC magnitude from the input catalog"),
    (r"^cat_", None, "input catalog column (renamed: ingest has a column of that name)"),
    (r"^desc_(r20|r50|r80)(_p[0-9.]+)?$", "pix", "cheap shape descriptor \\1\\2 used as a clustering feature "
     "(skymorph.core.descriptors), not a physical measurement: see measure's columns"),
    (r"^desc_(.+)$", None, "cheap shape descriptor \\1 used as a clustering feature "
     "(skymorph.core.descriptors), not a physical measurement: see measure's columns"),
]


def column_info(name: str) -> tuple[str | None, str]:
    """Unit (an astropy unit string, or ``None``) and description of a column."""
    if name in COLUMNS:
        return COLUMNS[name]
    for pattern, unit, text in _PATTERNS:
        match = re.match(pattern, name)
        if match:
            return unit, match.expand(text)
    return None, "column of the input catalog or sources table (no unit known to skymorph)"


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
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        hdul.writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
