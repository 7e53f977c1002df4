"""Evaluate: score a run's clusters against labels known for part of the sample.

For galaxies whose true class is known (Galaxy Zoo votes, an earlier catalog)
this measures how well the unsupervised clusters separate the classes:

* purity, NMI (arithmetic normalisation) and ARI of the K-means clusters over
  every labelled galaxy, and of the consensus clusters over the labelled
  galaxies that the vote keeps;
* a simulated inspection: each consensus cluster is named by the majority true
  class among the members the montage shows (the same seeded draw of
  ``inspect.per_cluster`` members, :func:`skymorph.inspection.sample_members`;
  members without a label are skipped, ties go to the class first in sorted
  order), then accuracy, balanced accuracy (mean recall over the true classes)
  and the confusion matrix of those names on the labelled consensus galaxies;
* the fraction of galaxies kept by the consensus vote, overall and per class.

:func:`score_labels` (:mod:`skymorph.core.scores`) does the arithmetic on plain arrays, so
any other clustering (e.g. a PCA + K-means baseline on raw pixels) is scored by the same
code; :func:`evaluate` reads a run directory and a truth table (:func:`read_truth`:
:func:`skymorph.io.tables.read_labels`, ids always text) and writes the result.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._text import text_table
from ..config import Config
from ..core.scores import ScoreError, purity, score_labels
from ..io.atomic import write_text_atomic
from ..io.rundir import RunDir

__all__ = [
    "evaluate", "score_labels", "aligned_truth", "purity", "read_truth", "format_report", "EvaluateError",
]


class EvaluateError(ScoreError):
    """The truth table or the run cannot be evaluated (wrong column, no matching ids...)."""



# --- reading the truth ----------------------------------------------------------------------


def read_truth(truth: str | os.PathLike | pd.DataFrame, id_col: str, label_col: str) -> pd.DataFrame:
    """Read a table of known classes as ``id`` and ``label`` text columns
    (:func:`skymorph.io.tables.read_labels`, the reader of ingest's catalogs too: long integer
    ids such as 18-digit SDSS objids keep every digit in every format).

    Raises
    ------
    EvaluateError
        If the file is missing or unreadable, a column does not exist (the
        message lists the columns), or one id has two different labels.
    """
    from ..io.tables import TableError, read_labels

    try:
        return read_labels(truth, id_col=id_col, label_col=label_col)
    except TableError as exc:
        raise EvaluateError(str(exc)) from None


# --- the run-directory evaluation --------------------------------------------------------------


def _align(ids: pd.Series, truth: str | os.PathLike | pd.DataFrame, id_col: str, label_col: str,
           label_map: Mapping[str, str] | None, exclude: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    table = read_truth(truth, id_col, label_col)
    label_map = dict(label_map or {})
    table["label"] = table["label"].map(lambda v: label_map.get(v, v))
    table.loc[table["label"].isin(set(exclude)), "label"] = ""
    ids = ids.map(lambda v: v.decode() if isinstance(v, bytes) else str(v)).str.strip()
    lookup = dict(zip(table["id"], table["label"], strict=True))
    n_matched = int(ids.isin(lookup.keys()).sum())
    if n_matched == 0:
        n_rows = table.attrs.get("n_rows", len(table))
        raise EvaluateError(
            f"none of the {len(table)} ids"
            + (f" ({n_rows} rows)" if n_rows != len(table) else "")
            + f" in column {id_col!r} of the truth table matches any of the "
            f"{len(ids)} catalog ids (truth ids look like {', '.join(table['id'].head(3))}; catalog "
            f"ids look like {', '.join(ids.head(3))}); check --id-col"
        )
    info = {"n_catalog": len(ids), "n_truth": len(table), "n_matched": n_matched,
            "n_truth_unmatched": len(table) - n_matched}
    return ids.map(lambda i: lookup.get(i, "")).to_numpy(dtype=object), info


def aligned_truth(run_dir: str | os.PathLike | RunDir, truth: str | os.PathLike | pd.DataFrame,
                  id_col: str, label_col: str, label_map: Mapping[str, str] | None = None,
                  exclude: Sequence[str] = ()) -> np.ndarray:
    """Known class of every galaxy of a run, in stamp order (``""`` where unknown).

    Use it to score another clustering of the same stamps with :func:`score_labels`,
    e.g. a baseline::

        truth = aligned_truth(run, "labels.csv", "objid", "gz1_name")
        stamps = run.open_array("stamps")[:].reshape(len(truth), -1)
        labels = KMeans(20).fit_predict(PCA(50).fit_transform(stamps))
        score_labels(truth, labels, per_cluster=100, seed=0)

    Parameters are those of :func:`evaluate`; rows follow the ``sources`` table
    (= the catalog's order and the stamp arrays').

    Raises
    ------
    EvaluateError
        As :func:`evaluate` (wrong column, no matching id).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    return _align(run.sources()["id"], truth, id_col, label_col, label_map, exclude)[0]


def evaluate(run_dir: str | os.PathLike | RunDir, truth: str | os.PathLike | pd.DataFrame,
             id_col: str, label_col: str, config: Config | None = None,
             label_map: Mapping[str, str] | None = None, exclude: Sequence[str] = (),
             out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score a run's clusters against known labels and write the result as JSON.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog (``skymorph cluster``).
    truth : str, Path or DataFrame
        Table of known classes (see :func:`read_truth`).
    id_col, label_col : str
        Its id and class columns; ids are matched to the catalog's ``id`` as text.
    config : Config, optional
        Settings; ``inspect.per_cluster`` and ``inspect.seed`` fix the simulated
        inspection's draw (the montage's).
    label_map : mapping, optional
        Renames classes before scoring, e.g. ``{"spiral_cw": "spiral",
        "spiral_acw": "spiral"}``.
    exclude : sequence of str
        Classes (after ``label_map``) treated as unknown, e.g. ``["dont_know"]``.
    out : str or Path, optional
        JSON file to write; ``RUN_DIR/evaluation/evaluation.json`` by default.

    Returns
    -------
    dict
        The :func:`score_labels` result plus ``run``, ``truth``, ``id_col``,
        ``label_col``, ``label_map``, ``exclude``, ``n_catalog``, ``n_truth``,
        ``n_matched`` and ``output``.

    Raises
    ------
    EvaluateError
        For a missing column (the message lists the columns) or when no truth id
        matches a catalog id (the message shows examples of both).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else run.config()
    catalog = run.catalog()
    needed = ["id", "cluster_kmeans", "cluster", "consensus"]
    missing = [c for c in needed if c not in catalog.columns]
    if missing:
        raise EvaluateError(f"the catalog of {run.path} lacks {', '.join(missing)} (it has: "
                            f"{', '.join(catalog.columns)}); run `skymorph cluster {run.path}` first")
    aligned, info = _align(catalog["id"], truth, id_col, label_col, label_map, exclude)
    from ..inspection import consensus_labels

    result = score_labels(aligned, catalog["cluster_kmeans"].to_numpy(), consensus_labels(catalog),
                          per_cluster=config.inspect.per_cluster, seed=config.inspect.seed)
    if "morph_type_final" in catalog.columns:  # after `skymorph extend`: every galaxy has a type
        from ..core.extend import split_scores

        result["final_types"] = split_scores(aligned, catalog["morph_type_final"].fillna("").to_numpy(),
                                             catalog["type_source"].fillna("").to_numpy())
        # the report shows these figures only while they belong to the catalog's extension
        result["extend_fingerprint"] = (run.stage_info("extend") or {}).get("fingerprint", "")
    out_path = Path(out) if out is not None else run.path / "evaluation" / "evaluation.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "run": str(run.path), "truth": str(truth) if not isinstance(truth, pd.DataFrame) else "DataFrame",
        "id_col": id_col, "label_col": label_col, "label_map": dict(label_map or {}),
        "exclude": list(exclude), **info, **result, "output": str(out_path),
    }
    write_text_atomic(out_path, json.dumps(result, indent=2))
    return result


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.1%}" if pct else f"{value:.3f}"


def format_report(result: Mapping[str, Any]) -> str:
    """A readable text table of a :func:`score_labels` / :func:`evaluate` result."""
    lines = []
    if "n_matched" in result:
        lines.append(f"matched {result['n_matched']} of {result['n_truth']} truth ids to the "
                     f"{result['n_catalog']} catalog galaxies ({result['n_labelled']} with a usable label)")
    lines.append(f"kept by the consensus vote: {_fmt(result['fraction_kept'], True)} of all galaxies, "
                 f"{_fmt(result['fraction_kept_labelled'], True)} of the labelled ones")
    lines.append("")
    lines.append(f"{'':<24}{'n':>7}{'clusters':>10}{'purity':>9}{'NMI':>8}{'ARI':>8}")
    for key, title in (("clusters", "K-means, all galaxies"), ("consensus", "consensus galaxies")):
        s = result[key]
        lines.append(f"{title:<24}{s['n']:>7}{s['n_clusters']:>10}{_fmt(s['purity']):>9}"
                     f"{_fmt(s['nmi']):>8}{_fmt(s['ari']):>8}")
    insp = result["inspection"]
    lines.append("")
    lines.append(f"simulated inspection ({insp['per_cluster']} sampled members per cluster, seed "
                 f"{insp['seed']}) on {insp['n']} labelled consensus galaxies:")
    lines.append(f"  accuracy {_fmt(insp['accuracy'])}, balanced accuracy {_fmt(insp['balanced_accuracy'])}")
    if "kmeans_all" in result:
        km = result["kmeans_all"]
        lines.append(f"  the same inspection of the K-means clusters of all {km['n']} labelled galaxies: "
                     f"balanced accuracy {_fmt(km['balanced_accuracy'])}")
    names = Counter(insp["cluster_names"].values())
    lines.append("  clusters named: " + ", ".join(f"{k} {v}" for k, v in sorted(names.items())))
    labels = insp["labels"]
    lines.append("")
    lines.append("  confusion (rows: true class, columns: named type)")
    lines.append(text_table(
        ["", *labels, "recall", "kept"],
        [[lab, *row, _fmt(insp["recall_by_class"].get(lab)), _fmt(result["kept_by_class"].get(lab), True)]
         for lab, row in zip(labels, insp["confusion_matrix"], strict=True) if lab in result["classes"]],
        indent="  "))
    if "final_types" in result:
        lines.append("")
        lines.append("final types (morph_type_final, after `skymorph extend`) against the true classes:")
        for key, title in (("kept", "experts (kept)"), ("extended", "extended (rejected)"), ("all", "all")):
            f = result["final_types"][key]
            lines.append(f"  {title:<22}{f['n']:>7}  accuracy {_fmt(f['accuracy'])}, "
                         f"balanced accuracy {_fmt(f['balanced_accuracy'])}")
    if "output" in result:
        lines.append("")
        lines.append(f"written to {result['output']}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------
