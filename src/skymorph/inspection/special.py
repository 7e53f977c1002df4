"""Special types of subclasses: experts name the subclasses of ``skymorph subdivide``.

An expert names a subclass (``"7.3"``) with one of ``inspect.special_types`` (tidal, lens,
merger, ring, compact by default; matched regardless of case) or with free text.  The votes go
through the same vote store as the cluster votes (:class:`~skymorph.inspection.votes.VoteStore`:
atomic rewrites under a file lock, spreadsheet-safe cells, the clustering they were cast on) into
``RUN_DIR/inspection/subclass_votes.csv`` (columns ``expert``, ``cluster`` = the subclass,
``type`` = the name, ``time``, ``clustering``).  :func:`merge_special` turns them into
``special_type`` in the catalog: a subclass takes the name at least ``inspect.min_agree`` experts
gave it (and more than any other name); its galaxies get that name, every other galaxy ``""``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..io.rundir import RunDir
from .montage import InspectError, clustering_fingerprint, inspection_dir
from .votes import VoteStore, clean_expert

__all__ = ["SubclassVoteStore", "clean_label", "group_folder", "merge_special", "subclass_manifests",
           "subclass_votes_path"]

log = logging.getLogger("skymorph.inspection")

MAX_LABEL = 40
_SUBCLUSTER = re.compile(r"[A-Za-z0-9_+-]{1,40}\.-?[0-9]{1,6}")


def subclass_votes_path(run: RunDir) -> Any:
    return run.path / "inspection" / "subclass_votes.csv"


def group_folder(group: str) -> str:
    """The folder in ``RUN_DIR/subdivide`` of the subclass montages of cluster or type ``group``."""
    return "group_" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in group)


def subclass_manifests(run: RunDir, clustering: str) -> list[dict[str, Any]]:
    """The montage manifests (``subdivide/group_*/montages.json``, with their ``folder``) of
    every group that ``skymorph subdivide`` split on the clustering ``clustering``
    (:func:`~skymorph.inspection.montage.clustering_fingerprint`); unreadable ones are left out."""
    out = run.path / "subdivide"
    try:
        groups = json.loads((out / "groups.json").read_text()).get("groups", [])
    except (OSError, ValueError):
        return []
    manifests = []
    for path in sorted(out.glob("group_*/montages.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("group") in groups and manifest.get("clustering") == clustering:
            manifests.append({**manifest, "folder": path.parent.name})
    return manifests


def clean_label(label: Any, special_types: list[str]) -> str:
    """A subclass name: the configured spelling of a special type, or checked free text.

    Raises
    ------
    InspectError
        Not text, empty, longer than 40 characters, or holding control characters.
    """
    if not isinstance(label, str):
        raise InspectError("a subclass name must be text")
    text = " ".join(label.split())
    if not text:
        raise InspectError("enter a name for the subclass (a special type or free text)")
    if len(text) > MAX_LABEL or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InspectError(f"a subclass name is at most {MAX_LABEL} printable characters")
    codes = {t.casefold(): t for t in special_types}
    return codes.get(text.casefold(), text)


class SubclassVoteStore(VoteStore):
    """The vote store for subclasses: the key is the subclass name (``"7.3"``), not an integer."""

    def cast(self, expert: str, cluster: Any, type_: str) -> dict[str, str]:  # type: ignore[override]
        """Record (or replace) ``expert``'s name for subclass ``cluster``; returns the stored row."""
        from .votes import _now

        expert = clean_expert(expert)
        sub = str(cluster)
        if not _SUBCLUSTER.fullmatch(sub):
            raise InspectError(f"{sub[:50]!r} is not a subclass name such as 7.3")
        row = {"expert": expert, "cluster": sub, "type": type_, "time": _now(), "clustering": self.clustering}
        key = (expert.casefold(), sub, self.clustering)
        with self._locked():
            rows = [r for r in self.rows() if (r["expert"].casefold(), r["cluster"], r["clustering"]) != key]
            rows.append(row)
            rows.sort(key=lambda r: (r["clustering"], r["expert"].casefold(), r["cluster"]))
            self._write(rows)
        return row

    def votes_of(self, expert: str) -> dict[str, str]:  # type: ignore[override]
        """``{subclass: name}`` cast by ``expert`` on the current clustering."""
        key = clean_expert(expert).casefold()
        return {r["cluster"]: r["type"] for r in self.rows()
                if r["expert"].casefold() == key and r["clustering"] in (self.clustering, "")}


def merge_special(run: RunDir, config: Config) -> pd.DataFrame | None:
    """Subclass votes -> ``special_type`` in the catalog (``None`` when nobody named a subclass).

    Writes ``RUN_DIR/inspection/subclass_types.csv`` (one row per named subclass).
    """
    path = subclass_votes_path(run)
    if not path.exists():
        return None
    catalog = run.catalog()
    store = SubclassVoteStore(path, clustering_fingerprint(catalog))
    rows = [r for r in store.rows() if r["clustering"] in (store.clustering, "")]
    stale = len(store.rows()) - len(rows)
    if stale:
        log.warning("%d subclass vote(s) were cast on another clustering and are left out", stale)
    special = list(config.inspect.special_types)
    by_sub: dict[str, list[str]] = {}
    for r in rows:
        by_sub.setdefault(r["cluster"], []).append(clean_label(r["type"], special))
    decided = []
    for sub, names in sorted(by_sub.items()):
        counts = Counter(n.casefold() for n in names).most_common()
        top, n_top = counts[0]
        spelled = next(n for n in names if n.casefold() == top)
        agreed = n_top >= config.inspect.min_agree and not (len(counts) > 1 and counts[1][1] == n_top)
        decided.append({"subcluster": sub, "special_type": spelled if agreed else "",
                        "n_experts": len(names), "n_agree": n_top,
                        "votes": ";".join(f"{n}:{c}" for n, c in sorted(Counter(names).items()))})
    table = pd.DataFrame(decided, columns=["subcluster", "special_type", "n_experts", "n_agree", "votes"])
    table.to_csv(inspection_dir(run) / "subclass_types.csv", index=False)
    names = dict(zip(table["subcluster"], table["special_type"], strict=True))
    sub = catalog["subcluster"].fillna("").astype(str) if "subcluster" in catalog.columns else None
    column = (np.array([names.get(s, "") for s in sub], dtype=object) if sub is not None
              else np.full(len(catalog), "", dtype=object))
    run.update_catalog(pd.DataFrame({"id": catalog["id"], "special_type": column}))
    return table
