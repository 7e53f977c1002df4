"""Table-level statistics of the validation: what the report's numbers are.

Plain tables in, plain dictionaries out (JSON-ready apart from NumPy scalars): no
run directory, no figures.  The validate stage assembles the table (catalog +
measurements + sources + the user's physical catalog), calls these functions and
hands their results to :mod:`skymorph.report` for the figures and the HTML.

Parts (Fang et al. 2025, section 4): per-type medians (Figs. 8-11), ETG/LTG tests
on Sersic n and the Gini-M20 plane with the Lotz et al. (2008) lines (Fig. 12),
completeness of the kept sample (Fig. 13), kept versus rejected (Fig. 14),
agreement between the experts (Fleiss' kappa), agreement with Galaxy Zoo: Hubble,
and the run's caveats (non-linear inputs, G2 at the run's S/N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .stats import (
    agreement_words,
    binned_fraction,
    bootstrap_interval,
    cliffs_delta,
    cohens_d,
    fleiss_kappa,
    fraction_interval,
    krippendorff_alpha_nominal,
    ks_test,
    rating_counts,
)

__all__ = [
    "NO_CONSENSUS", "AUTO_PREFIX", "NONLINEAR_SUFFIXES", "PARAMETERS", "FIGURE_GROUPS", "GZH_DEFAULT_COLUMNS",
    "normalise_types", "type_counts", "typed_sample", "per_type_medians", "etg_ltg_tests",
    "gini_m20_region", "comparison_columns", "completeness", "kept_rejected", "expert_agreement",
    "nonlinear_mask", "nonlinear_inputs", "g2_reliability", "g2_reliable_fractions", "gzh_classes",
    "gzh_agreement", "is_automatic",
]

NO_CONSENSUS = "NOCONS"
"""``morph_type`` of a galaxy on which K-means, BIRCH and ward disagree (no consensus
cluster, so no expert type).  Distinct from the experts' 'unclassified' type (UNC),
which is a type the experts gave to a consensus cluster."""

AUTO_PREFIX = "auto:"
"""Voter names starting with this are automatic voters (``skymorph inspect auto``)."""

NONLINEAR_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Inputs whose pixels are display-scaled (gamma, stretch, 8 bits) rather than flux."""

# (column, label) of the per-type parameters; r_e is filled in kpc when possible.
PARAMETERS = [
    ("sersic_n", "Sersic n"), ("r_e", "r_e"), ("gini", "Gini G"), ("m20", "M20"),
    ("concentration", "concentration C"), ("g2", "gradient asymmetry G2"), ("multimode", "multimode M"),
    ("intensity", "intensity I"), ("deviation", "deviation D"), ("psi", "multiplicity Psi"),
    ("asymmetry", "asymmetry A"), ("smoothness", "smoothness S"),
]
FIGURE_GROUPS = [  # as the paper's Figs. 8-11
    ("fig8", "Fig. 8: Sersic index and effective radius by type", ["sersic_n", "r_e"]),
    ("fig9", "Fig. 9: Gini and M20 by type", ["gini", "m20"]),
    ("fig10", "Fig. 10: concentration and gradient asymmetry G2 by type", ["concentration", "g2"]),
    ("fig11", "Fig. 11: MID statistics and multiplicity Psi by type",
     ["multimode", "intensity", "deviation", "psi"]),
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


def _finite(values: Any) -> np.ndarray:
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    return values[np.isfinite(values)]


# --- types ----------------------------------------------------------------------------------------


def normalise_types(morph_type: pd.Series) -> pd.Series:
    """Upper-case stripped types; a missing or empty type becomes :data:`NO_CONSENSUS`.

    Catalogs merged before the no-consensus value existed hold an empty string for
    the galaxies without a consensus cluster: they are no-consensus galaxies, never
    the experts' unclassified type.
    """
    types = morph_type.fillna("").astype(str).str.strip().str.upper()
    return types.where(types != "", NO_CONSENSUS)


def type_counts(table: pd.DataFrame, types: Sequence[str]) -> dict[str, Any]:
    """Galaxies per expert type, with the no-consensus galaxies counted apart.

    Returns
    -------
    dict
        ``counts`` (type -> galaxies: every one of ``types``, then any other value seen),
        ``n_no_consensus``, ``n_catalog`` and, when the catalog has it, ``n_kept``.
    """
    seen = table["morph_type"].value_counts()
    order = list(types)  # every type, a zero count included, so UNC always shows beside no consensus
    order += sorted(t for t in seen.index if t not in order and t != NO_CONSENSUS)
    out: dict[str, Any] = {"counts": {t: int(seen.get(t, 0)) for t in order},
                           "n_no_consensus": int(seen.get(NO_CONSENSUS, 0)), "n_catalog": int(len(table))}
    if "consensus" in table.columns:
        out["n_kept"] = int(table["consensus"].fillna(False).astype(bool).sum())
    return out


def typed_sample(table: pd.DataFrame, types: Sequence[str], unclassified: str | None, exclude_unc: bool,
                 mass_col: str | None, min_mass: float | None) -> tuple[pd.DataFrame, list[str]]:
    """Galaxies for the per-type statistics: an expert type, measured, massive enough.

    Parameters
    ----------
    table : DataFrame
        The assembled catalog (``morph_type`` normalised).
    types : sequence of str
        The experts' types (``inspect.types``).
    unclassified : str or None
        The experts' unclassified type (the last of ``types``), left out when
        ``exclude_unc``.
    mass_col : str or None
        log10 stellar-mass column; with ``min_mass`` (Msun), the cut M* > min_mass.

    Returns
    -------
    sample : DataFrame
    notes : list of str
    """
    notes: list[str] = []
    sample = table[table["morph_type"].isin(types)]
    if exclude_unc and unclassified is not None:
        sample = sample[sample["morph_type"] != unclassified]
    # no cut on measure_ok here: each measured value is blanked where its own family's flag says
    # it is invalid (skymorph.core.quality.valid_values), so a bad Sersic fit does not drop a
    # galaxy's valid Gini, nor a valid fit a bad Gini
    if mass_col is not None and min_mass is not None:
        before = len(sample)
        sample = sample[sample[mass_col] > math.log10(min_mass)]
        notes.append(f"per-type sample: M* > {min_mass:.3g} Msun keeps {len(sample)} of {before}")
    return sample, notes


def per_type_medians(sample: pd.DataFrame, types: Sequence[str]) -> dict[str, Any]:
    """Median of every parameter of :data:`PARAMETERS` per type (``None`` where no value).

    Returns
    -------
    dict
        ``n`` (type -> galaxies), ``medians`` (column -> type -> median), ``empty``
        (columns present but without any finite value, e.g. Sersic n after
        ``measure --no-sersic``).
    """
    present = [t for t in types if (sample["morph_type"] == t).any()]
    medians: dict[str, dict[str, Any]] = {}
    empty = []
    for col, _ in PARAMETERS:
        if col not in sample.columns:
            continue
        if _finite(sample[col]).size == 0:
            empty.append(col)
            continue
        medians[col] = {}
        for t in present:
            values = _finite(sample.loc[sample["morph_type"] == t, col])
            medians[col][t] = float(np.median(values)) if values.size else None
    return {"n": {t: int((sample["morph_type"] == t).sum()) for t in present}, "medians": medians,
            "empty": empty}


# --- ETG / LTG ------------------------------------------------------------------------------------


def gini_m20_region(gini: np.ndarray, m20: np.ndarray, line: tuple[float, float] = (0.14, 0.80),
                    merger: tuple[float, float] = (-0.14, 0.33)) -> np.ndarray:
    """Lotz et al. (2008) region of each galaxy on the Gini-M20 plane.

    ``merger`` when G > merger_slope * M20 + merger_intercept; otherwise ``E/S0/Sa``
    when G > slope * M20 + intercept (above the early/late line), else ``Sb-Ir``;
    ``""`` when G or M20 is missing.
    """
    gini = np.asarray(gini, dtype=float)
    m20 = np.asarray(m20, dtype=float)
    out = np.full(gini.shape, "", dtype=object)
    ok = np.isfinite(gini) & np.isfinite(m20)
    is_merger = ok & (gini > merger[0] * m20 + merger[1])
    early = ok & ~is_merger & (gini > line[0] * m20 + line[1])
    out[ok] = "Sb-Ir"
    out[early] = "E/S0/Sa"
    out[is_merger] = "merger"
    return out


def etg_ltg_tests(sample: pd.DataFrame, etg_types: Sequence[str], ltg_types: Sequence[str],
                  sersic_split: float, line: tuple[float, float], merger: tuple[float, float],
                  confidence: float) -> tuple[dict[str, Any], list[str]]:
    """The paper's ETG/LTG checks (Fig. 12) and the share of each class in the merger region.

    ``P(n >= split | ETG)`` and ``P(n < split | LTG)`` on Sersic n; ``P(above line |
    ETG)`` and ``P(below line | LTG)`` for the early/late line ``G = slope * M20 +
    intercept`` (as the paper, over the whole plane); and ``P(merger | ETG)``,
    ``P(merger | LTG)`` above the Lotz et al. (2008) merger line.  Each fraction
    carries its Wilson interval at ``confidence``.

    Returns
    -------
    result : dict
        ``tests`` (name -> fraction dict), ``sersic_split``, ``line``, ``merger_line``,
        ``etg_types``, ``ltg_types``, ``confidence``.
    notes : list of str
    """
    notes: list[str] = []
    etg = sample[sample["morph_type"].isin(etg_types)]
    ltg = sample[sample["morph_type"].isin(ltg_types)]
    if etg.empty or ltg.empty:
        notes.append(f"ETG ({'+'.join(etg_types)}): {len(etg)} galaxies, LTG ({'+'.join(ltg_types)}): "
                     f"{len(ltg)}; both are needed for a full test")
    tests: dict[str, Any] = {}
    if "sersic_n" in sample.columns and _finite(sample["sersic_n"]).size:
        n_e, n_l = _finite(etg["sersic_n"]), _finite(ltg["sersic_n"])
        tests["P(n >= split | ETG)"] = fraction_interval(int((n_e >= sersic_split).sum()), n_e.size,
                                                         confidence)
        tests["P(n < split | LTG)"] = fraction_interval(int((n_l < sersic_split).sum()), n_l.size,
                                                        confidence)
    else:
        notes.append("Sersic tests skipped: no Sersic fits (measure ran without them)")

    def regions(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
        g = pd.to_numeric(frame["gini"], errors="coerce").to_numpy(float)
        m = pd.to_numeric(frame["m20"], errors="coerce").to_numpy(float)
        ok = np.isfinite(g) & np.isfinite(m)
        above = g[ok] > line[0] * m[ok] + line[1]
        in_merger = g[ok] > merger[0] * m[ok] + merger[1]
        return above, in_merger, int(ok.sum())

    a_e, m_e, n_e_gm = regions(etg)
    a_l, m_l, n_l_gm = regions(ltg)
    tests["P(above line | ETG)"] = fraction_interval(int(a_e.sum()), n_e_gm, confidence)
    tests["P(below line | LTG)"] = fraction_interval(int((~a_l).sum()), n_l_gm, confidence)
    tests["P(merger region | ETG)"] = fraction_interval(int(m_e.sum()), n_e_gm, confidence)
    tests["P(merger region | LTG)"] = fraction_interval(int(m_l.sum()), n_l_gm, confidence)
    result = {"tests": tests, "sersic_split": sersic_split,
              "line": f"G = {line[0]:g} M20 + {line[1]:g}",
              "merger_line": f"G = {merger[0]:g} M20 + {merger[1]:g}",
              "etg_types": list(etg_types), "ltg_types": list(ltg_types), "confidence": confidence,
              "n_etg": int(len(etg)), "n_ltg": int(len(ltg))}
    return result, notes


# --- completeness and kept versus rejected --------------------------------------------------------


def comparison_columns(table: pd.DataFrame, cols: dict[str, str | None]) -> list[tuple[str, str]]:
    """(column, label) of the quantities binned for completeness and compared kept/rejected."""
    wanted = [(cols.get("mass"), "log M* (Msun)"), (cols.get("z"), "redshift"),
              (cols.get("mag"), "magnitude"),
              ("snr_pixel", "S/N per pixel"), ("sersic_n", "Sersic n"),
              ("r_e", f"r_e ({cols.get('r_e_unit', 'px')})"), ("gini", "Gini G"), ("m20", "M20")]
    out = []
    for col, label in wanted:
        if col is None or col not in table.columns:
            continue
        if _finite(table[col]).size >= 2:
            out.append((col, label))
    return out


def completeness(table: pd.DataFrame, kept: np.ndarray, columns: list[tuple[str, str]], n_bins: int,
                 confidence: float) -> dict[str, Any]:
    """Kept fraction overall and in quantile bins of each column, with Wilson intervals."""
    out: dict[str, Any] = {"overall": fraction_interval(int(kept.sum()), len(kept), confidence), "curves": {},
                           "labels": dict(columns), "confidence": confidence}
    for col, _ in columns:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        curve = binned_fraction(values, kept, n_bins, confidence)
        out["curves"][col] = {k: np.asarray(v).tolist() for k, v in curve.items()}
    return out


def kept_rejected(table: pd.DataFrame, kept: np.ndarray, columns: list[tuple[str, str]]) -> dict[str, Any]:
    """KS test, Cohen's d and Cliff's delta between kept and rejected galaxies, per column."""
    out = {}
    for col, _ in columns:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        a, b = values[kept], values[~kept]
        ks, p = ks_test(a, b)
        out[col] = {"n_kept": int(np.isfinite(a).sum()), "n_rejected": int(np.isfinite(b).sum()),
                    "ks_statistic": ks, "ks_pvalue": p, "cohens_d": cohens_d(a, b),
                    "cliffs_delta": cliffs_delta(a, b)}
    return out


# --- agreement between the experts ----------------------------------------------------------------


def is_automatic(expert: str) -> bool:
    """Whether a voter name marks an automatic voter (``auto:...``)."""
    return str(expert).strip().casefold().startswith(AUTO_PREFIX)


def expert_agreement(votes: pd.DataFrame, types: Sequence[str], confidence: float, seed: int = 0,
                     n_boot: int = 2000) -> dict[str, Any]:
    """Agreement between the experts who named the clusters.

    The rated units are the clusters, the raters the human experts; automatic
    voters (names starting ``auto:``) are listed but left out, since agreement with a
    labelled catalog is not agreement between people.  Fleiss' kappa is computed on
    the clusters every human expert rated (it needs the same raters per unit),
    Krippendorff's alpha on every cluster rated by at least two of them; the
    interval is a bootstrap over clusters at ``confidence``.

    Parameters
    ----------
    votes : DataFrame
        ``expert``, ``cluster``, ``type`` (one vote per expert and cluster).
    types : sequence of str
        The types the experts chose from (the count table's columns).

    Returns
    -------
    dict
        ``experts``, ``automatic``, ``n_clusters`` (rated by a human), ``n_complete``
        (rated by every human expert), ``kappa``, ``kappa_low``, ``kappa_high``,
        ``kappa_words``, ``alpha``, ``n_alpha`` (clusters in alpha), ``confidence``,
        ``per_cluster`` (cluster -> expert -> type), ``pairwise`` (percent agreement of
        each pair of experts on the clusters both rated).
    """
    votes = votes.assign(expert=votes["expert"].astype(str), type=votes["type"].astype(str).str.upper())
    auto = votes["expert"].map(is_automatic)
    human = votes[~auto]
    experts = sorted(set(human["expert"]), key=str.casefold)
    automatic = sorted(set(votes.loc[auto, "expert"]), key=str.casefold)
    levels = list(types) + sorted(set(human["type"]) - set(types))
    out: dict[str, Any] = {"experts": experts, "automatic": automatic,
                           "n_automatic_votes": int(auto.sum()), "n_votes": int(len(human)),
                           "n_clusters": int(human["cluster"].nunique()), "confidence": confidence,
                           "kappa": None, "kappa_low": None, "kappa_high": None, "kappa_words": "undefined",
                           "alpha": None, "n_alpha": 0, "n_complete": 0, "pairwise": {}}
    per_cluster = {int(c): dict(zip(g["expert"], g["type"], strict=True))
                   for c, g in votes.groupby("cluster")}
    out["per_cluster"] = per_cluster
    if len(experts) < 2 or human.empty:
        return out
    counts, clusters, _ = rating_counts(human["cluster"].to_numpy(), human["type"].to_numpy(), levels)
    per_unit = counts.sum(axis=1)
    complete = counts[per_unit == len(experts)]
    out["n_complete"] = int(len(complete))
    if len(complete):
        kappa = fleiss_kappa(complete)
        low, high = bootstrap_interval(fleiss_kappa, complete, confidence, n_boot, seed)
        out.update(kappa=kappa, kappa_low=low, kappa_high=high, kappa_words=agreement_words(kappa))
    out["alpha"] = krippendorff_alpha_nominal(counts)
    out["n_alpha"] = int((per_unit >= 2).sum())
    pairwise = {}
    table = human.pivot_table(index="cluster", columns="expert", values="type", aggfunc="last")
    for i, a in enumerate(experts):
        for b in experts[i + 1:]:
            both = table[[a, b]].dropna()
            pairwise[f"{a} / {b}"] = fraction_interval(int((both[a] == both[b]).sum()), len(both), confidence)
    out["pairwise"] = pairwise
    return out


# --- caveats --------------------------------------------------------------------------------------


def nonlinear_mask(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Which galaxies have display-scaled (JPEG/PNG) pixels rather than pixels linear in flux.

    Uses the ``linear`` column where the catalog or sources have it (false for
    JPEG/PNG inputs), else the suffix of ``origin``.

    Returns
    -------
    nonlinear, known : ndarray of bool
        Non-linear galaxies, and galaxies whose linearity is known.
    source : str
        ``linear column``, ``origin suffix`` or ``unknown``.
    """
    if "linear" in table.columns:
        flag = table["linear"]
        known = flag.notna().to_numpy()
        nonlinear = known & ~flag.fillna(True).astype(bool).to_numpy()
        return nonlinear, known, "linear column"
    if "origin" in table.columns:
        origin = table["origin"].fillna("").astype(str)
        known = (origin != "").to_numpy()
        path = origin.str.lower().str.replace(r"\[.*\]$", "", regex=True)  # 'file.fits[3]' names an HDU
        return known & path.str.endswith(NONLINEAR_SUFFIXES).to_numpy(), known, "origin suffix"
    none = np.zeros(len(table), dtype=bool)
    return none, none, "unknown"


def nonlinear_inputs(table: pd.DataFrame) -> dict[str, Any]:
    """How many galaxies have display-scaled (JPEG/PNG) pixels (see :func:`nonlinear_mask`).

    Returns
    -------
    dict
        ``n_nonlinear``, ``n`` (galaxies whose linearity is known), ``source`` and
        ``examples`` (a few origins).
    """
    nonlinear, known, source = nonlinear_mask(table)
    # distinct files: a multi-image file would otherwise fill the examples with one name
    examples = (list(dict.fromkeys(table.loc[nonlinear, "origin"].astype(str)))[:3]
                if "origin" in table.columns else [])
    return {"n_nonlinear": int(nonlinear.sum()), "n": int(known.sum()), "source": source,
            "examples": examples}


def g2_reliability(sample: pd.DataFrame, noise_tolerance: float | None, saturated_g2: float = 1.8,
                   saturated_share: float = 0.8) -> dict[str, Any] | None:
    """Whether G2 separates types at this run's S/N, or is saturated by noise.

    Under Rosa et al.'s definition (``measure.g2_noise_tolerance = 0``) noise breaks
    the symmetric gradient pairs of faint stamps, so G2 tends to ~1.9 for every type.
    G2 is called unreliable when at least ``saturated_share`` of the measured
    galaxies have G2 above ``saturated_g2`` (the paper's IRR median is 1.81, its SPH
    median 0.47).

    Returns
    -------
    dict or None
        ``reliable``, ``share_saturated``, ``median_g2``, ``median_sn`` (statmorph's
        S/N per pixel), ``noise_tolerance``, ``n``, ``reason``; None without G2.
    """
    if "g2" not in sample.columns:
        return None
    g2 = pd.to_numeric(sample["g2"], errors="coerce").to_numpy(float)
    ok = np.isfinite(g2)
    if not ok.any():
        return None
    share = float(np.mean(g2[ok] > saturated_g2))
    sn = _finite(sample["sn_per_pixel"]) if "sn_per_pixel" in sample.columns else np.array([])
    median_sn = float(np.median(sn)) if sn.size else None
    reliable = share < saturated_share
    definition = ("the paper's definition (g2_noise_tolerance = 0)" if not noise_tolerance
                  else f"noise-tolerant pairs (g2_noise_tolerance = {noise_tolerance:g} sigma)")
    sn_text = f" at a median S/N per pixel of {median_sn:.2g}" if median_sn is not None else ""
    if reliable:
        reason = (f"{share:.0%} of the measured galaxies have G2 > {saturated_g2:g}{sn_text} with "
                  f"{definition}: G2 still spans the range that separates types")
    else:
        reason = (f"{share:.0%} of the measured galaxies have G2 > {saturated_g2:g}{sn_text} with "
                  f"{definition}: G2 is saturated near 2 for every type and does not measure morphology "
                  "here")
    return {"reliable": bool(reliable), "share_saturated": share, "median_g2": float(np.median(g2[ok])),
            "median_sn": median_sn, "noise_tolerance": noise_tolerance, "n": int(ok.sum()),
            "threshold": saturated_g2, "reason": reason}


def g2_reliable_fractions(sample: pd.DataFrame, types: Sequence[str], min_sn: float) -> dict[str, Any] | None:
    """How many galaxies of each type have a reliable G2 (the per-galaxy ``g2_reliable`` flag).

    Parameters
    ----------
    sample : DataFrame
        The typed sample with its raw values (``morph_type``, ``g2`` and ``g2_reliable``,
        or ``sn_per_pixel`` and statmorph's flags to derive it).
    types : sequence of str
        The types to report.
    min_sn : float
        ``measure.g2_min_sn`` (for the words, and to derive a missing flag).

    Returns
    -------
    dict or None
        ``n`` (galaxies with a G2 value), ``n_reliable``, ``fraction``, ``by_type`` (type ->
        ``k``, ``n``, ``fraction``), ``min_sn`` and ``text`` (the report's sentence); None
        without G2.
    """
    from .quality import validity

    if "g2" not in sample.columns:
        return None
    has = np.isfinite(pd.to_numeric(sample["g2"], errors="coerce").to_numpy(float))
    if not has.any():
        return None
    if "g2_reliable" in sample.columns:
        reliable = sample["g2_reliable"].astype(object).where(sample["g2_reliable"].notna(), False)
        reliable = reliable.astype(bool).to_numpy()
    else:
        reliable = validity(sample, g2_min_sn=min_sn)["g2_reliable"].to_numpy()
    reliable = reliable & has
    mtype = sample["morph_type"].to_numpy()
    by_type = {}
    for t in types:
        sel = (mtype == t) & has
        k, n = int(reliable[sel].sum()), int(sel.sum())
        by_type[t] = {"k": k, "n": n, "fraction": k / n if n else None}
    n, k = int(has.sum()), int(reliable.sum())
    per_type = ", ".join(f"{t} {v['k']}/{v['n']}" for t, v in by_type.items() if v["n"])
    text = (f"G2 is reliable (g2_reliable: S/N per pixel >= {min_sn:g}) for {k} of {n} galaxies "
            f"({k / n:.0%}; per type {per_type}). The G2 medians and the G2 panel use only these "
            "reliable galaxies, so types are compared at S/N >= the threshold, not matched in S/N.")
    if k == 0:
        text = (f"G2 is not reliable for any of the {n} galaxies (S/N per pixel below {min_sn:g}): "
                "G2 is not compared between types.")
    return {"n": n, "n_reliable": k, "fraction": k / n, "by_type": by_type, "min_sn": min_sn, "text": text}


# --- Galaxy Zoo: Hubble ---------------------------------------------------------------------------


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
    KeyError
        If a needed column is missing (the message names the roles).
    """
    names = {**GZH_DEFAULT_COLUMNS, **(columns or {})}
    missing = [f"{role} ({col})" for role, col in names.items() if col not in table.columns]
    if missing:
        raise KeyError("the Galaxy Zoo: Hubble table lacks " + ", ".join(missing)
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


def gzh_agreement(table: pd.DataFrame, gz: pd.DataFrame, confidence: float
                  ) -> tuple[dict[str, Any], list[str]]:
    """Agreement of our types with GZH classes (SPH = SPH, ETD/LTD = DISK, IRR = IRR).

    Parameters
    ----------
    table : DataFrame
        ``id`` and ``morph_type``.
    gz : DataFrame
        ``id`` and ``gzh_class`` (:func:`gzh_classes`).
    """
    merged = table[["id", "morph_type"]].merge(gz.drop_duplicates("id"), on="id", how="inner")
    ours = merged["morph_type"].map({"SPH": "SPH", "ETD": "DISK", "LTD": "DISK", "IRR": "IRR"})
    both = ours.notna() & (merged["gzh_class"] != "")
    agree = int((ours[both] == merged.loc[both, "gzh_class"]).sum())
    confusion = pd.crosstab(merged.loc[both, "morph_type"], merged.loc[both, "gzh_class"])
    notes = [f"{len(merged)} galaxies matched the GZH table; {int(both.sum())} have a GZH class "
             "and one of our SPH/ETD/LTD/IRR types"]
    out = {"n_matched": int(len(merged)), "n_compared": int(both.sum()),
           "agreement": fraction_interval(agree, int(both.sum()), confidence),
           "confusion": {str(r): {str(c): int(v) for c, v in row.items()} for r, row in confusion.iterrows()},
           "gzh_counts": {str(k): int(v)
                          for k, v in gz["gzh_class"].replace("", "none").value_counts().items()}}
    return out, notes
