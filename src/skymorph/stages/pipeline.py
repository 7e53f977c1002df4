"""``skymorph run``: the unsupervised part of the pipeline in one call.

ingest -> denoise -> polar -> encode -> reduce -> cluster -> montages, then stop:
naming the clusters needs people (``skymorph inspect serve`` and ``inspect merge``).
Every stage is skipped when its inputs and settings are unchanged, so running
``skymorph run`` again after changing one setting recomputes only what depends on it.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from ..config import Config
from ..io.rundir import RunDir

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config | None = None,
        progress: bool = True) -> RunDir:
    """Run ingest through cluster and draw the cluster montages.

    Parameters
    ----------
    inputs : sequence of str or Path
        Cutouts, as for :func:`skymorph.stages.ingest.ingest`.
    out : str or Path
        Run directory.
    config : Config, optional
        Settings of every stage; ``Config()`` by default.  ``denoise.enabled`` and
        ``polar.enabled`` switch those stages off.
    progress : bool
        Show progress bars.

    Returns
    -------
    RunDir
        The run directory, with ``catalog.parquet`` / ``catalog.fits`` and the
        montages in ``inspection/``.
    """
    from ..inspection import montage
    from .cluster import cluster
    from .denoise import denoise
    from .encode import encode
    from .ingest import ingest
    from .polar import polar
    from .reduce import reduce

    config = config or Config()
    run_dir = ingest(inputs, out, config, progress=progress)
    if config.denoise.enabled:
        denoise(run_dir.path, config, progress=progress)
    if config.polar.enabled:
        polar(run_dir.path, config, progress=progress)
    encode(run_dir.path, config, progress=progress)
    reduce(run_dir.path, config, progress=progress)
    cluster(run_dir.path, config, progress=progress)
    montage(run_dir.path, config)
    return RunDir(run_dir.path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``skymorph run``."""
    s = argparse.SUPPRESS
    parser.description = (__doc__ or "").strip() + (
        "\n\nExamples:\n"
        "  skymorph run --demo --out demo_run              # the bundled 100 COSMOS stamps\n"
        "  skymorph run cutouts/ --out myrun --preset paper\n"
        "  skymorph run cutouts/ --out myrun --no-polar --set cluster.k=10\n"
        "Any setting of any stage can be given with --set SECTION.KEY=VALUE or --config FILE."
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, directories or glob patterns (see `skymorph ingest --help`)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    parser.add_argument("--demo", action="store_true",
                        help="use the bundled 100 real COSMOS F814W stamps as input")
    parser.add_argument("--no-denoise", dest="denoise.enabled", action="store_false", default=s,
                        help="skip the autoencoder (polar/encode read the stamps)")
    parser.add_argument("--no-polar", dest="polar.enabled", action="store_false", default=s,
                        help="skip the polar transform (encode reads the (denoised) stamps)")
    parser.add_argument("--encoder", dest="encode.encoder", default=s, metavar="NAME",
                        help="encoder: efficientnet_lite2 (default, offline), efficientnet_lite0, "
                        "or any timm model name such as convnext_xlarge.fb_in22k")
    parser.add_argument("--weights", dest="encode.weights", default=s, metavar="FILE",
                        help="local weights file for a timm encoder")
    parser.add_argument("--dims", dest="reduce.dims", default=s, metavar="D",
                        help="UMAP dimension, or 'auto' to scan (default 300)")
    parser.add_argument("--k", dest="cluster.k", type=int, default=s, help="clusters (default 20)")


def main(args: argparse.Namespace, config: Config) -> int:
    """Run ``skymorph run``."""
    from ..io.datasets import cosmos_demo

    inputs = list(args.inputs) + ([str(cosmos_demo())] if args.demo else [])
    if not inputs:
        raise ValueError("no inputs: name cutout files or directories, or use --demo")
    if isinstance(config.reduce.dims, str) and config.reduce.dims.isdigit():
        config = config.update({"reduce": {"dims": int(config.reduce.dims)}})
    run_dir = run(inputs, args.out, config)
    catalog = run_dir.catalog()
    kept = int(catalog["consensus"].sum())
    print(f"{len(catalog)} galaxies clustered into {catalog['cluster'][catalog['cluster'] >= 0].nunique()} "
          f"consensus clusters; {kept} ({kept / max(len(catalog), 1):.0%}) kept by the vote.\n"
          f"Catalog: {run_dir.path / 'catalog.parquet'}\n"
          f"Montages: {run_dir.path / 'inspection'}\n"
          f"Next: skymorph inspect serve {run_dir.path}   (experts name the clusters)")
    return 0
