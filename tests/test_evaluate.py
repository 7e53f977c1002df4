"""Evaluation against known labels: hand-computed cases, id matching, and a real GZ1 run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from skymorph import Config, RunDir
from skymorph.core.scores import ScoreError
from skymorph.inspection import consensus_labels, load_manifest, sample_members
from skymorph.stages.evaluate import (
    EvaluateError,
    aligned_truth,
    evaluate,
    format_report,
    purity,
    read_truth,
    score_labels,
)
from skymorph.stages.inspect import montage
from test_inspection import cluster_catalog

GZ1_N = 60


# --- constructed cases, computed by hand ----------------------------------------------------------


def test_independent_partition():
    # every cluster holds one a and one b: no information at all
    truth, clusters = ["a", "a", "b", "b"], [0, 1, 0, 1]
    scores = score_labels(truth, clusters)["clusters"]
    assert scores["purity"] == pytest.approx(0.5)
    assert scores["nmi"] == pytest.approx(0.0, abs=1e-12)
    # ARI: sum C(n_ij,2)=0, rows 2+... = 2, cols = 2, C(4,2)=6 -> (0 - 4/6) / (2 - 4/6) = -1/2
    assert scores["ari"] == pytest.approx(-0.5)


def test_partial_partition_matches_hand_values_and_sklearn():
    truth = ["a", "a", "a", "b", "b", "b"]
    clusters = [0, 0, 1, 1, 2, 2]
    scores = score_labels(truth, clusters)["clusters"]
    assert scores["purity"] == pytest.approx(5 / 6)
    # MI = 2 * (1/3) ln 2; H(truth) = ln 2, H(clusters) = ln 3; arithmetic normalisation
    assert scores["nmi"] == pytest.approx((2 / 3) * math.log(2) / ((math.log(2) + math.log(3)) / 2))
    # ARI: index 2, expected 3 * 6 / 15 = 1.2, max (3 + 6) / 2 = 4.5
    assert scores["ari"] == pytest.approx((2 - 1.2) / (4.5 - 1.2))
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(truth, clusters))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(truth, clusters))
    # relabelling the clusters changes nothing; a perfect clustering scores 1
    assert score_labels(truth, [7, 7, 3, 3, 5, 5])["clusters"] == scores
    perfect = score_labels(truth, [4, 4, 4, 9, 9, 9])["clusters"]
    assert (perfect["purity"], perfect["nmi"], perfect["ari"]) == pytest.approx((1, 1, 1))


def test_random_case_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.choice(["e", "s", "x"], 500)
    clusters = np.where(rng.random(500) < 0.6, (truth == "s").astype(int), rng.integers(0, 6, 500))
    scores = score_labels(truth, clusters)["clusters"]
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(truth, clusters))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(truth, clusters))
    table = pd.crosstab(clusters, truth)
    assert scores["purity"] == pytest.approx(table.max(axis=1).sum() / 500)
    assert purity(truth, clusters) == scores["purity"]


def test_consensus_simulated_inspection_and_fraction_kept():
    # galaxy:      0    1    2    3    4    5    6    7    8    9
    truth = ["e", "e", "s", "s", "s", "e", "", "s", "e", "s"]
    kmeans = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    consensus = [0, 0, -1, 1, 1, 1, 1, 2, 2, -1]
    r = score_labels(truth, kmeans, consensus, per_cluster=100, seed=0)
    assert r["n_galaxies"] == 10 and r["n_labelled"] == 9
    assert r["fraction_kept"] == pytest.approx(0.8)
    assert r["fraction_kept_labelled"] == pytest.approx(7 / 9)
    assert r["kept_by_class"] == pytest.approx({"e": 1.0, "s": 3 / 5})
    # every member is shown (clusters < 100): cluster 0 -> e, 1 -> s (2 of 3 labelled),
    # 2 -> tie e/s broken by sorted order -> e
    insp = r["inspection"]
    assert insp["cluster_names"] == {"0": "e", "1": "s", "2": "e"}
    # labelled consensus galaxies: 0 e->e, 1 e->e, 3 s->s, 4 s->s, 5 e->s, 7 s->e, 8 e->e
    assert insp["n"] == 7
    assert insp["accuracy"] == pytest.approx(5 / 7)
    assert insp["labels"] == ["e", "s"]
    assert insp["confusion_matrix"] == [[3, 1], [1, 2]]
    assert insp["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert r["consensus"]["n"] == 7
    assert r["consensus"]["ari"] == pytest.approx(adjusted_rand_score(
        ["e", "e", "s", "s", "e", "s", "e"], [0, 0, 1, 1, 1, 2, 2]))
    text = format_report(r)
    assert "balanced accuracy 0.708" in text and "consensus galaxies" in text
    # kmeans_all: the K-means clusters of every galaxy named the same way: 0 -> e (e, e, s),
    # 1 -> s (s, s, e), 2 -> s (s, e, s); e: 2 of 4 right, s: 4 of 5
    assert r["kmeans_all"]["n"] == 9
    assert r["kmeans_all"]["balanced_accuracy"] == pytest.approx((2 / 4 + 4 / 5) / 2)
    assert "K-means clusters of all 9 labelled galaxies: balanced accuracy 0.650" in text
    assert "kmeans_all" not in score_labels(truth, kmeans)  # a single clustering: it is the inspection


def test_simulated_inspection_uses_the_montage_draw():
    rng = np.random.default_rng(2)
    clusters = rng.integers(0, 3, 900)
    truth = np.where(rng.random(900) < 0.5, "e", "s")
    r = score_labels(truth, clusters, per_cluster=7, seed=5)
    for c, rows in sample_members(clusters, 7, 5).items():
        counts = pd.Series(truth[rows]).value_counts()
        best = sorted(counts[counts == counts.max()].index)[0]
        assert r["inspection"]["cluster_names"][str(c)] == best


def test_cluster_without_labelled_sample_is_unnamed():
    r = score_labels(["e", "", "", "e"], [0, 1, 1, 0], per_cluster=5)
    assert r["inspection"]["cluster_names"] == {"0": "e", "1": "(unnamed)"}


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ScoreError, match="one entry per galaxy"):
        score_labels(["a", "b"], [0, 1, 2])


# --- reading truth tables ----------------------------------------------------------------------------


def test_long_integer_ids_keep_every_digit(tmp_path):
    ids = [587722953303916935, 587722982825001149, 587722982825001150]
    csv = tmp_path / "t.csv"
    csv.write_text("objid,cls\n" + "\n".join(f"{i},{c}" for i, c in zip(ids, "abc", strict=True)))
    assert read_truth(csv, "objid", "cls")["id"].tolist() == [str(i) for i in ids]
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"objid": np.array(ids, dtype=np.int64), "cls": list("abc")}).to_parquet(pq)
    assert read_truth(pq, "objid", "cls")["id"].tolist() == [str(i) for i in ids]
    # floats cannot hold these ids: refuse rather than match the wrong galaxies
    floats = tmp_path / "f.parquet"
    pd.DataFrame({"objid": np.array(ids, dtype=np.float64), "cls": list("abc")}).to_parquet(floats)
    with pytest.raises(EvaluateError, match="floating point"):
        read_truth(floats, "objid", "cls")


def test_wrong_column_lists_the_columns(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("objid,gz1_class,gz1_name\n1,0,elliptical\n")
    with pytest.raises(EvaluateError, match="no label column 'class'.*objid, gz1_class, gz1_name"):
        read_truth(csv, "objid", "class")
    with pytest.raises(EvaluateError, match="does not exist"):
        read_truth(tmp_path / "missing.csv", "objid", "gz1_name")
    csv.write_text("objid,c\n1,a\n1,b\n")
    with pytest.raises(EvaluateError, match="more than one label"):
        read_truth(csv, "objid", "c")


# --- a real run: 60 SDSS galaxies with Galaxy Zoo 1 classes ----------------------------------------------


@pytest.fixture(scope="module")
def gz1_run(tmp_path_factory, shared_data):
    from skymorph import ingest

    images = sorted((shared_data / "gz1_sdss" / "images").glob("*.jpeg"))[:GZ1_N]
    run = ingest(images, tmp_path_factory.mktemp("gz1") / "run",
                 Config().update({"ingest": {"workers": 1}}), progress=False)
    cluster_catalog(run, k=5)
    return run


def test_evaluate_real_run_against_gz1_labels(gz1_run, shared_data, tmp_path):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = Config().update({"inspect": {"per_cluster": 8, "seed": 3}})
    result = evaluate(gz1_run, labels_csv, "objid", "gz1_name", config,
                      label_map={"spiral_cw": "spiral", "spiral_acw": "spiral"}, exclude=["dont_know"],
                      out=tmp_path / "e.json")
    truth = pd.read_csv(labels_csv, dtype=str).set_index("objid")["gz1_name"]
    assert result["n_matched"] == GZ1_N == result["n_catalog"]
    assert result["n_truth"] == 700 and result["n_truth_unmatched"] == 700 - GZ1_N
    catalog = gz1_run.catalog()
    aligned = truth.reindex(catalog["id"].astype(str)).replace(
        {"spiral_cw": "spiral", "spiral_acw": "spiral", "dont_know": ""}).to_numpy()
    assert not pd.isna(aligned).any()
    assert set(result["classes"]) <= {"elliptical", "spiral", "edge_on", "merger"}
    known = aligned != ""
    assert result["n_labelled"] == known.sum()
    assert result["clusters"]["ari"] == pytest.approx(
        adjusted_rand_score(aligned[known], catalog["cluster_kmeans"].to_numpy()[known]))
    assert result["clusters"]["nmi"] == pytest.approx(
        normalized_mutual_info_score(aligned[known], catalog["cluster_kmeans"].to_numpy()[known]))
    labels = consensus_labels(catalog)
    assert result["fraction_kept"] == pytest.approx((labels >= 0).mean())
    matrix = np.array(result["inspection"]["confusion_matrix"])
    assert matrix.sum() == result["inspection"]["n"] == (known & (labels >= 0)).sum()
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["inspection"]["accuracy"])
    assert json.loads((tmp_path / "e.json").read_text())["inspection"] == result["inspection"]
    # the simulated inspection names each cluster from exactly the galaxies its montage shows
    montage(gz1_run, config, progress=False)
    for entry in load_manifest(gz1_run)["clusters"]:
        shown = [t for t in aligned[entry["rows"]] if t]
        counts = pd.Series(shown).value_counts()
        best = sorted(counts[counts == counts.max()].index)[0]
        assert result["inspection"]["cluster_names"][str(entry["cluster"])] == best


def test_evaluate_cli_and_its_errors(gz1_run, shared_data, capsys):
    from skymorph import cli

    labels_csv = str(shared_data / "gz1_sdss" / "labels.csv")
    run = str(gz1_run.path)
    assert cli.main(["evaluate", run, "--truth", labels_csv, "--id-col", "objid",
                     "--label-col", "gz1_name"]) == 0
    out = capsys.readouterr().out
    assert f"matched {GZ1_N} of 700" in out and "NMI" in out and "balanced accuracy" in out
    assert (gz1_run.path / "evaluation" / "evaluation.json").exists()
    assert cli.main(["evaluate", run, "--truth", labels_csv, "--id-col", "objid",
                     "--label-col", "morphology"]) == 1
    assert "objid, gz1_class, gz1_name" in capsys.readouterr().err
    assert cli.main(["evaluate", run, "--truth", labels_csv, "--id-col", "gz1_class",
                     "--label-col", "gz1_name"]) == 1
    err = capsys.readouterr().err
    assert "none of the 6 ids (700 rows) in column 'gz1_class'" in err


def test_baseline_scored_with_the_same_code(gz1_run, shared_data):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    truth = aligned_truth(gz1_run, labels_csv, "objid", "gz1_name", exclude=["dont_know"])
    want = pd.read_csv(labels_csv, dtype=str).set_index("objid")["gz1_name"]
    assert truth.tolist() == [("" if (t := want[i]) == "dont_know" else t)
                              for i in gz1_run.sources()["id"].astype(str)]
    pixels = np.asarray(gz1_run.open_array("stamps")).reshape(GZ1_N, -1)
    baseline = KMeans(4, n_init=4, random_state=0).fit_predict(PCA(8, random_state=0).fit_transform(pixels))
    r = score_labels(truth, baseline, per_cluster=100, seed=0)
    assert r["fraction_kept"] == 1.0 and r["consensus"] == r["clusters"]
    known = truth != ""
    assert r["clusters"]["ari"] == pytest.approx(adjusted_rand_score(truth[known], baseline[known]))
    assert 0 <= r["inspection"]["balanced_accuracy"] <= 1


def test_no_matching_ids_says_how_many(gz1_run, tmp_path):
    truth = pd.DataFrame({"objid": ["1", "2", "3"], "cls": ["a", "b", "a"]})
    with pytest.raises(EvaluateError, match="none of the 3 ids .* 60 catalog ids"):
        evaluate(gz1_run, truth, "objid", "cls", out=tmp_path / "x.json")


def test_evaluate_needs_a_clustered_run(cosmos_run, tmp_path):
    import shutil

    shutil.copytree(cosmos_run.path, tmp_path / "run")
    with pytest.raises(Exception, match="cluster"):
        evaluate(RunDir(tmp_path / "run"), pd.DataFrame({"i": ["x"], "c": ["a"]}), "i", "c")
