"""Anomaly: rank every galaxy by how unusual it is among the galaxies of its run.

``skymorph anomaly RUN [--top N]`` scores every galaxy (:func:`skymorph.core.anomaly.anomaly_scores`;
``anomaly.method``, measured in the README) in the encoder ``features`` (or the ``embedding``),
writes the score to the catalog as ``anomaly_score`` (higher: more unusual; NaN for a galaxy
without features) and draws a montage of the ``top`` most unusual galaxies,
``anomaly/top.png``, with their ids in ``anomaly/top.csv``.
"""

from __future__ import annotations

import logging
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import SkymorphError
from ..inspection.montage import SHOWN_COLUMNS, draw_grid
from ..io.arrays import galaxy_array, input_stage
from ..io.atomic import atomic_file
from ..io.rundir import RunDir
from . import Stage, StageContext, execute

__all__ = ["anomaly", "AnomalyStageError"]

log = logging.getLogger(__name__)


class AnomalyStageError(SkymorphError, ValueError):
    """The run cannot be scored (no catalog or features, arrays that do not match the catalog)."""


def _input_stage(config: Config) -> str:
    return input_stage(config.anomaly.input)


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.anomaly import AnomalyError, anomaly_scores

    run, config = ctx.run, ctx.config
    cfg = config.anomaly
    catalog = run.catalog()
    x = np.asarray(galaxy_array(run, cfg.input, len(catalog), error=AnomalyStageError)[:], dtype=np.float32)
    try:
        score = anomaly_scores(x, method=cfg.method, n_neighbors=cfg.n_neighbors, dims=cfg.dims,
                               reference=cfg.reference, seed=cfg.seed, scaling=cfg.scaling)
    except AnomalyError as exc:
        raise AnomalyStageError(str(exc)) from None
    scores = pd.DataFrame({"id": catalog["id"], "anomaly_score": score})
    (run.path / "anomaly").mkdir(exist_ok=True)
    scores.to_parquet(run.path / "anomaly" / "scores.parquet", index=False)
    run.update_catalog(scores)
    _draw_top(run, config, catalog, score)
    finite = np.isfinite(score)
    return {"n_galaxies": len(catalog), "n_scored": int(finite.sum()), "method": cfg.method,
            "input": cfg.input, "top": int(min(cfg.top, finite.sum()))}


def _draw_top(run: RunDir, config: Config, catalog: pd.DataFrame, score: np.ndarray) -> None:
    top = int(config.anomaly.top)
    order = np.argsort(np.where(np.isfinite(score), -score, np.inf), kind="stable")[:top]
    order = order[np.isfinite(score[order])]
    out = run.path / "anomaly"
    out.mkdir(exist_ok=True)
    table = pd.DataFrame({"rank": np.arange(1, len(order) + 1),
                          "id": catalog["id"].astype(str).to_numpy()[order],
                          "anomaly_score": score[order]})
    for col in SHOWN_COLUMNS:
        if col in catalog.columns and col != "anomaly_score":
            table[col] = catalog[col].to_numpy()[order]
    with atomic_file(out / "top.csv") as tmp:
        table.to_csv(tmp, index=False)
    draw_grid(run, config, order, f"the {len(order)} most unusual galaxies ({config.anomaly.method}), "
              "most unusual first", out / "top.png")


def _finish(ctx: StageContext) -> None:
    """Put ``anomaly_score`` back when a later ``cluster`` rewrote the catalog."""
    run = ctx.run
    path = run.path / "anomaly" / "scores.parquet"
    if path.exists() and "anomaly_score" not in run.catalog().columns:
        run.update_catalog(pd.read_parquet(path))


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    top = pd.read_csv(run.path / "anomaly" / "top.csv", dtype={"id": str})
    cols = [c for c in ("rank", "id", "anomaly_score", "cluster", "morph_type") if c in top.columns]
    return "\n".join([
        f"{info.get('n_scored')} of {info.get('n_galaxies')} galaxies scored ({info.get('method')} on the "
        f"{info.get('input')}); the most unusual:",
        top[cols].head(10).to_string(index=False),
        f"anomaly_score in {run.path / 'catalog.parquet'}; montage of the top {info.get('top')}: "
        f"{run.path / 'anomaly' / 'top.png'} (ids in top.csv)"])


STAGE = Stage(
    name="anomaly",
    summary="rank every galaxy by how unusual it is (anomaly_score) and show the top ones",
    description=__doc__.split("\n\n")[0] + (
        "\n\nExamples:\n"
        "  skymorph anomaly myrun --top 50\n"
        "  skymorph anomaly myrun --method iforest"),
    compute=_compute,
    sections=("anomaly",),
    upstream=lambda config: (_input_stage(config),),
    outputs=("anomaly/scores.parquet", "anomaly/top.csv", "anomaly/top.png"),
    finish=_finish,
    report=_report,
)


def anomaly(run_dir: str | PathLike | RunDir, config: Config | None = None, *, force: bool = False,
            progress: bool = True, **settings: Any) -> RunDir:
    """Score every galaxy of a run by how unusual it is (``anomaly_score`` in the catalog).

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run with a catalog (``cluster``) and ``features`` (or ``embedding``).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the inputs and settings are unchanged.
    progress : bool
        Kept for the common stage signature.
    **settings
        Overrides of the ``[anomaly]`` settings, e.g. ``method="knn"``, ``top=50``.

    Returns
    -------
    RunDir

    Raises
    ------
    AnomalyStageError
        No features, or arrays that do not match the catalog.
    """
    return execute("anomaly", run_dir, config, force=force, progress=progress, **settings)
