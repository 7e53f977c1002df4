"""Tests of the UMAP reduction stage (skymorph.stages.reduce)."""

from __future__ import annotations

import importlib
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs

from skymorph.cli import main as cli_main
from skymorph.config import Config
from skymorph.io.rundir import RunDir

R = importlib.import_module("skymorph.core.reduction")


def _blobs(n=300, k=4, dim=20, seed=0):
    x, truth = make_blobs(n_samples=n, centers=k, n_features=dim, cluster_std=1.0,
                          center_box=(-15, 15), random_state=seed)
    return x.astype(np.float32), truth


def _features_run(cosmos_run, tmp_path, nan_rows=()):
    """A copy of the COSMOS run with real ``features`` (flattened stamps) recorded as encoded."""
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    stamps = np.asarray(run.open_array("stamps")[:])
    features = stamps.reshape(stamps.shape[0], -1).astype(np.float32)
    features[list(nan_rows)] = np.nan
    with run.writer("features", features.shape[1:], 64) as writer:
        writer.extend(features)
    config = Config()
    run.mark_done("encode", run.fingerprint("encode", config, ["encode"], upstream=["ingest"]))
    return run


def test_reduce_array_is_reproducible_and_keeps_the_groups():
    x, truth = _blobs()
    first = R.reduce_features(x, dims=4, n_epochs=60, map_2d=True, progress=False)
    second = R.reduce_features(x, dims=4, n_epochs=60, map_2d=True, progress=False)
    assert first.embedding.shape == (300, 4) and first.embedding.dtype == np.float32
    assert first.embedding_2d.shape == (300, 2)
    np.testing.assert_array_equal(first.embedding, second.embedding)
    np.testing.assert_array_equal(first.embedding_2d, second.embedding_2d)
    # the groups stay apart: every point's nearest embedded neighbour is in its own group
    e = first.embedding
    d = ((e[:, None] - e[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (truth[d.argmin(1)] == truth).mean() > 0.99


def test_fit_sample_transforms_the_rest():
    x, truth = _blobs(n=400)
    result = R.reduce_features(x, dims=3, n_epochs=60, fit_sample=200, map_2d=False, progress=False)
    e = result.embedding
    assert e.shape == (400, 3) and np.isfinite(e).all()
    # transformed galaxies land with their own group: nearest group centroid is right
    centroids = np.stack([e[truth == g].mean(0) for g in range(4)])
    nearest = ((e[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == truth).mean() > 0.97


def test_scan_reuses_one_graph_and_ranks_every_dimension():
    x, _ = _blobs(n=300)
    result = R.reduce_features(x, dims="auto", dims_grid=[8, 2, 4], scan_k=4, n_epochs=60, map_2d=False,
                               progress=False)
    scan = result.scan
    assert list(scan["dims"]) == [2, 4, 8]
    assert np.isfinite(scan["davies_bouldin"]).all()
    assert result.dims == int(scan.loc[scan["davies_bouldin"].idxmin(), "dims"])
    assert result.embedding.shape == (300, result.dims)


def test_nan_rows_name_the_galaxies():
    x, _ = _blobs(n=50)
    x[[3, 30]] = np.nan
    with pytest.raises(R.ReduceError, match=r"2 of 50 galaxies .*ids g3, g30"):
        R.reduce_features(x, dims=2, ids=[f"g{i}" for i in range(50)], progress=False)


def test_too_many_dimensions_for_the_galaxies_are_capped(caplog):
    x, _ = _blobs(n=40)
    result = R.reduce_features(x, dims=300, map_2d=False, n_epochs=20, progress=False)
    assert result.dims == 20 and result.embedding.shape == (40, 20)
    assert "too many for 40 galaxies" in caplog.text


def test_cli_scan_on_a_real_run(cosmos_run, tmp_path, capsys):
    run = _features_run(cosmos_run, tmp_path)
    code = cli_main(["reduce", str(run.path), "--dims", "auto", "--dims-grid", "2,4,6",
                     "--scan-k", "4", "--n-epochs", "80"])
    assert code == 0
    assert "reduced from 10000 to" in capsys.readouterr().out
    scan = pd.read_csv(run.path / "reduce" / "dims_scan.csv")
    assert list(scan["dims"]) == [2, 4, 6]
    png = (run.path / "reduce" / "dims_scan.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    info = run.stage_info("reduce")
    embedding = np.asarray(run.open_array("embedding")[:])
    assert embedding.shape == (100, info["dims"]) and np.isfinite(embedding).all()
    assert run.open_array("embedding_2d").shape == (100, 2)
    # same inputs and settings: the stage is skipped
    before = info["finished"], (run.path / "stages" / "reduce.json").stat().st_mtime_ns
    assert cli_main(["reduce", str(run.path), "--dims", "auto", "--dims-grid", "2,4,6",
                     "--scan-k", "4", "--n-epochs", "80"]) == 0
    assert (run.stage_info("reduce")["finished"],
            (run.path / "stages" / "reduce.json").stat().st_mtime_ns) == before


def test_cli_nan_features_is_a_clear_error(cosmos_run, tmp_path, capsys):
    run = _features_run(cosmos_run, tmp_path, nan_rows=[5])
    assert cli_main(["reduce", str(run.path), "--dims", "3"]) == 1
    err = capsys.readouterr().err
    bad_id = run.sources()["id"].iloc[5]
    assert "1 of 100 galaxies have NaN" in err and str(bad_id) in err


def test_cli_needs_encode_first(cosmos_run, tmp_path, capsys):
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    assert cli_main(["reduce", str(path)]) == 1
    assert "skymorph encode" in capsys.readouterr().err
