"""The stage registry: every stage, in pipeline order, and where its declaration lives.

This is the one list that the executor (:mod:`skymorph.stages`), the command line
(:mod:`skymorph.cli`) and the public API (:mod:`skymorph`) derive theirs from.  It
imports nothing of skymorph, so ``skymorph --help`` stays fast: the one-line summaries the
help lists are read from the stage declarations' source (:func:`summaries`) instead of
importing the stage modules and their libraries.

Installed packages add stages through the entry-point group ``skymorph.stages``
(:func:`plugins`, see docs/architecture.md, "A stage from another package"); they come
after the built-in :data:`STAGES` (:func:`all_stages`) and are never part of :data:`PIPELINE`.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STAGES", "PIPELINE", "OTHER_COMMANDS", "GROUP", "Plugin", "summaries", "plugins", "all_stages"]

log = logging.getLogger(__name__)

STAGES: dict[str, str] = {
    "ingest": "skymorph.stages.ingest:STAGE",
    "denoise": "skymorph.stages.denoise:STAGE",
    "polar": "skymorph.stages.polar:STAGE",
    "encode": "skymorph.stages.encode:STAGE",
    "reduce": "skymorph.stages.reduce:STAGE",
    "cluster": "skymorph.stages.cluster:STAGE",
    "montage": "skymorph.stages.inspect:MONTAGE",
    "merge": "skymorph.stages.inspect:MERGE",
    "extend": "skymorph.stages.extend:STAGE",
    "measure": "skymorph.stages.measure:STAGE",
    "validate": "skymorph.stages.validate:STAGE",
    "similar": "skymorph.stages.similar:STAGE",
    "anomaly": "skymorph.stages.anomaly:STAGE",
    "subdivide": "skymorph.stages.subdivide:STAGE",
}
"""Every stage, in pipeline order, and the ``module:name`` of its :class:`~skymorph.stages.Stage`
(imported on use).  The module also defines the stage's public function, named like the stage."""

PIPELINE = ("ingest", "denoise", "polar", "encode", "reduce", "cluster", "montage")
"""What ``skymorph run`` executes, in order (stages switched off in the settings are skipped)."""

OTHER_COMMANDS: dict[str, str] = {
    "inspect": "montages, browser voting by experts (or labels you have), merge votes into types",
    "evaluate": "score the clusters against known labels",
    "run": "ingest -> cluster and draw the montages in one go",
    "info": "print what a run directory holds",
}
"""The commands of ``skymorph`` that are not one stage, and their one-line help (a stage
from another package may take none of these names, nor that of a built-in stage)."""

GROUP = "skymorph.stages"
"""The entry-point group through which an installed package adds a stage."""

_ROOT = Path(__file__).resolve().parent.parent
_SUMMARY = re.compile(r'^\s+summary="([^"\\\n]*)",?$', re.MULTILINE)
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _summary(text: str, attribute: str) -> str | None:
    """The ``summary="..."`` of the declaration ``ATTRIBUTE = Stage(`` in a module's source."""
    start = re.search(rf"^{attribute}\s*(?::[^=\n]*)?=\s*(?:[\w.]+\.)?Stage\(", text, re.MULTILINE)
    found = start and _SUMMARY.search(text, start.end())
    return found.group(1) if found else None


def summaries() -> dict[str, str]:
    """Each stage's ``Stage.summary``, read from its declaration without importing the module.

    The declaration must give ``summary="..."`` as one double-quoted string on one line,
    without escapes (``tests/test_registry.py`` checks every summary against the imported
    ``Stage``).

    Returns
    -------
    dict
        Stage name -> one-line summary, in :data:`STAGES` order.
    """
    out = {}
    for name, target in STAGES.items():
        module, _, attribute = target.partition(":")
        text = (_ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        summary = _summary(text, attribute)
        if summary is None:
            raise RuntimeError(f"{module}: no one-line summary=\"...\" in the {attribute} declaration")
        out[name] = summary
    return out



# --- stages from other packages ----------------------------------------------------------------


@dataclass(frozen=True)
class Plugin:
    """A stage that an installed package adds through the entry-point group :data:`GROUP`."""

    name: str
    """The entry point's name: the stage's name and its ``skymorph`` sub-command."""
    target: str
    """``module:attribute`` of its :class:`~skymorph.stages.Stage` (imported on use)."""
    dist: str
    """The distribution that declares it (``name version``), named in every message about it."""
    summary: str
    """Its ``Stage.summary``, for ``skymorph --help``."""


def all_stages() -> dict[str, str]:
    """Every stage -> ``module:attribute`` of its declaration: the built-in :data:`STAGES`,
    then the stages of other packages (:func:`plugins`)."""
    return {**STAGES, **{name: plugin.target for name, plugin in plugins().items()}}


@functools.cache
def plugins() -> dict[str, Plugin]:
    """The stages that installed packages add, in the order their distributions are found.

    Found once per process (``plugins.cache_clear()`` looks again).  A stage is refused, with a
    one-line warning naming its distribution, when its name is not a plain lower-case word, is
    that of a built-in stage or command (:data:`STAGES`, :data:`OTHER_COMMANDS`) or of a stage
    found before it; or when its summary can be read neither from its module's source nor by
    importing the module (the module is imported only when the source is not plain).

    Returns
    -------
    dict
        Stage name -> :class:`Plugin`.
    """
    out: dict[str, Plugin] = {}
    for entry in _entry_points():
        dist = f"{entry.dist.name} {entry.dist.version}" if entry.dist is not None else "an unknown package"
        where = f"skymorph: plugin stage {entry.name!r} of {dist} ({entry.value})"
        if not _NAME.fullmatch(entry.name):
            log.warning("%s refused: a stage name is a lower-case word (letters, digits, _)", where)
        elif entry.name in STAGES or entry.name in OTHER_COMMANDS:
            log.warning("%s refused: %r is a built-in %s of skymorph, which stays", where, entry.name,
                        "stage" if entry.name in STAGES else "command")
        elif entry.name in out:
            log.warning("%s refused: %s adds a stage of that name too", where, out[entry.name].dist)
        else:
            try:
                summary = _plugin_summary(_target(entry.value))
            except (Exception, SystemExit) as exc:  # a broken plugin must not break the other commands
                log.warning("%s left out: %s: %s", where, type(exc).__name__, exc)
                continue
            out[entry.name] = Plugin(entry.name, _target(entry.value), dist, summary)
    return out


def _entry_points() -> list:
    """The entry points of :data:`GROUP`.  Importing ``importlib.metadata`` (email, zipfile,
    csv...) takes 20-40 ms, a quarter or more of ``skymorph --help``'s start-up, and looking at
    the ``entry_points.txt`` files on ``sys.path`` under 2 ms, so it is imported only when one
    of them names the group (or when a distribution could be where this look does not see: a
    zip file on ``sys.path``, a finder of its own on ``sys.meta_path``)."""
    if not _may_have_plugins():
        return []
    from importlib.metadata import entry_points

    return list(entry_points(group=GROUP))


def _may_have_plugins() -> bool:
    from importlib.machinery import PathFinder

    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return True
    for root in sys.path:
        root = root or "."
        if os.path.isfile(root):
            return True
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            if entry.name.lower().endswith((".dist-info", ".egg-info")):
                try:
                    text = Path(entry.path, "entry_points.txt").read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if GROUP in text:
                    return True
    return False


def _target(value: str) -> str:
    """``module:attribute`` of an entry point's value (without its ``[extras]``, if any)."""
    return value.partition("[")[0].replace(" ", "")


def _plugin_summary(target: str) -> str:
    """The summary of the declaration ``module:attribute``, from its source when it is a plain
    ``.py`` file (nothing of the plugin is imported), else from the imported module."""
    module, _, attribute = target.partition(":")
    if not module or not attribute.isidentifier():
        raise ValueError("the entry point must name module:attribute (e.g. mypkg.stages:STAGE)")
    origin = _source_file(module)
    if origin is not None:
        summary = _summary(Path(origin).read_text(encoding="utf-8"), attribute)
        if summary is not None:
            return summary
    summary = getattr(getattr(importlib.import_module(module), attribute), "summary", None)
    if not isinstance(summary, str):
        raise TypeError(f"{target} is not a skymorph.stages.Stage (no summary)")
    return summary.splitlines()[0] if summary else ""


def _source_file(module: str) -> str | None:
    """The ``.py`` file of ``module``, found like the import system finds it on ``sys.path``
    but without running any package's ``__init__``; ``None`` where it is not that simple."""
    from importlib.machinery import PathFinder

    if module in sys.modules:
        return None
    path = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[:i + 1]), path)
        if spec is None:
            return None
        path = spec.submodule_search_locations
        if i < len(parts) - 1 and path is None:
            return None
    origin = spec.origin if spec is not None else None
    return origin if origin and origin.endswith(".py") and os.path.isfile(origin) else None
