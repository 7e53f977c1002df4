"""The ``skymorph`` command: a thin layer over the Python API, generated from the
stage registry (:mod:`skymorph.stages`) and the settings' metadata
(:mod:`skymorph.config`).  With its parts ``_cli_args`` (parsers from metadata) and
``_cli_inspect`` (``skymorph inspect``), the only module that knows argparse.

Each stage sub-command takes the stage's own inputs (:class:`~skymorph.stages.Argument`)
and one flag per setting of its config section that declares a ``flag``; every
setting can also be given with ``--set SECTION.KEY=VALUE``.  Help texts and
defaults come from the settings themselves, so they cannot drift.  Only the module
of the chosen sub-command is imported, so ``skymorph --help`` loads no heavy library.
A stage that another package adds (entry-point group ``skymorph.stages``,
:func:`skymorph.registry.plugins`) gets its sub-command the same way, after skymorph's own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cli_args import (  # noqa: F401 - OTHER_COMMANDS, INSPECT_STAGES are re-exported
    COMMANDS,
    INSPECT_STAGES,
    OTHER_COMMANDS,
    _common,
    _parse_value,
    _settings,
    _settings_group,
    _stage_parser,
    add_setting_flag,
    commands,
)
from ._cli_inspect import _inspect_parser, _pairs, _truth_arguments
from ._version import __version__
from .config import PRESETS, Config, ConfigError, load_config, read_settings
from .errors import SkymorphError

__all__ = ["main", "COMMANDS", "config_from_args"]

EPILOG = """\
A typical session:
  skymorph run cutouts/ --out myrun          # ingest ... cluster, montages
  skymorph inspect serve myrun               # experts name the clusters in a browser
  skymorph inspect merge myrun               # votes -> morph_type in the catalog
  skymorph measure myrun && skymorph validate myrun

Every stage reads and writes RUN_DIR; a stage whose inputs and settings are
unchanged is skipped (--force recomputes it).  Settings come from the run's
config.toml, a preset (--preset), a TOML file (--config) and flags, and are
recorded in RUN_DIR/config.toml.
"""

RUN_FLAGS = ("denoise.enabled", "polar.enabled", "encode.encoder", "encode.weights", "reduce.dims",
             "cluster.k")
"""Settings that ``skymorph run`` offers as flags (every other one through --set)."""


# --- commands that are not single stages ----------------------------------------------------


def _run_parser(sub: Any) -> None:
    parser = sub.add_parser("run", help=COMMANDS["run"], formatter_class=argparse.RawDescriptionHelpFormatter,
                            description=(
                                "ingest -> denoise -> polar -> encode -> reduce -> cluster -> montages, "
                                "then stop: naming the clusters needs people (`skymorph inspect serve` and "
                                "`inspect merge`). Stages switched off in the settings are skipped; a stage "
                                "whose inputs and settings are unchanged is reused.\n\nExamples:\n"
                                "  skymorph run --demo --out demo_run              # the bundled 100 COSMOS "
                                "stamps\n"
                                "  skymorph run cutouts/ --out myrun --preset paper\n"
                                "  skymorph run cutouts/ --out myrun --set cluster.k=10"))
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, directories or glob patterns (see `skymorph ingest --help`)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    parser.add_argument("--demo", action="store_true", help="use the bundled 100 real COSMOS F814W stamps")
    group = parser.add_argument_group("main settings")
    flags = {"denoise.enabled": "--denoise", "polar.enabled": "--polar"}
    for spec in _settings(RUN_FLAGS):
        add_setting_flag(group, spec, flags.get(spec.key))
    _common(parser, force=False, scheduler=True, save=True)
    parser.set_defaults(handler=_run_pipeline)


def _run_pipeline(args: argparse.Namespace, config: Config) -> int:
    from .io.datasets import cosmos_demo
    from .stages.pipeline import run

    inputs = list(args.inputs) + ([str(cosmos_demo())] if args.demo else [])
    if not inputs:
        raise ConfigError("no inputs: name cutout files or directories, or use --demo")
    run_dir = run(inputs, args.out, config, progress=not args.quiet, save_settings=args.save_settings)
    catalog = run_dir.catalog()
    kept = int(catalog["consensus"].sum())
    print(f"{len(catalog)} galaxies clustered into {catalog['cluster'][catalog['cluster'] >= 0].nunique()} "
          f"consensus clusters; {kept} ({kept / max(len(catalog), 1):.0%}) kept by the vote.\n"
          f"Catalog: {run_dir.path / 'catalog.parquet'}\n"
          f"Montages: {run_dir.path / 'inspection'}\n"
          f"Next: skymorph inspect serve {run_dir.path}   (experts name the clusters)")
    return 0


def _info_parser(sub: Any) -> None:
    parser = sub.add_parser("info", help=COMMANDS["info"], description=COMMANDS["info"])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    parser.set_defaults(handler=_info, no_config=True)


def _info(args: argparse.Namespace, config: Config) -> int:
    from .io.rundir import RunDir
    from .registry import all_stages

    print(RunDir(args.run_dir).summary(stage_order=tuple(all_stages())))
    return 0


def _evaluate_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "evaluate", help=COMMANDS["evaluate"], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a run's clusters against labels known for part of the sample: purity, NMI and "
        "ARI of the K-means and consensus clusters; a simulated inspection (each cluster named by the "
        "majority class of its sampled montage members) with its accuracy, balanced accuracy and "
        "confusion matrix; the fraction kept; and, after `extend`, the final types on the kept, extended "
        "and all galaxies.\n\nExample:\n"
        "  skymorph evaluate myrun --truth labels.csv --id-col objid --label-col gz1_name \\\n"
        "      --map spiral_cw=spiral --map spiral_acw=spiral --exclude dont_know")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    _truth_arguments(parser, "class", "classes")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="JSON output (default RUN_DIR/evaluation/evaluation.json)")
    _settings_group(parser, "settings of the simulated inspection (as in the montages)",
                    _settings(("inspect.per_cluster", "inspect.seed")))
    _common(parser, force=False)
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace, config: Config) -> int:
    from .stages.evaluate import evaluate, format_report

    print(format_report(evaluate(args.run_dir, args.truth, args.id_col, args.label_col, config,
                                 label_map=_pairs(args.map), exclude=args.exclude or (), out=args.out)))
    return 0


# --- settings ------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> Config:
    """The settings of one command.

    In order, each overriding the one before: the run directory's own
    ``config.toml`` (the defaults for a new run), ``--preset`` when given,
    ``--config``, ``--set``, and the command's own flags.  Every value is checked
    before anything is recorded.
    """
    run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None)
    recorded = Path(run_dir) / "config.toml" if run_dir else None
    if run_dir and (Path(run_dir) / "skymorph.json").is_file():
        from .io.rundir import RunDir

        config = RunDir(run_dir).config()  # rebuilt from the stage records when missing or empty
    elif recorded is not None and recorded.exists():
        try:
            config = load_config(recorded, keep_unknown=True)
        except ConfigError as exc:
            raise ConfigError(f"{recorded}: {exc} (fix or delete that line)") from None
    else:
        config = Config()
    if getattr(args, "preset", None):
        config = config.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        config = config.update(read_settings(args.config))
    updates: dict[str, dict[str, Any]] = {}
    for item in getattr(args, "set", None) or []:
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


# --- entry point ---------------------------------------------------------------------------------


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with only ``command`` (if any) fully configured."""
    parser = argparse.ArgumentParser(
        prog="skymorph",
        description="Unsupervised morphological classification of galaxy images "
                    "(USmorph: CAE denoising, adaptive polar transform, ConvNeXt encoding, "
                    "UMAP, consensus clustering, expert naming, physical validation).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skymorph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, help_text in commands().items():
        if name != command:
            sub.add_parser(name, help=help_text)
        elif name == "run":
            _run_parser(sub)
        elif name == "info":
            _info_parser(sub)
        elif name == "evaluate":
            _evaluate_parser(sub)
        elif name == "inspect":
            _inspect_parser(sub)
        else:
            _stage_parser(sub, name)
    return parser


def _logging(args: argparse.Namespace) -> None:
    # Only skymorph's own logger gets DEBUG with -v: zarr, asyncio and numba stay quiet.  By
    # default only warnings and errors are logged: each command prints its own summary.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING
    logging.getLogger("skymorph").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skymorph`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in commands() else None)
    except SkymorphError as exc:  # a stage of another package that cannot be loaded
        print(f"skymorph {command}: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _logging(args)
    verbose = getattr(args, "verbose", False)
    try:
        config = Config() if getattr(args, "no_config", False) else config_from_args(args)
        code = int(args.handler(args, config) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader went away (`skymorph info RUN | head`): nothing is wrong, stop writing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SkymorphError as exc:
        # raised on purpose: the message says what to do
        if verbose:
            traceback.print_exc()
        print(f"skymorph {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"skymorph {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        # the machine's state (a missing path, permissions, a full disk), not a bug
        if verbose:
            traceback.print_exc()
        if exc.strerror is None:  # raised by skymorph with its own message
            print(f"skymorph {args.command}: error: {exc}", file=sys.stderr)
            return 1
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"skymorph {args.command}: error: {exc.strerror}{where}; check that the path exists, "
              "is writable and that the disk has room", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"skymorph {args.command}: internal error: this is a bug in skymorph {__version__}; please "
              "report it with the command and the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
