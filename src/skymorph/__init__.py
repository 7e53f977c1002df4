"""skymorph: unsupervised galaxy morphology classification (the USmorph pipeline).

Each pipeline stage is a function that takes a run directory and a
:class:`~skymorph.config.Config`, and is also a ``skymorph`` sub-command::

    import skymorph
    config = skymorph.load_config(preset="default")
    run = skymorph.ingest(["cutouts/"], "myrun", config)
    skymorph.denoise(run.path, config)
    ...

Stage modules import their heavy dependencies (PyTorch, UMAP, statmorph)
inside the functions that need them, so ``import skymorph`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cluster import cluster  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .denoise import denoise  # noqa: E402
from .encode import encode  # noqa: E402
from .evaluate import aligned_truth, evaluate, score_labels  # noqa: E402
from .ingest import ingest  # noqa: E402
from .inspection import make_server, merge, montage, serve  # noqa: E402
from .measure import measure  # noqa: E402
from .pipeline import run  # noqa: E402
from .polar import polar  # noqa: E402
from .reduce import reduce  # noqa: E402
from .rundir import RunDir  # noqa: E402
from .validate import validate  # noqa: E402

__all__ = [
    "__version__", "Config", "load_config", "RunDir",
    "ingest", "denoise", "polar", "encode", "reduce", "cluster", "run",
    "montage", "serve", "make_server", "merge", "measure", "validate",
    "evaluate", "score_labels", "aligned_truth",
]
