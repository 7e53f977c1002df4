"""Measure: morphology parameters of every galaxy.

For each stamp (row i of ``run.sources()``), in parallel over chunks of galaxies:

1. subtract the background level ingest measured;
2. segment the stamp with photutils (smoothing, detection, deblending) and keep
   the segment at (or nearest to) the centre; other segments are masked;
3. run statmorph: Gini, M20, C, A, S, M, I, D, single-Sersic n and r_e (and
   every other statmorph scalar), with statmorph's ``flag`` and ``flag_sersic``;
   the noise is the stamp's background sigma (a constant weight map), a gain,
   or a per-pixel error array in the run directory;
4. add the multiplicity Psi (Law et al. 2007) and the gradient asymmetry G2
   (Rosa et al. 2018).

Results are streamed to ``RUN_DIR/measurements.parquet`` chunk by chunk (memory
does not grow with the number of galaxies).  A galaxy that cannot be measured
gets ``measure_ok = False`` and a ``measure_reason``; it never stops the run.
When the run has a catalog, the main columns are joined onto it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config, MeasureConfig
from ..core.parallel import map_ordered, start_pool
from ..io.rundir import RunDir
from . import Stage, StageContext, execute

__all__ = ["measure", "measure_stamp", "measure_block", "CATALOG_COLUMNS", "MEASUREMENTS_FILE"]

log = logging.getLogger(__name__)

MEASUREMENTS_FILE = "measurements.parquet"

CATALOG_COLUMNS = [
    "gini", "m20", "concentration", "asymmetry", "smoothness", "multimode", "intensity",
    "deviation", "sersic_n", "sersic_rhalf", "sersic_chi2_dof", "psi", "g2", "rpetro_circ",
    "rhalf_circ", "sn_per_pixel", "flag", "flag_sersic", "measure_ok", "measure_reason",
]
"""Columns joined onto the catalog (``measurements.parquet`` holds every statmorph scalar)."""


def measure_stamp(stamp: np.ndarray, noise_sigma: float | None = None, background: float = 0.0,
                  weightmap: np.ndarray | None = None, config: MeasureConfig | None = None
                  ) -> dict[str, Any]:
    """Measure one stamp: segmentation, statmorph, Psi and G2.

    Parameters
    ----------
    stamp : ndarray
        The 2-D stamp as stored (not background-subtracted).
    noise_sigma : float, optional
        Background standard deviation; used for detection, and as the constant
        error of every pixel when neither ``weightmap`` nor ``config.gain`` is given.
    background : float
        Background level, subtracted when ``config.subtract_background``.
    weightmap : ndarray, optional
        Per-pixel 1-sigma errors.
    config : MeasureConfig, optional
        Settings; defaults to ``MeasureConfig()``.

    Returns
    -------
    dict
        The row of :func:`skymorph.core.morphometry.morphology`; never raises.
    """
    from ..core import morphometry as mm

    cfg = config or MeasureConfig()
    row = mm.empty_result(cfg.include_doublesersic)
    try:
        image = np.asarray(stamp, dtype=np.float64)
        if cfg.subtract_background and np.isfinite(background):
            image = image - background
        if not np.isfinite(image).all():
            raise ValueError("stamp has NaN or infinite pixels")
        sigma = noise_sigma
        if sigma is None or not np.isfinite(sigma) or sigma <= 0:
            if weightmap is not None:
                sigma = float(np.median(weightmap))
            else:
                raise ValueError("no usable noise estimate (noise_sigma <= 0 or missing)")
        segmap, others = mm.make_segmap(image, sigma, cfg.detect_nsigma, cfg.detect_npixels,
                                        cfg.smooth_fwhm, cfg.deblend, cfg.deblend_contrast)
        gain = None
        if weightmap is None and cfg.gain is None:
            weightmap = np.full(image.shape, float(sigma))
        elif weightmap is None:
            gain = cfg.gain
        return mm.morphology(image, segmap, 1, mask=others if others.any() else None,
                             weightmap=weightmap, gain=gain, include_sersic=cfg.include_sersic,
                             include_doublesersic=cfg.include_doublesersic,
                             g2_module_tolerance=cfg.g2_module_tolerance,
                             g2_phase_tolerance=cfg.g2_phase_tolerance,
                             g2_noise_tolerance=cfg.g2_noise_tolerance, noise_sigma=float(sigma))
    except Exception as exc:  # noqa: BLE001 - one galaxy never aborts the run
        row["measure_reason"] = f"{type(exc).__name__}: {exc}"[:500]
        return row


@dataclass
class _Task:
    run_path: str
    start: int
    stop: int
    ids: list[str]
    noise: list[float]
    background: list[float]


def measure_block(stamps: np.ndarray, noise_sigma: np.ndarray, background: np.ndarray,
                  config: MeasureConfig, weights: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Measure a block of stamps (one Dask / worker task); one row per stamp."""
    rows = []
    for i in range(len(stamps)):
        w = None if weights is None else np.asarray(weights[i], dtype=np.float64)
        rows.append(measure_stamp(stamps[i], float(noise_sigma[i]), float(background[i]), w, config))
    return rows


def _run_task(task: _Task, config: MeasureConfig) -> list[dict[str, Any]]:
    # Worker side: read only this task's stamps, so nothing big crosses processes.
    run = RunDir(task.run_path)
    stamps = np.asarray(run.open_array("stamps")[task.start: task.stop])
    weights = None
    if config.weight_array:
        weights = np.asarray(run.open_array(config.weight_array)[task.start: task.stop])
    rows = measure_block(stamps, np.asarray(task.noise), np.asarray(task.background), config, weights)
    for gid, index, row in zip(task.ids, range(task.start, task.stop), rows, strict=True):
        row["id"] = gid
        row["index"] = index
    return rows


def _map_ordered(tasks: list[_Task], config: MeasureConfig, workers: int
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


def _schema(include_doublesersic: bool):
    import pyarrow as pa

    from ..core import morphometry as mm

    fields = [pa.field("id", pa.string()), pa.field("index", pa.int64())]
    for name, value in mm.empty_result(include_doublesersic).items():
        if isinstance(value, bool):
            kind = pa.bool_()
        elif isinstance(value, int):
            kind = pa.int64()
        elif isinstance(value, str):
            kind = pa.string()
        else:
            kind = pa.float64()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _check(config: Config) -> None:
    cfg = config.measure
    if cfg.chunk_size < 1:
        raise ValueError(f"measure.chunk_size must be >= 1, got {cfg.chunk_size}")
    if cfg.gain is not None and cfg.gain <= 0:
        raise ValueError(f"measure.gain must be positive, got {cfg.gain}")


def _compute(ctx: StageContext) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run, cfg, progress = ctx.run, ctx.config.measure, ctx.progress
    stamps = run.open_array("stamps")
    if cfg.weight_array:
        weights = run.open_array(cfg.weight_array)
        if weights.shape != stamps.shape:
            raise ValueError(f"weight array '{cfg.weight_array}' has shape {weights.shape}; "
                             f"it must match the stamps {stamps.shape}")
    out = run.path / MEASUREMENTS_FILE
    sources = run.sources()
    n = len(sources)
    if n != stamps.shape[0]:
        raise ValueError(f"sources table has {n} rows but the stamps array {stamps.shape[0]}; "
                         "re-run ingest")
    ids = sources["id"].astype(str).tolist()
    noise = (sources["noise_sigma"].astype(float).to_numpy() if "noise_sigma" in sources
             else np.full(n, np.nan))
    background = (sources["background"].astype(float).to_numpy() if "background" in sources
                  else np.zeros(n))
    tasks = [_Task(str(run.path), s, min(s + cfg.chunk_size, n), ids[s: s + cfg.chunk_size],
                   noise[s: s + cfg.chunk_size].tolist(), background[s: s + cfg.chunk_size].tolist())
             for s in range(0, n, cfg.chunk_size)]
    workers = cfg.workers or os.cpu_count() or 1
    workers = min(workers, len(tasks))
    schema = _schema(cfg.include_doublesersic)
    tmp = run.path / f".{MEASUREMENTS_FILE}.tmp"
    n_ok = n_flagged = 0
    with pq.ParquetWriter(tmp, schema) as writer, \
            tqdm(total=n, desc="measure", unit="galaxy", disable=not progress) as bar:
        for rows in _map_ordered(tasks, cfg, workers):
            table = pa.Table.from_pylist(rows, schema=schema)
            writer.write_table(table)
            n_ok += sum(r["measure_ok"] for r in rows)
            n_flagged += sum(r["measure_ok"] and r["flag"] >= 2 for r in rows)
            bar.update(len(rows))
    os.replace(tmp, out)
    log.info("measure: %d galaxies, %d measured, %d failed", n, n_ok, n - n_ok)
    return dict(n_galaxies=n, n_measured=n_ok, n_failed=n - n_ok, n_flag_bad=n_flagged, workers=workers)




def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    return (f"{info.get('n_measured', 0)} of {info.get('n_galaxies', 0)} galaxies measured "
            f"({info.get('n_failed', 0)} failed, {info.get('n_flag_bad', 0)} with statmorph flag >= 2): "
            f"{run.path / MEASUREMENTS_FILE}")


STAGE = Stage(
    name="measure",
    summary="Sersic, Gini-M20, CAS, MID, Psi and G2 per galaxy",
    description=__doc__.split("\n\n")[0] + (
        "\n\nstatmorph (Gini, M20, C, A, S, M, I, D, Sersic n and r_e), Psi and G2 for every "
        "stamp, written to RUN_DIR/measurements.parquet and joined onto the catalog.\n\n"
        "Examples:\n"
        "  skymorph measure myrun\n"
        "  skymorph measure myrun --workers 4 --gain 2.0\n"
        "  skymorph measure myrun --no-sersic     # non-parametric only, ~fast"),
    compute=_compute,
    sections=("measure",),
    upstream=lambda config: ("ingest",),
    outputs=(MEASUREMENTS_FILE,),
    check=_check,
    finish=lambda ctx: _join_catalog(ctx.run, ctx.run.path / MEASUREMENTS_FILE),
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
        ``flag_sersic``, ``psi``, ``g2``, ``segment_area``, ``measure_ok``,
        ``measure_reason``, ``measure_warnings``) and, when a catalog exists, the
        :data:`CATALOG_COLUMNS` joined onto it.

    Raises
    ------
    RunDirError
        If the run directory, its stamps or the named weight array are missing.
    ValueError
        If a setting is unusable.
    """
    return execute("measure", run_dir, config, force=force, progress=progress, **settings)


def _join_catalog(run: RunDir, path: Path) -> None:
    if not (run.path / "catalog.parquet").exists():
        return
    columns = pd.read_parquet(path, columns=["id", *CATALOG_COLUMNS])
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


