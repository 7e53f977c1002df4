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

:func:`score_labels` does the arithmetic on plain arrays, so any other
clustering (e.g. a PCA + K-means baseline on raw pixels) is scored by the same
code; :func:`evaluate` reads a run directory and a truth table.
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

from ..config import Config
from ..errors import SkymorphError
from ..io.atomic import write_text_atomic
from ..io.rundir import RunDir

__all__ = [
    "evaluate", "score_labels", "aligned_truth", "purity", "read_truth", "format_report", "EvaluateError",
]

UNNAMED = "(unnamed)"
"""Prediction for a cluster none of whose sampled members has a label."""


class EvaluateError(SkymorphError, ValueError):
    """The truth table or the run cannot be evaluated (wrong column, no matching ids...)."""


# --- metrics ------------------------------------------------------------------------------


def purity(truth: Sequence[Any], clusters: Sequence[Any]) -> float:
    """Fraction of galaxies that belong to the majority true class of their cluster.

    ``sum_k max_j |cluster_k & class_j| / N``; 1 for a perfect (or a one-galaxy-per-
    cluster) clustering, so read it beside NMI and ARI.
    """
    table = pd.crosstab(pd.Series(np.asarray(clusters)), pd.Series(np.asarray(truth)))
    n = int(table.to_numpy().sum())
    return float(table.max(axis=1).sum() / n) if n else float("nan")


def _partition_scores(truth: np.ndarray, clusters: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if truth.size == 0:
        return {"n": 0, "purity": None, "nmi": None, "ari": None, "n_clusters": 0}
    return {
        "n": int(truth.size),
        "n_clusters": int(np.unique(clusters).size),
        "purity": purity(truth, clusters),
        "nmi": float(normalized_mutual_info_score(truth, clusters)),
        "ari": float(adjusted_rand_score(truth, clusters)),
    }


def _majority(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    if not counts:
        return UNNAMED
    best = max(counts.values())
    return sorted(k for k, v in counts.items() if v == best)[0]


def score_labels(truth: Sequence[Any], clusters: Sequence[int],
                 consensus_clusters: Sequence[int] | None = None,
                 per_cluster: int = 100, seed: int = 0) -> dict[str, Any]:
    """Score cluster labels against true classes.

    Parameters
    ----------
    truth : sequence
        True class of every galaxy, aligned with ``clusters``; ``None``, NaN or
        ``""`` where unknown (those galaxies are left out of every score but
        still take part in the montage draw, as they do in a real montage).
    clusters : sequence of int
        Cluster of every galaxy (the K-means labels in skymorph).
    consensus_clusters : sequence of int, optional
        Consensus cluster of every galaxy, -1 where it is rejected; by default
        ``clusters`` (every galaxy kept, as for a single-method baseline).
    per_cluster : int
        Members sampled per cluster for the simulated inspection.
    seed : int
        Seed of that draw (``inspect.seed``).

    Returns
    -------
    dict
        ``n_galaxies``, ``n_labelled``, ``classes``, ``fraction_kept``,
        ``fraction_kept_labelled``, ``kept_by_class``, ``clusters`` and
        ``consensus`` (each ``n``, ``n_clusters``, ``purity``, ``nmi``, ``ari``)
        and ``inspection`` (``cluster_names``, ``accuracy``,
        ``balanced_accuracy``, ``recall_by_class``, ``confusion_matrix`` with
        rows = true class, columns = predicted, and their ``labels``); with
        ``consensus_clusters``, also ``kmeans_all``: the same simulated inspection
        of ``clusters`` on every labelled galaxy (``n``, ``accuracy``,
        ``balanced_accuracy``, ``recall_by_class``).
    """
    from ..inspection import sample_members

    truth_arr = np.array([_missing_to_empty(t) for t in truth], dtype=object)
    clusters_arr = np.asarray(clusters).astype(np.int64)
    cons = clusters_arr if consensus_clusters is None else np.asarray(consensus_clusters).astype(np.int64)
    if not (truth_arr.shape == clusters_arr.shape == cons.shape):
        raise EvaluateError(f"truth ({truth_arr.shape[0]}), clusters ({clusters_arr.shape[0]}) and consensus "
                            f"clusters ({cons.shape[0]}) must have one entry per galaxy")
    labelled = truth_arr != ""
    kept = cons >= 0
    n = truth_arr.size
    classes = sorted(set(truth_arr[labelled].tolist()))

    names: dict[int, str] = {}
    for cluster, rows in sample_members(cons, per_cluster, seed).items():
        names[cluster] = _majority([t for t in truth_arr[rows] if t != ""])
    sel = kept & labelled
    y_true = truth_arr[sel].astype(str)
    y_pred = np.array([names[c] for c in cons[sel]], dtype=object).astype(str)
    pred_labels = sorted(set(y_pred.tolist()) - set(classes))
    labels = classes + pred_labels
    # counted here: sklearn's confusion_matrix warns on a single class even with labels=
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, ([index[t] for t in y_true], [index[p] for p in y_pred]), 1)
    # recall per true class from the matrix: sklearn's balanced_accuracy_score would also
    # average over cluster names that are no true class (e.g. "(unnamed)")
    recall = {c: (float(matrix[index[c], index[c]] / matrix[index[c]].sum()) if matrix[index[c]].sum()
                  else None) for c in classes}
    present = [r for r in recall.values() if r is not None]
    kmeans_all = None
    if consensus_clusters is not None:  # the same simulated inspection of the K-means clusters of all
        insp = score_labels(truth_arr, clusters_arr, None, per_cluster, seed)["inspection"]
        kmeans_all = {key: insp[key] for key in ("n", "accuracy", "balanced_accuracy", "recall_by_class")}
    return {
        "n_galaxies": int(n),
        "n_labelled": int(labelled.sum()),
        "classes": classes,
        "fraction_kept": float(kept.mean()) if n else float("nan"),
        "fraction_kept_labelled": float(kept[labelled].mean()) if labelled.any() else float("nan"),
        "kept_by_class": {c: float(kept[truth_arr == c].mean()) for c in classes},
        "clusters": _partition_scores(truth_arr[labelled].astype(str), clusters_arr[labelled]),
        "consensus": _partition_scores(y_true, cons[sel]),
        "inspection": {
            "per_cluster": int(per_cluster),
            "seed": int(seed),
            "n": int(sel.sum()),
            "cluster_names": {str(k): v for k, v in sorted(names.items())},
            "accuracy": float((y_true == y_pred).mean()) if y_true.size else None,
            "balanced_accuracy": float(np.mean(present)) if present else None,
            "recall_by_class": recall,
            "labels": labels,
            "confusion_matrix": matrix.tolist(),
        },
        **({"kmeans_all": kmeans_all} if kmeans_all is not None else {}),
    }


def _missing_to_empty(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    return str(value).strip()


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
                          config.inspect.per_cluster, config.inspect.seed)
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
    width = max([len(x) for x in labels] + [10]) + 2
    lines.append("")
    lines.append("  confusion (rows: true class, columns: named type)  recall  kept")
    lines.append("  " + " " * width + "".join(f"{lab[:9]:>10}" for lab in labels))
    for lab, row in zip(labels, insp["confusion_matrix"], strict=True):
        if lab not in result["classes"]:
            continue
        lines.append(f"  {lab:<{width}}" + "".join(f"{v:>10}" for v in row)
                     + f"  {_fmt(insp['recall_by_class'].get(lab)):>6}"
                     + f"  {_fmt(result['kept_by_class'].get(lab), True):>6}")
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
