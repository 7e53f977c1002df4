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

This module is the adapter: it unpacks ``[validate]``, reads and writes the run through
:mod:`skymorph.io.validation_files`, and takes each part's numbers from
:mod:`skymorph.core.validation_parts` and its section and the page from
:mod:`skymorph.report.validation`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, ValidateConfig
from ..core import validation_parts as P
from ..core.validation import GZH_DEFAULT_COLUMNS, NO_CONSENSUS
from ..core.validation_parts import gzh_classes
from ..core.validation_summary import jsonable, nonlinear_warnings
from ..core.validation_summary import settings_rows as _settings_rows  # the name tests/test_summaries.py uses
from ..core.validation_table import PartTable, ValidateError
from ..io import validation_files as F
from ..io.rundir import RunDir
from ..report import Section
from ..report import validation as R
from . import STAGES, Argument, Stage, StageContext, execute

__all__ = ["validate", "gzh_classes", "GZH_DEFAULT_COLUMNS", "TYPES", "NO_CONSENSUS", "ValidateError"]

log = logging.getLogger(__name__)

TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC"]
"""The paper's types (the default of ``inspect.types``; the report uses the run's own)."""


@dataclass
class _Inputs(PartTable):
    """What every part reads: the assembled table (:class:`PartTable`), the run and the settings."""

    run: RunDir
    config: Config
    rng: np.random.Generator
    """One generator that the parts draw from in :data:`PARTS`' order."""
    options: dict[str, Any]

    @property
    def cfg(self) -> ValidateConfig:
        return self.config.validate

    @property
    def sampling(self) -> dict[str, Any]:
        """The per-type sample's settings."""
        return {"exclude_unc": self.cfg.exclude_unc, "min_mass": self.cfg.min_mass}


def _part_agreement(inp: _Inputs, section: Section) -> None:
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
    section.result, notes = P.agreement_part(votes, clustering=clustering_fingerprint(inp.run.catalog()),
                                             types=inp.types, confidence=inp.cfg.confidence,
                                             seed=inp.cfg.seed)
    section.notes.extend(notes)


def _part_stamps(inp: _Inputs, section: Section) -> None:
    if inp.cfg.stamps_per_type == 0:
        section.notes.append("skipped: validate.stamps_per_type = 0")
    elif not inp.run.has_array("stamps") or "index" not in inp.table.columns:
        section.notes.append("skipped: no stamps array, or catalog rows cannot be matched to it")
    else:  # the array is opened before any galaxy is drawn
        R.stamps_section(section, inp, read=F.stamp_reader(inp.run), per_type=inp.cfg.stamps_per_type,
                         rng=inp.rng, inspect=inp.config.inspect)


def _part_per_type(inp: _Inputs, section: Section) -> None:
    R.per_type_section(section, inp, **inp.sampling, g2_min_sn=inp.config.measure.g2_min_sn,
                       g2_noise_tolerance=inp.config.measure.g2_noise_tolerance, rng=inp.rng)


def _part_etg_ltg(inp: _Inputs, section: Section) -> None:
    cfg = inp.cfg
    R.etg_ltg_section(section, inp, **inp.sampling, etg_types=cfg.etg_types, sersic_split=cfg.sersic_split,
                      line=(cfg.gini_m20_slope, cfg.gini_m20_intercept),
                      merger=(cfg.merger_slope, cfg.merger_intercept), confidence=cfg.confidence)


def _part_maps(inp: _Inputs, section: Section) -> None:
    run, source = inp.run, F.map_source(inp.run)
    if not (inp.rows() >= 0).any():
        section.notes.append("skipped: catalog galaxies cannot be matched to array rows (no sources index)")
    elif not run.has_array("embedding_2d") and source is None:
        section.notes.append("skipped: no embedding_2d, embedding or features array (run encode / reduce)")
    else:
        R.maps_section(section, inp, read=lambda rows: F.map_arrays(run, rows, source=source), source=source,
                       max_points=inp.cfg.max_map_points, seed=inp.cfg.seed, rng=inp.rng)


def _part_gzh(inp: _Inputs, section: Section) -> None:
    if (gzh := inp.options.get("gzh")) is None:
        section.notes.append("skipped: no Galaxy Zoo: Hubble table given (--gzh)")
    else:
        section.result, notes = P.gzh_part(inp.table, F.user_table(gzh), id_col=inp.cfg.gzh_id_col,
                                           columns=inp.cfg.gzh_columns, confidence=inp.cfg.confidence)
        section.notes.extend(notes)


def _part_extended(inp: _Inputs, section: Section) -> None:
    # the evaluation is read only when extend has run: a skipped part reads nothing more
    R.extended_section(section, F.extend_report(inp.run), evaluation=lambda: F.evaluation_record(inp.run),
                       run_path=str(inp.run.path))


def _part_special(inp: _Inputs, section: Section) -> None:
    anomaly = inp.run.stage_info("anomaly") if "anomaly_score" in inp.table.columns else None
    section.result, notes = P.special_part(inp.table, anomaly=anomaly, run_path=str(inp.run.path))
    section.notes.extend(notes)


PARTS: list[tuple[str, str, Callable[[_Inputs, Section], None]]] = [
    ("types", "Sample and types", lambda inp, s: R.types_section(s, inp)),
    ("extended", "Every galaxy typed: the extension beyond the consensus", _part_extended),
    ("agreement", "Agreement between the experts", _part_agreement),
    ("stamps", "Example stamps of each type", _part_stamps),
    ("per_type", "Per-type parameters (Figs. 8–11)", _part_per_type),
    ("etg_ltg", "ETG / LTG tests (Fig. 12)", _part_etg_ltg),
    ("completeness", "Completeness of the kept sample (Fig. 13)",
     lambda inp, s: R.completeness_section(s, inp, n_bins=inp.cfg.n_bins, confidence=inp.cfg.confidence)),
    ("kept_rejected", "Kept versus rejected (Fig. 14)", lambda inp, s: R.kept_rejected_section(s, inp)),
    ("maps", "UMAP and t-SNE maps (Figs. 5f, 7)", _part_maps),
    ("gzh", "Galaxy Zoo: Hubble comparison", _part_gzh),
    ("special", "Special objects: subclasses, special types and the most unusual galaxies", _part_special),
]


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.quality import valid_values

    run, config, cfg = ctx.run, ctx.config, ctx.config.validate
    types = [t.upper() for t in config.inspect.types]
    table, cols, notes = F.typed_table(run, ctx.options.get("physical"), id_col=ctx.options.get("id_col"),
                                       types=types, mass_col=cfg.mass_col, z_col=cfg.z_col,
                                       mag_col=cfg.mag_col, pixel_scale=cfg.pixel_scale)
    inp = _Inputs(table=valid_values(table), raw=table, cols=cols, types=types, run=run, config=config,
                  rng=np.random.default_rng(cfg.seed), options=ctx.options)
    sections = R.build_sections(PARTS, inp, progress=ctx.progress, log=log)
    records = F.stage_records(run, [name for name in STAGES if name != "validate"])
    config_path = run.path / "config.toml"
    warnings = nonlinear_warnings(table)
    page = R.page(run_path=str(run.path), settings=_settings_rows(config, records),
                  config_toml=config_path.read_text() if config_path.exists() else config.to_toml(),
                  stages=records, warnings=warnings, notes=notes, sections=sections,
                  labels=P.type_labels(types), confidence=cfg.confidence)
    numbers = jsonable({"run_dir": str(run.path), "notes": notes, "warnings": warnings, "columns": cols,
                        "parts": R.sections_record(sections), "settings": dict(vars(cfg))})
    return {"report": str(F.write_report(run, page, numbers)),
            "skipped": [s.key for s in sections if s.result is None]}


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


