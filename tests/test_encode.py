"""Tests of the encode stage on the real COSMOS stamps (and a few synthetic images
where a property must be exact)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from skymorph import Config
from skymorph.config import ConfigError, EncodeConfig
from skymorph.io.rundir import RunDir, RunDirError

torch = pytest.importorskip("torch")
encoders = pytest.importorskip("skymorph.core.encoders")
from skymorph.stages.encode import encode  # noqa: E402

STAMPS_ONLY = {"polar": {"enabled": False}, "denoise": {"enabled": False}}


def _config(**encode_settings) -> Config:
    return Config().update({**STAMPS_ONLY, "encode": encode_settings})


@pytest.fixture()
def run_copy(cosmos_run, tmp_path):
    """A private copy of the ingested COSMOS run (the fixture is shared)."""
    dest = tmp_path / "run"
    shutil.copytree(cosmos_run.path, dest)
    return RunDir(dest)


@pytest.fixture(scope="module")
def stamps(cosmos_run):
    return np.asarray(cosmos_run.open_array("stamps")[:8], dtype=np.float32)


@pytest.fixture(scope="module")
def lite0():
    return encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", input_size=0))


@pytest.mark.parametrize("name, size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_lite_encoders_load_offline_and_give_1280(name, size, stamps):
    enc = encoders.build_encoder(EncodeConfig(encoder=name, input_size=0))
    assert enc.dim == 1280 and enc.input_size == (size, size)
    # the shipped ImageNet weights, not a random initialisation
    package = encoders.OFFLINE_ENCODERS[name][1]
    assert package in enc.weights_source
    shipped = torch.load(enc.weights_source, map_location="cpu", weights_only=True)
    assert torch.equal(enc.model.net._conv_stem.weight, shipped["_conv_stem.weight"])
    feats, empty = enc.encode(stamps[:4], batch_size=4)
    assert feats.shape == (4, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and not empty.any()
    # ReLU6 then average pooling: features lie in [0, 6] and differ between galaxies
    assert feats.min() >= 0 and feats.max() <= 6
    assert np.abs(feats[0] - feats[1]).max() > 1e-3


def test_same_image_gives_same_features(lite0, stamps):
    first, _ = lite0.encode(stamps[:4], batch_size=4)
    second, _ = lite0.encode(stamps[:4], batch_size=4)
    assert np.array_equal(first, second)
    # the same image twice in one batch, and in another batch position
    dup, _ = lite0.encode(np.stack([stamps[3], stamps[1], stamps[3]]), batch_size=3)
    np.testing.assert_allclose(dup[0], dup[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dup[0], first[3], rtol=1e-4, atol=1e-5)


def test_preprocessing_scaling_resize_and_normalisation(lite0):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (125, 200)).astype(np.float32)
    image[60, 100] = 1e6  # one hot pixel must not flatten the rest (percentile scaling)
    image[10, 10] = np.nan
    batch, empty = lite0.prepare(torch.from_numpy(image[None]))
    assert batch.shape == (1, 3, 224, 224) and batch.is_contiguous(memory_format=torch.channels_last)
    assert not empty.any() and torch.isfinite(batch).all()
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 0], batch[:, 2])
    scaled = batch[0, 0] * 0.5 + 0.5  # undo x*2-1
    assert scaled.min() >= 0 and scaled.max() <= 1
    assert 0.3 < float(scaled.median()) < 0.7  # the noise spans the range; minmax would give ~0
    # constant and all-NaN images: no NaN in the batch; the empty one is flagged
    pair = torch.stack([torch.full((125, 200), 5.0), torch.full((125, 200), torch.nan)])
    batch, empty = lite0.prepare(pair)
    assert torch.isfinite(batch).all() and empty.tolist() == [False, True]
    feats, _ = lite0.features(torch.full((1, 125, 200), torch.nan))
    assert torch.isnan(feats).all()


def test_pad_keeps_aspect_with_sky_borders():
    enc = encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", aspect="pad",
                                              scaling="minmax", random_init=True, input_size=0))
    image = torch.ones((1, 100, 200))
    image[0, 0, 0] = 0.0
    batch, _ = enc.prepare(image)
    scaled = batch[0, 0] * 0.5 + 0.5
    # 100x200 -> 112x224 centred: 56 sky rows above and below
    assert torch.all(scaled[:56] == 0) and torch.all(scaled[-56:] == 0)
    assert torch.all(scaled[60:160, 5:] > 0.99)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_convnext_xlarge_random_init_gives_2048(stamps, caplog):
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="skymorph.core.encoders"):
        enc = encoders.build_encoder(EncodeConfig(encoder=encoders.PAPER_ENCODER, random_init=True,
                                                  input_size=0))
    assert "RANDOM weights" in caplog.text
    assert enc.dim == 2048 and enc.input_size == (224, 224) and enc.weights_source == "random"
    assert enc.mean == (0.485, 0.456, 0.406) and enc.interpolation == "bicubic"
    polar_like = np.resize(stamps[:2], (2, 125, 200)).astype(np.float32)
    feats, _ = enc.encode(polar_like, batch_size=2)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    print(f"convnext_xlarge build + 2-image batch: {time.perf_counter() - t0:.1f} s")


def test_timm_without_weights_offline_says_how_to_fix():
    from timm.models import get_pretrained_cfg

    host, _ = encoders._hub_host(get_pretrained_cfg(encoders.PAPER_ENCODER).to_dict())
    if encoders._reachable(host):
        pytest.skip(f"{host} is reachable here: the weights would be downloaded")
    with pytest.raises(encoders.EncoderError) as info:
        encoders.build_encoder(EncodeConfig(encoder=encoders.PAPER_ENCODER))
    message = str(info.value)
    for needle in ("no pretrained weights", "huggingface.co/timm/convnext_xlarge.fb_in22k",
                   "--weights FILE", "efficientnet_lite2", "--random-init"):
        assert needle in message


def test_unknown_name_lists_close_names():
    with pytest.raises(encoders.EncoderError, match="unknown encoder") as info:
        encoders.build_encoder(EncodeConfig(encoder="convnext_xlarge.fb_in22kk"))
    assert "convnext_xlarge.fb_in22k," in str(info.value)
    with pytest.raises(encoders.EncoderError, match="did you mean: .*efficientnet_lite2"):
        encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite_2"))


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(encoders.EncoderError, match=r"weights file .*nope.safetensors does not exist"):
        encoders.build_encoder(EncodeConfig(encoder=encoders.PAPER_ENCODER, weights=str(missing)))


def test_weights_file_safetensors_and_state_dict(tmp_path, stamps):
    """A local weights file is what the timm path loads when there is no network."""
    from safetensors.torch import save_file

    reference = encoders.build_encoder(EncodeConfig(encoder="test_convnext2", random_init=True))
    state = {k: v.contiguous() for k, v in reference.model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    want, _ = reference.encode(stamps[:3])
    for path in ("w.safetensors", "w.pth"):
        enc = encoders.build_encoder(EncodeConfig(encoder="test_convnext2", weights=str(tmp_path / path)))
        got, _ = enc.encode(stamps[:3])
        np.testing.assert_array_equal(got, want)
    # a checkpoint with its classifier (as published): the head is dropped, the rest loads
    import timm

    classifier_net = timm.create_model("test_convnext2", num_classes=10)
    torch.save(classifier_net.state_dict(), tmp_path / "with_head.pth")
    with_head = str(tmp_path / "with_head.pth")
    enc = encoders.build_encoder(EncodeConfig(encoder="test_convnext2", weights=with_head))
    loaded = enc.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in classifier_net.state_dict().items() if k in loaded)
    assert "head.fc.weight" not in loaded
    # weights of another model: a clear error, not a silent partial load
    lite = encoders.OFFLINE_ENCODERS["efficientnet_lite0"][1]
    lite_file = __import__(lite).EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(encoders.EncoderError, match="not fit encoder 'test_convnext2': .*missing"):
        encoders.build_encoder(EncodeConfig(encoder="test_convnext2", weights=lite_file))
    with pytest.raises(ConfigError, match="exclude each other"):
        encoders.build_encoder(EncodeConfig(encoder="test_convnext2", weights=str(tmp_path / "w.pth"),
                                            random_init=True))


def test_missing_input_array_names_the_stage(run_copy):
    with pytest.raises(RunDirError, match=r"'polar' array .*skymorph polar .*polar.enabled=false"):
        encode(run_copy, Config().update({"denoise": {"enabled": True}, "polar": {"enabled": True}}),
               progress=False)
    with pytest.raises(RunDirError, match=r"'denoised' array .*skymorph denoise"):
        encode(run_copy, Config().update({"denoise": {"enabled": True}}), progress=False)


def test_cli_on_cosmos_stamps(run_copy, capsys, caplog):
    from skymorph import cli

    argv = ["encode", str(run_copy.path), "--encoder", "efficientnet_lite0", "--batch-size", "32",
            "--set", "polar.enabled=false", "--set", "denoise.enabled=false"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "100 x 1280 features from 'stamps' with efficientnet_lite0" in out
    features = run_copy.open_array("features")
    assert features.shape == (100, 1280) and features.dtype == np.float32
    values = np.asarray(features[:])
    assert np.isfinite(values).all() and np.unique(values[:, :8], axis=0).shape[0] == 100
    info = run_copy.stage_info("encode")
    assert info["input"] == "stamps" and info["n_rejected"] == 0
    assert 'encoder = "efficientnet_lite0"' in (run_copy.path / "config.toml").read_text()
    assert not (run_copy.path / "stages" / "encode.partial.jsonl").exists()
    # unchanged settings: reused, not recomputed; a bigger batch does not count as a change
    with caplog.at_level(logging.INFO, logger="skymorph.stages"):
        assert cli.main(argv[:5] + ["64"] + argv[6:] + ["-v"]) == 0  # INFO lines need -v
    assert "unchanged, reusing" in caplog.text
    # a bad name is reported by the CLI as an error, exit status 1
    assert cli.main(argv[:3] + ["convnext_xlarg"] + argv[4:]) == 1
    assert "did you mean" in capsys.readouterr().err


def test_empty_image_is_rejected_not_fatal(run_copy):
    stamps = zarr.open_array(store=str(run_copy.array_path("stamps")), mode="r+")
    stamps[7] = np.nan
    config = _config(encoder="test_efficientnet", random_init=True, chunk_size=50)
    run = encode(run_copy, config, progress=False)
    values = np.asarray(run.open_array("features")[:])
    assert np.isnan(values[7]).all() and np.isfinite(np.delete(values, 7, axis=0)).all()
    rejects = run.rejects("encode")
    assert rejects["id"].tolist() == [str(run.sources()["id"][7])]
    assert "no finite pixel" in rejects["reason"].iloc[0]


KILLED_RUN = """
import importlib, os, signal, sys
from skymorph import Config
from skymorph.io.chunklog import ChunkLedger

# the module, not the function skymorph/__init__ re-exports under the same name
stage = importlib.import_module("skymorph.stages.encode")

record = ChunkLedger.record

def die_before_fourth_record(self, chunk, info=None):
    # a real SIGKILL at the worst moment: the fourth chunk is in the array, its record is not
    if len(self.done) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    record(self, chunk, info)

ChunkLedger.record = die_before_fourth_record
config = Config().update({"polar": {"enabled": False}, "denoise": {"enabled": False},
                          "encode": {"encoder": "test_efficientnet", "random_init": True,
                                     "chunk_size": 8, "batch_size": 4}})
stage.encode(sys.argv[1], config, progress=False)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_identical_features(cosmos_run, tmp_path, caplog):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(cosmos_run.path, killed)
    shutil.copytree(cosmos_run.path, clean)
    partial = killed / "stages" / "encode.partial.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(killed)], capture_output=True,
                          timeout=300, text=True)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed midway: {proc.stderr[-2000:]}"
    assert RunDir(killed).stage_info("encode") is None  # not marked done
    assert [json.loads(line)["chunk"] for line in partial.read_text().splitlines()[1:]] == [0, 1, 2]
    written = np.asarray(RunDir(killed).open_array("features", check=False)[:])
    assert np.isfinite(written[:32]).all() and np.isnan(written[32:]).all()

    # the fourth chunk, written but not recorded, is redone
    config = _config(encoder="test_efficientnet", random_init=True, chunk_size=8, batch_size=4)
    with caplog.at_level(logging.INFO, logger="skymorph.stages.encode"):
        resumed = encode(killed, config, progress=False)
    assert "resuming, 3 of 13 chunks already done" in caplog.text
    assert resumed.stage_info("encode")["n_resumed"] == 24
    assert not partial.exists()
    reference = encode(clean, config, progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.open_array("features")[:]),
                                  np.asarray(reference.open_array("features")[:]))


def test_an_older_runs_encode_partial_json_is_ignored_with_a_note(run_copy, caplog):
    # encode's own resume record before the common chunk ledger: not read, removed, chunks redone
    old = run_copy.path / "stages" / "encode.partial.json"
    old.parent.mkdir(exist_ok=True)
    old.write_text(json.dumps({"key": "old", "done": [0], "empty": {}}))
    config = _config(encoder="test_efficientnet", random_init=True, chunk_size=50)
    with caplog.at_level(logging.WARNING, logger="skymorph.stages.encode"):
        run = encode(run_copy, config, progress=False)
    assert "written by an older skymorph" in caplog.text
    assert not old.exists() and run.stage_info("encode")["n_resumed"] == 0
    assert np.isfinite(np.asarray(run.open_array("features")[:])).all()


def test_rotation_averaged_features_ignore_right_angle_rotations(cosmos_run):
    from skymorph.core.encoders import build_encoder

    stamps = np.asarray(cosmos_run.open_array("stamps")[:4])
    encoder = build_encoder(EncodeConfig(encoder="efficientnet_lite0", rotations=4))
    plain, _ = encoder.encode(stamps)
    turned, _ = encoder.encode(np.ascontiguousarray(np.rot90(stamps, 1, axes=(1, 2))))
    assert np.allclose(plain, turned, rtol=1e-3, atol=1e-4)
    single = build_encoder(EncodeConfig(encoder="efficientnet_lite0", rotations=1))
    once, _ = single.encode(stamps)
    once_turned, _ = single.encode(np.ascontiguousarray(np.rot90(stamps, 1, axes=(1, 2))))
    assert not np.allclose(once, once_turned, rtol=1e-3, atol=1e-4)


# --- speed settings (issue 21): input size, runtime, rotations in one pass -----------------------


def test_input_size_setting_resizes_to_the_chosen_side(stamps):
    enc = encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", input_size=96, runtime="torch"))
    assert enc.input_size == (96, 96)
    batch, _ = enc.prepare(torch.from_numpy(stamps[:2]))
    assert tuple(batch.shape) == (2, 3, 96, 96)
    feats, _ = enc.encode(stamps[:2])
    assert feats.shape == (2, 1280) and np.isfinite(feats).all()
    own = encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", runtime="torch", input_size=0))
    assert own.input_size == (224, 224)  # 0 = the model's own size
    assert encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", runtime="torch")).input_size == (
        128, 128)  # the default (README: measured on the three labelled sets)
    with pytest.raises(ConfigError, match="input_size"):  # refused by the settings themselves
        EncodeConfig(input_size=16)


def test_rotations_in_one_pass_equal_the_average_of_separate_passes(stamps):
    enc = encoders.build_encoder(EncodeConfig(encoder="efficientnet_lite0", input_size=64, rotations=4,
                                              runtime="torch"))
    feats, _ = enc.encode(stamps[:3])
    with torch.inference_mode():
        batch, _ = enc.prepare(torch.from_numpy(stamps[:3]))
        separate = sum(enc.forward(torch.rot90(batch, k, dims=(2, 3))) for k in range(4)) / 4
    np.testing.assert_allclose(feats, separate.numpy(), rtol=1e-4, atol=1e-5)


def test_runtime_resolution_and_errors():
    cpu = torch.device("cpu")
    assert encoders.resolve_runtime("torch", "efficientnet_lite2", cpu, "fp32") == "torch"
    assert encoders.resolve_runtime("auto", "efficientnet_lite2", cpu, "fp32") == "onnxruntime"
    assert encoders.resolve_runtime("auto", "efficientnet_lite2", cpu, "bf16") == "torch"
    assert encoders.resolve_runtime("auto", "convnext_xlarge.fb_in22k", cpu, "fp32") == "torch"
    with pytest.raises(encoders.EncoderError, match="fp32 on the CPU"):
        encoders.resolve_runtime("onnxruntime", "efficientnet_lite2", cpu, "bf16")
    with pytest.raises(ConfigError, match="runtime"):
        EncodeConfig(runtime="tensorrt")


@pytest.mark.slow
def test_onnxruntime_features_equal_torch_features(stamps, tmp_path, monkeypatch):
    monkeypatch.setenv("SKYMORPH_CACHE", str(tmp_path / "cache"))
    settings = dict(encoder="efficientnet_lite0", input_size=64, rotations=4)
    plain = encoders.build_encoder(EncodeConfig(**settings, runtime="torch"))
    fast = encoders.build_encoder(EncodeConfig(**settings, runtime="onnxruntime"))
    assert fast.runtime == "onnxruntime"
    a, _ = plain.encode(stamps[:5], batch_size=3)
    b, _ = fast.encode(stamps[:5], batch_size=3)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99999
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # exported once from the module's own weights, then reused from the cache
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1 and "efficientnet_lite0-64-" in files[0].name
    before = files[0].stat().st_mtime_ns
    again = encoders.build_encoder(EncodeConfig(**settings, runtime="onnxruntime"))
    c, _ = again.encode(stamps[:2])
    assert files[0].stat().st_mtime_ns == before
    np.testing.assert_array_equal(c, b[:2])
