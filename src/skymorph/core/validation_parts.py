"""The validation report's parts as numbers and notes: what each section says.

The validate stage (:mod:`skymorph.stages.validate`) reads the run (votes, arrays,
``extend.json``, the stage records), calls these functions for each part's result
dictionary and notes, and hands them with the figures of :mod:`skymorph.report.figures`
to the page.  Plain tables and dictionaries in: no run directory, no figures.  The
statistics themselves are in :mod:`skymorph.core.validation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import validation as V
from .quality import exclusions
from .validation import GZH_DEFAULT_COLUMNS, NO_CONSENSUS
from .validation_table import ValidateError, id_text

__all__ = [
    "TYPE_WORDS", "G2_CAVEAT", "ASYMMETRY_CAVEAT", "type_labels", "exclusion_note", "gzh_classes",
    "agreement_part", "stamp_picks", "per_type_part", "etg_ltg_part", "completeness_part",
    "kept_rejected_part", "map_order", "two_d_maps", "gzh_part", "extended_part", "evaluation_part",
    "special_part",
]

TYPE_WORDS = {"SPH": "spheroid", "ETD": "early-type disk", "LTD": "late-type disk", "IRR": "irregular",
              "UNC": "unclassified by the experts", NO_CONSENSUS: "no consensus",
              "OOD": "outside the training distribution (seen by no expert)"}
"""The paper's types, no consensus and OOD in words; other types are shown as they are."""

G2_CAVEAT = ("Noise breaks the symmetric gradient pairs that G2 counts, so on faint stamps G2 is close to "
             "1.9 for every type under the paper's definition: compare types on G2 only where the stamps' "
             "S/N is high, or measure with noise-tolerant pairs (e.g. "
             "--set measure.g2_noise_tolerance=2.45).")

ASYMMETRY_CAVEAT = ("The asymmetry A is background-corrected (the sky's asymmetry is subtracted), so it can "
                    "be negative for faint, smooth galaxies; a negative A means 'as symmetric as the noise "
                    "allows', not an error.")


def type_labels(types: Sequence[str]) -> dict[str, str]:
    """Type -> words for ``types``, no consensus and OOD (:data:`TYPE_WORDS`)."""
    return {t: TYPE_WORDS.get(t, t) for t in [*types, NO_CONSENSUS, "OOD"]}


def exclusion_note(excluded: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """One sentence on what each column's validity flag left out ('' when nothing was)."""
    by_reason: dict[tuple[str, int, int], list[str]] = {}
    for col, ex in excluded.items():
        if ex["n_excluded"]:
            key = (ex["reason"], ex["n_excluded"], ex["n_raw"])
            by_reason.setdefault(key, []).append(labels.get(col, col))
    if not by_reason:
        return ""
    parts = [f"{', '.join(names)}: {k} of {n} galaxies left out ({reason})"
             for (reason, k, n), names in by_reason.items()]
    return "Excluded: " + "; ".join(parts) + "."


def gzh_classes(table: pd.DataFrame, columns: dict[str, str] | None = None) -> pd.Series:
    """Galaxy Zoo: Hubble vote fractions -> SPH / DISK / IRR ('' when none applies).

    See :func:`skymorph.core.validation.gzh_classes` for the thresholds.

    Raises
    ------
    ValidateError
        If a needed column is missing.
    """
    try:
        return V.gzh_classes(table, columns)
    except KeyError as exc:
        raise ValidateError(exc.args[0]) from None


# --- the parts ------------------------------------------------------------------------------------


def agreement_part(votes: pd.DataFrame, *, clustering: str, types: Sequence[str], confidence: float,
                   seed: int) -> tuple[dict[str, Any], list[str]]:
    """Agreement between the experts on the votes cast on the current clustering.

    Parameters
    ----------
    votes : DataFrame
        The votes (``read_votes``), with the ``clustering`` fingerprint each was cast on.
    clustering : str
        The current clustering's fingerprint; votes on another one are left out.
    types, confidence, seed
        As :func:`skymorph.core.validation.expert_agreement`.

    Returns
    -------
    result : dict
    notes : list of str
    """
    notes: list[str] = []
    stale = (votes["clustering"] != "") & (votes["clustering"] != clustering)
    if stale.any():
        notes.append(f"{int(stale.sum())} vote(s) cast on an older clustering are left out")
    result = V.expert_agreement(votes[~stale], types, confidence, seed)
    if not result["experts"]:
        notes.append("no human expert has voted: agreement cannot be measured")
    return result, notes


def stamp_picks(morph_type: np.ndarray, rows: np.ndarray, *, types: Sequence[str], per_type: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Which galaxies the report shows as example stamps of each type.

    Parameters
    ----------
    morph_type : ndarray
        Each galaxy's type.
    rows : ndarray of int
        Each galaxy's row of the stamps array (-1: none).
    types : sequence of str
        The types to draw, in order (``rng`` is drawn from in this order).
    per_type : int
        Stamps per type at most.
    rng : Generator

    Returns
    -------
    dict
        type -> positions of the drawn galaxies, in increasing array row (the order
        in which zarr reads them); types without a galaxy are left out.
    """
    picks: dict[str, np.ndarray] = {}
    for t in types:
        members = np.flatnonzero((morph_type == t) & (rows >= 0))
        if members.size == 0:
            continue
        pick = np.sort(rng.choice(members, min(per_type, members.size), replace=False))
        picks[t] = pick[np.argsort(rows[pick])]
    return picks


def per_type_part(sample: pd.DataFrame, raw: pd.DataFrame, *, types: Sequence[str], r_e_unit: str,
                  g2_min_sn: float, g2_noise_tolerance: float | None
                  ) -> tuple[dict[str, Any], list[str], list[tuple[str, str, list[tuple[str, str]], str]]]:
    """Per-type medians of the measured parameters (Figs. 8-11).

    Parameters
    ----------
    sample : DataFrame
        The typed sample (:func:`skymorph.core.validation.typed_sample`), invalid values blanked.
    raw : DataFrame
        The same rows with the raw values (what the validity flags left out; G2 at the run's S/N).
    types : sequence of str
        The experts' types.
    r_e_unit : str
        ``kpc`` or ``px``.
    g2_min_sn, g2_noise_tolerance : float
        ``measure.g2_min_sn`` and ``measure.g2_noise_tolerance``.

    Returns
    -------
    result : dict
    notes : list of str
    figures : list of tuple
        ``(key, title, columns, note)`` of each raincloud figure, ``columns`` as
        (column, label) pairs.
    """
    notes: list[str] = []
    result = V.per_type_medians(sample, types)
    labels = dict(V.PARAMETERS)
    labels["r_e"] = f"r_e ({r_e_unit})"
    result["labels"] = labels
    result["r_e_unit"] = r_e_unit
    excluded = exclusions(raw, [c for c, _ in V.PARAMETERS])
    result["excluded"] = excluded
    g2 = V.g2_reliable_fractions(raw, list(result["n"]), g2_min_sn)
    if g2 is not None:  # on the raw values: whether noise saturates G2 at all at this S/N
        g2["saturation"] = V.g2_reliability(raw, g2_noise_tolerance)
    result["g2"] = g2
    result["asymmetry_caveat"] = ASYMMETRY_CAVEAT if "asymmetry" in result["medians"] else ""
    note = exclusion_note(excluded, labels)
    if note:
        notes.append("Medians and Figs. 8-11 use only valid values. " + note)
    for col in result["empty"]:
        if excluded.get(col, {}).get("n_raw"):
            notes.append(f"{labels.get(col, col)}: no valid value ({excluded[col]['reason']})")
            continue
        notes.append(f"{labels.get(col, col)}: no value measured"
                     + (" (measure ran with --no-sersic)" if col in ("sersic_n", "r_e") else ""))
    figures = []
    for key, title, group in V.FIGURE_GROUPS:
        columns = [(c, labels[c]) for c in group if c in result["medians"]]
        if not columns:
            continue
        note = exclusion_note({c: excluded[c] for c in group if c in excluded}, labels)
        if "g2" in group and g2 is not None:
            note = f"{g2['text']} {note}".strip()
            saturation = g2.get("saturation")
            if saturation is not None and not saturation["reliable"]:
                note += f" {saturation['reason']}. {G2_CAVEAT}"
        figures.append((key, title, columns, note))
    return result, notes, figures


def etg_ltg_part(sample: pd.DataFrame, raw: pd.DataFrame, *, etg_types: Sequence[str],
                 ltg_types: Sequence[str], sersic_split: float, line: tuple[float, float],
                 merger: tuple[float, float], confidence: float) -> tuple[dict[str, Any], list[str]]:
    """ETG / LTG tests on Sersic n and the Gini-M20 plane (Fig. 12).

    Parameters
    ----------
    sample, raw : DataFrame
        The typed sample and its raw values, as :func:`per_type_part`.
    etg_types, ltg_types, sersic_split, line, merger, confidence
        As :func:`skymorph.core.validation.etg_ltg_tests`.

    Returns
    -------
    result : dict
        The tests, with ``excluded`` (what the validity flags left out).
    notes : list of str
    """
    result, notes = V.etg_ltg_tests(sample, etg_types, ltg_types, sersic_split, line, merger, confidence)
    etg_ltg = sample[sample["morph_type"].isin([*etg_types, *ltg_types])]
    result["excluded"] = exclusions(raw.loc[etg_ltg.index], ["sersic_n", "gini", "m20"])
    note = exclusion_note(result["excluded"], dict(V.PARAMETERS))
    if note:
        notes.append("The tests and Fig. 12 use only valid values. " + note)
    return result, notes


def completeness_part(table: pd.DataFrame, raw: pd.DataFrame, kept: np.ndarray, cols: dict[str, Any], *,
                      n_bins: int, confidence: float) -> tuple[dict[str, Any] | None, list[str]]:
    """Completeness of the kept (consensus) sample in bins of each quantity (Fig. 13).

    Parameters
    ----------
    table, raw : DataFrame
        The assembled catalog, invalid values blanked, and its raw values.
    kept : ndarray of bool
        Which galaxies the consensus kept.
    cols : dict
        The mass, redshift and magnitude columns (``physical_columns``).
    n_bins, confidence
        As :func:`skymorph.core.validation.completeness`.

    Returns
    -------
    result : dict or None
        None when no column can be binned.
    notes : list of str
    """
    columns = V.comparison_columns(table, cols)
    if not columns:
        return None, ["skipped: no usable column to bin"]
    notes = [f"missing: {label}" for col, label in
             [(cols["mass"], "stellar mass (give --physical)"), (cols["z"], "redshift")] if col is None]
    result = V.completeness(table, kept, columns, n_bins, confidence)
    result["excluded"] = exclusions(raw, [c for c, _ in columns])
    note = exclusion_note(result["excluded"], dict(columns))
    if note:
        notes.append("The curves of measured quantities use only valid values. " + note)
    return result, notes


def kept_rejected_part(table: pd.DataFrame, raw: pd.DataFrame, kept: np.ndarray, cols: dict[str, Any]
                       ) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
    """Kept versus rejected galaxies: KS test, Cohen's d and Cliff's delta per quantity (Fig. 14).

    Parameters
    ----------
    table, raw, kept, cols
        As :func:`completeness_part`.

    Returns
    -------
    result : dict
        ``tests``, ``labels`` and ``excluded``.
    notes : list of str
    columns : list of (column, label)
        The quantities compared, for the figure.
    """
    notes = []
    columns = V.comparison_columns(table, cols)
    tests = V.kept_rejected(table, kept, columns)
    excluded = exclusions(raw, [c for c, _ in columns])
    note = exclusion_note(excluded, dict(columns))
    if note:
        notes.append("The statistics and Fig. 14 use only valid values. " + note)
    return {"tests": tests, "labels": dict(columns), "excluded": excluded}, notes, columns


def map_order(rows: np.ndarray, *, max_points: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Which galaxies the UMAP and t-SNE maps show, in increasing array row.

    Parameters
    ----------
    rows : ndarray of int
        Each galaxy's array row (-1: none); at least one is not -1.
    max_points : int
        At most this many galaxies, drawn at random from those with a row.
    rng : Generator

    Returns
    -------
    positions : ndarray of int
        Positions in the table, ordered by array row (the order in which zarr reads them).
    notes : list of str
    """
    notes = []
    good = rows >= 0
    idx = np.flatnonzero(good)
    if idx.size > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
        notes.append(f"maps drawn for {max_points} random galaxies of {int(good.sum())}")
    return idx[np.argsort(rows[idx])], notes


def two_d_maps(data: np.ndarray | None, *, source: str | None, seed: int,
               umap: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """UMAP and t-SNE maps of the galaxies (Figs. 5f, 7).

    Parameters
    ----------
    data : ndarray, optional
        The galaxies' embedding or features (``source`` names which); without it,
        only ``umap`` is shown.
    source : str, optional
        The array ``data`` comes from, for the notes.
    seed : int
        Random state of UMAP and t-SNE.
    umap : ndarray, optional
        The reduce stage's 2-d embedding; computed from ``data`` when missing.

    Returns
    -------
    maps : dict
        ``UMAP`` and ``t-SNE`` -> (n, 2) coordinates, those that could be made.
    notes : list of str
    """
    maps: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if umap is not None:
        maps["UMAP"] = umap
        notes.append("UMAP map: the reduce stage's embedding_2d")
    elif data is not None:
        import warnings

        with warnings.catch_warnings():
            # umap warns about its optional TensorFlow part and about seeding disabling threads
            warnings.simplefilter("ignore")
            import umap as umap_learn

            n_neighbors = max(2, min(15, len(data) - 1))
            maps["UMAP"] = umap_learn.UMAP(n_components=2, n_neighbors=n_neighbors,
                                           random_state=seed).fit_transform(data)
        notes.append(f"UMAP map computed here from '{source}' (n_neighbors={n_neighbors})")
    if data is not None and len(data) > 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(data) - 1) / 3.0))
        maps["t-SNE"] = TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                             init="pca").fit_transform(data)
        notes.append(f"t-SNE map from '{source}' (perplexity {perplexity:.0f})")
    else:
        notes.append("t-SNE skipped: needs the embedding or features array")
    return maps, notes


def gzh_part(table: pd.DataFrame, frame: pd.DataFrame, *, id_col: str | None, columns: Sequence[str],
             confidence: float) -> tuple[dict[str, Any], list[str]]:
    """Agreement of the types with Galaxy Zoo: Hubble.

    Parameters
    ----------
    table : DataFrame
        The assembled catalog.
    frame : DataFrame
        The Galaxy Zoo: Hubble table of vote fractions.
    id_col : str, optional
        Its id column; by default ``id``, ``OBJNO`` or ``objid``.
    columns : sequence of str
        ``ROLE=COLUMN`` entries naming the vote-fraction columns that differ from
        :data:`~skymorph.core.validation.GZH_DEFAULT_COLUMNS`.
    confidence : float

    Returns
    -------
    result : dict
    notes : list of str

    Raises
    ------
    ValidateError
        If the table has no such id column, an entry is not ``ROLE=COLUMN``, or a
        vote-fraction column is missing.
    """
    key = id_col or next((c for c in ("id", "OBJNO", "objid") if c in frame.columns), None)
    if key is None or key not in frame.columns:
        raise ValidateError(f"the Galaxy Zoo table has no id column {key or 'id'!r}; name it with "
                            "--gzh-id-col")
    mapping = {}
    for entry in columns:
        role, sep, col = entry.partition("=")
        if not sep or role not in GZH_DEFAULT_COLUMNS:
            raise ValidateError(f"--gzh-column expects ROLE=COLUMN with ROLE one of "
                                f"{', '.join(GZH_DEFAULT_COLUMNS)}; got {entry!r}")
        mapping[role] = col
    gz = pd.DataFrame({"id": frame[key].map(id_text), "gzh_class": gzh_classes(frame, mapping)})
    result, notes = V.gzh_agreement(table, gz, confidence)
    result["gzh_columns"] = sorted({c for row in result["confusion"].values() for c in row})
    return result, notes


def extended_part(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the extension beyond the consensus, from ``extend/extend.json``.

    Parameters
    ----------
    report : dict
        The extend stage's report.

    Returns
    -------
    dict
        Counts, cross-validated scores, confusion matrix and settings (without ``evaluation``).
    """
    from .extend import agreement_name

    cv = report["cv"]
    result = {key: report[key] for key in ("n_galaxies", "n_experts", "n_train", "n_extended",
                                           "n_extended_confident", "n_extended_ood", "counts")}
    result.update(cv_accuracy=cv["accuracy"], cv_balanced_accuracy=cv["balanced_accuracy"],
                  ece=cv["ece"], classes=report["classes"], confusion=cv.get("confusion_matrix"),
                  physical=report.get("physical"),
                  threshold=report["settings"]["confidence_threshold"],
                  cv_measures=report.get("cv_measures")
                  or agreement_name(report["settings"].get("cv_folds", 5)),
                  ood_final=report["settings"].get("ood_final", "fallback"))
    return result


def evaluation_part(evaluation: dict[str, Any] | None, *, extend_fingerprint: str,
                    run_path: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The morphology accuracy of the final types against known labels (``skymorph evaluate``).

    Parameters
    ----------
    evaluation : dict, optional
        ``evaluation/evaluation.json``; None when ``evaluate`` has not run.
    extend_fingerprint : str
        The current extension's fingerprint: an evaluation of another one is not shown.
    run_path : str
        The run directory, for the command in the notes.

    Returns
    -------
    result : dict or None
        ``truth`` (file name), ``label_col`` and ``rows`` (kept, extended, all); None
        when there is no evaluation of this extension.
    notes : list of str
    """
    if evaluation is None:
        return None, [f"morphology accuracy against known labels: run `skymorph evaluate {run_path} --truth "
                      "LABELS ...` to add it here"]
    final = evaluation.get("final_types")
    if not final:
        return None, ["evaluate ran before extend: re-run it for the accuracy of the extended types"]
    if evaluation.get("extend_fingerprint") != extend_fingerprint:
        return None, ["the evaluation in evaluation/evaluation.json was made on another extension: re-run "
                      "`skymorph evaluate` for figures of this one"]
    rows = {key: final[key] for key in ("kept", "extended", "all") if key in final}
    truth = Path(str(evaluation.get("truth", ""))).name
    return {"truth": truth, "label_col": evaluation.get("label_col", ""), "rows": rows}, []


def special_part(table: pd.DataFrame, *, anomaly: dict[str, Any] | None,
                 run_path: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Subclasses (``skymorph subdivide``), their special types and the most unusual galaxies.

    Parameters
    ----------
    table : DataFrame
        The assembled catalog.
    anomaly : dict, optional
        The anomaly stage's record (``method``, ``input``), read when ``anomaly_score`` exists.
    run_path : str
        The run directory, for the commands in the notes.

    Returns
    -------
    result : dict or None
        ``subclasses``, ``special_counts`` and ``anomaly`` (the ten highest scores), those
        present; None when neither is.
    notes : list of str
    """
    result: dict[str, Any] = {}
    notes: list[str] = []
    if "subcluster" in table.columns and (table["subcluster"].fillna("").astype(str) != "").any():
        sub = table["subcluster"].fillna("").astype(str)
        special = (table["special_type"].fillna("").astype(str) if "special_type" in table.columns
                   else pd.Series("", index=table.index))
        result["subclasses"] = [{"subcluster": name, "n": int((sub == name).sum()),
                                 "special_type": special[sub == name].iloc[0]}
                                for name in sorted(set(sub) - {""})]
        result["special_counts"] = {str(k): int(v) for k, v in special[special != ""].value_counts().items()}
    else:
        notes.append(f"no subclasses: `skymorph subdivide {run_path} --cluster C` has not run")
    if "anomaly_score" in table.columns:
        score = pd.to_numeric(table["anomaly_score"], errors="coerce")
        order = score.fillna(-np.inf).to_numpy().argsort()[::-1][:10]
        mtype = table["morph_type"].fillna("").astype(str).to_numpy() if "morph_type" in table else None
        info = anomaly or {}
        result["anomaly"] = {"method": info.get("method", ""), "input": info.get("input", ""),
                             "n_scored": int(score.notna().sum()),
                             "top": [{"id": str(table["id"].iloc[i]), "score": float(score.iloc[i]),
                                      "type": "" if mtype is None else mtype[i]} for i in order]}
    else:
        notes.append(f"no anomaly_score: `skymorph anomaly {run_path}` has not run")
    return result or None, notes
