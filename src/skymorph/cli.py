"""The ``skymorph`` command: a thin layer over the Python API, generated from the
stage registry (:mod:`skymorph.stages`) and the settings' metadata
(:mod:`skymorph.config`).  This is the only module that knows argparse.

Each stage sub-command takes the stage's own inputs (:class:`~skymorph.stages.Argument`)
and one flag per setting of its config section that declares a ``flag``; every
setting can also be given with ``--set SECTION.KEY=VALUE``.  Help texts and
defaults come from the settings themselves, so they cannot drift.  Only the module
of the chosen sub-command is imported, so ``skymorph --help`` loads no heavy library.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tomllib
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .config import PRESETS, Config, ConfigError, SettingSpec, load_config, read_settings, section_settings
from .errors import SkymorphError
from .registry import summaries

__all__ = ["main", "COMMANDS", "config_from_args"]

# commands that are not one stage (the stages' own come from their declarations)
OTHER_COMMANDS: dict[str, str] = {
    "inspect": "montages, browser voting by experts (or labels you have), merge votes into types",
    "evaluate": "score the clusters against known labels",
    "run": "ingest -> cluster and draw the montages in one go",
    "info": "print what a run directory holds",
}
INSPECT_STAGES = ("montage", "merge")
"""Stages offered as actions of ``skymorph inspect`` rather than as commands of their own."""


def _commands() -> dict[str, str]:
    """Every command and its one-line help: the stages in registry order with their
    ``Stage.summary`` (``inspect`` where its actions come), then the other commands."""
    commands: dict[str, str] = {}
    for name, summary in summaries().items():
        if name in INSPECT_STAGES:
            commands.setdefault("inspect", OTHER_COMMANDS["inspect"])
        else:
            commands[name] = summary
    return {**commands, **OTHER_COMMANDS}


COMMANDS: dict[str, str] = _commands()
"""Sub-command -> what it does, in the order ``skymorph --help`` lists them."""

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


# --- arguments from metadata -------------------------------------------------------------


def _metavar(spec: SettingSpec) -> str:
    if spec.metavar:
        return spec.metavar
    kinds = [a.strip() for a in spec.annotation.split("|") if a.strip() != "None"]
    if spec.choices and all(isinstance(c, str) for c in spec.choices) and kinds == ["str"]:
        return "{" + ",".join(spec.choices) + "}"
    words = {"int": "N", "float": "X", "str": "TEXT", "list[int]": "N,N,...", "list[float]": "X,X,...",
             "list[str]": "TEXT"}
    if spec.choices and any(isinstance(c, str) for c in spec.choices):
        words["str"] = "|".join(c for c in spec.choices if isinstance(c, str))
    return "|".join(words.get(k, k) for k in kinds)


def _setting_help(spec: SettingSpec, flag: str | None = None) -> str:
    default = spec.default
    shown = "unset" if default is None else default
    text = re.sub(r"``(.+?)``", r"'\1'", spec.help).replace("%", "%%")
    if spec.annotation == "bool" and (flag or spec.flag or "").startswith("--no-"):
        # the flag switches the setting off: say so first, then what the setting does when on
        return f"switch off (on by default): {text} (--set {spec.key}=false)"
    return f"{text} (default: {shown}; --set {spec.key}=...)"


def _parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (numbers, booleans, lists), else text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _list_value(text: str) -> list[Any]:
    return [_parse_value(v) for v in text.replace(" ", "").split(",") if v]


def add_setting_flag(parser: argparse.ArgumentParser | Any, spec: SettingSpec,
                     flag: str | None = None) -> None:
    """One flag for one setting; only flags the user gives override the settings."""
    flag = flag or spec.flag or "--" + spec.name.replace("_", "-")
    common = {"dest": spec.key, "default": argparse.SUPPRESS, "help": _setting_help(spec, flag)}
    if spec.annotation == "bool":
        action = "store_false" if flag.startswith("--no-") else "store_true"
        parser.add_argument(flag, action=action, **common)
    elif spec.annotation.startswith("list[str]"):
        parser.add_argument(flag, action="append", type=_parse_text, metavar=_metavar(spec), **common)
    elif spec.annotation.startswith("list["):
        parser.add_argument(flag, type=_list_value, metavar=_metavar(spec), **common)
    else:
        parser.add_argument(flag, type=_parse_value, metavar=_metavar(spec), **common)


def _parse_text(text: str) -> str:
    return text


def _common(parser: argparse.ArgumentParser, *, force: bool = True, scheduler: bool = False,
            save: bool = False) -> None:
    """The options every command shares; ``scheduler`` only where chunks run on it, ``save``
    only where the command records its settings in ``config.toml``."""
    group = parser.add_argument_group("settings and output")
    group.add_argument("--config", metavar="FILE", help="TOML file of settings ([section] tables)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="'default' (offline, CPU, best measured) or 'paper' (CAE, APCT, ConvNeXt-XL); "
                       "a new run starts from 'default', an existing one from its config.toml")
    group.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                       help="override any setting, e.g. --set cluster.k=10 (repeatable)")
    if scheduler:
        add_setting_flag(group, section_settings("compute")["scheduler"])
    if save:
        group.add_argument("--save-settings", action="store_true",
                           help="also record this command's execution-only settings (scheduler, workers, "
                           "batch sizes, device, threads) in RUN_DIR/config.toml for later commands; "
                           "without it they apply to this command only")
    if force:
        group.add_argument("--force", action="store_true",
                           help="recompute even when the inputs and settings are unchanged")
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="also log what each step does (INFO and DEBUG lines)")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="no progress bars (warnings and errors are shown either way)")


def _settings(keys: Sequence[str]) -> list[SettingSpec]:
    return [section_settings(key.split(".")[0])[key.split(".")[1]] for key in keys]


def _settings_group(parser: argparse.ArgumentParser, title: str, specs: Sequence[SettingSpec]) -> None:
    if specs:
        group = parser.add_argument_group(title)
        for spec in specs:
            add_setting_flag(group, spec)


def _stage_parser(sub: Any, name: str) -> argparse.ArgumentParser:
    from .stages import get_stage

    stage = get_stage(name)
    parser = sub.add_parser(name, help=stage.summary, description=stage.description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if stage.creates_run:
        for argument in stage.arguments:
            _add_argument(parser, argument)
        parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    else:
        parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
        for argument in stage.arguments:
            _add_argument(parser, argument)
    if stage.flags is not None:
        specs = _settings(stage.flags)
    elif stage.sections:
        specs = [spec for spec in section_settings(stage.sections[0]).values() if spec.flag]
    else:
        specs = []
    _settings_group(parser, "settings of this stage", specs)
    _common(parser, scheduler=stage.chunked, save=True)
    parser.set_defaults(handler=_run_stage(name))
    return parser


def _add_argument(parser: argparse.ArgumentParser, argument: Any) -> None:
    kwargs: dict[str, Any] = {"help": argument.help}
    if argument.action:
        kwargs["action"] = argument.action
    else:
        kwargs["metavar"] = argument.metavar
        if argument.nargs:
            kwargs["nargs"] = argument.nargs
    if argument.name.startswith("--"):
        kwargs["dest"] = argument.dest
        if argument.required:
            kwargs["required"] = True
    parser.add_argument(argument.name, **kwargs)


def _run_stage(name: str) -> Callable[[argparse.Namespace, Config], int]:
    def handler(args: argparse.Namespace, config: Config) -> int:
        from .stages import execute, get_stage

        stage = get_stage(name)
        options = {a.dest: getattr(args, a.dest) for a in stage.arguments}
        where = args.out if stage.creates_run else args.run_dir
        run = execute(name, where, config, force=args.force, progress=not args.quiet, options=options,
                      save_settings=args.save_settings)
        if stage.report is not None:
            print(stage.report(run, run.stage_info(name) or {}, options))
        return 0

    return handler


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


INSPECT_DESCRIPTION = """\
Visual classification of the consensus clusters (the paper's expert step):
  montage  draw a grid of random members per cluster + an HTML gallery
  serve    web application where experts name each cluster with one of inspect.types
  merge    votes -> one type per cluster -> morph_type in the catalog
  auto     name each cluster by the majority of labels you already have (an automatic voter)
  refine   experts type single galaxies, those the extension classifier is least sure of

Examples:
  skymorph inspect montage myrun
  skymorph inspect serve myrun --port 8765   # then open the printed http://127.0.0.1:8765/?token=...
  skymorph inspect merge myrun --min-agree 2
  skymorph inspect merge myrun --votes alice.csv --votes bob.csv --votes carol.csv
  skymorph inspect refine myrun              # then open the printed http://127.0.0.1:8765/refine?token=..."""


def _inspect_parser(sub: Any) -> None:
    parser = sub.add_parser("inspect", help=COMMANDS["inspect"], description=INSPECT_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    _stage_parser(actions, "montage")
    serve = actions.add_parser("serve", help="browser application for the experts' votes",
                               description="Serve the voting application; every vote goes to "
                               "RUN_DIR/inspection/votes.csv at once. Draws the montages first if needed.")
    serve.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    _settings_group(serve, "settings of this command", _settings(("inspect.host", "inspect.port")))
    serve.add_argument("--open", dest="open_browser", action="store_true",
                       help="open the page in the default web browser")
    _common(serve, force=False)
    serve.set_defaults(handler=_serve)
    _stage_parser(actions, "merge")
    _auto_parser(actions)
    _refine_parser(actions)


def _refine_parser(actions: Any) -> None:
    p = actions.add_parser(
        "refine", help="experts type single galaxies, least sure first (active learning)",
        description="Serve the voting application on its 'teach single galaxies' page: after the "
        "clusters are named, the extension classifier shows the galaxies it is least sure of (least "
        "margin), inspect.refine_page at a time; each expert gives each one a type or 'skip'. Labels "
        "go to RUN_DIR/inspection/galaxy_votes.csv at once; `skymorph extend` learns from them "
        "(weight extend.taught_weight) and gives those galaxies type_source = taught.\n\nExample:\n"
        "  skymorph inspect refine myrun --page 20   # then open the printed address\n"
        "  skymorph extend myrun",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with named clusters and features")
    _settings_group(p, "settings of this command",
                    _settings(("inspect.host", "inspect.port", "inspect.refine_page")))
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="open the page in the default web browser")
    _common(p, force=False)
    p.set_defaults(handler=_refine)


def _refine(args: argparse.Namespace, config: Config) -> int:
    from .inspection import serve

    serve(args.run_dir, config, open_browser=args.open_browser, page="refine")
    return 0


def _auto_parser(actions: Any) -> None:
    p = actions.add_parser(
        "auto", help="name each cluster by the majority of known labels (an automatic voter)",
        description="Name every consensus cluster by the majority label of its montage members, as an "
        "automatic voter (expert 'auto:<file>') in RUN_DIR/inspection/votes.csv: for labelled subsets "
        "and benchmarks without people.\n\nExample:\n"
        "  skymorph inspect auto myrun --truth labels.csv --id-col objid --label-col gz1_name \\\n"
        "      --set 'inspect.types=[\"ELLIPTICAL\",\"SPIRAL\",\"EDGE_ON\",\"UNC\"]' \\\n"
        "      --map spiral_cw=SPIRAL --map spiral_acw=SPIRAL --exclude dont_know --exclude merger --merge",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    _truth_arguments(p, "label", "labels")
    p.add_argument("--expert", default=None, metavar="NAME",
                   help="voter name (must start with 'auto:'; default auto:<truth file name>)")
    p.add_argument("--merge", action="store_true",
                   help="merge the votes at once; with no human voter, with min_agree 1")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="then type N single galaxies as a simulated expert (`inspect refine`): pages of "
                   "inspect.refine_page galaxies by least margin; galaxies without a usable label are "
                   "skipped. Names the clusters only where they are used (extend.cluster_labels)")
    _settings_group(p, "settings of this command",
                    _settings(("inspect.per_cluster", "inspect.seed", "inspect.refine_page")))
    _common(p, force=False)
    p.set_defaults(handler=_auto)


def _truth_arguments(parser: argparse.ArgumentParser, what: str, plural: str) -> None:
    parser.add_argument("--truth", required=True, metavar="FILE",
                        help=f"table of known {plural} (CSV, TSV, Parquet or FITS)")
    parser.add_argument("--id-col", required=True, metavar="COL",
                        help="truth column matched (as text) to the catalog's id")
    parser.add_argument("--label-col", required=True, metavar="COL", help=f"truth column of the {what}")
    parser.add_argument("--map", action="append", metavar="OLD=NEW", default=None,
                        help=f"rename a {what} first, e.g. spiral_cw=spiral (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="LABEL", default=None,
                        help=f"treat a {what} as unknown, e.g. dont_know (repeatable)")


def _pairs(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ConfigError(f"--map expects OLD=NEW, got {item!r}")
        out[old] = new
    return out


def _auto(args: argparse.Namespace, config: Config) -> int:
    from ._text import text_table
    from .inspection.auto import auto_votes, human_voters
    from .inspection.merge import format_counts
    from .io.rundir import RunDir
    from .stages.inspect import merge

    if args.refine < 0:
        raise ConfigError(f"--refine takes the number of galaxies to type (>= 0), got {args.refine}")
    run = RunDir(args.run_dir)
    if args.refine and not config.extend.cluster_labels:
        return _auto_refine(args, config, run)
    result = auto_votes(args.run_dir, args.truth, args.id_col, args.label_col, config,
                        label_map=_pairs(args.map), exclude=args.exclude or (), expert=args.expert)
    voted = result[result["type"] != ""]
    print(f"{len(voted)} of {len(result)} consensus clusters named automatically "
          f"(majority label of the sampled members) in {run.path / 'inspection' / 'votes.csv'}:")
    print(text_table(["cluster", "vote", "majority", "labels"],
                     [[row.cluster, row.type or "(no labelled member: no vote)",
                       f"{row.n_majority}/{row.n_labelled} labelled", f"[{row.labels}]"]
                      for row in result.itertuples()], indent="  "))
    min_agree = config.inspect.min_agree if human_voters(run) else 1
    if args.merge:
        merged = merge(run, config=config, min_agree=min_agree)
        from .io.csvfile import read_csv

        counts = read_csv(run.path / "inspection" / "type_counts.csv")
        print(f"merged with min_agree {min_agree} ({len(merged)} clusters):")
        print(format_counts(counts))
    else:
        print(f"next: skymorph inspect merge {run.path} --min-agree {min_agree}"
              + ("" if human_voters(run) else "   (one automatic voter: agreement of 1 is all there can be)"))
    if args.refine:
        if not args.merge:
            print("the clusters are not merged yet (--merge): the single galaxies are picked without "
                  "the cluster names")
        return _auto_refine(args, config, run)
    return 0


def _auto_refine(args: argparse.Namespace, config: Config, run: Any) -> int:
    from .inspection.refine import auto_refine

    result = auto_refine(run, args.truth, args.id_col, args.label_col, config, n_labels=args.refine,
                         label_map=_pairs(args.map), exclude=args.exclude or (), expert=args.expert)
    start = "the named clusters" if config.extend.cluster_labels else "random galaxies"
    print(f"{result['n_labelled']} single galaxies typed by {result['expert']} (starting from {start}), "
          f"{result['n_looked_at']} looked at ({result['n_looked_at'] - result['n_labelled']} skipped: no "
          f"usable label) in {len(result['pages'])} pages of up to {result['page_size']}; "
          f"{result['n_taught']} galaxies taught in all, in {run.path / 'inspection' / 'galaxy_votes.csv'}\n"
          f"next: skymorph extend {run.path}   (taught galaxies get type_source = taught)")
    return 0


def _serve(args: argparse.Namespace, config: Config) -> int:
    from .inspection import serve

    serve(args.run_dir, config, open_browser=args.open_browser)
    return 0


def _info_parser(sub: Any) -> None:
    parser = sub.add_parser("info", help=COMMANDS["info"], description=COMMANDS["info"])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    parser.set_defaults(handler=_info, no_config=True)


def _info(args: argparse.Namespace, config: Config) -> int:
    from .io.rundir import RunDir
    from .stages import STAGES

    print(RunDir(args.run_dir).summary(stage_order=tuple(STAGES)))
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
            config = load_config(recorded)
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
    for name, help_text in COMMANDS.items():
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
    parser = build_parser(command if command in COMMANDS else None)
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
