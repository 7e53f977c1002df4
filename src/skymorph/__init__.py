"""skymorph: unsupervised galaxy morphology classification (the USmorph pipeline).

Each pipeline stage is a function that takes a run directory and is also a
``skymorph`` sub-command; with no ``config`` a stage starts from the run's own
``config.toml``, exactly like the command line::

    import skymorph
    run = skymorph.ingest(["cutouts/"], "myrun")
    skymorph.cluster(run, k=10)       # the [cluster] settings of the run, with k = 10
    skymorph.execute("reduce", run)    # any stage by name

The public names are imported on first use (PEP 562), so ``import skymorph``
and ``skymorph --help`` load neither PyTorch, Zarr, pandas nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .registry import STAGES

# public name -> module that defines it; every stage's function comes from the registry
_EXPORTS: dict[str, str] = {
    "Config": "skymorph.config",
    "ConfigError": "skymorph.config",
    "load_config": "skymorph.config",
    "SkymorphError": "skymorph.errors",
    "RunDir": "skymorph.io.rundir",
    "RunDirError": "skymorph.io.rundir",
    "execute": "skymorph.stages",
    "STAGES": "skymorph.stages",
    **{name: target.partition(":")[0] for name, target in STAGES.items()},
    "evaluate": "skymorph.stages.evaluate",
    "score_labels": "skymorph.stages.evaluate",
    "aligned_truth": "skymorph.stages.evaluate",
    "run": "skymorph.stages.pipeline",
    "serve": "skymorph.stages.inspect",
    "make_server": "skymorph.stages.inspect",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'skymorph' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
