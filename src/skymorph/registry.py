"""The stage registry: every stage, in pipeline order, and where its declaration lives.

This is the one list that the executor (:mod:`skymorph.stages`), the command line
(:mod:`skymorph.cli`) and the public API (:mod:`skymorph`) derive theirs from.  It
imports nothing, so ``skymorph --help`` stays fast: the one-line summaries the help
lists are read from the stage declarations' source (:func:`summaries`) instead of
importing the stage modules and their libraries.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["STAGES", "PIPELINE", "summaries"]

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

_ROOT = Path(__file__).resolve().parent.parent
_SUMMARY = re.compile(r'^\s+summary="([^"\\\n]*)",?$', re.MULTILINE)


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
        start = re.search(rf"^{attribute} = Stage\(", text, re.MULTILINE)
        found = start and _SUMMARY.search(text, start.end())
        if not found:
            raise RuntimeError(f"{module}: no one-line summary=\"...\" in the {attribute} declaration")
        out[name] = found.group(1)
    return out
