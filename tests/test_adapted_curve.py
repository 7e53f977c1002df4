"""Issue 20, item 8: the adapted encoder's training curve (stage summary, a figure in the run
directory, a convergence note), and a warning when UMAP "reduces" to more dimensions than the
features have."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from skymorph import RunDir
from skymorph.cli import main
from skymorph.config import Config

adapted = pytest.importorskip("skymorph.core.adapted")


def test_convergence_tells_level_falling_and_rising_curves():
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    noise = 0.01 * rng.standard_normal(300)
    level = adapted.convergence(0.5 + 0.5 * np.exp(-steps / 20) + noise)
    assert level["status"] == "converged" and abs(level["tail_change"]) < 0.02
    assert level["first"] > level["last"] and "converged" in level["text"]
    falling = adapted.convergence(1.0 - steps / 400 + noise)
    assert falling["status"] == "still falling" and "train_steps" in falling["text"]
    late = np.where(steps > 200, (steps - 200) / 200, 0)
    rising = adapted.convergence(0.5 + 0.5 * np.exp(-steps / 20) + late)
    assert rising["status"] == "rising" and "train_lr" in rising["text"]
    assert adapted.convergence([1.0, 0.9])["status"] == "too short"


@pytest.fixture
def run_copy(cosmos_run, tmp_path) -> RunDir:
    shutil.copytree(cosmos_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def test_encode_adapted_shows_its_training_curve(run_copy, capsys):
    argv = ["encode", str(run_copy.path), "--encoder", "adapted", "--train-teacher", "none",
            "--train-ssl", "1", "--train-steps", "20", "--train-seed", "3", "--threads", "1",
            "--set", "encode.adapted_size=32", "--set", "encode.adapted_width=4", "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "adapted encoder: trained on 100 stamps, 20 steps; loss per tenth of the steps:" in out
    info = run_copy.stage_info("encode")["adapted"]
    assert len(info["loss"]) == 10 and "loss_steps" not in info  # the summary keeps the tenths
    assert info["convergence"]["status"] in ("converged", "still falling", "rising")
    assert info["convergence"]["text"] in out
    folder = run_copy.path / "adapted"
    png = folder / "training_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and info["curve_figure"] == str(png)
    curve = np.loadtxt(folder / "training_curve.csv", delimiter=",", skiprows=1)
    assert curve.shape == (20, 2) and np.isfinite(curve[:, 1]).all()
    assert np.mean(curve[:2, 1]) == pytest.approx(info["loss"][0], rel=1e-4)
    # forced again: the checkpoint is reused and the summary still shows its curve
    assert main([*argv, "--force"]) == 0
    out = capsys.readouterr().out
    assert "reused the checkpoint trained on 100 stamps" in out and info["convergence"]["text"] in out


def test_reduce_to_more_dimensions_than_features_warns(run_copy, capsys, caplog):
    stamps = np.asarray(run_copy.open_array("stamps")[:], dtype=np.float32).reshape(100, -1)
    x = np.arcsinh(stamps / np.median(np.abs(stamps), axis=1, keepdims=True))
    x -= x.mean(0)
    features = (x @ np.linalg.svd(x, full_matrices=False)[2][:8].T).astype(np.float32)  # 8-d
    with run_copy.writer("features", (8,), 64) as writer:
        writer.extend(features)
    run_copy.mark_done("encode", run_copy.fingerprint("encode", Config(), ["encode"], upstream=["ingest"]))
    assert main(["reduce", str(run_copy.path), "--dims", "12", "--n-epochs", "20", "--no-map", "-q"]) == 0
    out = capsys.readouterr().out
    assert "note: UMAP to 12 dimensions from 8-d features reduces nothing" in out
    assert "reduces nothing" in caplog.text
    assert run_copy.stage_info("reduce")["note"].startswith("UMAP to 12 dimensions")
    # a real reduction has no note
    assert main(["reduce", str(run_copy.path), "--dims", "4", "--n-epochs", "20", "--no-map", "-q"]) == 0
    assert "note:" not in capsys.readouterr().out and "note" not in run_copy.stage_info("reduce")
