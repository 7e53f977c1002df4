"""The denoising CAE on the 100 real COSMOS stamps.

One short but real training (module fixture) is shared by the tests; the
quality figures (sky noise, flux and centroid of the bright galaxies) are
measured on its output.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from skymorph import Config, RunDir
from skymorph.core.sky import border_sky
from skymorph.stages.denoise import apply_cae, denoise, load_cae

# Small but real: at least 300 optimiser steps of 8 stamps (half the default), early stopping on.
QUICK = {"enabled": True, "epochs": 15, "min_steps": 300, "patience": 3}


@pytest.fixture(scope="module")
def trained(cosmos_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("denoise") / "run"
    shutil.copytree(cosmos_run.path, path)
    config = Config().update({"denoise": QUICK})
    run = denoise(path, config, progress=False)
    return run, config


def _bright_galaxy_figures(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """Flux ratio and centroid shift (px) of the galaxies brighter than I = 23.5,
    in a circular aperture of 2 half-light radii (5 to 45 px) about the stamp
    centre, each image minus its own border sky.  The input centroid uses the
    pixels above 1 sigma of the lightly smoothed input, so that noise far out in
    the aperture does not drag it to the aperture centre."""
    from scipy import ndimage

    stamps = np.asarray(run.open_array("stamps"), dtype=np.float64)
    den = np.asarray(run.open_array("denoised"), dtype=np.float64)
    sources = run.sources()
    bright = np.flatnonzero(sources["MAG"].to_numpy() < 23.5)
    assert len(bright) >= 10
    yy, xx = np.mgrid[:100, :100]
    rr = np.hypot(yy - 49.5, xx - 49.5)
    sky_in, sig_in = border_sky(stamps)
    sky_out, _ = border_sky(den)
    ratios, shifts = [], []
    for i in bright:
        ap = rr <= np.clip(2 * sources["flux_radius"].to_numpy()[i], 5, 45)
        a = (stamps[i] - sky_in[i]) * ap
        d = (den[i] - sky_out[i]) * ap
        ratios.append(d.sum() / a.sum())
        mask = ndimage.gaussian_filter(a, 1.0) > sig_in[i]

        def centroid(img, m=mask):
            w = np.clip(img, 0, None) * m
            return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()

        shifts.append(float(np.hypot(*(centroid(a) - centroid(d)))))
    return np.array(ratios), np.array(shifts)


@pytest.mark.slow
def test_denoising_quality(trained):
    run, _ = trained
    stamps = np.asarray(run.open_array("stamps"))
    den = np.asarray(run.open_array("denoised"))
    assert den.shape == stamps.shape and den.dtype == np.float32 and np.isfinite(den).all()
    _, sigma_in = border_sky(stamps)
    _, sigma_out = border_sky(den)
    noise_ratio = np.median(sigma_out / sigma_in)
    ratios, shifts = _bright_galaxy_figures(run)
    print(f"\nsky RMS (border, median) {np.median(sigma_in):.3g} -> {np.median(sigma_out):.3g} "
          f"(ratio {noise_ratio:.3f}); bright-galaxy flux ratio median {np.median(ratios):.3f} "
          f"[{ratios.min():.3f}, {ratios.max():.3f}]; centroid shift median {np.median(shifts):.2f} px "
          f"(max {shifts.max():.2f})")
    assert noise_ratio < 0.2
    # The MSE autoencoder does not conserve flux, and its training order depends on the
    # thread count: over threads 1-2 and seeds 0-1 the median ratio of these 12 galaxies
    # ranged 0.89-1.08 and single galaxies 0.74-1.31.  Denoised stamps are therefore not
    # photometric (measure reads the ingested stamps); the bounds below hold across that
    # spread and still catch a CAE that loses or invents the galaxy.
    assert abs(np.median(ratios) - 1) < 0.15
    assert np.all(np.abs(ratios - 1) < 0.45)
    assert np.median(shifts) < 1.0


@pytest.mark.slow
def test_outputs_checkpoint_and_curve(trained):
    run, _ = trained
    info = run.stage_info("denoise")
    assert info["trained"] and info["n_train"] == 90 and info["n_val"] == 10
    assert info["arch"] == {"stamp_size": 100, "channels": [16, 8], "kernel_size": 5,
                            "latent_dim": 40, "unpool": "nearest"}
    assert (run.path / "cae" / "loss_curve.png").stat().st_size > 5_000
    assert (run.path / "cae" / "history.json").exists()
    model = load_cae(run.path / "cae" / "checkpoint.pt", device="cpu")
    assert model.arch == info["arch"]
    assert model.to_latent.out_features == 40
    # Paper Table 1 shapes: 100 -> 50 -> 25 with 8 maps before the 40-d latent.
    assert model.to_latent.in_features == 25 * 25 * 8


@pytest.mark.slow
def test_every_stamp_whatever_the_batch(trained):
    """No dropped remainder (the scripts' len % 3 bug): 100 stamps in batches of 7."""
    run, _ = trained
    stamps = np.asarray(run.open_array("stamps"))
    model = load_cae(run.path / "cae" / "checkpoint.pt", device="cpu")
    out7 = apply_cae(stamps, model, batch_size=7)
    np.testing.assert_allclose(out7, np.asarray(run.open_array("denoised")), rtol=1e-4, atol=1e-6)
    assert not np.any(np.all(out7 == 0, axis=(1, 2)))


@pytest.mark.slow
def test_reuse_unchanged_and_checkpoint_on_another_run(trained, cosmos_run, tmp_path):
    run, config = trained
    finished = run.stage_info("denoise")["finished"]
    denoise(run.path, config, progress=False)          # unchanged: reused
    assert run.stage_info("denoise")["finished"] == finished
    other = tmp_path / "other"
    shutil.copytree(cosmos_run.path, other)
    ckpt = run.path / "cae" / "checkpoint.pt"
    from skymorph.cli import main

    assert main(["denoise", str(other), "--cae-checkpoint", str(ckpt)]) == 0
    other_run = RunDir(other)
    info = other_run.stage_info("denoise")
    assert info["trained"] is False and not (other / "cae").exists()
    np.testing.assert_allclose(np.asarray(other_run.open_array("denoised")),
                               np.asarray(run.open_array("denoised")), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_bad_checkpoints_and_settings(trained, tmp_path):
    run, _ = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        denoise(run.path, Config().update({"denoise": {"checkpoint": str(tmp_path / "nope.pt")}}))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        denoise(run.path, Config().update({"denoise": {"checkpoint": str(junk)}}))
    with pytest.raises(ValueError, match="validation_fraction"):
        denoise(run.path, Config().update({"denoise": {"validation_fraction": 1.5}}))
    model = load_cae(run.path / "cae" / "checkpoint.pt", device="cpu")
    with pytest.raises(ValueError, match="100-pixel"):
        apply_cae(np.zeros((2, 64, 64), np.float32), model)


def test_normalisation_round_trip_and_edge_cases():
    from skymorph.core import cae as _cae

    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 0.1, (3, 100, 100)).astype(np.float32)
    x[0, 45:55, 45:55] += 40.0
    x[1] = 2.0                        # constant: scale 1, offset 2
    x[2, :4] = np.nan                 # non-finite pixels -> the offset
    y, offset, scale = _cae.normalise(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(_cae.denormalise(y, offset, scale)[:2], x[:2], rtol=1e-5, atol=1e-5)
    assert scale[1] == 1.0 and offset[1] == 2.0
    assert 0.9 < y[0].max() < 1.1 and abs(np.median(y[0])) < 0.05


def test_switches_unpooling_and_odd_sizes():
    """Other architectures from the settings: switch unpooling, a stamp size that
    is not a multiple of 4, three levels."""
    import torch

    from skymorph.core import cae as _cae

    for arch in ({"stamp_size": 100, "channels": [16, 8], "unpool": "switches"},
                 {"stamp_size": 66, "channels": [8, 8, 4], "latent_dim": 10}):
        model = _cae.CAE(**arch)
        x = torch.randn(3, 1, arch["stamp_size"], arch["stamp_size"])
        assert model(x).shape == x.shape
    with pytest.raises(ValueError, match="kernel_size"):
        _cae.CAE(100, [16, 8], kernel_size=4)


@pytest.mark.slow
def test_disabled_stage_and_polar_after_denoise(trained):
    run, config = trained
    from skymorph.stages.polar import polar

    polar(run.path, config, progress=False)
    assert run.stage_info("polar")["input"] == "denoised"
    assert run.open_array("polar").shape == (100, 125, 100)
