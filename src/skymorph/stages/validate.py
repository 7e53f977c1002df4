"""Validate: statistics, plots and an HTML report of the morphology types.

Reads the typed catalog (``morph_type`` from the inspection stage), the
measurements (``measure``), the run's sources table and, optionally, a user
catalog of physical quantities (stellar mass, redshift) and a Galaxy Zoo: Hubble
table, and writes ``RUN_DIR/report/report.html`` (self-contained, figures
embedded) and ``RUN_DIR/report/validation.json`` (every number).

Parts (paper section 4): per-type medians and raincloud plots (Figs. 8-11);
ETG/LTG tests on Sersic n and the Gini-M20 plane (Fig. 12); completeness of
the kept (consensus) sample with Wilson intervals (Fig. 13); kept versus
rejected distributions with KS, Cohen's d and Cliff's delta (Fig. 14); UMAP
and t-SNE maps by type (Figs. 5f, 7); agreement with Galaxy Zoo: Hubble.
A part whose inputs are missing is skipped with a note in the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, ValidateConfig
from ..io.rundir import RunDir, RunDirError
from . import Argument, Stage, StageContext, execute

__all__ = ["validate", "gzh_classes", "GZH_DEFAULT_COLUMNS", "TYPES", "ValidateError"]

log = logging.getLogger(__name__)

TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC"]
TYPE_COLOURS = {"SPH": "#d62728", "ETD": "#ff7f0e", "LTD": "#2ca02c", "IRR": "#1f77b4", "UNC": "#7f7f7f"}
ETG_TYPES = ["SPH"]
LTG_TYPES = ["ETD", "LTD", "IRR"]

# (column, label) of the per-type parameters; r_e is filled in kpc when possible.
PARAMETERS = [
    ("sersic_n", "Sersic n"), ("r_e", "r_e"), ("gini", "Gini G"), ("m20", "M20"),
    ("concentration", "C"), ("g2", "G2"), ("multimode", "M"), ("intensity", "I"),
    ("deviation", "D"), ("psi", "Psi"), ("asymmetry", "A"), ("smoothness", "S"),
]
FIGURE_GROUPS = [  # as the paper's Figs. 8-11
    ("Fig. 8: Sersic index and effective radius", ["sersic_n", "r_e"]),
    ("Fig. 9: Gini and M20", ["gini", "m20"]),
    ("Fig. 10: concentration and gradient asymmetry G2", ["concentration", "g2"]),
    ("Fig. 11: MID statistics and multiplicity Psi", ["multimode", "intensity", "deviation", "psi"]),
]

# Galaxy Zoo: Hubble (Willett et al. 2017) vote-fraction columns, by role.
GZH_DEFAULT_COLUMNS = {
    "f_smooth": "t01_smooth_or_features_a01_smooth_weighted_fraction",
    "f_features": "t01_smooth_or_features_a02_features_or_disk_weighted_fraction",
    "f_edgeon_no": "t02_edgeon_a05_no_weighted_fraction",
    "f_spiral": "t04_spiral_a08_spiral_weighted_fraction",
    "f_odd_yes": "t06_odd_a14_yes_weighted_fraction",
    "f_round": "t07_rounded_a16_completely_round_weighted_fraction",
    "f_irregular": "t08_odd_feature_a22_irregular_weighted_fraction",
    "f_clumpy_yes": "t12_clumpy_a37_yes_weighted_fraction",
    "f_clumpy_no": "t12_clumpy_a38_no_weighted_fraction",
    "f_clump_asym": "t17_clumps_symmetrical_a56_no_weighted_fraction",
}

NAME_CANDIDATES = {
    "mass": ["mass", "stellar_mass", "mstar", "logmass", "log_mass", "lp_mass_med", "lp_mass_best",
             "mass_med", "mass_best", "logm", "log_mstar"],
    "z": ["z", "zphot", "photoz", "z_phot", "lp_zbest", "lp_zpdf", "z_best", "zbest", "redshift", "z_spec"],
    "mag": ["mag", "i_mag", "mag_i", "imag", "mag_auto", "mag_f814w", "f814w"],
}


class ValidateError(ValueError):
    """The run cannot be validated (no catalog, no morphology types)."""


# --- inputs -----------------------------------------------------------------------------------


def _find_column(table: pd.DataFrame, explicit: str | None, role: str) -> str | None:
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


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    from .ingest import IngestError, read_table

    try:
        return read_table(path)
    except IngestError as exc:
        raise ValidateError(str(exc)) from None


def _assemble(run: RunDir, physical, id_col: str | None, cfg: ValidateConfig,
              notes: list[str]) -> tuple[pd.DataFrame, dict[str, str | None]]:
    try:
        catalog = run.catalog()
    except RunDirError as exc:
        raise ValidateError(f"{exc}; validate needs the typed catalog (morph_type)") from None
    if "morph_type" not in catalog.columns:
        raise ValidateError(
            f"the catalog of {run.path} has no morph_type column: name the clusters first "
            f"(`skymorph inspect serve {run.path}` then `skymorph inspect merge {run.path}`)")
    types = catalog["morph_type"].fillna("").astype(str).str.strip().str.upper()
    if not types.isin(TYPES).any():
        raise ValidateError(
            f"morph_type is empty for every galaxy of {run.path}; merge the experts' votes "
            f"(`skymorph inspect merge {run.path}`) before validating")
    table = catalog.assign(id=catalog["id"].astype(str), morph_type=types)
    # measurements: joined by measure when the catalog existed, else join them here
    from .measure import CATALOG_COLUMNS, MEASUREMENTS_FILE

    mpath = run.path / MEASUREMENTS_FILE
    if "gini" not in table.columns:
        if mpath.exists():
            m = pd.read_parquet(mpath, columns=["id", *CATALOG_COLUMNS]).assign(
                id=lambda d: d["id"].astype(str))
            table = table.merge(m, on="id", how="left")
        else:
            notes.append(f"no measurements: run `skymorph measure {run.path}` for the per-type "
                         "parameters, the ETG/LTG tests and the parameter completeness curves")
    try:
        sources = run.sources()
        sources = sources.assign(id=sources["id"].astype(str))
        extra = [c for c in sources.columns if c not in table.columns and c != "id"]
        table = table.merge(sources[["id", *extra]], on="id", how="left")
    except RunDirError:
        notes.append("no sources table: S/N and array rows are unavailable")
    if physical is not None:
        phys = physical if isinstance(physical, pd.DataFrame) else _read_table(physical)
        key = id_col or ("id" if "id" in phys.columns else None)
        if key is None or key not in phys.columns:
            raise ValidateError(f"the physical catalog has no id column {key or 'id'!r}; name it "
                                f"with --id-col (columns: {', '.join(map(str, phys.columns))})")
        phys = phys.copy()
        phys["id"] = phys[key].map(_id_text)
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
    cols: dict[str, str | None] = {
        "mass": _find_column(table, cfg.mass_col, "mass"),
        "z": _find_column(table, cfg.z_col, "z"),
        "mag": _find_column(table, cfg.mag_col, "mag"),
    }
    if physical is None and cols["mass"] is None:
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
    scale = cfg.pixel_scale
    if scale is None and "PIXEL_SCALE" in table.columns:
        scale = float(pd.to_numeric(table["PIXEL_SCALE"], errors="coerce").median())
    if "sersic_rhalf" in table.columns:
        if scale is not None and np.isfinite(scale) and cols["z"] is not None:
            from astropy.cosmology import Planck18

            z = pd.to_numeric(table[cols["z"]], errors="coerce").to_numpy(float)
            good = np.isfinite(z) & (z > 0)
            kpc = np.full(len(z), np.nan)
            kpc[good] = Planck18.kpc_proper_per_arcmin(z[good]).value / 60.0
            table["r_e"] = table["sersic_rhalf"].to_numpy(float) * scale * kpc
            unit = "kpc"
            notes.append(f"r_e in kpc: Sersic r_e x {scale:g} arcsec/px x Planck18 scale at "
                         f"{cols['z']}")
        else:
            notes.append("r_e in pixels (a redshift column and a pixel scale give kpc)")
    cols["r_e_unit"] = unit
    return table, cols


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --- figures ------------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.tight_layout()  # keeps panel titles clear of the row above
    except (ValueError, RuntimeError):
        pass
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _raincloud(ax, groups: list[np.ndarray], names: list[str], rng: np.random.Generator,
               max_points: int = 2000) -> None:
    """Half violin (cloud) + box + jittered points (rain), one row per group."""
    from scipy.stats import gaussian_kde

    for i, (values, name) in enumerate(zip(groups, names, strict=True)):
        colour = TYPE_COLOURS.get(name, "#444444")
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        if values.size > 2 and np.ptp(values) > 0:
            grid = np.linspace(values.min(), values.max(), 200)
            try:
                dens = gaussian_kde(values)(grid)
                ax.fill_between(grid, i, i + 0.4 * dens / dens.max(), color=colour, alpha=0.5, lw=0)
            except np.linalg.LinAlgError:
                pass
        ax.boxplot(values, positions=[i - 0.12], orientation="horizontal", widths=0.12, showfliers=False,
                   patch_artist=True, boxprops={"facecolor": "white", "edgecolor": colour},
                   medianprops={"color": colour, "lw": 2})
        shown = values if values.size <= max_points else rng.choice(values, max_points, replace=False)
        ax.scatter(shown, i - 0.3 + rng.uniform(-0.07, 0.07, shown.size), s=3, color=colour, alpha=0.5)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.2)):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes.ravel()


# --- parts ----------------------------------------------------------------------------------------


def _finite(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(float)
    return values[np.isfinite(values)]


def _sample(table: pd.DataFrame, cols: dict, cfg: ValidateConfig, notes: list[str]) -> pd.DataFrame:
    """Galaxies for the per-type statistics: typed, measured, massive."""
    sample = table[table["morph_type"].isin(TYPES)]
    if cfg.exclude_unc:
        sample = sample[sample["morph_type"] != "UNC"]
    if "measure_ok" in sample.columns:
        sample = sample[sample["measure_ok"].fillna(False).astype(bool)]
    if cols["mass"] is not None and cfg.min_mass is not None:
        before = len(sample)
        sample = sample[sample[cols["mass"]] > math.log10(cfg.min_mass)]
        notes.append(f"per-type sample: M* > {cfg.min_mass:.3g} Msun keeps {len(sample)} of {before}")
    return sample


def _part_types(table, cols, cfg, rng):
    counts = table["morph_type"].replace("", "unclassified").value_counts()
    result = {"counts": {str(k): int(v) for k, v in counts.items()}, "n_catalog": int(len(table))}
    if "consensus" in table.columns:
        result["n_kept"] = int(table["consensus"].fillna(False).astype(bool).sum())
    return result, [], []


def _part_per_type(table, cols, cfg, rng):
    notes: list[str] = []
    if "gini" not in table.columns:
        return None, [], ["skipped: no measurements"]
    sample = _sample(table, cols, cfg, notes)
    types = [t for t in TYPES if (sample["morph_type"] == t).any()]
    medians: dict[str, dict[str, Any]] = {}
    for col, _ in PARAMETERS:
        if col not in sample.columns:
            continue
        medians[col] = {}
        for t in types:
            values = _finite(sample.loc[sample["morph_type"] == t, col])
            medians[col][t] = float(np.median(values)) if values.size else None
    counts = {t: int((sample["morph_type"] == t).sum()) for t in types}
    figures = []
    labels = dict(PARAMETERS)
    labels["r_e"] = f"r_e ({cols['r_e_unit']})"
    for title, group in FIGURE_GROUPS:
        present = [c for c in group if c in sample.columns]
        fig, axes = _figure(len(present))
        for ax, col in zip(axes, present, strict=True):
            groups = [pd.to_numeric(sample.loc[sample["morph_type"] == t, col], errors="coerce")
                      .to_numpy(float) for t in types]
            _raincloud(ax, groups, types, rng)
            ax.set_xlabel(labels[col])
            if col in ("sersic_n", "r_e"):
                pos = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in groups] or [np.array([])])
                if pos.size and pos.max() / max(pos.min(), 1e-9) > 30:
                    ax.set_xscale("log")
        fig.suptitle(title)
        figures.append((title, _png(fig)))
    return {"n": counts, "medians": medians, "r_e_unit": cols["r_e_unit"]}, figures, notes


def _fraction(k: int, n: int, cfg: ValidateConfig) -> dict[str, Any]:
    from ..core.stats import wilson_interval

    low, high = wilson_interval(k, n, cfg.confidence)
    return {"k": int(k), "n": int(n), "fraction": (k / n) if n else None,
            "ci_low": low if n else None, "ci_high": high if n else None}


def _part_etg_ltg(table, cols, cfg, rng):
    notes: list[str] = []
    if "gini" not in table.columns:
        return None, [], ["skipped: no measurements"]
    sample = _sample(table, cols, cfg, notes)
    etg = sample[sample["morph_type"].isin(ETG_TYPES)]
    ltg = sample[sample["morph_type"].isin(LTG_TYPES)]
    if etg.empty or ltg.empty:
        notes.append(f"ETG (SPH): {len(etg)} galaxies, LTG (ETD+LTD+IRR): {len(ltg)}; "
                     "both are needed for a full test")
    out: dict[str, Any] = {}
    n_e, n_l = etg["sersic_n"].astype(float), ltg["sersic_n"].astype(float)
    n_e, n_l = n_e[np.isfinite(n_e)], n_l[np.isfinite(n_l)]
    out["P(n>=split|ETG)"] = _fraction(int((n_e >= cfg.sersic_split).sum()), len(n_e), cfg)
    out["P(n<split|LTG)"] = _fraction(int((n_l < cfg.sersic_split).sum()), len(n_l), cfg)

    def above(frame):
        g, m = frame["gini"].astype(float), frame["m20"].astype(float)
        ok = np.isfinite(g) & np.isfinite(m)
        return (g[ok] > cfg.gini_m20_slope * m[ok] + cfg.gini_m20_intercept), int(ok.sum())

    a_e, n_ae = above(etg)
    a_l, n_al = above(ltg)
    out["P(above line|ETG)"] = _fraction(int(a_e.sum()), n_ae, cfg)
    out["P(below line|LTG)"] = _fraction(int((~a_l).sum()), n_al, cfg)
    out["sersic_split"] = cfg.sersic_split
    out["line"] = f"G = {cfg.gini_m20_slope} * M20 + {cfg.gini_m20_intercept}"
    fig, axes = _figure(2, size=(5.0, 4.2))
    ax = axes[0]
    for name, frame in (("LTG", ltg), ("ETG", etg)):
        colour = "#1f77b4" if name == "LTG" else "#d62728"
        ax.scatter(frame["m20"], frame["gini"], s=6, alpha=0.6, color=colour, label=f"{name} ({len(frame)})")
    m = np.linspace(-3.2, 0.0, 10)
    ax.plot(m, cfg.gini_m20_slope * m + cfg.gini_m20_intercept, "k--", lw=1, label=out["line"])
    ax.invert_xaxis()
    ax.set_xlabel("M20")
    ax.set_ylabel("Gini")
    ax.legend(fontsize=8)
    ax = axes[1]
    bins = np.linspace(0, max(6.0, float(np.nanmax(np.r_[n_e, n_l, 1.0]))), 30)
    ax.hist(n_l, bins=bins, histtype="step", density=True, color="#1f77b4", label="LTG")
    ax.hist(n_e, bins=bins, histtype="step", density=True, color="#d62728", label="ETG")
    ax.axvline(cfg.sersic_split, color="k", ls="--", lw=1)
    ax.set_xlabel("Sersic n")
    ax.legend(fontsize=8)
    fig.suptitle("Fig. 12: ETG (SPH) versus LTG (ETD+LTD+IRR)")
    return out, [("Fig. 12: Gini-M20 plane and Sersic n", _png(fig))], notes


def _comparison_columns(table, cols) -> list[tuple[str, str]]:
    wanted = [(cols["mass"], "log M* (Msun)"), (cols["z"], "redshift"), (cols["mag"], "magnitude"),
              ("snr_pixel", "S/N per pixel"), ("sersic_n", "Sersic n"), ("r_e", f"r_e ({cols['r_e_unit']})"),
              ("gini", "Gini"), ("m20", "M20")]
    out = []
    for col, label in wanted:
        if col is None or col not in table.columns:
            continue
        if np.isfinite(pd.to_numeric(table[col], errors="coerce")).sum() >= 2:
            out.append((col, label))
    return out


def _kept(table) -> np.ndarray | None:
    if "consensus" not in table.columns:
        return None
    return table["consensus"].fillna(False).astype(bool).to_numpy()


def _part_completeness(table, cols, cfg, rng):
    from ..core.stats import binned_fraction

    kept = _kept(table)
    if kept is None:
        return None, [], ["skipped: the catalog has no consensus column"]
    columns = _comparison_columns(table, cols)
    if not columns:
        return None, [], ["skipped: no usable column to bin"]
    notes = [f"missing: {label}" for col, label in
             [(cols["mass"], "stellar mass (give --physical)"), (cols["z"], "redshift")] if col is None]
    out = {"overall": _fraction(int(kept.sum()), len(kept), cfg), "curves": {}}
    ncol = min(4, len(columns))
    fig, axes = _figure(ncol, math.ceil(len(columns) / ncol), size=(3.6, 2.9))
    for ax, (col, label) in zip(axes, columns, strict=False):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        curve = binned_fraction(values, kept, cfg.n_bins, cfg.confidence)
        out["curves"][col] = {k: np.asarray(v).tolist() for k, v in curve.items()}
        ax.errorbar(curve["centre"], curve["fraction"],
                    yerr=[curve["fraction"] - curve["low"], curve["high"] - curve["fraction"]],
                    fmt="o-", ms=3, capsize=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction kept")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    level = int(round(cfg.confidence * 100))
    fig.suptitle(f"Fig. 13: completeness (kept = consensus) with {level}% Wilson intervals")
    return out, [("Fig. 13: completeness", _png(fig))], notes


def _part_kept_rejected(table, cols, cfg, rng):
    from ..core.stats import cliffs_delta, cohens_d, ks_test

    kept = _kept(table)
    if kept is None:
        return None, [], ["skipped: the catalog has no consensus column"]
    if kept.all() or not kept.any():
        return None, [], ["skipped: every galaxy is kept (or none is): nothing to compare"]
    columns = _comparison_columns(table, cols)
    out = {}
    ncol = min(4, len(columns))
    fig, axes = _figure(ncol, math.ceil(len(columns) / ncol), size=(3.6, 2.9))
    for ax, (col, label) in zip(axes, columns, strict=False):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        a, b = values[kept], values[~kept]
        ks, p = ks_test(a, b)
        out[col] = {"n_kept": int(np.isfinite(a).sum()), "n_rejected": int(np.isfinite(b).sum()),
                    "ks_statistic": ks, "ks_pvalue": p, "cohens_d": cohens_d(a, b),
                    "cliffs_delta": cliffs_delta(a, b)}
        both = values[np.isfinite(values)]
        bins = np.linspace(np.percentile(both, 1), np.percentile(both, 99), 25) if both.size > 1 else 10
        ax.hist(a[np.isfinite(a)], bins=bins, histtype="step", density=True, label="kept", color="C0")
        ax.hist(b[np.isfinite(b)], bins=bins, histtype="step", density=True, label="rejected", color="C3")
        ax.set_xlabel(label)
        ax.set_title(f"p={p:.2g} d={out[col]['cohens_d']:.2f} δ={out[col]['cliffs_delta']:.2f}", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.suptitle("Fig. 14: kept versus rejected (KS p-value, Cohen's d, Cliff's δ)")
    return out, [("Fig. 14: kept versus rejected", _png(fig))], []


def _rows_of(table: pd.DataFrame, run: RunDir) -> np.ndarray:
    """Row of each catalog galaxy in the run's arrays (-1 when unknown)."""
    if "index" in table.columns:
        rows = pd.to_numeric(table["index"], errors="coerce").fillna(-1).to_numpy(int)
        return rows
    return np.full(len(table), -1)


def _part_maps(table, cols, cfg, rng, run: RunDir):
    notes: list[str] = []
    rows = _rows_of(table, run)
    good = rows >= 0
    if not good.any():
        return None, [], ["skipped: catalog galaxies cannot be matched to array rows (no sources index)"]
    source = next((n for n in ("embedding", "features") if run.has_array(n)), None)
    if not run.has_array("embedding_2d") and source is None:
        return None, [], ["skipped: no embedding_2d, embedding or features array (run encode / reduce)"]
    idx = np.flatnonzero(good)
    if idx.size > cfg.max_map_points:
        idx = np.sort(rng.choice(idx, cfg.max_map_points, replace=False))
        notes.append(f"maps drawn for {cfg.max_map_points} random galaxies of {int(good.sum())}")
    arr_rows = rows[idx]
    order = np.argsort(arr_rows)
    types = table["morph_type"].to_numpy()[idx][order]
    arr_rows = arr_rows[order]
    maps: dict[str, np.ndarray] = {}
    if run.has_array("embedding_2d"):
        maps["UMAP"] = np.asarray(run.open_array("embedding_2d").get_orthogonal_selection(arr_rows))
        notes.append("UMAP map: the reduce stage's embedding_2d")
    data = None
    if source is not None:
        data = np.asarray(run.open_array(source).get_orthogonal_selection(arr_rows), dtype=np.float32)
    if "UMAP" not in maps and data is not None:
        import warnings

        with warnings.catch_warnings():
            # umap warns about its optional TensorFlow part and about seeding disabling threads
            warnings.simplefilter("ignore")
            import umap

            n_neighbors = max(2, min(15, len(data) - 1))
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=cfg.seed)
            maps["UMAP"] = reducer.fit_transform(data)
        notes.append(f"UMAP map computed here from '{source}' (n_neighbors={n_neighbors})")
    if data is not None and len(data) > 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(data) - 1) / 3.0))
        maps["t-SNE"] = TSNE(n_components=2, perplexity=perplexity, random_state=cfg.seed,
                             init="pca").fit_transform(data)
        notes.append(f"t-SNE map from '{source}' (perplexity {perplexity:.0f})")
    else:
        notes.append("t-SNE skipped: needs the embedding or features array")
    fig, axes = _figure(len(maps), size=(5.0, 4.5))
    for ax, (name, xy) in zip(axes, maps.items(), strict=True):
        for t in [*TYPES, ""]:
            sel = types == t
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.7, color=TYPE_COLOURS.get(t, "#cccccc"),
                           label=t or "unclassified")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2)
    fig.suptitle("Figs. 5f, 7: maps coloured by morphology type")
    result = {"n_points": int(len(types)), "maps": list(maps)}
    return result, [("Figs. 5f, 7: UMAP and t-SNE", _png(fig))], notes


def gzh_classes(table: pd.DataFrame, columns: dict[str, str] | None = None) -> pd.Series:
    """Galaxy Zoo: Hubble vote fractions -> SPH / DISK / IRR ('' when none applies).

    The paper's thresholds (after Willett et al. 2017): SPH when f_smooth > 0.70,
    f_features < 0.30 and f_round > 0.50; DISK when f_features > 0.23,
    f_clumpy_no > 0.30, f_edgeon_no > 0.25, f_spiral > 0.25, f_odd_yes < 0.30 and
    f_irregular < 0.30; IRR when (f_features > 0.23, f_clumpy_yes > 0.80 and
    f_clump_asym > 0.50) or (f_odd_yes > 0.50 and f_irregular > 0.50).

    Parameters
    ----------
    table : DataFrame
        The GZH table.
    columns : dict, optional
        Role -> column name; unnamed roles use :data:`GZH_DEFAULT_COLUMNS`.

    Raises
    ------
    ValidateError
        If a needed column is missing.
    """
    names = {**GZH_DEFAULT_COLUMNS, **(columns or {})}
    missing = [f"{role} ({col})" for role, col in names.items() if col not in table.columns]
    if missing:
        raise ValidateError("the Galaxy Zoo: Hubble table lacks " + ", ".join(missing)
                            + "; map them with --gzh-column ROLE=COLUMN")
    f = {role: pd.to_numeric(table[col], errors="coerce").fillna(0.0) for role, col in names.items()}
    sph = (f["f_smooth"] > 0.70) & (f["f_features"] < 0.30) & (f["f_round"] > 0.50)
    disk = ((f["f_features"] > 0.23) & (f["f_clumpy_no"] > 0.30) & (f["f_edgeon_no"] > 0.25)
            & (f["f_spiral"] > 0.25) & (f["f_odd_yes"] < 0.30) & (f["f_irregular"] < 0.30))
    irr = (((f["f_features"] > 0.23) & (f["f_clumpy_yes"] > 0.80) & (f["f_clump_asym"] > 0.50))
           | ((f["f_odd_yes"] > 0.50) & (f["f_irregular"] > 0.50)))
    out = pd.Series("", index=table.index, dtype=object)
    out[irr] = "IRR"
    out[disk] = "DISK"
    out[sph] = "SPH"  # the three criteria are almost disjoint; the smooth one wins a tie
    return out


def _part_gzh(table, cols, cfg, rng, gzh):
    if gzh is None:
        return None, [], ["skipped: no Galaxy Zoo: Hubble table given (--gzh)"]
    frame = gzh if isinstance(gzh, pd.DataFrame) else _read_table(gzh)
    key = cfg.gzh_id_col or next((c for c in ("id", "OBJNO", "objid") if c in frame.columns), None)
    if key is None or key not in frame.columns:
        raise ValidateError(f"the Galaxy Zoo table has no id column {key or 'id'!r}; name it with "
                            "--gzh-id-col")
    mapping = {}
    for entry in cfg.gzh_columns:
        role, sep, col = entry.partition("=")
        if not sep or role not in GZH_DEFAULT_COLUMNS:
            raise ValidateError(f"--gzh-column expects ROLE=COLUMN with ROLE one of "
                                f"{', '.join(GZH_DEFAULT_COLUMNS)}; got {entry!r}")
        mapping[role] = col
    gz = pd.DataFrame({"id": frame[key].map(_id_text), "gzh_class": gzh_classes(frame, mapping)})
    merged = table[["id", "morph_type"]].merge(gz.drop_duplicates("id"), on="id", how="inner")
    ours = merged["morph_type"].map({"SPH": "SPH", "ETD": "DISK", "LTD": "DISK", "IRR": "IRR"})
    both = ours.notna() & (merged["gzh_class"] != "")
    agree = int((ours[both] == merged.loc[both, "gzh_class"]).sum())
    confusion = pd.crosstab(merged.loc[both, "morph_type"], merged.loc[both, "gzh_class"])
    notes = [f"{len(merged)} galaxies matched the GZH table; {int(both.sum())} have a GZH class "
             "and one of our SPH/ETD/LTD/IRR types"]
    out = {"n_matched": int(len(merged)), "n_compared": int(both.sum()),
           "agreement": _fraction(agree, int(both.sum()), cfg),
           "confusion": {str(r): {str(c): int(v) for c, v in row.items()} for r, row in confusion.iterrows()},
           "gzh_counts": {str(k): int(v)
                          for k, v in gz["gzh_class"].replace("", "none").value_counts().items()}}
    return out, [], notes


# --- report ---------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def _tables_html(name: str, result: dict[str, Any]) -> str:
    parts = []
    if name == "per_type":
        types = list(result["n"])
        head = "".join(f"<th>{t} (N={result['n'][t]})</th>" for t in types)
        rows = "".join(f"<tr><td>{html.escape(c)}</td>" + "".join(
            f"<td>{_fmt(result['medians'][c].get(t))}</td>" for t in types) + "</tr>"
            for c in result["medians"])
        parts.append(f"<p>Medians by type (r_e in {result['r_e_unit']}):</p>"
                     f"<table><tr><th>parameter</th>{head}</tr>{rows}</table>")
    elif name in ("etg_ltg",):
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(v['fraction'])}</td><td>{_fmt(v['ci_low'])} – "
            f"{_fmt(v['ci_high'])}</td><td>{v['k']}/{v['n']}</td></tr>"
            for k, v in result.items() if isinstance(v, dict))
        parts.append("<table><tr><th>test</th><th>fraction</th><th>95% CI</th><th>k/n</th></tr>"
                     f"{rows}</table><p>Sersic split n = {result['sersic_split']}; "
                     f"line {html.escape(result['line'])}.</p>")
    elif name == "kept_rejected":
        rows = "".join(f"<tr><td>{html.escape(c)}</td>" + "".join(
            f"<td>{_fmt(v[k])}</td>" for k in ("n_kept", "n_rejected", "ks_pvalue", "cohens_d",
                                                 "cliffs_delta")) + "</tr>" for c, v in result.items())
        parts.append("<table><tr><th>column</th><th>kept</th><th>rejected</th><th>KS p</th>"
                     f"<th>Cohen's d</th><th>Cliff's δ</th></tr>{rows}</table>")
    elif name == "completeness":
        o = result["overall"]
        parts.append(f"<p>Kept (consensus): {o['k']} of {o['n']} = {_fmt(o['fraction'])} "
                     f"(95% CI {_fmt(o['ci_low'])} – {_fmt(o['ci_high'])}).</p>")
    elif name == "types":
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in result["counts"].items())
        parts.append(f"<table><tr><th>type</th><th>galaxies</th></tr>{rows}</table>")
    elif name == "gzh":
        a = result["agreement"]
        parts.append(f"<p>Agreement with GZH (SPH=SPH, ETD/LTD=DISK, IRR=IRR): {_fmt(a['fraction'])} "
                     f"({a['k']}/{a['n']}, 95% CI {_fmt(a['ci_low'])} – {_fmt(a['ci_high'])}).</p>")
        conf = pd.DataFrame(result["confusion"]).T.fillna(0).astype(int)
        if not conf.empty:
            parts.append(conf.to_html(classes="conf", border=0))
    return "".join(parts)


SECTION_TITLES = {
    "types": "Sample and types",
    "per_type": "Per-type parameters (Figs. 8–11)",
    "etg_ltg": "ETG / LTG tests (Fig. 12)",
    "completeness": "Completeness of the kept sample (Fig. 13)",
    "kept_rejected": "Kept versus rejected (Fig. 14)",
    "maps": "UMAP and t-SNE maps (Figs. 5f, 7)",
    "gzh": "Galaxy Zoo: Hubble comparison",
}

STYLE = """body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
.note{color:#666;font-size:.92em}figure{margin:0}figcaption{font-size:.9em;color:#444}"""


def _html(run: RunDir, sections: list[tuple[str, Any, list, list[str]]], notes: list[str]) -> str:
    from .._version import __version__

    body = [f"<h1>skymorph validation report</h1><p>Run directory: <code>{html.escape(str(run.path))}"
            f"</code> · skymorph {__version__}</p>"]
    if notes:
        body.append("<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for name, result, figures, part_notes in sections:
        body.append(f"<h2 id='{name}'>{html.escape(SECTION_TITLES[name])}</h2>")
        if part_notes:
            body.append("<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in part_notes)
                        + "</ul>")
        if result is not None:
            body.append(_tables_html(name, result))
        for caption, png in figures:
            body.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>skymorph validation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def _compute(ctx: StageContext) -> dict[str, Any]:
    run, cfg, progress = ctx.run, ctx.config.validate, ctx.progress
    notes: list[str] = []
    table, cols = _assemble(run, ctx.options.get("physical"), ctx.options.get("id_col"), cfg, notes)
    rng = np.random.default_rng(cfg.seed)
    parts: list[tuple[str, Callable]] = [
        ("types", _part_types), ("per_type", _part_per_type), ("etg_ltg", _part_etg_ltg),
        ("completeness", _part_completeness), ("kept_rejected", _part_kept_rejected),
        ("maps", lambda t, c, g, r: _part_maps(t, c, g, r, run)),
        ("gzh", lambda t, c, g, r: _part_gzh(t, c, g, r, ctx.options.get("gzh"))),
    ]
    sections = []
    results: dict[str, Any] = {}
    for name, func in parts:
        if progress:
            log.info("validate: %s", SECTION_TITLES[name])
        try:
            result, figures, part_notes = func(table, cols, cfg, rng)
        except ValidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing part must not lose the others
            log.warning("validate: part %s failed: %s", name, exc)
            result, figures, part_notes = None, [], [f"failed: {type(exc).__name__}: {exc}"]
        sections.append((name, result, figures, part_notes))
        results[name] = {"result": result, "notes": part_notes, "figures": [c for c, _ in figures]}
    out_dir = run.path / "report"
    out_dir.mkdir(exist_ok=True)
    report = out_dir / "report.html"
    report.write_text(_html(run, sections, notes), encoding="utf-8")
    summary = _jsonable({"run_dir": str(run.path), "notes": notes, "columns": cols, "parts": results,
                         "settings": dict(vars(cfg))})
    (out_dir / "validation.json").write_text(json.dumps(summary, indent=2))
    return {"report": str(report), "skipped": [k for k, v in results.items() if v["result"] is None]}




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    text = f"report: {info['report']}\nnumbers: {Path(info['report']).with_name('validation.json')}"
    if info.get("skipped"):
        text += "\nskipped (see the report's notes): " + ", ".join(info["skipped"])
    return text


STAGE = Stage(
    name="validate",
    summary="statistics, plots and an HTML report of the morphology types",
    description=__doc__.split("\n\n")[0] + (
        "\n\nExamples:\n"
        "  skymorph validate myrun\n"
        "  skymorph validate myrun --physical cosmos2020.fits --id-col ID\n"
        "  skymorph validate myrun --gzh gz_hubble.csv --gzh-id-col OBJNO"),
    compute=_compute,
    sections=("validate",),
    always=True,
    arguments=(
        Argument("--physical", "catalog (FITS, CSV, Parquet) of physical quantities: stellar mass, "
                 "redshift, magnitude", metavar="CATALOG"),
        Argument("--id-col", "id column of --physical matching the run's ids (default: id)", metavar="COL"),
        Argument("--gzh", "Galaxy Zoo: Hubble table of vote fractions", metavar="TABLE"),
    ),
    report=_report,
)


def validate(run_dir: str | os.PathLike | RunDir, physical: str | os.PathLike | pd.DataFrame | None = None,
             id_col: str | None = None, gzh: str | os.PathLike | pd.DataFrame | None = None,
             config: Config | None = None, *, progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Validate the morphology types of a run and write the report.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory whose catalog has ``morph_type``.
    physical : str, Path or DataFrame, optional
        Catalog of physical quantities (stellar mass, redshift, magnitude),
        joined on ``id_col``.
    id_col : str, optional
        Identifier column of ``physical`` (default ``id``).
    gzh : str, Path or DataFrame, optional
        Galaxy Zoo: Hubble table with vote fractions (see :func:`gzh_classes`).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    progress : bool
        Log each part as it runs.
    **settings
        Overrides of the ``[validate]`` settings, e.g. ``confidence=0.68``.

    Returns
    -------
    dict
        Every number of the report (also in ``RUN_DIR/report/validation.json``),
        with ``report`` the path of ``RUN_DIR/report/report.html``.

    Raises
    ------
    ValidateError
        If the catalog is missing or has no morphology types, or an input
        table lacks its id column.
    """
    run = execute("validate", run_dir, config, progress=progress,
                  options={"physical": physical, "id_col": id_col, "gzh": gzh}, **settings)
    summary = json.loads((run.path / "report" / "validation.json").read_text())
    summary["report"] = str(run.path / "report" / "report.html")
    return summary


