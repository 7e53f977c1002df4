"""Consensus clustering: the science on arrays (skymorph.core.clustering) and the ``cluster`` stage."""

from __future__ import annotations

import importlib
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from skymorph.cli import main as cli_main
from skymorph.config import Config
from skymorph.io.catalog import unique_names
from skymorph.io.rundir import RunDir

C = importlib.import_module("skymorph.core.clustering")


def _blobs(n=600, k=5, dim=10, seed=0, spread=0.5):
    x, truth = make_blobs(n_samples=n, centers=k, n_features=dim, cluster_std=spread,
                          center_box=(-20, 20), random_state=seed)
    return x.astype(np.float32), truth


# --- the vote --------------------------------------------------------------------------


def test_two_clusters_mapping_to_one_label_both_keep_their_members():
    kmeans = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    birch = np.array([7, 7, 3, 3, 5, 5, 5, 5, 9, 9])  # 7 and 3 both map to K-means 0
    agg = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    mapped = C.map_to_reference(birch, kmeans)
    np.testing.assert_array_equal(mapped, kmeans)
    b, a, agreed, kept = C.consensus(kmeans, birch, agg)
    assert kept.all()  # a dict keyed by label would have lost one of the two clusters
    np.testing.assert_array_equal(agreed, kmeans)


def test_plurality_mapping_and_disagreement():
    kmeans = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    # BIRCH cluster 4 holds K-means 0,0,1 -> 0; cluster 5 holds 1,1 -> 1; cluster 6 holds 0,2,2 -> 2
    birch = np.array([4, 4, 6, 4, 5, 5, 6, 6])
    agg = kmeans.copy()
    b, a, agreed, kept = C.consensus(kmeans, birch, agg)
    np.testing.assert_array_equal(b, [0, 0, 2, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(kept, [True, True, False, False, True, True, True, True])
    np.testing.assert_array_equal(agreed, [0, 0, -1, -1, 1, 1, 2, 2])


def test_kmeans_label_that_no_cluster_maps_to_is_not_kept_whole():
    # K-means cluster 2 is split between BIRCH clusters whose plurality lies elsewhere:
    # no BIRCH cluster maps to 2, so none of its members may be kept.
    kmeans = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    birch = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    b, a, agreed, kept = C.consensus(kmeans, birch, kmeans)
    assert not kept[8:].any()
    assert (agreed[8:] == -1).all()


def test_mapping_ties_go_to_the_smaller_label():
    np.testing.assert_array_equal(C.map_to_reference(np.array([3, 3]), np.array([5, 2])), [2, 2])


# --- the three methods on data -------------------------------------------------------------


def test_well_separated_blobs_agree_and_nearly_all_are_kept():
    x, truth = _blobs()
    result = C.consensus_clustering(x, k=5)
    assert result.consensus.mean() > 0.98
    assert adjusted_rand_score(truth, result.kmeans) > 0.99
    assert adjusted_rand_score(truth, result.cluster) > 0.97
    assert set(np.unique(result.cluster)) <= set(range(5)) | {-1}


def test_reproducible_with_a_fixed_seed():
    x, _ = _blobs(n=500, k=8, spread=3.0, seed=1)  # overlapping: the seed matters
    first = C.consensus_clustering(x, k=8, seed=7)
    second = C.consensus_clustering(x, k=8, seed=7)
    for name in ("kmeans", "birch", "agglomerative", "cluster", "consensus"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_birch_auto_threshold_gives_about_the_target_number_of_subclusters():
    # low intrinsic dimension, as in a UMAP embedding: 3-d blobs laid into 30-d
    low, _ = _blobs(n=4000, k=10, dim=3, spread=2.0, seed=2)
    x = (low @ np.random.default_rng(0).normal(size=(3, 30))).astype(np.float32)
    labels, info = C.birch_labels(x, k=10, n_subclusters=200)
    # scikit-learn's default threshold (0.5) would keep one subcluster per point here.
    assert 50 <= info["birch_subclusters"] <= 800, info
    assert set(np.unique(labels)) == set(range(10))


def test_birch_auto_threshold_survives_noise_dominated_data():
    # isotropic blobs in 30-d: neighbourhoods are as wide as the blobs, the radius estimate
    # runs low, and the calibration must neither keep ~one subcluster per point nor fall
    # below k subclusters
    x, truth = _blobs(n=3000, k=10, dim=30, spread=2.0, seed=2)
    labels, info = C.birch_labels(x, k=10, n_subclusters=200)
    assert 10 <= info["birch_subclusters"] <= 2000, info
    assert adjusted_rand_score(truth, labels) > 0.95


@pytest.mark.parametrize("route", ["sample", "connectivity"])
def test_approximate_ward_routes_match_exact_ward_on_separated_data(route):
    x, _ = _blobs(n=1500, k=6, dim=20, spread=1.0, seed=3)
    exact, _ = C.ward_labels(x, k=6, sample=300, connectivity=10, method="exact")
    approx, info = C.ward_labels(x, k=6, sample=300, connectivity=10, method=route)
    assert info["ward_route"].startswith(route)
    assert adjusted_rand_score(exact, approx) > 0.99


def test_fewer_galaxies_than_k_is_a_clear_error():
    x, _ = _blobs(n=10, k=2)
    with pytest.raises(C.ClusterError, match="k=20 clusters of 10 galaxies"):
        C.consensus_clustering(x, k=20)


def test_nan_rows_are_a_clear_error_naming_them():
    x, _ = _blobs(n=100, k=3)
    x[[4, 17]] = np.nan
    ids = [f"gal{i}" for i in range(100)]
    with pytest.raises(C.ClusterError, match=r"2 of 100 galaxies .*gal4, gal17"):
        C.consensus_clustering(x, k=3, ids=ids)


# --- the stage on a real run -------------------------------------------------------------


def _features_run(cosmos_run, tmp_path):
    """A copy of the COSMOS run with real ``features`` (flattened stamps) recorded as encoded."""
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    stamps = np.asarray(run.open_array("stamps")[:])
    features = stamps.reshape(stamps.shape[0], -1)
    # asinh keeps the bright cores from dominating the distances
    features = np.arcsinh(features / np.median(np.abs(features), axis=1, keepdims=True))
    with run.writer("features", features.shape[1:], 64) as writer:
        writer.extend(features.astype(np.float32))
    config = Config()
    run.mark_done("encode", run.fingerprint("encode", config, ["encode"], upstream=["ingest"]))
    return run


@pytest.mark.slow
def test_cli_reduce_then_cluster_writes_the_catalog(cosmos_run, tmp_path, capsys):
    run = _features_run(cosmos_run, tmp_path)
    assert cli_main(["reduce", str(run.path), "--dims", "5", "--n-epochs", "100", "--no-map"]) == 0
    assert cli_main(["cluster", str(run.path), "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "galaxies kept by the vote" in out
    catalog = run.catalog()
    sources = unique_names(run.sources())  # the catalog drops ingest's empty ra/dec beside RA/DEC
    new = ["cluster_kmeans", "cluster_birch", "cluster_agglomerative", "cluster", "consensus", "morph_type"]
    assert list(catalog.columns) == list(sources.columns) + new
    pd.testing.assert_frame_equal(catalog[sources.columns], sources)
    assert catalog["consensus"].dtype == bool
    kept = catalog["consensus"].to_numpy()
    assert kept.sum() > 50  # 100 galaxies, 4 clusters: most should be agreed on
    np.testing.assert_array_equal(catalog.loc[kept, "cluster"], catalog.loc[kept, "cluster_kmeans"])
    assert (catalog.loc[~kept, "cluster"] == -1).all()
    assert (catalog.loc[~catalog["consensus"], "morph_type"] == "NOCONS").all()  # io/catalog.py contract
    assert catalog.loc[catalog["consensus"], "morph_type"].isna().all()  # typed by inspect merge
    assert (run.path / "catalog.fits").exists()
    table = pd.read_csv(run.path / "cluster" / "clusters.csv")
    assert table["n_kmeans"].sum() == 100
    assert table["n_kept"].sum() == kept.sum()
    np.testing.assert_allclose(table["agreement"], table["n_kept"] / table["n_kmeans"])

    # unchanged inputs and settings: reused; a new k: recomputed
    before = (run.path / "catalog.parquet").stat().st_mtime_ns
    assert cli_main(["cluster", str(run.path), "--k", "4"]) == 0
    assert (run.path / "catalog.parquet").stat().st_mtime_ns == before
    assert cli_main(["cluster", str(run.path), "--k", "3"]) == 0
    assert run.catalog()["cluster_kmeans"].max() == 2


def test_cli_cluster_too_few_galaxies(cosmos_run, tmp_path, capsys):
    run = _features_run(cosmos_run, tmp_path)
    assert cli_main(["reduce", str(run.path), "--dims", "3", "--n-epochs", "50", "--no-map"]) == 0
    assert cli_main(["cluster", str(run.path), "--k", "150"]) == 1
    assert "k=150 clusters of 100 galaxies" in capsys.readouterr().err
