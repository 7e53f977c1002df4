"""The adaptive polar coordinate transform (APCT) on real COSMOS stamps.

The rotation tests use Gaussian-smoothed real stamps as a stand-in for denoised
ones (the CAE is tested in test_denoise.py; training it here would double the
test time).  The smoothing only removes pixel noise, whose brightest/faintest
pixels would otherwise move under a non-right-angle rotation.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy import ndimage

from skymorph import Config, RunDir
from skymorph.core.apct import apct, output_shape
from skymorph.io.rundir import RunDirError
from skymorph.stages.polar import polar, polar_figure


@pytest.fixture(scope="module")
def stamps(cosmos_run) -> np.ndarray:
    return np.asarray(RunDir(cosmos_run.path).open_array("stamps"), dtype=np.float32)


@pytest.fixture(scope="module")
def smooth(stamps) -> np.ndarray:
    return ndimage.gaussian_filter(stamps, (0, 1.5, 1.5)).astype(np.float32)


def best_shift_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Highest Pearson correlation of ``a`` with ``b`` cyclically shifted by rows."""
    a0 = (a - a.mean()) / (a.std() + 1e-30)
    b0 = (b - b.mean()) / (b.std() + 1e-30)
    # Circular cross-correlation over the row axis for every shift at once:
    # corr[k] = mean(a0 * roll(b0, k, axis=0)).
    corr = np.fft.ifft(np.fft.fft(a0, axis=0) * np.conj(np.fft.fft(b0, axis=0)), axis=0).real
    corr = corr.sum(axis=1) / a0.size
    shift = int(np.argmax(corr))
    return float(corr[shift]), shift


def rotation_correlations(images: np.ndarray, angle: float, **options) -> np.ndarray:
    if angle % 90 == 0:
        rotated = np.rot90(images, int(angle // 90), axes=(1, 2))
    else:
        rotated = ndimage.rotate(images, angle, axes=(1, 2), reshape=False, order=3, mode="nearest")
    p0, p1 = apct(images, **options), apct(np.ascontiguousarray(rotated), **options)
    return np.array([best_shift_correlation(p0[i], p1[i])[0] for i in range(len(images))])


def test_shape_mirror_and_no_zero_column(stamps):
    out = apct(stamps)
    assert out.shape == (len(stamps), 125, 100) == (len(stamps), *output_shape(100))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # [flipped profile | profile]
    np.testing.assert_array_equal(out[:, :, :50], out[:, :, 50:][:, :, ::-1])
    # The scripts' bug: an always-zero middle column.  No column is zero on every stamp.
    assert not np.any(np.all(out == 0, axis=(0, 1)))
    # Middle columns are the samples nearest the pole: brighter than the ray ends.
    assert np.median(out[:, :, 50].mean(1) - out[:, :, -1].mean(1)) > 0
    unmirrored = apct(stamps[:3], mirror=False, n_radii=80, angle_step=0.1)
    assert unmirrored.shape == (3, 62, 80)


@pytest.mark.parametrize("angle", [90, 180, 270])
@pytest.mark.parametrize("pole", ["brightest", "peak-near-centre"])
def test_right_angle_rotation_is_a_row_shift(smooth, stamps, angle, pole):
    corr = rotation_correlations(smooth, angle, pole=pole)
    assert corr.min() >= 0.99, f"{angle} deg: worst {corr.min():.4f}"
    # A right-angle rotation permutes pixels exactly, so even the raw noisy stamps comply.
    raw = rotation_correlations(stamps[:30], angle, pole=pole)
    assert raw.min() >= 0.99


def test_non_right_angle_rotation(smooth):
    """37 degrees resamples the image, so the extreme pixels can move: report the
    figure and hold it to a looser bound."""
    corr = rotation_correlations(smooth, 37.0)
    print(f"\nAPCT after a 37 deg rotation (smoothed real stamps): median correlation "
          f"{np.median(corr):.4f}, 10th percentile {np.percentile(corr, 10):.4f}, worst {corr.min():.4f}")
    assert np.median(corr) >= 0.98
    assert np.percentile(corr, 10) >= 0.95


def test_bilinear_sampling_of_a_ramp():
    """On a linear ramp f = column index, bilinear samples are exact; truncation
    (the scripts' int()) would be off by up to a pixel."""
    s = 100
    ramp = np.tile(np.arange(s, dtype=np.float32), (s, 1))[None]
    out, pole, axis = apct(ramp, pole="centre", mirror=False, return_geometry=True)
    np.testing.assert_allclose(pole[0], [49.5, 49.5])
    radii = np.arange(50) + 0.5
    theta = axis[0] + 0.05 * np.arange(125)
    expected = 49.5 + np.cos(theta)[:, None] * radii[None, :]
    inside = (expected >= 0) & (expected <= s - 1)
    np.testing.assert_allclose(out[0][inside], expected[inside], atol=2e-3)


def test_outside_samples_are_background_not_wrapped():
    """Brightest pixel on the border: rays leaving the stamp read the background,
    never the opposite edge."""
    img = np.zeros((1, 100, 100), np.float32)
    img[0, 0, 37] = 10.0          # brightest pixel on the bottom edge
    img[0, 99, 30:45] = 7.0       # a bright strip on the opposite edge
    out, pole, axis = apct(img, mirror=False, return_geometry=True)
    np.testing.assert_array_equal(pole[0], [0, 37])
    theta = axis[0] + 0.05 * np.arange(125)
    downward = np.sin(theta) < -0.5     # rays that leave through the bottom edge at once
    assert downward.sum() > 20
    # Beyond r = 2 these rays are more than a pixel outside: exactly the background (0).
    assert np.all(out[0][downward][:, 2:] == 0.0)
    assert np.isfinite(out).all() and out.max() <= 10.0


def test_equal_maxima_take_the_one_nearest_the_centre():
    img = np.zeros((2, 100, 100), np.float32)
    for y, x in [(10, 10), (52, 47), (90, 90)]:
        img[0, y, x] = 5.0
    img[1, 49, 49] = img[1, 50, 50] = 5.0          # equally near: first in row-major order
    _, pole, _ = apct(img, return_geometry=True)
    np.testing.assert_array_equal(pole, [[52, 47], [49, 49]])


def test_constant_and_non_finite_stamps():
    const = np.full((1, 100, 100), 3.25, np.float32)
    out, pole, axis = apct(const, return_geometry=True)
    np.testing.assert_allclose(out, 3.25, rtol=1e-6)
    np.testing.assert_array_equal(pole[0], [49, 49])     # nearest the centre, row-major first
    assert axis[0] == 0.0                                 # faintest pixel = pole: axis along +x
    nan = np.zeros((2, 100, 100), np.float32)
    nan[0, 40:60, 40:60] = 1.0
    nan[0, :3] = np.nan
    nan[1] = np.nan
    out = apct(nan)
    assert np.isfinite(out).all()
    assert np.all(out[1] == 0.0)


def test_batch_equals_single(smooth):
    batch = apct(smooth[:8])
    for i in range(8):
        np.testing.assert_allclose(apct(smooth[i]), batch[i], rtol=1e-6, atol=1e-9)


def test_peak_near_centre_ignores_a_bright_star(smooth):
    """A foreground star far from the centre takes the paper's pole; the
    ``peak-near-centre`` pole stays on the galaxy."""
    img = smooth[:20].copy()
    yy, xx = np.mgrid[:100, :100]
    star = np.exp(-((yy - 85) ** 2 + (xx - 12) ** 2) / (2 * 1.5 ** 2)).astype(np.float32)
    with_star = img + 5 * img.max(axis=(1, 2))[:, None, None] * star
    _, p_b, _ = apct(with_star, pole="brightest", return_geometry=True)
    _, p_c, _ = apct(with_star, pole="peak-near-centre", return_geometry=True)
    _, p_ref, _ = apct(img, pole="peak-near-centre", return_geometry=True)
    assert np.all(np.hypot(*(p_b - [85, 12]).T) < 2)
    np.testing.assert_array_equal(p_c, p_ref)


def test_bad_settings():
    with pytest.raises(ValueError, match="polar.pole"):
        apct(np.zeros((1, 10, 10)), pole="dimmest")
    with pytest.raises(ValueError, match="square"):
        apct(np.zeros((1, 10, 12)))


def test_stage_on_a_run_directory(cosmos_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, run_path)
    config = Config().update({"denoise": {"enabled": False}, "polar": {"batch_size": 37}})
    run = polar(run_path, config, progress=False)
    out = np.asarray(run.open_array("polar"))
    stamps = np.asarray(run.open_array("stamps"))
    assert out.shape == (len(stamps), 125, 100)
    np.testing.assert_allclose(out, apct(stamps), rtol=1e-6, atol=1e-9)
    info = run.stage_info("polar")
    assert info["input"] == "stamps" and info["n_stamps"] == len(stamps)
    # Unchanged inputs and settings: reused, not recomputed.
    polar(run_path, config, progress=False)
    assert run.stage_info("polar")["finished"] == info["finished"]
    # A changed setting recomputes.
    polar(run_path, config.update({"polar": {"pole": "centre"}}), progress=False)
    assert run.stage_info("polar")["pole"] == "centre"
    path = polar_figure(run, config)
    assert path.exists() and path.stat().st_size > 10_000
    # With denoise enabled, polar needs the denoise stage first.
    with pytest.raises(RunDirError, match="denoise"):
        polar(run_path, Config().update({"denoise": {"enabled": True}}), progress=False)


def test_cli(cosmos_run, tmp_path):
    from skymorph.cli import main

    run_path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, run_path)
    code = main(["polar", str(run_path), "--figure", "--pole", "peak-near-centre",
                 "--set", "denoise.enabled=false"])
    assert code == 0
    assert (run_path / "figures" / "fig2_preprocessing.png").exists()
    assert RunDir(run_path).stage_info("polar")["pole"] == "peak-near-centre"
    assert math.isclose(RunDir(run_path).open_array("polar").shape[1], 125)
