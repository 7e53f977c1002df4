"""The science in ``skymorph.core`` on synthetic arrays, with no run directory, and the
stage adapters that hand it the settings (``core_options``)."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from skymorph.config import ClusterConfig, PolarConfig, ReduceConfig
from skymorph.core import apct as A
from skymorph.core import clustering as C
from skymorph.core import reduction as R


def _blobs(n=600, k=4, dim=8, seed=0, spread=0.4):
    x, truth = make_blobs(n_samples=n, centers=k, n_features=dim, cluster_std=spread,
                          center_box=(-10, 10), random_state=seed)
    return x.astype(np.float32), truth


@pytest.mark.parametrize("module", ["skymorph.core.clustering", "skymorph.core.cluster_members",
                                    "skymorph.core.reduction", "skymorph.core.umap_fit",
                                    "skymorph.core.apct", "skymorph.core.hybrid",
                                    "skymorph.core.measure_tasks"])
def test_the_examples_in_the_docstrings_run(module):
    """Every Examples section is real code with the output shown (UMAP fits are skipped:
    numba compiles for about a minute)."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5
    assert result.failed == 0


# (core function, settings section, names the stage handles itself or renames)
DEFAULTS = [
    (C.consensus_clustering, ClusterConfig, {}),
    (C.fit_placer, ClusterConfig, {}),
    (C.birch_labels, ClusterConfig, {"threshold": "birch_threshold", "n_subclusters": "birch_subclusters",
                                     "branching_factor": "birch_branching_factor"}),
    (C.ward_labels, ClusterConfig, {"method": "ward_method", "sample": "ward_sample",
                                    "connectivity": "ward_connectivity"}),
    (R.reduce_features, ReduceConfig, {}),
    (R.scan_dims, ReduceConfig, {}),
    (R.knn_graph, ReduceConfig, {}),
    (A.apct, PolarConfig, {}),
    (A.output_shape, PolarConfig, {}),
]


@pytest.mark.parametrize("function, section, renamed", DEFAULTS, ids=lambda v: getattr(v, "__name__", ""))
def test_core_defaults_are_the_settings_defaults(function, section, renamed):
    """A notebook call with no arguments does what a run with default settings does."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(section)}
    checked = 0
    for name, parameter in inspect.signature(function).parameters.items():
        key = renamed.get(name, name)
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and key in defaults:
            default = parameter.default
            expected = defaults[key]
            assert (list(default) if isinstance(default, tuple) else default) == expected, name
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("stage, section, kept", [
    ("cluster", ClusterConfig, {"fit_sample"}),
    # the hybrid features and the projection are prepared by the adapter before the reduction
    ("reduce", ReduceConfig, {"descriptors", "descriptor_levels", "deep_dims", "projection",
                              "projection_dims", "nuisance_sample", "nuisance_copies"}),
    ("polar", PolarConfig, {"enabled", "batch_size"}),
])
def test_every_setting_reaches_the_science(stage, section, kept):
    """The adapter hands every setting to core (or uses it itself): a new setting that is
    forgotten fails here instead of being silently ignored."""
    options = importlib.import_module(f"skymorph.stages.{stage}").core_options(section())
    assert set(options) | kept == {f.name for f in dataclasses.fields(section)}


# --- clustering -------------------------------------------------------------------------------


def test_placed_blocks_give_the_in_memory_vote_on_separated_data():
    """Fitted on samples and placed block by block (the route past one machine's memory),
    the labels and the vote are those of the in-memory clustering, up to renaming."""
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs(n=900)
    full = C.consensus_clustering(x, k=4, birch_subclusters=60)
    placer = C.fit_placer(lambda rows: x[rows], len(x), k=4, birch_subclusters=60, fit_sample=300,
                          ward_sample=200)
    assert placer.ward_exact is None and placer.info["ward_route"].startswith("sample")
    blocks = [placer.labels(x[i:i + 250], i) for i in range(0, len(x), 250)]
    placed = C.vote(*(np.concatenate(part) for part in zip(*blocks, strict=True)))
    assert placed.info["kept_fraction"] > 0.99
    assert adjusted_rand_score(full.cluster, placed.cluster) > 0.99
    assert adjusted_rand_score(truth, placed.kmeans) > 0.99


def test_connectivity_route_cannot_place_blocks():
    x, _ = _blobs(n=300)
    with pytest.raises(C.ClusterError, match="connectivity"):
        C.fit_placer(lambda rows: x[rows], len(x), k=4, ward_method="connectivity", fit_sample=100)


def test_unknown_ward_method_and_birch_threshold_are_clear_errors():
    x, _ = _blobs(n=100)
    with pytest.raises(C.ClusterError, match="ward_method must be"):
        C.ward_labels(x, k=4, method="single")
    with pytest.raises(C.ClusterError, match="birch_threshold must be a number or 'auto'"):
        C.birch_labels(x, k=4, threshold="big")


def test_cluster_table_counts_each_label():
    # ward cluster 2 holds K-means 0 and 1 (a tie: it maps to 0), so galaxy 3 is not kept
    result = C.vote(np.array([0, 0, 0, 1, 1]), np.array([5, 5, 6, 7, 7]), np.array([1, 1, 2, 2, 3]))
    table = C.cluster_table(result, k=3)
    assert table["n_kmeans"].tolist() == [3, 2, 0]
    assert table["n_agglomerative"].tolist() == [4, 1, 0]
    assert table["n_kept"].tolist() == [3, 1, 0]
    assert table["agreement"].tolist() == [1.0, 0.5, 0.0]
    assert table["birch_clusters_mapped"].tolist() == [2, 1, 0]
    assert table["agglomerative_clusters_mapped"].tolist() == [2, 1, 0]


# --- reduction --------------------------------------------------------------------------------


def test_exact_knn_graph_lists_each_point_first_and_its_true_neighbours():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    indices, distances, index = R.knn_graph(x, n_neighbors=4)
    assert index is None and indices.shape == (50, 4)
    np.testing.assert_array_equal(indices[:, 0], np.arange(50))
    brute = np.argsort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(np.sort(indices, 1), np.sort(brute, 1))
    np.testing.assert_allclose(distances[:, 1], np.linalg.norm(x - x[indices[:, 1]], axis=1), rtol=1e-5)


@pytest.mark.slow
def test_exact_knn_graph_matches_the_approximate_one_that_umap_sees():
    # the two paths of knn_graph must hand UMAP the same graph: a galaxy is at distance 0
    # from itself (float32 rounding left ~1e-7 for half of them, which changed UMAP's rho)
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(300, 16)) * 50 + 200).astype(np.float32)
    ie, de, _ = R.knn_graph(x, n_neighbors=10)
    assert (de[:, 0] == 0).all()
    ia, da, _ = R.knn_graph(x, n_neighbors=10, exact_knn_below=0, seed=0)
    same = (np.sort(ie, 1) == np.sort(ia, 1)).all(1)
    assert same.mean() > 0.9
    np.testing.assert_allclose(de[same], da[same], rtol=1e-4, atol=1e-4)


def test_sample_rows_is_seeded_sorted_and_salted():
    a = R.sample_rows(1000, 50, seed=3, salt=1)
    np.testing.assert_array_equal(a, R.sample_rows(1000, 50, seed=3, salt=1))
    assert np.all(np.diff(a) > 0) and a.size == 50
    assert not np.array_equal(a, R.sample_rows(1000, 50, seed=3, salt=2))


def test_pca_reduction_keeps_the_groups_apart():
    x, truth = _blobs(n=200, dim=30)
    result = R.reduce_features(x, method="pca", dims=3, map_2d=False, progress=False)
    e = result.embedding
    d = ((e[:, None] - e[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (truth[d.argmin(1)] == truth).mean() > 0.99


def test_unknown_method_and_dims_are_clear_errors():
    x, _ = _blobs(n=60)
    with pytest.raises(R.ReduceError, match="reduce.method must be one of"):
        R.reduce_features(x, method="tsne", progress=False)
    with pytest.raises(R.ReduceError, match="reduce.dims must be an integer or 'auto'"):
        R.reduce_features(x, dims="many", progress=False)


# --- APCT -------------------------------------------------------------------------------------


def test_apct_of_a_centred_disc_is_the_same_on_every_ray():
    """A symmetric galaxy at the pole: every ray reads the same profile, and the mirror
    puts the flipped profile on the left."""
    y, x = np.mgrid[:64, :64]
    disc = np.exp(-((x - 31.5) ** 2 + (y - 31.5) ** 2) / 40.0).astype(np.float32)
    out, pole, _ = A.apct(disc, pole="centre", return_geometry=True)
    np.testing.assert_allclose(pole, [[31.5, 31.5]])
    assert out.shape == A.output_shape(64)
    np.testing.assert_allclose(out, np.broadcast_to(out.mean(0), out.shape), atol=0.02)
    np.testing.assert_array_equal(out[:, :32], out[:, 32:][:, ::-1])
    assert out[0, 32] > out[0, -1]


def test_apct_torch_and_numpy_agree():
    import torch

    stamps = np.random.default_rng(2).normal(size=(3, 40, 40)).astype(np.float32)
    with torch.inference_mode():
        via_torch = A.apct_torch(torch.from_numpy(stamps.copy()), pole="peak-near-centre", owned=True).numpy()
    np.testing.assert_array_equal(via_torch, A.apct(stamps, pole="peak-near-centre"))
