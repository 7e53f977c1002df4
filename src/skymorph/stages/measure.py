"""Measure: morphology parameters of every galaxy.

For each stamp (row i of ``run.sources()``), in parallel over chunks of galaxies, the
background is subtracted, the stamp segmented (the central segment kept, the others
masked) and measured: statmorph's Gini, M20, C, A, S, M, I, D, single-Sersic n and r_e
(with its ``flag`` and ``flag_sersic``), the multiplicity Psi and the gradient asymmetry
G2 (:mod:`skymorph.core.stampmeasure`, which lists the steps; the errors and PSF used,
the chunks and the columns added to each row: :mod:`skymorph.core.measure_tasks`).
Stamps whose pixels are not linear in flux (PNG/JPEG) are refused unless
``allow_nonlinear``.

This adapter reads the run, streams the rows to ``RUN_DIR/measurements.parquet`` chunk by
chunk (units, descriptions and provenance in its metadata; :mod:`skymorph.io.measurements`)
and each stamp's segmentation to ``RUN_DIR/segmap.zarr``; a galaxy that cannot be measured
gets ``measure_ok = False`` and a ``measure_reason`` and never stops the run.  When the run
has a catalog, the main columns are joined onto it (and again after a new clustering).
See docs/measure.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config
from ..core import measure_tasks as tasks_core
from ..core.measure_tasks import NONLINEAR_SUFFIXES, linear_flags
from ..core.stampmeasure import SEGMAP_CODES, MeasureError, measure_block, measure_stamp
from ..io.catalog import MEASURE_COLUMNS as CATALOG_COLUMNS
from ..io.catalog import MEASUREMENTS_FILE
from ..io.measurements import join_measurements, map_tasks, measurements_writer, read_measurements
from ..io.readers import load_psf
from ..io.rundir import RunDir
from ..summaries import read_summary, shown
from . import Stage, StageContext, execute

# read_measurements lived here before issue 18 (now io.measurements): still importable from here
__all__ = ["measure", "measure_stamp", "measure_block", "read_measurements", "linear_flags", "load_psf",
           "MeasureError", "CATALOG_COLUMNS", "MEASUREMENTS_FILE", "NONLINEAR_SUFFIXES"]

log = logging.getLogger(__name__)

SEGMAP_ARRAY = "segmap"
"""Run array (N x S x S, uint8) of each stamp's segmentation as measured (:data:`SEGMAP_CODES`)."""


def _check(config: Config) -> None:
    cfg = config.measure
    if cfg.psf_file is not None and not Path(cfg.psf_file).is_file():
        raise MeasureError(f"measure.psf_file {cfg.psf_file} does not exist")


def _sources(run: RunDir) -> tuple[pd.DataFrame, np.ndarray]:
    """The sources table and its linear flags (:func:`~skymorph.core.measure_tasks.linear_flags`)."""
    sources = run.sources()
    return sources, linear_flags(sources)


def _extra(ctx: StageContext) -> dict[str, Any]:
    """Inputs beyond the settings that change the result: the PSF file's content and
    which run arrays are used; refuses non-linear stamps before anything is written."""
    run, cfg = ctx.run, ctx.config.measure
    sources, linear = _sources(run)
    if not cfg.allow_nonlinear:
        tasks_core.refuse_nonlinear(linear, sources)
    ctx.state.update(sources=sources, linear=linear)
    psf_hash = None
    if cfg.psf_file:
        ctx.state["psf"] = load_psf(cfg.psf_file)
        psf_hash = tasks_core.psf_digest(ctx.state["psf"])
    return {"psf_file": psf_hash, "psf": tasks_core.psf_source(cfg, run.has_array),
            "weights": tasks_core.weights_source(cfg, run.has_array)[1]}


def _compute(ctx: StageContext) -> dict[str, Any]:
    run, cfg = ctx.run, ctx.config.measure
    stamps = run.open_array("stamps")
    weights_name, weights_used = tasks_core.weights_source(cfg, run.has_array)
    psf_used = tasks_core.psf_source(cfg, run.has_array)
    weights = (weights_name, run.open_array(weights_name).shape) if weights_name else None
    tasks_core.check_inputs(stamps.shape, weights=weights,
                            psfs=run.open_array("psf").shape if psf_used == "array" else None)
    sources, linear = ctx.state.get("sources"), ctx.state.get("linear")
    if sources is None:
        sources, linear = _sources(run)
    n = len(sources)
    if n != stamps.shape[0]:
        raise ValueError(f"sources table has {n} rows but the stamps array {stamps.shape[0]}; "
                         "re-run ingest")
    if (note := tasks_core.resampled_psf_note(sources, psf_used)) is not None:
        log.warning("measure: %s", note)
    scale = tasks_core.pixel_scales(sources, cfg, int(stamps.shape[-1]))
    tasks = tasks_core.plan_tasks(str(run.path), sources, cfg.chunk_size, weights=weights_name,
                                  psf=ctx.state.get("psf") if psf_used == "file" else None,
                                  psf_array=psf_used == "array", psf_label=psf_used,
                                  weights_label=weights_used)
    workers = min(cfg.workers or os.cpu_count() or 1, len(tasks))
    counts = tasks_core.MeasureCounts(weights_label=weights_used)
    zeropoint = tasks_core.zeropoints(sources, cfg)
    segmaps = run.create_array(SEGMAP_ARRAY, tuple(stamps.shape), cfg.chunk_size, dtype="uint8",
                               attributes={"codes": SEGMAP_CODES})
    with measurements_writer(run, include_doublesersic=cfg.include_doublesersic) as write, \
            tqdm(total=n, desc="measure", unit="galaxy", disable=not ctx.progress) as bar:
        for rows in map_tasks(tasks, cfg, workers):
            first = rows[0]["index"]
            segmaps[first: first + len(rows)] = tasks_core.pop_segmaps(rows, stamps.shape[1:])
            tasks_core.finish_rows(rows, linear=linear, scale=scale, zeropoint=zeropoint,
                                   g2_min_sn=cfg.g2_min_sn)
            write(rows)
            counts.add(rows)
            bar.update(len(rows))
    n_nonlinear = int((~linear).sum())
    if n_nonlinear:
        log.warning("measure: %d stamps are not linear in flux (PNG/JPEG); their values are marked "
                    "measure_linear = false and are not physical", n_nonlinear)
    log.info("measure: %d galaxies, %d measured, %d failed", n, counts.n_measured, n - counts.n_measured)
    return counts.summary(n=n, workers=workers, n_nonlinear=n_nonlinear, psf=psf_used)


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    s = read_summary("measure", info)
    text = (f"{shown(s.n_measured)} of {shown(s.n_galaxies)} galaxies measured with valid "
            f"non-parametric values (nonparam_ok; {shown(s.n_failed)} failed or statmorph flag >= 2), "
            f"{shown(s.n_sersic_ok)} with a valid Sersic fit (sersic_ok; "
            f"{shown(s.n_sersic_bad)} with flag_sersic >= 2), {shown(s.n_g2_reliable)} with a "
            f"reliable G2 (g2_reliable); raw values are kept, each flag says where its family is valid. "
            f"PSF: {shown(s.psf)} for {shown(s.n_psf)}, errors: "
            f"{shown(s.weights)} for {shown(s.n_weights)}: "
            f"{run.path / MEASUREMENTS_FILE}")
    if info.get("n_nonlinear"):
        text += (f"\nWARNING: {info['n_nonlinear']} stamps are display-scaled PNG/JPEG (measure_linear = "
                 "false): their values are not physical")
    return text


STAGE = Stage(
    name="measure",
    summary="Sersic, Gini-M20, CAS, MID, Psi and G2 per galaxy",
    description=__doc__.split("\n\n")[0] + (
        "\n\nstatmorph (Gini, M20, C, A, S, M, I, D, Sersic n and r_e), Psi and G2 for every "
        "stamp, written to RUN_DIR/measurements.parquet and joined onto the catalog.\n\n"
        "PSF of the Sersic fits: --psf FILE, else the run's psf array (GalSim collections), else "
        "none. Per-pixel errors: --weight-array, else --gain, else the run's rms array, else the "
        "stamp's background sigma. PNG/JPEG stamps are refused (display-scaled pixels) unless "
        "--allow-nonlinear, which marks every value measure_linear = false.\n\n"
        "Examples:\n"
        "  skymorph measure myrun\n"
        "  skymorph measure myrun --workers 4 --gain 2.0\n"
        "  skymorph measure myrun --psf psf_f814w.fits --pixel-scale 0.03\n"
        "  skymorph measure myrun --no-sersic     # non-parametric only, ~fast"),
    compute=_compute,
    sections=("measure",),
    upstream=lambda config: ("ingest",),
    outputs=(MEASUREMENTS_FILE, f"{SEGMAP_ARRAY}.zarr"),
    check=_check,
    extra=_extra,
    finish=lambda ctx: join_measurements(ctx.run),
    rejoin=join_measurements,  # survives a new clustering
    report=_report,
    chunked=True,
)


def measure(run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
            force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Measure every galaxy of a run directory.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory with ``stamps`` (from ingest).
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Re-measure even when the stamps and settings are unchanged.
    progress : bool
        Show a progress bar.
    **settings
        Overrides of the ``[measure]`` settings, e.g. ``workers=4``.

    Returns
    -------
    RunDir
        The run directory, with ``measurements.parquet`` (one row per stamp, in
        stamp order: ``id``, ``index``, every statmorph scalar, ``flag``,
        ``flag_sersic``, ``psi``, ``g2``, ``g2_reliable``, ``segment_area``,
        ``measure_ok``, ``measure_reason``, ``measure_warnings``, ``measure_linear``,
        ``measure_psf``, ``measure_weights``, ``stamp_pixel_scale``,
        ``sersic_rhalf_arcsec``, ``rhalf_circ_arcsec``) and, when a catalog exists,
        the :data:`CATALOG_COLUMNS` joined onto it.

    Raises
    ------
    RunDirError
        If the run directory, its stamps or the named weight array are missing.
    MeasureError
        If stamps are not linear in flux (PNG/JPEG) and ``allow_nonlinear`` is
        false, or the PSF is unusable (nothing is written).
    ValueError
        If a setting is unusable.
    """
    return execute("measure", run_dir, config, force=force, progress=progress, **settings)

