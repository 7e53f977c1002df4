"""Automatic naming of the consensus clusters from labels known for part of the sample.

``skymorph inspect auto RUN --truth FILE --id-col C --label-col C`` casts one vote per
consensus cluster, as ``skymorph evaluate``'s simulated inspection names it: the
majority label among the cluster's montage members (the same seeded draw of
``inspect.per_cluster`` members, :func:`skymorph.inspection.sample_members`; members
without a label are skipped, ties go to the type first in sorted order; a cluster with
no labelled member gets no vote, and ``merge`` gives it the last type with
``type_flag = no_votes``).

Labels become types through ``label_map`` (``--map LABEL=TYPE``), or directly when a
label is the name of one of ``inspect.types`` (case-insensitively: ``merge`` holds types
in upper case, so name them e.g. ``--set 'inspect.types=["ELLIPTICAL","SPIRAL","EDGE_ON",
"UNC"]'``).  ``exclude`` (``--exclude LABEL``, raw or mapped) treats a label as unknown.
A label that is neither excluded nor a type is an error that names it.

The votes are written to ``RUN_DIR/inspection/votes.csv`` like an expert's, and are
marked automatic in two ways that survive every later vote: the expert name is
``auto:<truth file name>`` (:func:`is_automatic`), and ``inspection/auto_votes.json``
records the truth file, columns, map, exclusions and, per cluster, the labelled members
behind each name and the share that agreed.

Merging: ``merge`` gives a cluster a type where ``inspect.min_agree`` voters agree
(2 by default, as in the paper).  With one automatic voter and the default 2, every
cluster would get the fallback type with ``type_flag = no_majority``; so merge a
single automatic voter with ``--min-agree 1`` (``skymorph inspect merge RUN --min-agree
1``), or pass ``--merge`` to ``inspect auto``, which does exactly that when no human
has voted on the current clustering.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..io.atomic import write_text_atomic
from ..io.rundir import RunDir

__all__ = ["auto_votes", "is_automatic", "human_voters", "truth_types", "AUTO_PREFIX"]

AUTO_PREFIX = "auto:"
"""Expert names starting with this are automatic voters."""


def is_automatic(expert: str) -> bool:
    """Whether a vote's expert name marks an automatic voter (``auto:...``)."""
    return str(expert).strip().casefold().startswith(AUTO_PREFIX)


def _type_lookup(types: Sequence[str], label_map: Mapping[str, str]) -> dict[str, str]:
    by_fold = {t.casefold(): t for t in types}
    return {**by_fold, **{k.casefold(): by_fold.get(v.casefold(), v) for k, v in label_map.items()}}


def auto_votes(run_dir: str | os.PathLike | RunDir, truth: str | os.PathLike | pd.DataFrame,
               id_col: str, label_col: str, config: Config | None = None, *,
               label_map: Mapping[str, str] | None = None, exclude: Sequence[str] = (),
               expert: str | None = None) -> pd.DataFrame:
    """Name every consensus cluster by the majority label of its montage members.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog (``skymorph cluster``).
    truth : str, Path or DataFrame
        Table of known labels (see :func:`skymorph.io.tables.read_labels`).
    id_col, label_col : str
        Its id column (matched to the catalog's ``id`` as text) and label column.
    config : Config, optional
        ``inspect.types``, ``inspect.per_cluster`` and ``inspect.seed``.
    label_map : mapping, optional
        Label -> type, e.g. ``{"spiral_cw": "SPIRAL", "spiral_acw": "SPIRAL"}``.
    exclude : sequence of str
        Labels (raw or mapped) treated as unknown.
    expert : str, optional
        Voter name; ``auto:<file name>`` by default (it must start with ``auto:``).

    Returns
    -------
    DataFrame
        One row per consensus cluster: ``cluster``, ``type`` (``""`` where no member
        is labelled: no vote), ``n_sampled``, ``n_labelled``, ``n_majority``,
        ``share`` and ``labels`` (``label:count;...``).

    Raises
    ------
    InspectError
        A label that is no type (the message names it and the types), a type that
        ``merge`` cannot read (not upper case), or an expert name without ``auto:``.
    TableError
        Truth file or column problems, or no id matching the catalog.
    """
    from . import InspectError, VoteStore, clustering_fingerprint, consensus_labels, sample_members

    config = config or Config()
    cfg = config.inspect
    types = list(cfg.types)
    lower = [t for t in types if t != t.upper()]
    if lower:
        raise InspectError(
            f"inspect.types {', '.join(lower)} are not upper case; `inspect merge` reads vote types in "
            "upper case, so name them in upper case (labels are matched to types case-insensitively)")
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    catalog = run.catalog()
    labels = consensus_labels(catalog)
    source = "DataFrame" if isinstance(truth, pd.DataFrame) else Path(truth).name
    expert = expert or f"{AUTO_PREFIX}{source}"
    if not is_automatic(expert):
        raise InspectError(f"an automatic voter's name must start with {AUTO_PREFIX!r}, got {expert!r}")

    mapped = truth_types(catalog, truth, id_col, label_col, types, label_map=label_map, exclude=exclude)
    label_map = dict(label_map or {})

    rows = []
    for cluster, members in sorted(sample_members(labels, cfg.per_cluster, cfg.seed).items()):
        named = [m for m in mapped[members] if m]
        counts = Counter(named)
        if counts:
            best = max(counts.values())
            vote = sorted(k for k, v in counts.items() if v == best)[0]
        else:
            vote, best = "", 0
        rows.append({"cluster": int(cluster), "type": vote, "n_sampled": int(len(members)),
                     "n_labelled": len(named), "n_majority": int(best),
                     "share": best / len(named) if named else float("nan"),
                     "labels": ";".join(f"{k}:{v}" for k, v in sorted(counts.items()))})
    result = pd.DataFrame(rows, columns=["cluster", "type", "n_sampled", "n_labelled", "n_majority",
                                         "share", "labels"])

    clustering = clustering_fingerprint(catalog)
    out = run.path / "inspection"
    out.mkdir(parents=True, exist_ok=True)
    store = VoteStore(out / "votes.csv", clustering=clustering)
    for row in result.itertuples():
        if row.type:
            store.cast(expert, row.cluster, row.type)
    run.record_config(config)  # a later `inspect merge RUN` reads the same inspect.types
    info = {
        "expert": expert, "automatic": True, "truth": str(truth) if source != "DataFrame" else source,
        "id_col": id_col, "label_col": label_col, "label_map": label_map, "exclude": list(exclude),
        "types": types, "per_cluster": cfg.per_cluster, "seed": cfg.seed, "clustering": clustering,
        "n_clusters": len(result), "n_voted": int((result["type"] != "").sum()),
        "clusters": json.loads(result.to_json(orient="records")),
    }
    write_text_atomic(out / "auto_votes.json", json.dumps(info, indent=2))
    return result


def truth_types(catalog: pd.DataFrame, truth: str | os.PathLike | pd.DataFrame, id_col: str, label_col: str,
                types: Sequence[str], *, label_map: Mapping[str, str] | None = None,
                exclude: Sequence[str] = ()) -> np.ndarray:
    """The type of ``inspect.types`` that a table of known labels gives each catalog row.

    Labels become types through ``label_map`` or by name (case-insensitively); excluded
    labels (raw or mapped), missing labels and ids not in the table give ``""``.

    Returns
    -------
    ndarray of str, shape (len(catalog),)

    Raises
    ------
    InspectError
        A label that is neither excluded nor a type (the message names it).
    TableError
        Truth file or column problems, or no id matching the catalog.
    """
    from ..io.tables import TableError, read_labels
    from . import InspectError

    types = list(types)
    table = read_labels(truth, id_col=id_col, label_col=label_col)
    lookup = dict(zip(table["id"], table["label"], strict=True))
    ids = catalog["id"].map(lambda v: v.decode() if isinstance(v, bytes) else str(v)).str.strip()
    if not ids.isin(lookup.keys()).any():
        raise TableError(
            f"none of the {len(table)} ids in column {id_col!r} of the truth table matches any of the "
            f"{len(ids)} catalog ids (truth ids look like {', '.join(table['id'].head(3))}; catalog ids "
            f"look like {', '.join(ids.head(3))}); check --id-col")
    label_map = dict(label_map or {})
    to_type = _type_lookup(types, label_map)
    excluded = {e.casefold() for e in exclude}
    raw = ids.map(lambda i: lookup.get(i, "")).to_numpy(dtype=object)
    mapped = np.array(["" if (r == "" or r.casefold() in excluded
                              or label_map.get(r, r).casefold() in excluded)
                       else to_type.get(r.casefold(), to_type.get(label_map.get(r, r).casefold(), None))
                       for r in raw], dtype=object)
    unmapped = sorted({r for r, m in zip(raw, mapped, strict=True)
                       if m is None or (m != "" and m not in types)})
    if unmapped:
        raise InspectError(
            f"label(s) {', '.join(map(repr, unmapped))} of {label_col!r} name no type of inspect.types "
            f"({', '.join(types)}); map them with --map LABEL=TYPE, exclude them with --exclude LABEL, "
            "or set inspect.types to the label names")

    return mapped.astype(str)


def human_voters(run: RunDir) -> list[str]:
    from . import VoteStore, clustering_fingerprint

    path = run.path / "inspection" / "votes.csv"
    if not path.exists():
        return []
    current = clustering_fingerprint(run.catalog())
    return sorted({r["expert"] for r in VoteStore(path).rows()
                   if r["clustering"] in (current, "") and not is_automatic(r["expert"])})
