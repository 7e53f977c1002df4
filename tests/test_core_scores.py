"""The scores of ``skymorph evaluate`` (``skymorph.core.scores``) on plain arrays, no run directory."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from skymorph.core import scores as S


def test_the_examples_in_the_docstrings_run():
    result = doctest.testmod(S)
    assert result.attempted >= 8 and result.failed == 0


def test_balanced_accuracy_is_the_mean_recall_over_true_classes_only():
    """A cluster whose sampled members carry no label is '(unnamed)': its galaxies count as
    wrong, but '(unnamed)' is no class whose recall is averaged (hand count: (2/3 + 1) / 2)."""
    truth = ["e", "e", "e", "s", "s", "", ""]
    consensus = [0, 0, 2, 1, 1, 2, 2]
    # a seed whose one-member draw of cluster 2 is an unlabelled galaxy (row 5 or 6)
    seed = next(s for s in range(100) if S.sample_members(np.array(consensus), 1, s)[2][0] != 2)
    r = S.score_labels(truth, consensus, per_cluster=1, seed=seed)
    assert r["inspection"]["cluster_names"] == {"0": "e", "1": "s", "2": S.UNNAMED}
    assert r["inspection"]["recall_by_class"] == {"e": pytest.approx(2 / 3), "s": 1.0}
    assert r["inspection"]["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["inspection"]["accuracy"] == pytest.approx(4 / 5)
    assert r["inspection"]["labels"] == ["e", "s", S.UNNAMED]


def test_rejected_galaxies_are_left_out_of_the_consensus_scores_but_counted_as_not_kept():
    truth = ["a"] * 4 + ["b"] * 4
    kmeans = [0, 0, 0, 0, 1, 1, 1, 1]
    consensus = [0, 0, -1, -1, 1, 1, 1, 1]
    r = S.score_labels(truth, kmeans, consensus, per_cluster=10)
    assert r["consensus"]["n"] == 6 and r["clusters"]["n"] == 8
    assert r["kept_by_class"] == {"a": 0.5, "b": 1.0} and r["fraction_kept"] == 0.75
    assert r["kmeans_all"]["balanced_accuracy"] == 1.0


def test_each_clusters_draw_does_not_depend_on_the_other_clusters():
    labels = np.repeat([0, 1, 2], 50)
    first = S.sample_members(labels, 5, seed=7)
    changed = S.sample_members(np.where(labels == 2, 3, labels), 5, seed=7)
    assert np.array_equal(first[0], changed[0]) and np.array_equal(first[1], changed[1])
    with pytest.raises(S.ScoreError, match="at least 1"):
        S.sample_members(labels, 0, seed=0)


def test_mismatched_lengths_say_what_is_expected():
    with pytest.raises(S.ScoreError, match="one entry per galaxy"):
        S.score_labels(["a", "b"], [0, 1], [0, 1, 2])
