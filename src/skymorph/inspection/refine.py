"""Experts teach single galaxies: the pages of ``inspect refine`` and ``inspect auto --refine``.

After the clusters are named, the extension classifier types every galaxy; it is least
sure of the galaxies whose two most probable types are nearly tied.  ``skymorph inspect
refine RUN`` (the "teach" page of the voting application) shows those galaxies a page
at a time (``inspect.refine_page``, least margin first; :mod:`skymorph.core.refine`),
and an expert gives each one a type of ``inspect.types`` or *skip*.

The labels are kept beside the cluster votes, in ``RUN_DIR/inspection/galaxy_votes.csv``
(``expert``, ``id``, ``type``, ``time``; ``skip`` for a galaxy looked at and left
untyped), written like ``votes.csv`` (:class:`GalaxyVoteStore`: atomic, locked).  They
are tied to the galaxy's ``id``, not to a clustering, so they survive a re-clustering.
A galaxy's taught type is the most common type its experts gave it (a tie goes to the
latest label); ``skymorph extend`` learns from the taught galaxies with weight
``extend.taught_weight`` above the cluster-derived ones, and gives them the taught type
with ``type_source = taught``.

``inspect auto --refine N`` runs the same loop with a simulated expert who answers from
a table of known labels (a galaxy without a usable label is skipped): pages of
``inspect.refine_page`` galaxies by least margin until ``N`` galaxies are typed,
starting from the named clusters or, without them (``extend.cluster_labels = false``
or no names yet), from ``inspect.refine_start`` galaxies drawn at random.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..io.arrays import galaxy_array
from ..io.atomic import write_text_atomic
from ..io.rundir import RunDir
from .montage import InspectError, consensus_labels
from .votes import CsvStore, _now, clean_expert

__all__ = ["GalaxyVoteStore", "GALAXY_VOTE_COLUMNS", "SKIP", "taught_types", "looked_at", "refine_page",
           "auto_refine", "training_labels", "RefineApp"]

GALAXY_VOTE_COLUMNS = ["expert", "id", "type", "time"]
"""Columns of ``galaxy_votes.csv``."""
SKIP = "skip"
"""The ``type`` of a galaxy an expert looked at and left untyped."""
FILE = "galaxy_votes.csv"


class GalaxyVoteStore(CsvStore):
    """The experts' single-galaxy labels, ``RUN_DIR/inspection/galaxy_votes.csv``.

    Written as :class:`~skymorph.inspection.votes.VoteStore` writes ``votes.csv``: the whole
    file to a temporary file renamed over it, under a thread lock and a file lock, text
    cells spreadsheet-safe.  One row per (expert, galaxy): a new label replaces the
    expert's earlier one.
    """

    columns = GALAXY_VOTE_COLUMNS

    @classmethod
    def of(cls, run: RunDir) -> GalaxyVoteStore:
        """The store of a run directory."""
        return cls(run.path / "inspection" / FILE)

    def cast(self, expert: str, labels: Mapping[str, str]) -> list[dict[str, str]]:
        """Record ``expert``'s labels ``{galaxy id: type or "skip"}`` (replacing earlier ones)."""
        expert = clean_expert(expert)
        now = _now()
        new = [{"expert": expert, "id": str(i), "type": str(t), "time": now} for i, t in labels.items()]
        keys = {(expert.casefold(), r["id"]) for r in new}
        with self._locked():
            rows = [r for r in self.rows() if (r["expert"].casefold(), r["id"]) not in keys] + new
            self._write(rows)
        return new

    def digest(self) -> str:
        """A short hash of the file's content (``-`` when there is none)."""
        import hashlib

        if not self.path.exists():
            return "-"
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def _ids(catalog: pd.DataFrame) -> np.ndarray:
    return catalog["id"].map(lambda v: v.decode() if isinstance(v, bytes) else str(v)).str.strip().to_numpy()


def taught_types(run: RunDir, catalog: pd.DataFrame | None = None,
                 types: Sequence[str] | None = None) -> np.ndarray:
    """The taught type of every catalog row (``""`` where no expert typed the galaxy).

    The most common type among the experts' labels of the galaxy (``skip`` is no type); a
    tie goes to the type labelled last.  With ``types``, a label that is none of them
    (case-insensitively) is ignored.
    """
    catalog = run.catalog() if catalog is None else catalog
    codes = None if types is None else {t.casefold(): t for t in types}
    by_id: dict[str, list[tuple[str, str]]] = {}
    for r in GalaxyVoteStore.of(run).rows():
        t = r["type"].strip()
        if not t or t.casefold() == SKIP:
            continue
        if codes is not None:
            t = codes.get(t.casefold(), "")
            if not t:
                continue
        by_id.setdefault(r["id"], []).append((r["time"], t))
    chosen = {}
    for gid, labels in by_id.items():
        labels.sort()
        counts = Counter(t for _, t in labels)
        best = max(counts.values())
        chosen[gid] = next(t for _, t in reversed(labels) if counts[t] == best)
    return np.array([chosen.get(i, "") for i in _ids(catalog)], dtype=object).astype(str)


def looked_at(run: RunDir, catalog: pd.DataFrame | None = None, expert: str | None = None) -> np.ndarray:
    """Per catalog row: whether an expert (``expert`` only, when given) labelled or skipped it."""
    catalog = run.catalog() if catalog is None else catalog
    key = None if expert is None else clean_expert(expert).casefold()
    seen = {r["id"] for r in GalaxyVoteStore.of(run).rows() if key is None or r["expert"].casefold() == key}
    return np.isin(_ids(catalog), list(seen))


def training_labels(run: RunDir, config: Config, catalog: pd.DataFrame | None = None
                    ) -> dict[str, np.ndarray]:
    """What the extension classifier learns from, per catalog row.

    Returns
    -------
    dict
        ``cluster`` (the named cluster's type where the consensus vote kept the galaxy and
        ``extend.cluster_labels`` is on, else ``""``), ``taught`` (:func:`taught_types`),
        and ``learn``, ``y``, ``weight`` from
        :func:`skymorph.core.refine.combine_labels` (types of ``extend.exclude_types``
        are not learnt).
    """
    from ..core.refine import combine_labels

    catalog = run.catalog() if catalog is None else catalog
    types = list(config.inspect.types)
    exclude = list(config.extend.exclude_types)
    cluster = np.full(len(catalog), "", dtype=object)
    if config.extend.cluster_labels and "morph_type" in catalog.columns:
        mtype = catalog["morph_type"].fillna("").astype(str).to_numpy()
        typed = (consensus_labels(catalog) >= 0) & np.isin(mtype, types)
        cluster = np.where(typed, mtype, "")
    taught = taught_types(run, catalog, types)
    learn, y, weight = combine_labels(np.where(np.isin(cluster, exclude), "", cluster),
                                      np.where(np.isin(taught, exclude), "", taught),
                                      taught_weight=config.extend.taught_weight)
    return {"cluster": cluster.astype(str), "taught": taught, "learn": learn, "y": y, "weight": weight}


def _features(run: RunDir, config: Config, n: int) -> np.ndarray:
    array = galaxy_array(run, config.extend.input, n, error=InspectError)
    return np.asarray(array[:], dtype=np.float32)


def refine_page(run: RunDir, config: Config, *, x: np.ndarray | None = None,
                catalog: pd.DataFrame | None = None, n: int | None = None) -> pd.DataFrame:
    """The next page for the experts: galaxies nobody has looked at, least margin first.

    The extension's classifier (:func:`skymorph.core.refine.uncertainty`) is fitted on
    the named clusters and the taught galaxies; while it has fewer than two types to
    learn from, the page is ``inspect.refine_start`` galaxies drawn at random
    (``inspect.seed``).

    Returns
    -------
    DataFrame
        ``row`` (catalog row), ``id``, ``margin``, ``predicted``, ``p_predicted`` and
        ``reason`` (``margin`` or ``random``); one row per galaxy of the page.
    """
    from ..core.extend import ExtendError
    from ..core.refine import margins, random_start, select_queries, uncertainty

    catalog = run.catalog() if catalog is None else catalog
    x = _features(run, config, len(catalog)) if x is None else x
    labels = training_labels(run, config, catalog)
    free = ~looked_at(run, catalog) & np.isfinite(x).all(axis=1)
    size = config.inspect.refine_page if n is None else int(n)
    classes = sorted(set(labels["y"][labels["learn"]].tolist()))
    ids = _ids(catalog)
    if len(classes) < 2:
        rows = random_start(len(catalog), n=min(size, config.inspect.refine_start), seed=config.inspect.seed,
                            candidates=free)
        return pd.DataFrame({"row": rows, "id": ids[rows], "margin": np.nan, "predicted": "",
                             "p_predicted": np.nan, "reason": "random"})
    cfg = config.extend
    try:
        classes, proba = uncertainty(x, labels["learn"], labels["y"], weight=labels["weight"],
                                     model=cfg.model, c=cfg.c, class_weight=cfg.class_weight,
                                     max_iter=cfg.max_iter, seed=cfg.seed)
    except ExtendError as exc:
        raise InspectError(str(exc)) from None
    rows = select_queries(proba, n=size, candidates=free)
    top = proba[rows].argmax(axis=1) if rows.size else np.zeros(0, int)
    return pd.DataFrame({"row": rows, "id": ids[rows], "margin": margins(proba[rows]) if rows.size else [],
                         "predicted": np.array(classes, dtype=object)[top],
                         "p_predicted": proba[rows, top] if rows.size else [], "reason": "margin"})


def auto_refine(run_dir: str | os.PathLike | RunDir, truth: str | os.PathLike | pd.DataFrame, id_col: str,
                label_col: str, config: Config | None = None, *, n_labels: int,
                label_map: Mapping[str, str] | None = None, exclude: Sequence[str] = (),
                expert: str | None = None) -> dict[str, Any]:
    """A simulated expert types ``n_labels`` single galaxies, a page at a time, least sure first.

    Each page is :func:`refine_page` (the classifier refitted on every label so far); the
    expert answers each galaxy from the table of known labels (mapped as by
    :func:`skymorph.inspection.auto.auto_votes`), or skips it when it has no usable
    label.  Calling it again continues where the last call stopped.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with features (and, to start from them, named clusters).
    truth, id_col, label_col, label_map, exclude
        The known labels, as for :func:`~skymorph.inspection.auto.auto_votes`.
    config : Config, optional
        ``inspect.types``, ``inspect.refine_page``, ``inspect.refine_start``, ``inspect.seed``
        and the ``[extend]`` classifier; by default the run's own ``config.toml``.
    n_labels : int
        Galaxies to type in this call (skipped galaxies do not count).
    expert : str, optional
        Voter name; ``auto:<truth file name>`` by default (it must start with ``auto:``).

    Returns
    -------
    dict
        ``expert``, ``n_labelled`` and ``n_looked_at`` (this call), ``n_taught`` and
        ``n_looked_at_total`` (every expert, all calls), and ``pages`` (per page: ``reason``,
        ``looked_at``, ``labelled``, ``types``).  Also written to
        ``RUN_DIR/inspection/auto_refine.json``.
    """
    from .auto import AUTO_PREFIX, is_automatic, truth_types

    if int(n_labels) < 0:
        raise InspectError(f"--refine takes the number of galaxies to type (>= 0), got {n_labels}")
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else run.config()
    catalog = run.catalog()
    source = "DataFrame" if isinstance(truth, pd.DataFrame) else Path(truth).name
    expert = expert or f"{AUTO_PREFIX}{source}"
    if not is_automatic(expert):
        raise InspectError(f"an automatic voter's name must start with {AUTO_PREFIX!r}, got {expert!r}")
    oracle = truth_types(catalog, truth, id_col, label_col, config.inspect.types, label_map=label_map,
                         exclude=exclude)
    x = _features(run, config, len(catalog))
    store = GalaxyVoteStore.of(run)
    pages: list[dict[str, Any]] = []
    labelled = looked = 0
    while labelled < n_labels:
        page = refine_page(run, config, x=x, catalog=catalog)
        if page.empty:
            break
        answers: dict[str, str] = {}
        for row, gid in zip(page["row"], page["id"], strict=True):
            if labelled >= n_labels:
                break
            answers[gid] = oracle[row] or SKIP
            labelled += answers[gid] != SKIP
        looked += len(answers)
        store.cast(expert, answers)
        pages.append({"reason": page["reason"].iloc[0], "looked_at": len(answers),
                      "labelled": sum(t != SKIP for t in answers.values()),
                      "types": dict(Counter(t for t in answers.values() if t != SKIP))})
    seen = looked_at(run, catalog)
    result = {"expert": expert, "truth": str(truth) if source != "DataFrame" else source,
              "n_requested": int(n_labels), "n_labelled": int(labelled), "n_looked_at": int(looked),
              "n_taught": int((taught_types(run, catalog, config.inspect.types) != "").sum()),
              "n_looked_at_total": int(seen.sum()), "page_size": config.inspect.refine_page,
              "cluster_labels": bool(config.extend.cluster_labels), "pages": pages}
    out = run.path / "inspection"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "auto_refine.json", json.dumps(result, indent=2))
    run.record_config(config)
    return result


class RefineApp:
    """The "teach single galaxies" part of the voting application (used by the server)."""

    def __init__(self, run: RunDir, config: Config) -> None:
        from .montage import _stamp_index, display_scaled_stamps

        self.run = run
        self.config = config
        self.types = list(config.inspect.types)
        self.codes = {t.casefold(): t for t in self.types}
        self.store = GalaxyVoteStore.of(run)
        self.catalog = run.catalog()
        self.ids = _ids(self.catalog)
        self.stamp_index = _stamp_index(self.catalog)
        self.images = run.open_array(config.inspect.array)
        self.display_scaled = display_scaled_stamps(run, int(self.images.shape[0]))
        self._x: np.ndarray | None = None
        self._lock = threading.Lock()

    def page(self, expert: str) -> dict[str, Any]:
        """The next page for ``expert`` and what the experts have taught so far."""
        expert = clean_expert(expert)
        with self._lock:
            if self._x is None:
                self._x = _features(self.run, self.config, len(self.catalog))
            page = refine_page(self.run, self.config, x=self._x, catalog=self.catalog)
        mine = [r for r in self.store.rows() if r["expert"].casefold() == expert.casefold()]
        items = [{"row": int(r.row), "id": str(r.id), "png": f"/refine/galaxy/{int(r.row)}.png",
                  "margin": None if np.isnan(r.margin) else round(float(r.margin), 4),
                  "predicted": r.predicted or None,
                  "p_predicted": None if np.isnan(r.p_predicted) else round(float(r.p_predicted), 4)}
                 for r in page.itertuples()]
        reason = page["reason"].iloc[0] if len(page) else ""
        return {"run": self.run.path.name, "expert": expert, "reason": reason,
                "types": [{"code": t} for t in self.types], "items": items,
                "n_taught_by_you": sum(r["type"].casefold() != SKIP for r in mine),
                "n_looked_at_by_you": len(mine), "n_galaxies": len(self.catalog)}

    def label(self, payload: Any) -> dict[str, Any]:
        """Record one label ``{expert, row, type}`` (``type`` a type code or ``skip``)."""
        if not isinstance(payload, dict):
            raise InspectError("a label is a JSON object {expert, row, type}")
        expert = clean_expert(payload.get("expert"))
        row = payload.get("row")
        if type(row) is not int or not 0 <= row < len(self.catalog):
            raise InspectError(f"row must be a galaxy's row number, 0 to {len(self.catalog) - 1}")
        type_ = payload.get("type")
        code = None
        if isinstance(type_, str):
            code = SKIP if type_.strip().casefold() == SKIP else self.codes.get(type_.strip().casefold())
        if code is None:
            raise InspectError(f"type must be one of {', '.join(self.types)} or skip")
        stored = self.store.cast(expert, {str(self.ids[row]): code})[0]
        return {"ok": True, "label": {**stored, "row": row}}

    def galaxy_png(self, row: int) -> bytes:
        """The galaxy of catalog row ``row`` as shown to the experts."""
        from .montage import display, to_png

        if not 0 <= row < len(self.catalog):
            raise KeyError(row)
        stamp = int(self.stamp_index[row])
        with self._lock:
            image = np.asarray(self.images[stamp])
        return to_png(display(image, self.config.inspect, bool(self.display_scaled[stamp])))
