"""Measure: morphology parameters of every galaxy.

For each stamp (row i of ``run.sources()``), in parallel over chunks of galaxies:

1. subtract the background level ingest measured;
2. segment the stamp with photutils (smoothing, detection, deblending) and keep
   the segment at (or nearest to) the centre; other segments are masked;
3. run statmorph: Gini, M20, C, A, S, M, I, D, single-Sersic n and r_e (and
   every other statmorph scalar), with statmorph's ``flag`` and ``flag_sersic``.
   Per-pixel errors (statmorph's weight map), first that applies: the array
   named by ``weight_array``; a ``gain``; the run's ``rms`` array; the stamp's
   background sigma as a constant.  PSF of the Sersic fits: the ``psf_file``
   setting, else the run's ``psf`` array (one per stamp), else none;
4. add the multiplicity Psi (Law et al. 2007) and the gradient asymmetry G2
   (Rosa et al. 2018), the latter with a noise tolerance and a ``g2_reliable``
   flag below ``g2_min_sn``.

Stamps whose pixels are not linear in flux (PNG/JPEG, display-scaled) are
refused unless ``allow_nonlinear``; then every row says ``measure_linear =
False``.  r_e is also given in arcsec where the pixel scale is known.

Results are streamed to ``RUN_DIR/measurements.parquet`` chunk by chunk (memory
does not grow with the number of galaxies), with units, descriptions and the
provenance in its metadata.  Every raw value is kept, with one validity flag per
family (:mod:`skymorph.core.quality`): ``nonparam_ok`` (statmorph's flag 0/1, the
same as ``measure_ok``), ``sersic_ok`` (flag_sersic 0/1) and ``g2_reliable``.  A galaxy
that cannot be measured gets ``measure_ok = False`` and a ``measure_reason``; it never
stops the run.  Also written: the Sersic parameters' errors from the fit covariance,
optional noise-resampled errors of the non-parametric values (``resamples``),
magnitudes where a zero point is known (``zeropoint``, else the header's MAGZERO /
PHOTZP) and each stamp's segmentation (``RUN_DIR/segmap.zarr``).  When the run has a
catalog, the main columns are joined onto it (and again after a new clustering).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config, MeasureConfig
from ..core.measure_tasks import (
    NONLINEAR_SUFFIXES,
    MeasureTask,
    finish_rows,
    linear_flags,
    measure_task,
    pixel_scales,
    plan_tasks,
    pop_segmaps,
    psf_source,
    refuse_nonlinear,
    row_schema,
    weights_source,
    zeropoints,
)
from ..core.parallel import map_ordered, start_pool
from ..core.stampmeasure import SEGMAP_CODES, MeasureError, measure_block, measure_stamp
from ..io.catalog import MEASURE_COLUMNS as CATALOG_COLUMNS
from ..io.catalog import MEASUREMENTS_FILE
from ..io.readers import load_psf
from ..io.rundir import RunDir
from ..summaries import read_summary, shown
from . import Stage, StageContext, execute

__all__ = ["measure", "measure_stamp", "measure_block", "read_measurements", "linear_flags", "load_psf",
           "MeasureError", "CATALOG_COLUMNS", "MEASUREMENTS_FILE", "NONLINEAR_SUFFIXES"]

log = logging.getLogger(__name__)

SEGMAP_ARRAY = "segmap"
"""Run array (N x S x S, uint8) of each stamp's segmentation as measured (:data:`SEGMAP_CODES`)."""


def _run_task(task: MeasureTask, config: MeasureConfig) -> list[dict[str, Any]]:
    # Worker side: read only this task's stamps, so nothing big crosses processes.
    run = RunDir(task.run_path)
    stamps = np.asarray(run.open_array("stamps")[task.start: task.stop])
    weights = None
    if task.weights:
        weights = np.asarray(run.open_array(task.weights)[task.start: task.stop])
    psf = task.psf
    if psf is None and task.psf_array:
        psf = np.asarray(run.open_array("psf")[task.start: task.stop], dtype=np.float64)
    return measure_task(task, stamps, config, weights, psf)


def _map_ordered(tasks: list[MeasureTask], config: MeasureConfig, workers: int
                 ) -> Iterator[list[dict[str, Any]]]:
    """Results of every task in order, with at most ``2 * workers`` in flight.
    Workers that cannot fork from this process start from a forkserver that has
    imported statmorph once (seconds per worker with ``spawn``)."""
    if workers <= 1:
        yield from map_ordered(_run_task, tasks, config)
        return
    preload = ["skymorph.stages.measure", "skymorph.core.morphometry", "statmorph", "photutils.segmentation"]
    with start_pool(workers, preload) as pool:
        yield from map_ordered(_run_task, tasks, config, pool=pool, workers=workers)


def _check(config: Config) -> None:
    cfg = config.measure
    if cfg.psf_file is not None and not Path(cfg.psf_file).is_file():
        raise MeasureError(f"measure.psf_file {cfg.psf_file} does not exist")


def _sources(run: RunDir) -> tuple[pd.DataFrame, np.ndarray]:
    """The sources table and its linear flags; refuses non-linear stamps unless allowed."""
    sources = run.sources()
    return sources, linear_flags(sources)


def _extra(ctx: StageContext) -> dict[str, Any]:
    """Inputs beyond the settings that change the result: the PSF file's content and
    which run arrays are used; refuses non-linear stamps before anything is written."""
    run, cfg = ctx.run, ctx.config.measure
    sources, linear = _sources(run)
    if not cfg.allow_nonlinear:
        refuse_nonlinear(linear, sources)
    ctx.state.update(sources=sources, linear=linear)
    psf_hash = None
    if cfg.psf_file:
        psf = load_psf(cfg.psf_file)
        ctx.state["psf"] = psf
        psf_hash = hashlib.sha256(psf.tobytes() + str(psf.shape).encode()).hexdigest()[:16]
    return {"psf_file": psf_hash, "psf": psf_source(cfg, run.has_array),
            "weights": weights_source(cfg, run.has_array)[1]}


def _compute(ctx: StageContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io.catalog import arrow_schema, provenance

    run, cfg, progress = ctx.run, ctx.config.measure, ctx.progress
    stamps = run.open_array("stamps")
    weights_name, weights_used = weights_source(cfg, run.has_array)
    if weights_name:
        weights = run.open_array(weights_name)
        if weights.shape != stamps.shape:
            raise MeasureError(f"weight array '{weights_name}' has shape {weights.shape}; "
                               f"it must match the stamps {stamps.shape}")
    psf_used = psf_source(cfg, run.has_array)
    if psf_used == "array":
        psfs = run.open_array("psf")
        if psfs.ndim != 3 or psfs.shape[0] != stamps.shape[0]:
            raise MeasureError(f"the run's psf array has shape {psfs.shape}; it must be N x P x P "
                               f"with N = {stamps.shape[0]} (one PSF per stamp)")
    out = run.path / MEASUREMENTS_FILE
    sources, linear = ctx.state.get("sources"), ctx.state.get("linear")
    if sources is None:
        sources, linear = _sources(run)
    n = len(sources)
    if n != stamps.shape[0]:
        raise ValueError(f"sources table has {n} rows but the stamps array {stamps.shape[0]}; "
                         "re-run ingest")
    if psf_used != "none" and "framing" in sources and sources["framing"].astype(str).eq("resample").any():
        log.warning("measure: some stamps were resampled at ingest; the PSF (%s) is taken to be at the "
                    "stamps' pixel scale", psf_used)
    scale = pixel_scales(sources, cfg, int(stamps.shape[-1]))
    psf = ctx.state.get("psf") if psf_used == "file" else None
    tasks = plan_tasks(str(run.path), sources, cfg.chunk_size, weights=weights_name, psf=psf,
                       psf_array=psf_used == "array", psf_label=psf_used, weights_label=weights_used)
    workers = cfg.workers or os.cpu_count() or 1
    workers = min(workers, len(tasks))
    schema = arrow_schema(row_schema(cfg.include_doublesersic), provenance(run.path))
    zeropoint = zeropoints(sources, cfg)
    segmaps = run.create_array(SEGMAP_ARRAY, tuple(stamps.shape), cfg.chunk_size, dtype="uint8",
                               attributes={"codes": SEGMAP_CODES})
    tmp = run.path / f".{MEASUREMENTS_FILE}.tmp"
    n_ok = n_flagged = n_sersic_bad = n_sersic_ok = n_g2 = n_psf = n_weights = 0
    with pq.ParquetWriter(tmp, schema) as writer, \
            tqdm(total=n, desc="measure", unit="galaxy", disable=not progress) as bar:
        for rows in _map_ordered(tasks, cfg, workers):
            first = rows[0]["index"]
            segmaps[first: first + len(rows)] = pop_segmaps(rows, stamps.shape[1:])
            finish_rows(rows, linear=linear, scale=scale, zeropoint=zeropoint, g2_min_sn=cfg.g2_min_sn)
            table = pa.Table.from_pylist(rows, schema=schema)
            writer.write_table(table)
            n_ok += sum(r["measure_ok"] for r in rows)
            n_psf += sum(r["measure_psf"] != "none" for r in rows)
            n_weights += sum(r["measure_weights"] == weights_used for r in rows)
            n_flagged += sum(r["flag"] >= 2 for r in rows)
            n_sersic_bad += sum(r["flag_sersic"] >= 2 for r in rows)
            n_sersic_ok += sum(r["sersic_ok"] for r in rows)
            n_g2 += sum(r["g2_reliable"] for r in rows)
            bar.update(len(rows))
    os.replace(tmp, out)
    n_nonlinear = int((~linear).sum())
    if n_nonlinear:
        log.warning("measure: %d stamps are not linear in flux (PNG/JPEG); their values are marked "
                    "measure_linear = false and are not physical", n_nonlinear)
    log.info("measure: %d galaxies, %d measured, %d failed", n, n_ok, n - n_ok)
    return dict(n_galaxies=n, n_measured=n_ok, n_failed=n - n_ok, n_flag_bad=n_flagged,
                n_sersic_bad=n_sersic_bad, n_sersic_ok=n_sersic_ok, n_g2_reliable=n_g2, workers=workers,
                n_nonlinear=n_nonlinear, psf=psf_used, n_psf=n_psf, weights=weights_used, n_weights=n_weights)


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
    finish=lambda ctx: _join_catalog(ctx.run, ctx.run.path / MEASUREMENTS_FILE),
    rejoin=lambda run: _join_catalog(run, run.path / MEASUREMENTS_FILE),  # survives a new clustering
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


def _join_catalog(run: RunDir, path: Path) -> None:
    if not (run.path / "catalog.parquet").exists():
        return
    import pyarrow.parquet as pq

    # measurements of an older skymorph lack the newer columns: join what there is
    present = set(pq.read_schema(path).names)
    columns = pd.read_parquet(path, columns=["id", *[c for c in CATALOG_COLUMNS if c in present]])
    run.update_catalog(columns)


def read_measurements(run_dir: str | os.PathLike | RunDir) -> pd.DataFrame:
    """The ``measurements.parquet`` table of a run.

    Raises
    ------
    RunDirError
        If ``measure`` has not run.
    """
    from ..io.rundir import RunDirError

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run.path / MEASUREMENTS_FILE
    if not path.exists():
        raise RunDirError(f"{run.path} has no measurements; run `skymorph measure {run.path}` first")
    return pd.read_parquet(path)


