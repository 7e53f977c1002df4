"""``skymorph run``: the unsupervised part of the pipeline in one call.

ingest -> denoise -> polar -> encode -> reduce -> cluster -> montages, then stop:
naming the clusters needs people (``skymorph inspect serve`` and ``inspect merge``).
The order and the switches come from the stage registry (:data:`skymorph.stages.PIPELINE`);
every stage is skipped when its inputs and settings are unchanged, so running
``skymorph run`` again after changing one setting recomputes only what depends on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..config import Config
from ..io.rundir import RunDir
from . import PIPELINE, execute

__all__ = ["run"]


def run(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config | None = None, *,
        progress: bool = True, save_settings: bool = False) -> RunDir:
    """Run ingest through cluster and draw the cluster montages.

    Parameters
    ----------
    inputs : sequence of str or Path
        Cutouts, as for :func:`skymorph.stages.ingest.ingest`.
    out : str or Path
        Run directory.
    config : Config, optional
        Settings of every stage; by default the run's own ``config.toml`` (the
        defaults for a new run).  ``denoise.enabled`` and ``polar.enabled`` switch
        those stages on.
    progress : bool
        Show progress bars.
    save_settings : bool
        Also record the execution-only settings (scheduler, workers, batch sizes,
        device, threads) in ``config.toml``; by default they apply to this call only.

    Returns
    -------
    RunDir
        The run directory, with ``catalog.parquet`` / ``catalog.fits`` and the
        montages in ``inspection/``.
    """
    from . import get_stage

    run_dir = RunDir.create(out)
    config = config if config is not None else run_dir.config()
    for name in PIPELINE:
        switch = get_stage(name).switch
        if switch is not None and not getattr(config.section(switch.split(".")[0]), switch.split(".")[1]):
            continue
        execute(name, run_dir, config, progress=progress, save_settings=save_settings,
                options={"inputs": list(inputs)} if name == "ingest" else None)
    return run_dir
