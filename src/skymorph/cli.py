"""The ``skymorph`` command: a thin layer over the Python API.

Each sub-command is one pipeline stage, implemented by a module that provides

``add_arguments(parser)``
    Adds the stage's flags.  A flag that sets a config value uses
    ``dest="section.key"`` and ``default=argparse.SUPPRESS``, so that only flags
    the user gave override the config file and preset.
``main(args, config) -> int``
    Runs the stage with the final :class:`~skymorph.config.Config`.

Only the module of the chosen sub-command is imported, so ``skymorph --help``
stays fast and a stage's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .config import PRESETS, Config, ConfigError, load_config, read_settings

__all__ = ["main", "STAGES", "config_from_args"]

STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("skymorph.stages.ingest",
              "read cutouts (FITS, PNG/JPEG, NPY, collections, fields) into stamps"),
    "denoise": ("skymorph.stages.denoise",
              "train the convolutional autoencoder and denoise every stamp"),
    "polar": ("skymorph.stages.polar",
              "adaptive polar coordinate transform (rotation invariance)"),
    "encode": ("skymorph.stages.encode",
              "encode images with a pretrained network into feature vectors"),
    "reduce": ("skymorph.stages.reduce",
              "UMAP reduction of the features (optionally scanning the dimension)"),
    "cluster": ("skymorph.stages.cluster",
              "consensus of K-means, BIRCH and ward clustering -> catalog"),
    "inspect": ("skymorph.inspection", "montages, browser voting by experts, merge votes into types"),
    "measure": ("skymorph.stages.measure", "Sersic, Gini-M20, CAS, MID, Psi and G2 per galaxy"),
    "extend": ("skymorph.stages.extend", "a classifier trained on the expert-typed clusters types the rest"),
    "validate": ("skymorph.stages.validate", "statistics, plots and an HTML report of the morphology types"),
    "evaluate": ("skymorph.stages.evaluate", "score the clusters against known labels"),
    "run": ("skymorph.stages.pipeline", "ingest -> cluster and draw the montages in one go"),
}

EPILOG = """\
A typical session:
  skymorph run cutouts/ --out myrun          # ingest ... cluster, montages
  skymorph inspect serve myrun               # experts name the clusters in a browser
  skymorph inspect merge myrun               # votes -> morph_type in the catalog
  skymorph measure myrun && skymorph validate myrun

Every stage reads and writes RUN_DIR; a stage whose inputs and settings are
unchanged is skipped.  Settings come from a preset (--preset), a TOML file
(--config) and flags, and are recorded in RUN_DIR/config.toml.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings")
    group.add_argument("--config", metavar="FILE", help="TOML file of settings ([section] tables)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="'default' (offline, CPU, best measured) or 'paper' (CAE, APCT, ConvNeXt-XL); "
                       "a new run starts from 'default', an existing one from its config.toml")
    group.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                       help="override any setting, e.g. --set cluster.k=10 (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", help="log more detail")


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def config_from_args(args: argparse.Namespace) -> Config:
    """The settings of one command.

    In order, each overriding the one before: the run directory's own
    ``config.toml`` (so a stage run later uses the settings the run was made with;
    the default preset for a new run), ``--preset`` when given, ``--config``,
    ``--set``, and the stage's own flags.
    """
    from pathlib import Path

    run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None)
    recorded = Path(run_dir) / "config.toml" if run_dir else None
    config = load_config(recorded if recorded is not None and recorded.exists() else None)
    if getattr(args, "preset", None):
        config = config.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        config = config.update(read_settings(args.config))
    updates: dict[str, dict[str, Any]] = {}
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        updates.setdefault(section, {})[name] = _parse_value(value)
    for dest, value in vars(args).items():
        if "." in dest:
            section, name = dest.split(".", 1)
            updates.setdefault(section, {})[name] = value
    return config.update(updates)


def _not_built(stage: str) -> int:
    print(f"skymorph {stage}: this stage is not built yet in skymorph {__version__}; "
          "nothing was done.", file=sys.stderr)
    return 3


def build_parser(stage: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """The parser, with only ``stage`` (if any) fully configured."""
    parser = argparse.ArgumentParser(
        prog="skymorph",
        description="Unsupervised morphological classification of galaxy images "
                    "(USmorph: CAE denoising, adaptive polar transform, ConvNeXt encoding, "
                    "UMAP, consensus clustering, expert naming, physical validation).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skymorph {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages")
    module = None
    for name, (module_name, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        if name != stage:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            module = None
        if module is None or not hasattr(module, "add_arguments"):
            stage_parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            module = None
        else:
            module.add_arguments(stage_parser)
            _common(stage_parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skymorph`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = next((a for a in argv if not a.startswith("-")), None)
    stage = stage if stage in STAGES else None
    parser, module = build_parser(stage)
    args = parser.parse_args(argv)
    if args.stage is None:
        parser.print_help()
        return 2
    if module is None:
        return _not_built(args.stage)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .io.rundir import RunDirError

    try:
        config = config_from_args(args)
        return int(module.main(args, config) or 0)
    except (ConfigError, RunDirError, FileNotFoundError, ValueError) as exc:
        print(f"skymorph {args.stage}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
