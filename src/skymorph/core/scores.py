"""Scores of a clustering against true classes known for part of the sample.

Plain array functions behind ``skymorph evaluate`` (and the benchmarks that score other
clusterings with the same code): purity, NMI and ARI of a partition; a simulated inspection
that names each cluster by the majority true class among the members a montage shows
(:func:`sample_members`, the draw the montages use) and scores those names (accuracy,
balanced accuracy as the mean recall over the true classes, the confusion matrix).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SkymorphError

__all__ = ["score_labels", "purity", "partition_scores", "majority", "sample_members", "UNNAMED",
           "ScoreError"]


class ScoreError(SkymorphError, ValueError):
    """The labels to score do not fit together (one entry per galaxy each), or a draw is empty."""


def sample_members(labels: np.ndarray, per_cluster: int, seed: int) -> dict[int, np.ndarray]:
    """Draw up to ``per_cluster`` members of each cluster at random.

    Each cluster's draw uses its own generator seeded by ``(seed, cluster)``, so
    it does not change when other clusters do.  The montages and the simulated
    inspection of :func:`score_labels` both use this function,
    so they look at the same galaxies.

    Parameters
    ----------
    labels : ndarray of int
        Cluster of every galaxy; negative values (rejected galaxies) are skipped.
    per_cluster : int
        Members drawn per cluster (all of them when the cluster is smaller).
    seed : int
        Seed of the draw.

    Returns
    -------
    dict of int to ndarray
        Cluster id -> positions (into ``labels``) of the drawn members, in draw order.

    Examples
    --------
    >>> from skymorph.core.scores import sample_members
    >>> drawn = sample_members(np.array([0, 0, 0, 1, -1]), 2, seed=0)
    >>> sorted(drawn), len(drawn[0]), drawn[1].tolist()
    ([0, 1], 2, [3])
    """
    labels = np.asarray(labels)
    if per_cluster < 1:
        raise ScoreError(f"per_cluster must be at least 1 (got {per_cluster})")
    out: dict[int, np.ndarray] = {}
    for cluster in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cluster)
        rng = np.random.default_rng([int(seed), int(cluster)])
        take = min(per_cluster, members.size)
        out[int(cluster)] = members[rng.choice(members.size, size=take, replace=False)]
    return out


UNNAMED = "(unnamed)"
"""Prediction for a cluster none of whose sampled members has a label."""


def purity(truth: Sequence[Any], clusters: Sequence[Any]) -> float:
    """Fraction of galaxies that belong to the majority true class of their cluster.

    ``sum_k max_j |cluster_k & class_j| / N``; 1 for a perfect (or a one-galaxy-per-
    cluster) clustering, so read it beside NMI and ARI.

    See Also
    --------
    partition_scores : purity with NMI and ARI.

    Examples
    --------
    >>> from skymorph.core.scores import purity
    >>> purity(["e", "e", "s", "s", "s"], [0, 0, 0, 1, 1])
    0.8
    """
    table = pd.crosstab(pd.Series(np.asarray(clusters)), pd.Series(np.asarray(truth)))
    n = int(table.to_numpy().sum())
    return float(table.max(axis=1).sum() / n) if n else float("nan")


def partition_scores(truth: np.ndarray, clusters: np.ndarray) -> dict[str, Any]:
    """``n``, ``n_clusters``, :func:`purity`, NMI (arithmetic normalisation) and ARI of a clustering
    against true classes (scikit-learn's ``normalized_mutual_info_score``, ``adjusted_rand_score``);
    ``None`` scores for no galaxy.

    Examples
    --------
    >>> from skymorph.core.scores import partition_scores
    >>> partition_scores(np.array(["a", "a", "b", "b"]), np.array([0, 0, 1, 1]))
    {'n': 4, 'n_clusters': 2, 'purity': 1.0, 'nmi': 1.0, 'ari': 1.0}
    """
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


def majority(labels: Sequence[str]) -> str:
    """The most frequent label (ties: the first in sorted order); :data:`UNNAMED` for none.

    Examples
    --------
    >>> from skymorph.core.scores import majority
    >>> majority(["s", "e", "s", "e"]), majority([])
    ('e', '(unnamed)')
    """
    counts = Counter(labels)
    if not counts:
        return UNNAMED
    best = max(counts.values())
    return sorted(k for k, v in counts.items() if v == best)[0]


def score_labels(truth: Sequence[Any], clusters: Sequence[int],
                 consensus_clusters: Sequence[int] | None = None, *,
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

    Raises
    ------
    ScoreError
        ``truth``, ``clusters`` and ``consensus_clusters`` differ in length.

    See Also
    --------
    sample_members : the seeded draw of the members each cluster is named from.
    skymorph.stages.evaluate.evaluate : the same on a run directory and a truth table.

    Examples
    --------
    >>> from skymorph.core.scores import score_labels
    >>> r = score_labels(["e", "e", "s", "s", ""], [0, 0, 1, 1, 1], per_cluster=10)
    >>> r["inspection"]["cluster_names"], r["inspection"]["balanced_accuracy"], r["clusters"]["ari"]
    ({'0': 'e', '1': 's'}, 1.0, 1.0)
    """
    truth_arr = np.array([_missing_to_empty(t) for t in truth], dtype=object)
    clusters_arr = np.asarray(clusters).astype(np.int64)
    cons = clusters_arr if consensus_clusters is None else np.asarray(consensus_clusters).astype(np.int64)
    if not (truth_arr.shape == clusters_arr.shape == cons.shape):
        raise ScoreError(f"truth ({truth_arr.shape[0]}), clusters ({clusters_arr.shape[0]}) and consensus "
                            f"clusters ({cons.shape[0]}) must have one entry per galaxy")
    labelled = truth_arr != ""
    kept = cons >= 0
    n = truth_arr.size
    classes = sorted(set(truth_arr[labelled].tolist()))

    names: dict[int, str] = {}
    for cluster, rows in sample_members(cons, per_cluster, seed).items():
        names[cluster] = majority([t for t in truth_arr[rows] if t != ""])
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
        insp = score_labels(truth_arr, clusters_arr, None, per_cluster=per_cluster, seed=seed)["inspection"]
        kmeans_all = {key: insp[key] for key in ("n", "accuracy", "balanced_accuracy", "recall_by_class")}
    return {
        "n_galaxies": int(n),
        "n_labelled": int(labelled.sum()),
        "classes": classes,
        "fraction_kept": float(kept.mean()) if n else float("nan"),
        "fraction_kept_labelled": float(kept[labelled].mean()) if labelled.any() else float("nan"),
        "kept_by_class": {c: float(kept[truth_arr == c].mean()) for c in classes},
        "clusters": partition_scores(truth_arr[labelled].astype(str), clusters_arr[labelled]),
        "consensus": partition_scores(y_true, cons[sel]),
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
