"""The measure stage in a run directory: each worker's task (read one chunk of stamps, error
maps and PSFs, measure it with :func:`skymorph.core.measure_tasks.measure_task`), the tasks
mapped in order over the processes or cluster, ``measurements.parquet`` streamed chunk by
chunk while the galaxies are measured, read back, and its main columns joined onto the
catalog.  The science of each row is in :mod:`skymorph.core.measure_tasks`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import MeasureConfig
from ..core.measure_tasks import MeasureTask, measure_task, row_schema
from ..core.parallel import map_ordered, start_pool
from .atomic import atomic_file
from .catalog import MEASURE_COLUMNS, MEASUREMENTS_FILE, arrow_schema, provenance
from .rundir import RunDir, RunDirError

__all__ = ["measure_chunk", "map_tasks", "measurements_writer", "read_measurements", "join_measurements"]


def measure_chunk(task: MeasureTask, config: MeasureConfig) -> list[dict[str, Any]]:
    """The rows of one task, measured where it runs (a worker process or a Dask worker).

    Only this task's stamps (and error maps and PSFs) are read here, so nothing big
    crosses processes: the task carries the run's path and its rows.
    """
    run = RunDir(task.run_path)
    stamps = np.asarray(run.open_array("stamps")[task.start: task.stop])
    weights = None
    if task.weights:
        weights = np.asarray(run.open_array(task.weights)[task.start: task.stop])
    psf = task.psf
    if psf is None and task.psf_array:
        psf = np.asarray(run.open_array("psf")[task.start: task.stop], dtype=np.float64)
    return measure_task(task, stamps, config, weights, psf)


def map_tasks(tasks: list[MeasureTask], config: MeasureConfig, workers: int
              ) -> Iterator[list[dict[str, Any]]]:
    """The rows of every task (:func:`measure_chunk`) in order, with at most ``2 * workers``
    in flight.  Workers that cannot fork from this process start from a forkserver that has
    imported statmorph once (seconds per worker with ``spawn``)."""
    if workers <= 1:
        yield from map_ordered(measure_chunk, tasks, config)
        return
    preload = [__name__, "skymorph.core.morphometry", "statmorph", "photutils.segmentation"]
    with start_pool(workers, preload) as pool:
        yield from map_ordered(measure_chunk, tasks, config, pool=pool, workers=workers)


@contextmanager
def measurements_writer(run: RunDir, *, include_doublesersic: bool
                        ) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """A function that appends rows (dictionaries of :func:`~skymorph.core.measure_tasks.row_schema`'s
    columns) to the run's ``measurements.parquet``.

    The rows go to a hidden temporary file, which replaces ``measurements.parquet`` only
    when the block ends without an error: an interrupted run leaves the previous table
    (or none), never a partial one.  Memory stays at one block of rows.  The table carries
    the units, descriptions and the run's provenance in its metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(row_schema(include_doublesersic), provenance(run.path))
    with atomic_file(run.path / MEASUREMENTS_FILE) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield lambda rows: writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def join_measurements(run: RunDir) -> None:
    """Join the main measured columns (:data:`~skymorph.io.catalog.MEASURE_COLUMNS`) onto the
    run's catalog, when it has one (after measure, and again after a new clustering)."""
    path = run.path / MEASUREMENTS_FILE
    if not (run.path / "catalog.parquet").exists():
        return
    import pyarrow.parquet as pq

    # measurements of an older skymorph lack the newer columns: join what there is
    present = set(pq.read_schema(path).names)
    columns = pd.read_parquet(path, columns=["id", *[c for c in MEASURE_COLUMNS if c in present]])
    run.update_catalog(columns)


def read_measurements(run_dir: str | os.PathLike | RunDir) -> pd.DataFrame:
    """The ``measurements.parquet`` table of a run.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run directory where ``measure`` has run.

    Returns
    -------
    DataFrame
        One row per stamp, in stamp order (the columns are listed in docs/measure.md).

    Raises
    ------
    RunDirError
        If ``measure`` has not run.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = Path(run.path) / MEASUREMENTS_FILE
    if not path.exists():
        raise RunDirError(f"{run.path} has no measurements; run `skymorph measure {run.path}` first")
    return pd.read_parquet(path)
