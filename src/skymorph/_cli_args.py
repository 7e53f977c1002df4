"""Parsers of the ``skymorph`` command (:mod:`skymorph.cli`) built from metadata: the table of
commands, one flag per setting from the settings' metadata, and one sub-command per stage
from the stage registry.  Imports nothing heavy: ``skymorph --help`` reads it."""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from .config import PRESETS, Config, SettingSpec, section_settings
from .registry import OTHER_COMMANDS, plugins, summaries

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
"""Sub-command -> what it does, in the order ``skymorph --help`` lists them: skymorph's own
(:func:`commands` adds those of the stages from other packages)."""


def commands() -> dict[str, str]:
    """Every sub-command and its one-line help: :data:`COMMANDS`, then one per stage that
    another package adds (:func:`skymorph.registry.plugins`), its distribution named."""
    return {**COMMANDS, **{name: f"{plugin.summary} [{plugin.dist}]".replace("%", "%%")  # argparse's %
                            for name, plugin in plugins().items()}}


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
