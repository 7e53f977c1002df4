"""skymorph: unsupervised galaxy morphology classification (the USmorph pipeline).

Each pipeline stage is a function that takes a run directory and a
:class:`~skymorph.config.Config`, and is also a ``skymorph`` sub-command::

    import skymorph
    config = skymorph.load_config(preset="default")
    run = skymorph.ingest(["cutouts/"], "myrun", config)

Stage modules import their heavy dependencies (PyTorch, UMAP, statmorph)
inside the functions that need them, so ``import skymorph`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .ingest import ingest  # noqa: E402
from .rundir import RunDir  # noqa: E402

__all__ = ["__version__", "Config", "load_config", "RunDir", "ingest"]
