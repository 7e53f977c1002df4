"""Extend: every galaxy gets a type, from a classifier trained on the expert-typed clusters.

The consensus vote keeps 50-80% of the galaxies, and the experts type only those
(``inspect merge`` -> ``morph_type``).  This stage trains a calibrated classifier on the
kept, expert-typed galaxies and applies it to every galaxy
(:func:`skymorph.core.extend.extend_labels`; the measured choice of input and model is
documented there).  The experts' ``morph_type`` is never changed.

Catalog columns added (one row per galaxy):

``p_<TYPE>``
    Probability of each of ``inspect.types`` (0 for a type the classifier did not learn).
``morph_type_ml`` / ``ml_probability``
    The classifier's type and its probability (for every galaxy, the training ones too).
    ``ml_probability`` is not a ``p_*`` column: the ``p_<TYPE>`` columns alone sum to 1.
``ml_confident``
    ``ml_probability >= extend.confidence_threshold`` and not out of distribution.
``ml_ood``
    The galaxy is farther from every training galaxy than ``extend.ood_quantile`` of the
    training galaxies are from their neighbours (a blank stamp, a star, an artefact).
``ml_nonfinite``
    The galaxy's input (features or embedding) holds NaN/inf (e.g. a lost chunk): it gets
    no type (``morph_type_ml`` empty, ``p_<TYPE>`` NaN), is flagged ``ml_ood``, never
    trains the classifier, and its ``morph_type_final`` is the last of ``inspect.types``
    (UNC) with ``type_source = "ood"`` unless the experts typed it; extend.json counts them.
``morph_type_final`` / ``type_source``
    The experts' type (``experts``) where the vote kept the galaxy and the experts typed
    its cluster; else the classifier's (``extended``).  An extended galaxy out of the
    training distribution has ``type_source = ood`` and, by ``extend.ood_final``, the
    value ``OOD`` (default: no expert saw it, so not the experts' UNC), the last of
    ``inspect.types`` (``fallback``) or its predicted type (``predicted``); its
    probabilities are extrapolation, so ``ml_confident`` is false.
    A galaxy an expert typed on its own (``skymorph inspect refine``,
    ``inspection/galaxy_votes.csv``) carries that type (``taught``); the classifier learns
    from those galaxies too, each weighing ``extend.taught_weight`` cluster-typed ones.

Files: ``RUN_DIR/extend/extend.json`` (agreement with the expert-named clusters under
k-fold cross-validation - not morphology accuracy, which ``evaluate`` measures against
known labels -, confusion matrix, ECE,
reliability bins, settings, counts), ``extend/reliability.png`` and, where
``measurements.parquet`` exists, ``extend/physical.csv`` (median Sersic n, Gini, M20 and
concentration per type, expert-typed vs extended galaxies).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from .._text import text_table
from ..config import Config
from ..core.extend import agreement_name
from ..errors import SkymorphError
from ..io.csvfile import write_csv
from ..io.rundir import RunDir, RunDirError
from . import Stage, StageContext, execute

__all__ = ["extend", "ExtendStageError", "physical_comparison", "reliability_plot"]

log = logging.getLogger(__name__)

PHYSICAL = {"sersic_n": "n", "gini": "G", "m20": "M20", "concentration": "C"}

OOD = "OOD"
"""``morph_type_final`` of an extended galaxy outside the training distribution (``ood_final =
"ood"``): no expert saw it, so it is not the experts' unclassified type."""

LEGACY_COLUMNS = ("p_morph_type_ml",)
"""Columns an older skymorph wrote that the extension replaces (``ml_probability``)."""


class ExtendStageError(SkymorphError, ValueError):
    """The run cannot be extended (no expert types yet, arrays that do not match the catalog)."""


def _catalog_digest(catalog: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for col in ("id", "cluster", "consensus", "morph_type"):
        digest.update(catalog[col].astype(str).str.cat(sep="\n").encode() if col in catalog else b"-")
    return digest.hexdigest()[:16]


def _training_mask(catalog: pd.DataFrame, types: list[str],
                   exclude: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(expert-typed kept galaxies, the subset the classifier learns from)."""
    from ..inspection import consensus_labels

    kept = consensus_labels(catalog) >= 0
    mtype = catalog["morph_type"].fillna("").astype(str).to_numpy()
    typed = kept & np.isin(mtype, types)
    learn = typed & ~np.isin(mtype, exclude)
    return typed, learn


def _taught_training(run: RunDir, config: Config, catalog: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(cluster-typed galaxies, the galaxies learnt from, taught types, their types, sample weights):
    the named clusters' galaxies (unless ``extend.cluster_labels`` is off) and the galaxies the
    experts typed one by one (``inspect refine``), weighted by ``extend.taught_weight``."""
    from ..inspection.refine import training_labels

    labels = training_labels(run, config, catalog)
    typed = labels["cluster"] != ""
    if "morph_type" in catalog.columns and config.extend.cluster_labels:
        typed = _training_mask(catalog, list(config.inspect.types), list(config.extend.exclude_types))[0]
    if config.extend.kept_types == "classifier":  # the cluster names train the classifier, it decides
        typed = np.zeros(len(catalog), bool)
    return typed, labels["learn"], labels["taught"], labels["y"], labels["weight"]


def _input_stage(config: Config) -> str:
    return "encode" if config.extend.input == "features" else "reduce"


def _extra(ctx: StageContext) -> dict[str, Any]:
    from ..inspection.refine import GalaxyVoteStore

    catalog = ctx.run.catalog()
    taught = GalaxyVoteStore.of(ctx.run).digest()
    if "morph_type" not in catalog.columns and (taught == "-" or ctx.config.extend.cluster_labels):
        raise ExtendStageError(f"the catalog of {ctx.run.path} has no morph_type; name the clusters first "
                               f"(`skymorph inspect serve/merge {ctx.run.path}` or `skymorph inspect auto`)")
    ctx.state["catalog"] = catalog
    return {"catalog": _catalog_digest(catalog), "types": list(ctx.config.inspect.types), "taught": taught}


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.extend import ExtendError, extend_labels

    run, config, catalog = ctx.run, ctx.config, ctx.state["catalog"]
    cfg = config.extend
    types = list(config.inspect.types)
    fallback = types[-1]
    typed, learn, taught, y_learn, weight = _taught_training(run, config, catalog)
    if not learn.any():
        raise ExtendStageError(
            f"no consensus galaxy of {run.path} has an expert type among {', '.join(types)}; run "
            f"`skymorph inspect merge {run.path}` (or `skymorph inspect auto`) first")
    try:
        x = np.asarray(run.open_array(cfg.input)[:], dtype=np.float32)
    except RunDirError:
        stage = "encode" if cfg.input == "features" else "reduce"
        raise ExtendStageError(f"{run.path} has no '{cfg.input}' array; run `skymorph {stage} {run.path}` "
                               "first, or set extend.input") from None
    if x.shape[0] != len(catalog):
        raise ExtendStageError(f"the '{cfg.input}' array has {x.shape[0]} rows but the catalog "
                               f"{len(catalog)}; re-run the pipeline stages")
    mtype = catalog["morph_type"].fillna("").astype(str).to_numpy() if "morph_type" in catalog else y_learn
    try:
        result = extend_labels(
            x, learn, y_learn, sample_weight=weight, model=cfg.model, c=cfg.c, class_weight=cfg.class_weight,
            calibration=cfg.calibration, cv_folds=cfg.cv_folds,
            confidence_threshold=cfg.confidence_threshold, ood_neighbors=cfg.ood_neighbors,
            ood_quantile=cfg.ood_quantile, ood_dims=cfg.ood_dims, ood_reference=cfg.ood_reference,
            max_iter=cfg.max_iter, seed=cfg.seed)
    except ExtendError as exc:
        raise ExtendStageError(str(exc)) from None

    n = len(catalog)
    columns: dict[str, Any] = {"id": catalog["id"]}
    nonfinite = result.nonfinite
    for t in types:
        columns[f"p_{t}"] = np.where(nonfinite, np.nan,
                                     result.proba[:, result.classes.index(t)].astype(np.float64)
                                     if t in result.classes else np.zeros(n))
    predicted = result.predicted.astype(str)
    final = np.where(typed, mtype, predicted).astype(object)
    ood = ~typed & (result.ood | nonfinite) & (taught == "")
    if cfg.ood_final == "ood":
        final[ood] = OOD
    elif cfg.ood_final == "fallback":
        final[ood] = fallback
    # no input, no type, whatever ood_final says: OOD (the last type with ood_final = fallback)
    final[~typed & nonfinite] = fallback if cfg.ood_final == "fallback" else OOD
    source = np.where(typed, "experts", np.where(ood, "ood", "extended")).astype(object)
    final[taught != ""] = taught[taught != ""]  # an expert's type of the galaxy itself comes first
    source[taught != ""] = "taught"
    columns.update({
        "morph_type_ml": predicted.astype(object),
        "ml_probability": result.p_predicted,
        # a probability far outside the training distribution is extrapolation, never confident
        "ml_confident": (result.confident & ~result.ood).astype(bool),
        "ml_ood": result.ood.astype(bool),
        "ml_ood_distance": result.ood_distance,
        "ml_nonfinite": nonfinite.astype(bool),
        "morph_type_final": final,
        "type_source": source,
    })
    updated = run.update_catalog(pd.DataFrame(columns))
    if any(c in updated.columns for c in LEGACY_COLUMNS):
        updated = run.write_catalog(updated.drop(columns=[c for c in LEGACY_COLUMNS if c in updated.columns]))

    out = run.path / "extend"
    out.mkdir(exist_ok=True)
    cv = {k: v for k, v in result.cv.items() if k != "proba_oof"}
    extended = ~typed & (taught == "")
    summary = {
        "n_galaxies": n, "n_experts": int(typed.sum()), "n_train": int(learn.sum()),
        "n_taught": int((taught != "").sum()),
        "n_extended": int(extended.sum()),
        "n_extended_confident": int((extended & result.confident & ~result.ood).sum()),
        "n_extended_ood": int(ood.sum()),
        "n_nonfinite": int(nonfinite.sum()),
        # agreement with the expert-named clusters, not morphology accuracy (evaluate measures that)
        "cv_accuracy": cv["accuracy"], "cv_balanced_accuracy": cv["balanced_accuracy"], "ece": cv["ece"],
        "cv_measures": agreement_name(cfg.cv_folds),
    }
    counts = {t: {"experts": int(((final == t) & typed).sum()),
                  "extended": int(((final == t) & extended & ~ood).sum()),
                  "ood": int(((final == t) & ood).sum()),
                  "taught": int((taught == t).sum())}
              for t in [*types, *([OOD] if cfg.ood_final == "ood" else [])]}
    report = {
        "run": str(run.path), **summary, "types": types, "classes": result.classes,
        "temperature": result.temperature, "ood_threshold": result.ood_threshold,
        "cv": cv, "counts": counts, "settings": config.result_settings("extend")["extend"],
        "timing": {k: v for k, v in result.info.items() if k.startswith("seconds")},
    }
    physical = None
    if (run.path / "measurements.parquet").exists():
        physical = physical_comparison(updated, pd.read_parquet(run.path / "measurements.parquet"), types)
        if physical is not None:
            write_csv(physical, out / "physical.csv")
            report["physical"] = json.loads(physical.to_json(orient="records"))
    tmp = out / ".extend.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=float))
    os.replace(tmp, out / "extend.json")
    try:
        reliability_plot(cv, out / "reliability.png")
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log.warning("extend: matplotlib missing, no reliability diagram")
    log.info("extend: %d expert-typed galaxies trained a %s on %s; %d galaxies extended "
             "(%s %.3f, ECE %.3f)", int(learn.sum()), cfg.model, cfg.input,
             int(extended.sum()), agreement_name(cfg.cv_folds), cv["accuracy"], cv["ece"])
    return summary




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    config = run.config()
    report = json.loads((run.path / "extend" / "extend.json").read_text())
    ood = {"ood": OOD, "fallback": config.inspect.types[-1]}.get(config.extend.ood_final, "predicted type")
    measures = report.get("cv_measures") or agreement_name(config.extend.cv_folds)
    no_input = config.inspect.types[-1] if config.extend.ood_final == "fallback" else OOD
    lines = [f"{report['n_extended']} of {report['n_galaxies']} galaxies typed by the classifier "
             f"({report['n_extended_confident']} confident, {report['n_extended_ood']} out of distribution "
             f"-> type_source ood, morph_type_final {ood}); "
             f"{report['n_experts']} keep the experts' type"
             + (f"; {report['n_taught']} carry a type an expert gave the galaxy itself (taught)"
                if report.get("n_taught") else "")
             + (f"; {report['n_nonfinite']} have NaN/inf {report['settings']['input']} and get no type "
                f"(ml_nonfinite; type_source ood, morph_type_final {no_input}): "
                "re-run the stage that wrote them with --force" if report.get("n_nonfinite") else ""),
             f"{measures} on the {report['n_train']} training galaxies: "
             f"{report['cv_accuracy']:.3f}, balanced {report['cv_balanced_accuracy']:.3f}, "
             f"ECE {report['ece']:.3f} (not morphology accuracy: `skymorph evaluate` measures that "
             "against known labels)"]
    lines.append(text_table(["type", "experts", "extended", "ood"],
                            [[t, c["experts"], c["extended"], c.get("ood", 0)]
                             for t, c in report["counts"].items()]))
    lines.append(f"written to {run.path / 'catalog.parquet'} and {run.path / 'extend' / 'extend.json'}")
    return "\n".join(lines)


STAGE = Stage(
    name="extend",
    summary="a classifier trained on the experts' types gives every galaxy a type",
    description=__doc__.split("\n\n")[0] + (
        "\n\nThe expert-typed consensus galaxies train a calibrated classifier; every galaxy gets\n"
        "p_<TYPE>, morph_type_ml, ml_probability, ml_confident, ml_ood, morph_type_final and\n"
        "type_source (experts / extended / ood). Its cross-validated score is agreement with the\n"
        "expert-named clusters, not morphology accuracy (`skymorph evaluate` measures that).\n\n"
        "Examples:\n"
        "  skymorph extend myrun\n"
        "  skymorph extend myrun --input embedding --model hgb"),
    compute=_compute,
    sections=("extend",),
    upstream=lambda config: (_input_stage(config),),
    depends=lambda config: (_input_stage(config), "cluster", "merge"),
    outputs=("extend/extend.json",),
    extra=_extra,
    report=_report,
)


def extend(run_dir: str | PathLike | RunDir, config: Config | None = None, *, force: bool = False,
           progress: bool = True, **settings: Any) -> RunDir:
    """Type every galaxy of a run from its expert-typed consensus galaxies.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory where ``inspect merge`` has written ``morph_type``.
    config : Config, optional
        All settings (``extend``; ``inspect.types``); by default the run's own ``config.toml``.
    force : bool
        Recompute even when the types, input and settings are unchanged.
    progress : bool
        Kept for the common stage signature (the fits have no loop to show).
    **settings
        Overrides of the ``[extend]`` settings, e.g. ``model="hgb"``.

    Returns
    -------
    RunDir

    Raises
    ------
    ExtendStageError
        No expert types yet, fewer than two learnt types, or an input array whose rows
        do not match the catalog.
    """
    return execute("extend", run_dir, config, force=force, progress=progress, **settings)


def physical_comparison(catalog: pd.DataFrame, measurements: pd.DataFrame,
                        types: list[str]) -> pd.DataFrame | None:
    """Median n, G, M20 and C per final type, expert-typed vs extended galaxies.

    A classifier that extends the types well gives the extended galaxies of a type
    the same physical parameters as that type's expert-typed galaxies.  Returns
    ``None`` where the measurements hold none of those columns.
    """
    cols = [c for c in PHYSICAL if c in measurements.columns]
    if not cols or "id" not in measurements.columns:
        return None
    from ..core.quality import valid_values

    meas = valid_values(measurements)[["id", *cols]].copy()  # each value where its family is valid
    meas["id"] = meas["id"].astype(str)
    table = catalog[["id", "morph_type_final", "type_source"]].copy()
    table["id"] = table["id"].astype(str)
    table = table.merge(meas, on="id", how="left")
    rows = []
    for t in types:
        for source in ("experts", "extended", "ood"):
            sel = table[(table["morph_type_final"] == t) & (table["type_source"] == source)]
            row: dict[str, Any] = {"type": t, "source": source, "n": len(sel)}
            for c in cols:
                values = pd.to_numeric(sel[c], errors="coerce").dropna()
                row[f"median_{PHYSICAL[c]}"] = float(values.median()) if len(values) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def reliability_plot(cv: dict[str, Any], path: str | PathLike) -> None:
    """Reliability diagram of the cross-validated predictions (accuracy vs confidence per bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import draw_reliability

    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    draw_reliability(ax, cv)
    ax.set_title(f"reliability: ECE {cv['ece']:.3f} (uncalibrated {cv['ece_uncalibrated']:.3f})", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
