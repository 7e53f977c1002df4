"""Votes -> one morphology type per cluster -> ``morph_type`` in the catalog (paper Table 2)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..io.csvfile import write_csv
from ..io.rundir import RunDir
from .montage import InspectError, clustering_fingerprint, consensus_labels, inspection_dir
from .votes import VOTE_COLUMNS, unescape_cell

log = logging.getLogger("skymorph.inspection")



def read_votes(paths: Sequence[str | os.PathLike], types: Sequence[str]) -> pd.DataFrame:
    """Read and check vote files (``expert``, ``cluster``, ``type`` [, ``time``, ``clustering``]).

    When one expert voted on one cluster more than once (across files), the
    latest vote (by ``time``, else the later row) is kept.

    Raises
    ------
    InspectError
        If a file is missing, lacks a column, or holds an unknown type or a
        non-integer cluster.
    """
    codes = {t.casefold(): t for t in types}  # the settings' spelling, matched regardless of case
    frames = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InspectError(f"vote file {path} does not exist")
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (UnicodeDecodeError, ValueError, OSError) as exc:
            raise InspectError(f"vote file {path} cannot be read as CSV text ({type(exc).__name__}: {exc}); "
                               "give the votes.csv that inspect serve wrote, or a CSV with expert, cluster "
                               "and type columns") from None
        missing = [c for c in ("expert", "cluster", "type") if c not in table.columns]
        if missing:
            raise InspectError(f"vote file {path} lacks column(s) {', '.join(missing)}; "
                               f"it has: {', '.join(table.columns)}")
        for col in ("time", "clustering"):
            if col not in table.columns:
                table[col] = ""
        table = table[VOTE_COLUMNS].map(unescape_cell)
        table["expert"] = table["expert"].map(lambda s: " ".join(s.split()))
        table["type"] = table["type"].map(lambda t: codes.get(t.strip().casefold(), t.strip()))
        bad = sorted(set(table["type"]) - set(types))
        if bad:
            raise InspectError(f"vote file {path} has unknown type(s) {', '.join(map(repr, bad))}; "
                               f"valid types: {', '.join(types)}")
        cluster = pd.to_numeric(table["cluster"], errors="coerce")
        if cluster.isna().any() or (cluster % 1 != 0).any():
            line = int(np.flatnonzero(cluster.isna() | (cluster % 1 != 0))[0]) + 2
            raise InspectError(f"vote file {path}, line {line}: cluster {table['cluster'].iloc[line - 2]!r} "
                               "is not an integer")
        table["cluster"] = cluster.astype(np.int64)
        table = table[table["expert"] != ""]
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=VOTE_COLUMNS)
    votes = pd.concat(frames, ignore_index=True)
    votes["_key"] = votes["expert"].str.casefold()
    votes["_order"] = np.arange(len(votes))
    votes = votes.sort_values(["time", "_order"]).drop_duplicates(["_key", "cluster"], keep="last")
    return votes.drop(columns=["_key", "_order"]).sort_values(["cluster", "expert"]).reset_index(drop=True)


def _decide(types: list[str], min_agree: int, fallback: str) -> tuple[str, str, int]:
    """Type, flag and agreeing count of one cluster from its experts' votes."""
    if not types:
        return fallback, "no_votes", 0
    counts = Counter(types).most_common()
    top, n_top = counts[0]
    if n_top < min_agree:
        return fallback, "no_majority", n_top
    if len(counts) > 1 and counts[1][1] == n_top:
        return fallback, "tie", n_top
    return top, "agreed", n_top


def type_counts(catalog: pd.DataFrame, types: Sequence[str]) -> pd.DataFrame:
    """Galaxies (and clusters) per morphology type among the consensus galaxies (paper Table 2)."""
    labels = consensus_labels(catalog)
    kept = catalog[labels >= 0]
    mtype = kept["morph_type"].fillna("").astype(str) if "morph_type" in kept else pd.Series("", kept.index)
    rows = []
    for t in types:
        sel = mtype == t
        rows.append({"type": t, "n_clusters": int(pd.unique(labels[labels >= 0][sel.to_numpy()]).size),
                     "n_galaxies": int(sel.sum())})
    table = pd.DataFrame(rows)
    total = max(len(kept), 1)
    table["fraction"] = table["n_galaxies"] / total
    table.loc[len(table)] = {"type": "total", "n_clusters": int(table["n_clusters"].sum()),
                             "n_galaxies": len(kept), "fraction": len(kept) / total}
    return table


def merge_votes(run: RunDir, votes: Sequence[str | os.PathLike] | None, config: Config) -> pd.DataFrame:
    """Turn the experts' votes into one type per cluster and write ``morph_type``.

    A cluster takes the type named by at least ``min_agree`` experts (and by more
    experts than any other type); otherwise it gets the last of ``inspect.types``
    (UNC by default) with ``type_flag`` saying why (``no_majority``, ``tie`` or
    ``no_votes``).  The catalog gains, for consensus galaxies, ``morph_type``,
    ``type_flag`` and ``type_agreement`` (fraction of the cluster's experts who
    named the chosen type); other galaxies get ``""`` / ``""`` / NaN.

    Votes cast on montages of a different clustering (the ``clustering`` column
    does not match the catalog) are left out, with a warning.

    Writes ``RUN_DIR/inspection/cluster_types.csv`` (one row per cluster) and
    ``type_counts.csv`` / ``type_counts.json`` (galaxies per type, the paper's
    Table 2).

    Parameters
    ----------
    run : RunDir
        Run directory with a catalog.
    votes : sequence of paths or None
        Vote files; ``RUN_DIR/inspection/votes.csv`` when None.
    config : Config
        Settings (``inspect.min_agree``, ``inspect.types``).

    Returns
    -------
    DataFrame
        One row per consensus cluster: ``cluster``, ``n_galaxies``, ``morph_type``,
        ``type_flag``, ``n_experts``, ``n_agree``, ``type_agreement``, ``votes``.
    """
    cfg = config.inspect
    min_agree = cfg.min_agree
    types = list(cfg.types)
    fallback = types[-1]
    catalog = run.catalog()
    labels = consensus_labels(catalog)
    clustering = clustering_fingerprint(catalog)
    if votes is None:
        default = run.path / "inspection" / "votes.csv"
        if not default.exists():
            raise InspectError(f"no votes yet ({default} does not exist); experts vote with "
                               f"`skymorph inspect serve {run.path}`, or pass --votes FILE")
        votes = [default]
    table = read_votes(votes, types)
    stale = (table["clustering"] != "") & (table["clustering"] != clustering)
    if stale.any():
        log.warning("%d vote(s) were cast on montages of a different clustering and are left out; "
                    "re-vote on the current montages", int(stale.sum()))
    table = table[~stale]
    clusters = sorted(set(labels[labels >= 0].tolist()))
    unknown = ~table["cluster"].isin(clusters)
    if unknown.any():
        log.warning("%d vote(s) name clusters that are not consensus clusters of this run (%s); left out",
                    int(unknown.sum()), ", ".join(map(str, sorted(set(table.loc[unknown, "cluster"])))))
    table = table[~unknown]
    if table.empty:
        n_read = int(len(stale)) if len(stale) else 0
        raise InspectError(
            f"none of the {n_read} vote(s) is for the current clustering of {run.path} "
            f"({int(stale.sum())} cast on montages of an older clustering, {int(unknown.sum())} naming "
            "clusters it does not have), so no types were written; vote on the current montages "
            f"(`skymorph inspect serve {run.path}`) or name the clusters from known labels "
            f"(`skymorph inspect auto {run.path} ...`), then merge again")
    sizes = Counter(labels[labels >= 0].tolist())
    rows = []
    for cluster in clusters:
        cast = table.loc[table["cluster"] == cluster, "type"].tolist()
        mtype, flag, n_agree = _decide(cast, min_agree, fallback)
        rows.append({
            "cluster": cluster, "n_galaxies": sizes[cluster], "morph_type": mtype, "type_flag": flag,
            "n_experts": len(cast), "n_agree": n_agree,
            "type_agreement": n_agree / len(cast) if cast else float("nan"),
            "votes": ";".join(f"{t}:{n}" for t, n in sorted(Counter(cast).items())),
        })
    result = pd.DataFrame(rows)
    by_cluster = result.set_index("cluster")
    kept = labels >= 0
    mtype = np.full(len(catalog), "", dtype=object)
    flag = np.full(len(catalog), "", dtype=object)
    agreement = np.full(len(catalog), np.nan)
    mtype[kept] = by_cluster.loc[labels[kept], "morph_type"].to_numpy()
    flag[kept] = by_cluster.loc[labels[kept], "type_flag"].to_numpy()
    agreement[kept] = by_cluster.loc[labels[kept], "type_agreement"].to_numpy()
    updated = run.update_catalog(pd.DataFrame({
        "id": catalog["id"], "morph_type": mtype, "type_flag": flag, "type_agreement": agreement,
    }))
    out = inspection_dir(run)
    write_csv(result, out / "cluster_types.csv")
    counts = type_counts(updated, types)
    write_csv(counts, out / "type_counts.csv")
    (out / "type_counts.json").write_text(json.dumps({
        "min_agree": min_agree, "n_votes": len(table),
        "n_experts": int(table["expert"].str.casefold().nunique()),
        "clustering": clustering, "counts": counts.to_dict(orient="records"),
        "clusters": json.loads(result.to_json(orient="records")),
    }, indent=2))
    return result


def format_counts(counts: pd.DataFrame) -> str:
    """The type counts as a small text table."""
    lines = [f"{'type':<8}{'clusters':>9}{'galaxies':>10}{'fraction':>10}"]
    for r in counts.to_dict(orient="records"):
        lines.append(f"{r['type']:<8}{r['n_clusters']:>9}{r['n_galaxies']:>10}{r['fraction']:>10.1%}")
    return "\n".join(lines)
