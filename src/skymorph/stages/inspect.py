"""Inspect: the montage and merge stages of the experts' step.

The work is in :mod:`skymorph.inspection` (montages, the vote store, the voting
server, merging); this module declares the two stages that write into the run
directory, so they run through the executor like every other stage:

``montage``
    One montage per consensus cluster and the HTML gallery; reused while the
    clustering and the montage settings are unchanged.
``merge``
    The experts' votes -> one type per cluster -> ``morph_type`` in the catalog.
    Votes change outside skymorph, so merge runs on every call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..config import Config
from ..inspection import server as _server
from ..inspection.merge import merge_votes
from ..inspection.montage import (
    InspectError,
    clustering_fingerprint,
    draw_montages,
    load_manifest,
    montage_settings,
)
from ..io.csvfile import read_csv
from ..io.rundir import RunDir
from . import Argument, Stage, StageContext, execute

__all__ = ["montage", "merge", "make_server", "serve", "MONTAGE", "MERGE"]


MONTAGE_VERSION = 2
"""Bumped when the drawing changes (2: colour inputs in colour, cluster numbers without gaps),
so that older montages are redrawn."""


def _montage_extra(ctx: StageContext) -> dict[str, Any]:
    return {"clustering": clustering_fingerprint(ctx.run.catalog()), **montage_settings(ctx.config),
            "version": MONTAGE_VERSION}


def _montage_report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    manifest = load_manifest(run)
    out = run.path / "inspection"
    return (f"{len(manifest['clusters'])} montages ({manifest['n_consensus']} consensus galaxies) in "
            f"{out / 'montages'}; gallery: {out / 'index.html'}")


MONTAGE = Stage(
    name="montage",
    summary="montage PNG per consensus cluster and an HTML gallery",
    description="Draw RUN_DIR/inspection/montages/cluster_NNN.png and index.html: up to "
                "inspect.per_cluster random members of each consensus cluster.",
    compute=lambda ctx: draw_montages(ctx.run, ctx.config, ctx.progress),
    upstream=lambda config: ("ingest", *(("denoise",) if config.inspect.array == "denoised" else ())),
    depends=lambda config: ("ingest", *(("denoise",) if config.inspect.array == "denoised" else ()),
                            "cluster"),
    outputs=("inspection/montages.json", "inspection/index.html"),
    extra=_montage_extra,
    flags=tuple(f"inspect.{name}" for name in ("per_cluster", "seed", "grid_cols", "thumb_px", "array",
                                                 "stretch")),
    report=_montage_report,
)


def _merge(ctx: StageContext) -> dict[str, Any]:
    result = merge_votes(ctx.run, ctx.options.get("votes"), ctx.config)
    summary = {"n_clusters": len(result), "n_votes": int(result["n_experts"].sum()),
               "n_without_agreement": int((result["type_flag"] != "agreed").sum())}
    _merge_flags(ctx.run)
    return {**summary, **_merge_special(ctx)}


def _merge_special(ctx: StageContext) -> dict[str, Any]:
    """The subclasses' special types (``special_type``), when experts named subclasses."""
    from ..inspection.special import merge_special

    table = merge_special(ctx.run, ctx.config)
    if table is None:
        return {}
    return {"n_subclasses_named": int((table["special_type"] != "").sum())}


def _merge_extra(ctx: StageContext) -> dict[str, Any]:
    """The votes and the clustering they are merged onto: a change in either changes the types
    (and so makes the extension and the report made from them stale)."""
    import hashlib

    paths = [*(ctx.options.get("votes") or [ctx.run.path / "inspection" / "votes.csv"]),
             ctx.run.path / "inspection" / "flags.csv"]  # the experts' flags on single galaxies too
    digest = hashlib.sha256()
    for path in paths:
        if os.path.exists(path):
            with open(path, "rb") as handle:
                digest.update(handle.read())
    clustering = clustering_fingerprint(ctx.run.catalog()) if ctx.run.exists("catalog.parquet") else ""
    return {"votes": digest.hexdigest()[:16], "clustering": clustering}


def _merge_flags(run: RunDir) -> int:
    """The experts' flags on single galaxies (``inspection/flags.csv``) -> ``expert_flag`` and
    ``expert_comment`` in the catalog; returns how many galaxies are flagged."""
    from ..inspection.flags import flag_columns

    columns = flag_columns(run.catalog()["id"], run.path / "inspection" / "flags.csv")
    run.update_catalog(columns)
    return int(columns["expert_flag"].sum())


def _merge_report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    from ..inspection.merge import format_counts

    config = run.config()
    result = read_cluster_types(run)
    counts = read_csv(run.path / "inspection" / "type_counts.csv")
    flagged = result[result["type_flag"] != "agreed"]
    return (f"{len(result)} clusters typed from {int(result['n_experts'].sum())} votes "
            f"(min_agree {config.inspect.min_agree}); {len(flagged)} without agreement -> "
            f"{config.inspect.types[-1]}: {', '.join(map(str, flagged['cluster'])) or 'none'}\n"
            f"{format_counts(counts)}\n"
            f"{_n_flagged(run)} galaxies flagged by the experts (expert_flag, expert_comment)\n"
            f"morph_type written to {run.path / 'catalog.parquet'}; counts in "
            f"{run.path / 'inspection' / 'type_counts.csv'}"
            + (f"\n{info['n_subclasses_named']} subclasses named by the experts -> special_type "
               f"({run.path / 'inspection' / 'subclass_types.csv'})" if "n_subclasses_named" in info else ""))


def _n_flagged(run: RunDir) -> int:
    catalog = run.catalog()
    return int(catalog["expert_flag"].sum()) if "expert_flag" in catalog else 0


MERGE = Stage(
    name="merge",
    summary="votes -> morphology type per cluster -> catalog",
    description="A cluster takes a type where at least --min-agree experts agree, else the last of "
                "inspect.types (UNC) with a type_flag; writes morph_type to the catalog and the "
                "galaxies per type (Table 2) to RUN_DIR/inspection/type_counts.{csv,json}.",
    compute=_merge,
    sections=("inspect",),
    always=True,
    depends=lambda config: ("cluster",),
    extra=_merge_extra,
    flags=("inspect.min_agree",),
    arguments=(Argument("--votes", "vote file(s) with expert, cluster, type columns (repeatable; "
                        "default RUN_DIR/inspection/votes.csv)", metavar="FILE", action="append"),),
    report=_merge_report,
)


def read_cluster_types(run: RunDir) -> pd.DataFrame:
    """The per-cluster table that merge wrote (``inspection/cluster_types.csv``)."""
    return read_csv(run.path / "inspection" / "cluster_types.csv",
                       dtype={"morph_type": str, "type_flag": str, "votes": str}, keep_default_na=False,
                       na_values={"type_agreement": [""]})


def montage(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *, force: bool = False,
            progress: bool = True, **settings: Any) -> RunDir:
    """Draw one montage per consensus cluster and an HTML gallery of them.

    Nothing is redrawn while the clustering and the montage settings are unchanged
    (see :func:`skymorph.inspection.montage.draw_montages` for what is drawn).

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog (``skymorph cluster``).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Redraw even when nothing changed.
    progress : bool
        Show a progress bar.
    **settings
        Overrides of the ``[inspect]`` settings, e.g. ``per_cluster=25``.

    Returns
    -------
    RunDir

    Raises
    ------
    InspectError
        If no galaxy is in a consensus cluster.
    RunDirError
        If the run has no catalog or no image array.
    """
    if settings:
        base = config if config is not None else (run_dir if isinstance(run_dir, RunDir)
                                                  else RunDir(run_dir)).config()
        config = base.update({"inspect": settings})
    return execute("montage", run_dir, config, force=force, progress=progress)


def merge(run_dir: str | os.PathLike | RunDir, votes: Sequence[str | os.PathLike] | None = None,
          config: Config | None = None, *, min_agree: int | None = None) -> pd.DataFrame:
    """Turn the experts' votes into one type per cluster and write ``morph_type``.

    See :func:`skymorph.inspection.merge.merge_votes` for the rule.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog.
    votes : sequence of paths, optional
        Vote files; ``RUN_DIR/inspection/votes.csv`` by default.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    min_agree : int, optional
        Overrides ``inspect.min_agree``.

    Returns
    -------
    DataFrame
        One row per consensus cluster: ``cluster``, ``n_galaxies``, ``morph_type``,
        ``type_flag``, ``n_experts``, ``n_agree``, ``type_agreement``, ``votes``.

    Raises
    ------
    InspectError
        No votes, or a vote file with an unknown type or missing columns.
    """
    settings = {} if min_agree is None else {"min_agree": int(min_agree)}
    run = execute("merge", run_dir, config, options={"votes": list(votes) if votes else None}, **settings)
    return read_cluster_types(run)


def make_server(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
                host: str | None = None, port: int | None = None, progress: bool = False,
                token: str | None = None) -> _server.InspectionServer:
    """Draw the montages when they are missing or stale (the montage stage), then build the
    voting web application of the run: :func:`skymorph.inspection.server.make_server`.

    ``progress`` shows a progress bar while drawing; the other parameters and the return
    value are those of :func:`skymorph.inspection.server.make_server`.
    """
    run, config = _with_montages(run_dir, config, progress)
    return _server.make_server(run, config, host, port, token=token)


def serve(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
          host: str | None = None, port: int | None = None, open_browser: bool = False,
          page: str = "") -> None:
    """Draw the montages when they are missing or stale, then run the voting web application
    until interrupted (Ctrl-C): :func:`skymorph.inspection.server.serve`, same parameters."""
    run, config = _with_montages(run_dir, config, progress=True)
    _server.serve(run, config, host, port, open_browser=open_browser, page=page)


def _with_montages(run_dir: str | os.PathLike | RunDir, config: Config | None,
                   progress: bool) -> tuple[RunDir, Config]:
    """The run and its settings, after the montage stage has drawn what is missing or stale."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else run.config()
    montage(run, config, progress=progress)
    return run, config


__all__ += ["InspectError", "read_cluster_types"]
