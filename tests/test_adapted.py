"""The survey-adapted encoder (``encode.encoder = "adapted"``, skymorph.core.adapted) on the real
COSMOS stamps: training lowers its loss, its features ignore right-angle rotations and flips,
a checkpoint reloads to the same features, and the setting works from the CLI and the API."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from skymorph import Config
from skymorph.config import EncodeConfig
from skymorph.io.rundir import RunDir

torch = pytest.importorskip("torch")
adapted = pytest.importorskip("skymorph.core.adapted")
encoders = pytest.importorskip("skymorph.core.encoders")
from skymorph.stages.encode import encode  # noqa: E402

# small and fast: 32-px input, 4 base channels, a few steps
FAST = {"encoder": "adapted", "adapted_size": 32, "adapted_width": 4, "train_steps": 6, "train_batch": 16,
        "train_teacher": "none", "train_ssl": 1.0, "threads": 1}


def _cfg(**settings) -> EncodeConfig:
    return replace(EncodeConfig(), **{**FAST, **settings})


@pytest.fixture()
def run_copy(cosmos_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(cosmos_run.path, dest)
    return RunDir(dest)


@pytest.fixture(scope="module")
def stamps(cosmos_run):
    return np.asarray(cosmos_run.open_array("stamps")[:], dtype=np.float32)


@pytest.fixture(scope="module")
def trained(stamps, tmp_path_factory):
    torch.set_num_threads(1)
    net, info = adapted.train_adapted(stamps, _cfg(train_steps=30, train_lr=3e-3), torch.device("cpu"))
    path = tmp_path_factory.mktemp("adapted") / "checkpoint.pt"
    adapted.save_checkpoint(path, net, info)
    return path, info


def test_self_supervised_loss_falls(trained):
    _, info = trained
    assert info["n_train"] == 100 and info["steps"] == 30 and len(info["loss"]) == 10
    assert np.mean(info["loss"][-3:]) < 0.95 * np.mean(info["loss"][:3]), info["loss"]


def test_distillation_loss_falls(stamps):
    """Distilling given teacher features: here the sizes of each galaxy above three levels of its
    scaled image, which the student can see."""
    torch.set_num_threads(1)
    flux = stamps.reshape(len(stamps), -1)
    lo, hi = np.percentile(flux, [0.1, 99.9], axis=1)
    scaled = np.clip((flux - lo[:, None]) / (hi - lo)[:, None], 0, 1)
    targets = np.stack([(scaled > t).mean(1) for t in (0.1, 0.2, 0.4)], 1)
    net, info = adapted.train_adapted(stamps, _cfg(train_ssl=0.0, train_steps=60, train_batch=32),
                                      torch.device("cpu"), targets=targets)
    assert info["teacher"] == "given"
    assert np.mean(info["loss"][-3:]) < 0.7 * np.mean(info["loss"][:3]), info["loss"]


def test_no_objective_is_refused(stamps):
    with pytest.raises(ValueError, match="needs an objective"):
        adapted.train_adapted(stamps, _cfg(train_ssl=0.0), torch.device("cpu"))


def test_features_ignore_right_angle_rotations_and_flips(trained, stamps):
    path, _ = trained
    enc = encoders.build_encoder(_cfg(weights=str(path)))
    assert enc.rotations == 1 and enc.dim == 32  # 8 x width; the D4 average is inside the model
    x = stamps[:16]
    ref, _ = enc.encode(x, 16)
    scale = np.abs(ref).max()
    for k in (1, 2, 3):
        turned, _ = enc.encode(np.ascontiguousarray(np.rot90(x, k, axes=(1, 2))), 16)
        np.testing.assert_allclose(turned, ref, atol=1e-5 * scale, rtol=0)
    for axis in (1, 2):
        flipped, _ = enc.encode(np.ascontiguousarray(np.flip(x, axis)), 16)
        np.testing.assert_allclose(flipped, ref, atol=1e-5 * scale, rtol=0)
    # and the galaxies stay distinct (the invariance is not a constant)
    assert np.unique(ref.round(5), axis=0).shape[0] == 16


def test_without_d4_average_rotations_change_the_features(stamps):
    net = adapted.AdaptedNet(32, 4, d4=False).eval()
    model = adapted.D4Features(net)
    x = torch.from_numpy(stamps[:4, None, 34:66, 34:66])
    x = ((x - x.amin()) / (x.amax() - x.amin()) * 2 - 1).repeat(1, 3, 1, 1)
    turned = torch.rot90(x, 1, dims=(2, 3))
    with torch.inference_mode():
        scale = model(x).abs().max()
        assert (model(x) - model(turned)).abs().max() > 1e-2 * scale
        model.net.arch["d4"] = True
        assert (model(x) - model(turned)).abs().max() < 1e-5 * scale


def test_checkpoint_reloads_to_identical_features(trained, stamps, tmp_path):
    path, _ = trained
    a, _ = encoders.build_encoder(_cfg(weights=str(path))).encode(stamps[:10], 5)
    copy = tmp_path / "copy.pt"
    shutil.copy(path, copy)
    b, _ = encoders.build_encoder(_cfg(weights=str(copy))).encode(stamps[:10], 10)
    np.testing.assert_array_equal(a, b)
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(encoders.EncoderError, match="not an adapted-encoder checkpoint"):
        encoders.build_encoder(_cfg(weights=str(bad)))


def test_adapted_without_checkpoint_outside_a_run_says_how(stamps):
    with pytest.raises(encoders.EncoderError, match="--weights"):
        encoders.build_encoder(_cfg())


def test_api_trains_once_and_another_run_reuses_the_checkpoint(run_copy, tmp_path, cosmos_run):
    config = Config().update({"encode": FAST})
    encode(run_copy, config, progress=False)
    info = run_copy.stage_info("encode")
    ckpt = run_copy.path / "adapted" / "checkpoint.pt"
    assert ckpt.is_file() and info["encoder"] == "adapted" and info["dim"] == 32
    assert info["adapted"]["n_train"] == 100 and "reused" not in info["adapted"]
    first = np.asarray(run_copy.open_array("features")[:])
    # forced again with the same settings: the checkpoint is reused, the features identical
    encode(run_copy, config, force=True, progress=False)
    assert run_copy.stage_info("encode")["adapted"]["reused"] is True
    np.testing.assert_array_equal(np.asarray(run_copy.open_array("features")[:]), first)
    # another run: the checkpoint given as weights, no training
    other = tmp_path / "other"
    shutil.copytree(cosmos_run.path, other)
    encode(other, config.update({"encode": {"weights": str(ckpt)}}), progress=False)
    assert not (other / "adapted").exists()
    np.testing.assert_array_equal(np.asarray(RunDir(other).open_array("features")[:]), first)


def test_cli_encoder_adapted(run_copy, capsys):
    from skymorph import cli

    argv = ["encode", str(run_copy.path), "--encoder", "adapted", "--train-teacher", "none",
            "--train-ssl", "1", "--train-steps", "4", "--train-seed", "3", "--threads", "1",
            "--set", "encode.adapted_size=32", "--set", "encode.adapted_width=4"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "100 x 32 features from 'stamps' with adapted" in out
    assert (run_copy.path / "adapted" / "checkpoint.pt").is_file()
    text = (run_copy.path / "config.toml").read_text()
    assert 'encoder = "adapted"' in text and "train_seed = 3" in text
