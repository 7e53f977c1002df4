"""Validate: statistics, plots and an HTML report of the morphology types.

Reads the typed catalog (``morph_type`` from the inspection stage), the
measurements (``measure``), the run's sources table, the experts' votes, the
stamps and, optionally, a user catalog of physical quantities (stellar mass,
redshift) and a Galaxy Zoo: Hubble table, and writes ``RUN_DIR/report/report.html``
(self-contained, figures embedded) and ``RUN_DIR/report/validation.json`` (every
number).

The report opens with the settings that produced the run (``config.toml`` and the
stage records) and, when inputs are JPEG/PNG, a warning that morphometry on
display-scaled pixels is not physical.  Parts (paper section 4): sample and types
(no-consensus galaxies apart from the experts' UNC); agreement between the experts
(Fleiss' kappa); example stamps per type; per-type medians and raincloud plots
(Figs. 8-11, with a verdict on G2 at the run's S/N); ETG/LTG tests on Sersic n and
the Gini-M20 plane with the Lotz et al. (2008) lines (Fig. 12); completeness of the
kept (consensus) sample (Fig. 13); kept versus rejected (Fig. 14); UMAP and t-SNE
maps (Figs. 5f, 7); agreement with Galaxy Zoo: Hubble.  A part whose inputs are
missing is skipped with a note in the report.

This module reads the run and writes the files.  The numbers and notes come from
:mod:`skymorph.core.validation` (the statistics), :mod:`~skymorph.core.validation_table`
(the joined table), :mod:`~skymorph.core.validation_parts` (each part) and
:mod:`~skymorph.core.validation_summary` (settings rows, warnings); the figures and the
page from :mod:`skymorph.report`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, ValidateConfig
from ..core import validation as V
from ..core import validation_parts as P
from ..core.validation import GZH_DEFAULT_COLUMNS, NO_CONSENSUS, normalise_types
from ..core.validation_parts import gzh_classes
from ..core.validation_summary import jsonable, nonlinear_warnings
from ..core.validation_summary import settings_rows as _settings_rows  # the name tests/test_summaries.py uses
from ..core.validation_table import ValidateError, join_physical, physical_columns
from ..io.rundir import RunDir, RunDirError
from . import STAGES, Argument, Stage, StageContext, execute

__all__ = ["validate", "gzh_classes", "GZH_DEFAULT_COLUMNS", "TYPES", "NO_CONSENSUS", "ValidateError"]

log = logging.getLogger(__name__)

TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC"]
"""The paper's types (the default of ``inspect.types``; the report uses the run's own)."""


# --- inputs -----------------------------------------------------------------------------------


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    from ..io.tables import TableError, read_table

    try:
        return read_table(path, what="catalog")
    except TableError as exc:
        raise ValidateError(str(exc)) from None


def _assemble(run: RunDir, physical, id_col: str | None, cfg: ValidateConfig, types: list[str],
              notes: list[str]) -> tuple[pd.DataFrame, dict[str, str | None]]:
    """The catalog joined with the measurements, the sources and the user's physical catalog."""
    try:
        catalog = run.catalog()
    except RunDirError as exc:
        raise ValidateError(f"{exc}; validate needs the typed catalog (morph_type)") from None
    if "morph_type" not in catalog.columns:
        raise ValidateError(
            f"the catalog of {run.path} has no morph_type column: name the clusters first "
            f"(`skymorph inspect serve {run.path}` then `skymorph inspect merge {run.path}`)")
    morph_type = normalise_types(catalog["morph_type"])
    if not morph_type.isin(types).any():
        raise ValidateError(
            f"morph_type is empty for every galaxy of {run.path}; merge the experts' votes "
            f"(`skymorph inspect merge {run.path}`) before validating")
    table = catalog.assign(id=catalog["id"].astype(str), morph_type=morph_type)
    # measurements: joined by measure when the catalog existed, else join them here
    from ..io.catalog import MEASURE_COLUMNS, MEASUREMENTS_FILE

    mpath = run.path / MEASUREMENTS_FILE
    if "gini" not in table.columns:
        if mpath.exists():
            import pyarrow.parquet as pq

            present = set(pq.read_schema(mpath).names)  # an older skymorph wrote fewer columns
            m = pd.read_parquet(mpath, columns=["id", *[c for c in MEASURE_COLUMNS if c in present]]).assign(
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
        table, more = join_physical(table, phys, id_col=id_col)
        notes.extend(more)
    table, cols, more = physical_columns(table, mass_col=cfg.mass_col, z_col=cfg.z_col, mag_col=cfg.mag_col,
                                         pixel_scale=cfg.pixel_scale, physical_given=physical is not None)
    notes.extend(more)
    return table, cols


# --- parts ----------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """What every part reads."""

    run: RunDir
    config: Config
    table: pd.DataFrame
    """The assembled catalog, every measured value its family's flag calls invalid set to NaN."""
    cols: dict[str, Any]
    rng: np.random.Generator
    options: dict[str, Any]
    raw: pd.DataFrame | None = None
    """The same rows with the raw values (to count what was left out)."""

    @property
    def cfg(self) -> ValidateConfig:
        return self.config.validate

    @property
    def types(self) -> list[str]:
        return [t.upper() for t in self.config.inspect.types]

    @property
    def ltg_types(self) -> list[str]:
        return [t for t in self.types[:-1] if t not in self.cfg.etg_types]

    @property
    def labels(self) -> dict[str, str]:
        return P.type_labels(self.types)

    @property
    def colours(self) -> dict[str, str]:
        from ..report.figures import type_colours

        return type_colours(self.types)

    def raw_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The raw values of ``rows`` (rows of :attr:`table`)."""
        return (self.raw if self.raw is not None else self.table).loc[rows.index]

    def sample(self, notes: list[str]) -> pd.DataFrame:
        sample, more = V.typed_sample(self.table, self.types, self.types[-1], self.cfg.exclude_unc,
                                      self.cols["mass"], self.cfg.min_mass)
        notes.extend(more)
        return sample

    def kept(self) -> np.ndarray | None:
        if "consensus" not in self.table.columns:
            return None
        return self.table["consensus"].fillna(False).astype(bool).to_numpy()

    def rows(self) -> np.ndarray:
        """Each galaxy's array row (-1: none)."""
        if "index" not in self.table.columns:
            return np.full(len(self.table), -1)
        return pd.to_numeric(self.table["index"], errors="coerce").fillna(-1).to_numpy(int)


def _part_types(inp: _Inputs, section) -> None:
    section.result = {**V.type_counts(inp.table, inp.types), "unclassified": inp.types[-1]}


def _part_agreement(inp: _Inputs, section) -> None:
    from ..inspection import InspectError, clustering_fingerprint, read_votes

    path = inp.run.path / "inspection" / "votes.csv"
    if not path.exists():
        section.notes.append(f"skipped: no votes ({path.relative_to(inp.run.path)} does not exist)")
        return
    try:
        votes = read_votes([path], inp.types)
    except InspectError as exc:
        section.notes.append(f"skipped: {exc}")
        return
    current = clustering_fingerprint(inp.run.catalog())
    section.result, notes = P.agreement_part(votes, clustering=current, types=inp.types,
                                             confidence=inp.cfg.confidence, seed=inp.cfg.seed)
    section.notes.extend(notes)


def _part_stamps(inp: _Inputs, section) -> None:
    from ..inspection import display
    from ..report.figures import stamps_figure

    per_type = inp.cfg.stamps_per_type
    if per_type == 0:
        section.notes.append("skipped: validate.stamps_per_type = 0")
        return
    if not inp.run.has_array("stamps") or "index" not in inp.table.columns:
        section.notes.append("skipped: no stamps array, or catalog rows cannot be matched to it")
        return
    array = inp.run.open_array("stamps")
    rows = inp.rows()
    nonlinear, _, _ = V.nonlinear_mask(inp.table)
    picks = P.stamp_picks(inp.table["morph_type"].to_numpy(), rows, types=[*inp.types, NO_CONSENSUS],
                          per_type=per_type, rng=inp.rng)
    images: dict[str, list[tuple[str, np.ndarray]]] = {}
    for t, pick in picks.items():
        data = np.asarray(array.get_orthogonal_selection(rows[pick]), dtype=np.float32)
        # shown as the experts saw them in the montages: asinh for linear inputs, linear for
        # display-scaled (JPEG/PNG) ones, by inspect.stretch
        images[t] = [(str(inp.table["id"].iloc[i]),
                      display(img, inp.config.inspect, display_scaled=bool(nonlinear[i])))
                     for i, img in zip(pick, data, strict=True)]
    section.result = {"per_type": per_type, "array": "stamps",
                      "types": {t: len(v) for t, v in images.items()}}
    section.figures.append(stamps_figure(images, inp.labels, per_type))


def _part_per_type(inp: _Inputs, section) -> None:
    from ..report.figures import raincloud_figure

    if "gini" not in inp.table.columns:
        section.notes.append("skipped: no measurements")
        return
    sample = inp.sample(section.notes)
    mcfg = inp.config.measure
    result, notes, figures = P.per_type_part(sample, inp.raw_rows(sample), types=inp.types,
                                             r_e_unit=inp.cols["r_e_unit"], g2_min_sn=mcfg.g2_min_sn,
                                             g2_noise_tolerance=mcfg.g2_noise_tolerance)
    section.notes.extend(notes)
    section.result = result
    for key, title, columns, note in figures:
        section.figures.append(raincloud_figure(key, title, sample, list(result["n"]), columns, inp.colours,
                                                inp.rng, note))


def _part_etg_ltg(inp: _Inputs, section) -> None:
    from ..report.figures import gini_m20_figure

    if "gini" not in inp.table.columns:
        section.notes.append("skipped: no measurements")
        return
    cfg, ltg_types = inp.cfg, inp.ltg_types
    sample = inp.sample(section.notes)
    line, merger = (cfg.gini_m20_slope, cfg.gini_m20_intercept), (cfg.merger_slope, cfg.merger_intercept)
    section.result, notes = P.etg_ltg_part(sample, inp.raw_rows(sample), etg_types=cfg.etg_types,
                                           ltg_types=ltg_types, sersic_split=cfg.sersic_split, line=line,
                                           merger=merger, confidence=cfg.confidence)
    section.notes.extend(notes)
    etg = sample[sample["morph_type"].isin(cfg.etg_types)]
    ltg = sample[sample["morph_type"].isin(ltg_types)]
    names = f"ETG ({'+'.join(cfg.etg_types)})", f"LTG ({'+'.join(ltg_types)})"
    section.figures.append(gini_m20_figure(etg, ltg, *names, line, merger, cfg.sersic_split))


def _part_completeness(inp: _Inputs, section) -> None:
    from ..report.figures import completeness_figure

    kept = inp.kept()
    if kept is None:
        section.notes.append("skipped: the catalog has no consensus column")
        return
    result, notes = P.completeness_part(inp.table, inp.raw_rows(inp.table), kept, inp.cols,
                                        n_bins=inp.cfg.n_bins, confidence=inp.cfg.confidence)
    section.notes.extend(notes)
    if result is not None:
        section.result = result
        section.figures.append(completeness_figure(result["curves"], result["labels"], inp.cfg.confidence))


def _part_kept_rejected(inp: _Inputs, section) -> None:
    from ..report.figures import kept_rejected_figure

    kept = inp.kept()
    if kept is None:
        section.notes.append("skipped: the catalog has no consensus column")
        return
    if kept.all() or not kept.any():
        section.notes.append("skipped: every galaxy is kept (or none is): nothing to compare")
        return
    section.result, notes, columns = P.kept_rejected_part(inp.table, inp.raw_rows(inp.table), kept, inp.cols)
    section.notes.extend(notes)
    section.figures.append(kept_rejected_figure(inp.table, kept, columns, section.result["tests"]))


def _part_maps(inp: _Inputs, section) -> None:
    from ..report.figures import maps_figure

    run, notes = inp.run, section.notes
    rows = inp.rows()
    if not (rows >= 0).any():
        notes.append("skipped: catalog galaxies cannot be matched to array rows (no sources index)")
        return
    source = next((n for n in ("embedding", "features") if run.has_array(n)), None)
    if not run.has_array("embedding_2d") and source is None:
        notes.append("skipped: no embedding_2d, embedding or features array (run encode / reduce)")
        return
    order, more = P.map_order(rows, max_points=inp.cfg.max_map_points, rng=inp.rng)
    notes.extend(more)
    arr_rows = rows[order]
    umap = (np.asarray(run.open_array("embedding_2d").get_orthogonal_selection(arr_rows))
            if run.has_array("embedding_2d") else None)
    data = (np.asarray(run.open_array(source).get_orthogonal_selection(arr_rows), dtype=np.float32)
            if source is not None else None)
    maps, more = P.two_d_maps(data, source=source, seed=inp.cfg.seed, umap=umap)
    notes.extend(more)
    types = inp.table["morph_type"].to_numpy()[order]
    section.result = {"n_points": int(len(types)), "maps": list(maps)}
    section.figures.append(maps_figure(maps, types, [*inp.types, NO_CONSENSUS], inp.colours, inp.labels))


def _part_gzh(inp: _Inputs, section) -> None:
    gzh = inp.options.get("gzh")
    if gzh is None:
        section.notes.append("skipped: no Galaxy Zoo: Hubble table given (--gzh)")
        return
    frame = gzh if isinstance(gzh, pd.DataFrame) else _read_table(gzh)
    section.result, notes = P.gzh_part(inp.table, frame, id_col=inp.cfg.gzh_id_col,
                                       columns=inp.cfg.gzh_columns, confidence=inp.cfg.confidence)
    section.notes.extend(notes)


def _part_extended(inp: _Inputs, section) -> None:
    from ..report.figures import reliability_figure

    run = inp.run
    path = run.path / "extend" / "extend.json"
    if not path.exists():
        section.notes.append(f"skipped: `skymorph extend {run.path}` has not run (only the consensus "
                             "galaxies have a type)")
        return
    report = json.loads(path.read_text())
    section.result = P.extended_part(report)
    path = run.path / "evaluation" / "evaluation.json"
    found = json.loads(path.read_text()) if path.exists() else None
    # the extension's record is read only when the evaluation has final types to compare with it
    current = ((run.stage_info("extend") or {}).get("fingerprint", "") if found and found.get("final_types")
               else "")
    section.result["evaluation"], notes = P.evaluation_part(found, extend_fingerprint=current,
                                                            run_path=str(run.path))
    section.notes.extend(notes)
    section.figures.append(reliability_figure(report["cv"]))


def _part_special(inp: _Inputs, section) -> None:
    anomaly = inp.run.stage_info("anomaly") if "anomaly_score" in inp.table.columns else None
    section.result, notes = P.special_part(inp.table, anomaly=anomaly, run_path=str(inp.run.path))
    section.notes.extend(notes)


PARTS: list[tuple[str, str, Callable[[_Inputs, Any], None]]] = [
    ("types", "Sample and types", _part_types),
    ("extended", "Every galaxy typed: the extension beyond the consensus", _part_extended),
    ("agreement", "Agreement between the experts", _part_agreement),
    ("stamps", "Example stamps of each type", _part_stamps),
    ("per_type", "Per-type parameters (Figs. 8–11)", _part_per_type),
    ("etg_ltg", "ETG / LTG tests (Fig. 12)", _part_etg_ltg),
    ("completeness", "Completeness of the kept sample (Fig. 13)", _part_completeness),
    ("kept_rejected", "Kept versus rejected (Fig. 14)", _part_kept_rejected),
    ("maps", "UMAP and t-SNE maps (Figs. 5f, 7)", _part_maps),
    ("gzh", "Galaxy Zoo: Hubble comparison", _part_gzh),
    ("special", "Special objects: subclasses, special types and the most unusual galaxies", _part_special),
]


# --- the stage ----------------------------------------------------------------------------------


def _stage_records(run: RunDir) -> dict[str, dict[str, Any]]:
    records = {}
    for name in STAGES:
        if name == "validate":
            continue
        try:
            info = run.stage_info(name)
        except RunDirError:
            info = {"damaged": True}
        if info is not None:
            records[name] = info
    return records


def _compute(ctx: StageContext) -> dict[str, Any]:
    from .. import report
    from .._version import __version__

    run, config = ctx.run, ctx.config
    notes: list[str] = []
    types = [t.upper() for t in config.inspect.types]
    table, cols = _assemble(run, ctx.options.get("physical"), ctx.options.get("id_col"), config.validate,
                            types, notes)
    from ..core.quality import valid_values

    inp = _Inputs(run=run, config=config, table=valid_values(table), cols=cols,
                  rng=np.random.default_rng(config.validate.seed), options=ctx.options, raw=table)
    sections = []
    for key, title, func in PARTS:
        if ctx.progress:
            log.info("validate: %s", title)
        section = report.Section(key=key, title=title)
        try:
            func(inp, section)
        except ValidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing part must not lose the others
            log.warning("validate: part %s failed: %s", key, exc)
            section = report.Section(key=key, title=title, notes=[f"failed: {type(exc).__name__}: {exc}"])
        sections.append(section)
    records = _stage_records(run)
    config_path = run.path / "config.toml"
    warnings = nonlinear_warnings(table)
    page = report.render({
        "run_path": str(run.path), "version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": _settings_rows(config, records),
        "config_toml": config_path.read_text() if config_path.exists() else config.to_toml(),
        "stages": records, "warnings": warnings, "notes": notes, "sections": sections,
        "labels": inp.labels, "confidence": config.validate.confidence,
    })
    out_dir = run.path / "report"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    parts = {s.key: {"result": s.result, "notes": s.notes, "figures": [f.title for f in s.figures]}
             for s in sections}
    summary = jsonable({"run_dir": str(run.path), "notes": notes, "warnings": warnings, "columns": cols,
                        "parts": parts, "settings": dict(vars(config.validate))})
    (out_dir / "validation.json").write_text(json.dumps(summary, indent=2))
    return {"report": str(path), "skipped": [s.key for s in sections if s.result is None]}


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
    depends=lambda config: ("cluster", "merge", "extend", "measure"),
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


