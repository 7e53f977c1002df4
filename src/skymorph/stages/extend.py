"""Extend: every galaxy gets a type, from a classifier trained on the expert-typed clusters.

The consensus vote keeps 50-80% of the galaxies, and the experts type only those
(``inspect merge`` -> ``morph_type``).  This stage trains a calibrated classifier on the
kept, expert-typed galaxies and applies it to every galaxy
(:func:`skymorph.core.extend.extend_labels`; the measured choice of input and model is
documented there).  The experts' ``morph_type`` is never changed.

Catalog columns added (one row per galaxy): ``p_<TYPE>``, ``morph_type_ml``, ``ml_probability``,
``ml_confident``, ``ml_ood``, ``ml_ood_distance``, ``ml_nonfinite``, ``morph_type_final`` and
``type_source`` (``experts``, ``taught``, ``extended``, ``ood``); what each holds, and how the
final type is chosen, is told in :mod:`skymorph.core.extend_types`, which makes them.

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
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from .._text import text_table
from ..config import Config
from ..core.extend import agreement_name
from ..core.extend_types import OOD, PHYSICAL, physical_comparison  # noqa: F401 - re-exported
from ..errors import SkymorphError
from ..io.arrays import galaxy_array, input_stage
from ..io.atomic import write_text_atomic
from ..io.csvfile import write_csv
from ..io.rundir import RunDir
from ..report.figures import reliability_plot
from . import Stage, StageContext, execute

__all__ = ["extend", "ExtendStageError", "physical_comparison", "reliability_plot"]

log = logging.getLogger(__name__)

LEGACY_COLUMNS = ("p_morph_type_ml",)
"""Columns an older skymorph wrote that the extension replaces (``ml_probability``)."""


class ExtendStageError(SkymorphError, ValueError):
    """The run cannot be extended (no expert types yet, arrays that do not match the catalog)."""


def _catalog_digest(catalog: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for col in ("id", "cluster", "consensus", "morph_type"):
        digest.update(catalog[col].astype(str).str.cat(sep="\n").encode() if col in catalog else b"-")
    return digest.hexdigest()[:16]


def _training(run: RunDir, config: Config, catalog: pd.DataFrame) -> dict[str, np.ndarray]:
    """:func:`skymorph.inspection.refine.training_labels` plus ``typed``: the galaxies that keep
    their named cluster's type (none where the classifier decides, ``extend.kept_types``)."""
    from ..inspection.refine import training_labels

    labels = training_labels(run, config, catalog)
    labels["typed"] = labels["cluster"] != ""
    if config.extend.kept_types == "classifier":  # the cluster names train the classifier, it decides
        labels["typed"] = np.zeros(len(catalog), bool)
    return labels


def _input_stage(config: Config) -> str:
    return input_stage(config.extend.input)


def _extra(ctx: StageContext) -> dict[str, Any]:
    from ..inspection.refine import GalaxyVoteStore

    catalog = ctx.run.catalog()
    taught = GalaxyVoteStore.of(ctx.run).digest()
    if "morph_type" not in catalog.columns and (taught == "-" or ctx.config.extend.cluster_labels):
        raise ExtendStageError(f"the catalog of {ctx.run.path} has no morph_type; name the clusters first "
                               f"(`skymorph inspect serve/merge {ctx.run.path}` or `skymorph inspect auto`)")
    ctx.state["catalog"] = catalog
    return {"catalog": _catalog_digest(catalog), "types": list(ctx.config.inspect.types), "taught": taught}


def _input(run: RunDir, name: str, n: int) -> np.ndarray:
    """The classifier's input array (``extend.input``), one row per catalog row."""
    array = galaxy_array(run, name, n, error=ExtendStageError, hint=", or set extend.input")
    return np.asarray(array[:], dtype=np.float32)


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.extend import ExtendError, extend_labels
    from ..core.extend_types import final_types, type_columns, type_summary

    run, config, catalog = ctx.run, ctx.config, ctx.state["catalog"]
    cfg, types = config.extend, list(config.inspect.types)
    labels = _training(run, config, catalog)
    learn = labels["learn"]
    if not learn.any():
        raise ExtendStageError(
            f"no consensus galaxy of {run.path} has an expert type among {', '.join(types)}; run "
            f"`skymorph inspect merge {run.path}` (or `skymorph inspect auto`) first")
    x = _input(run, cfg.input, len(catalog))
    has_types = "morph_type" in catalog
    mtype = catalog["morph_type"].fillna("").astype(str).to_numpy() if has_types else labels["y"]
    try:
        result = extend_labels(
            x, learn, labels["y"], sample_weight=labels["weight"], model=cfg.model, c=cfg.c,
            class_weight=cfg.class_weight, calibration=cfg.calibration, cv_folds=cfg.cv_folds,
            confidence_threshold=cfg.confidence_threshold, ood_neighbors=cfg.ood_neighbors,
            ood_quantile=cfg.ood_quantile, ood_dims=cfg.ood_dims, ood_reference=cfg.ood_reference,
            max_iter=cfg.max_iter, seed=cfg.seed)
    except ExtendError as exc:
        raise ExtendStageError(str(exc)) from None
    final = final_types(result, typed=labels["typed"], mtype=mtype, taught=labels["taught"],
                        ood_final=cfg.ood_final, fallback=types[-1])
    columns = {"id": catalog["id"], **type_columns(result, final, types=types)}
    updated = run.update_catalog(pd.DataFrame(columns))
    if any(c in updated.columns for c in LEGACY_COLUMNS):
        updated = run.write_catalog(updated.drop(columns=[c for c in LEGACY_COLUMNS if c in updated.columns]))
    summary, counts = type_summary(result, final, learn=learn, types=types, ood_final=cfg.ood_final,
                                   cv_folds=cfg.cv_folds)
    _write_report(run, config, result, summary, counts, updated)
    log.info("extend: %d expert-typed galaxies trained a %s on %s; %d galaxies extended "
             "(%s %.3f, ECE %.3f)", int(learn.sum()), cfg.model, cfg.input, summary["n_extended"],
             agreement_name(cfg.cv_folds), summary["cv_accuracy"], summary["ece"])
    return summary


def _write_report(run: RunDir, config: Config, result: Any, summary: dict[str, Any],
                  counts: dict[str, Any], catalog: pd.DataFrame) -> None:
    """``extend/extend.json``, ``extend/reliability.png`` and, with measurements, ``physical.csv``."""
    out = run.path / "extend"
    out.mkdir(exist_ok=True)
    types = list(config.inspect.types)
    cv = {k: v for k, v in result.cv.items() if k != "proba_oof"}
    report = {
        "run": str(run.path), **summary, "types": types, "classes": result.classes,
        "temperature": result.temperature, "ood_threshold": result.ood_threshold,
        "cv": cv, "counts": counts, "settings": config.result_settings("extend")["extend"],
        "timing": {k: v for k, v in result.info.items() if k.startswith("seconds")},
    }
    if (run.path / "measurements.parquet").exists():
        physical = physical_comparison(catalog, pd.read_parquet(run.path / "measurements.parquet"), types)
        if physical is not None:
            write_csv(physical, out / "physical.csv")
            report["physical"] = json.loads(physical.to_json(orient="records"))
    write_text_atomic(out / "extend.json", json.dumps(report, indent=2, default=float))
    try:
        reliability_plot(cv, out / "reliability.png")
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log.warning("extend: matplotlib missing, no reliability diagram")


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
