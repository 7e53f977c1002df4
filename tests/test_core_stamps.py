"""Stamp making, PSF kernels and source detection (``skymorph.core.stamps``, ``core.detect``) on
synthetic arrays, with no run directory."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from skymorph.core.detect import detect_sources_in
from skymorph.core.stamps import (
    StampError,
    field_window,
    make_stamp,
    prepare_psf,
    resolve_framing,
    stamp_rng,
)
from skymorph.errors import Reject


@pytest.mark.parametrize("module", ["skymorph.core.stamps", "skymorph.core.detect"])
def test_the_examples_in_the_docstrings_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


def _galaxy(shape=(60, 60), centre=(30, 30), background=5.0, sigma=0.5, amplitude=40.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    blob = amplitude * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 3.0**2))
    return background + sigma * rng.standard_normal(shape) + blob


def _reference_cut(image, cy, cx, side, fill):
    """The square cut by hand: corner at c - side // 2, ``fill`` outside the image."""
    out = np.full((side, side), fill)
    for y in range(side):
        for x in range(side):
            iy, ix = cy - side // 2 + y, cx - side // 2 + x
            if 0 <= iy < image.shape[0] and 0 <= ix < image.shape[1]:
                out[y, x] = image[iy, ix]
    return out


@pytest.mark.parametrize("side", [7, 8])
@pytest.mark.parametrize("cy, cx", [(10, 10), (0, 0), (19, 3), (2, 18), (19, 19)])
def test_the_cut_puts_the_centre_where_a_hand_made_cut_does(side, cy, cx):
    """extract_array/overlap_slices replace the hand-made slicing: the same corner convention
    (c - side // 2) for odd and even sides, inside the image and across every edge."""
    image = np.arange(400, dtype=float).reshape(20, 20) + 1.0
    rms = image / 100.0
    stamp, info, rms_stamp = make_stamp(image, stamp_size=side, min_size=4, centre=(cy, cx), rms=rms,
                                        max_nonfinite_fraction=1.0)
    expected = _reference_cut(rms, cy, cx, side, np.inf)
    assert np.array_equal(rms_stamp, expected.astype(np.float32))
    inside = np.isfinite(expected)
    pixels = _reference_cut(image, cy, cx, side, np.nan)
    assert np.array_equal(stamp[inside], pixels[inside].astype(np.float32))
    assert info["padded"] == (not inside.all())


def test_padding_is_noise_at_the_images_background_not_zeros():
    image = _galaxy()
    stamp, info, _ = make_stamp(image, stamp_size=120, rng=np.random.default_rng(1))
    assert info["padded"] and stamp.shape == (120, 120) and stamp.dtype == np.float32
    frame = np.concatenate([stamp[:20].ravel(), stamp[-20:].ravel()])
    assert info["background"] == pytest.approx(5.0, abs=0.1)  # the image's own sky ...
    assert info["noise_sigma"] == pytest.approx(0.5, rel=0.15)
    assert frame.mean() == pytest.approx(info["background"], abs=0.03)  # ... is the padding's
    assert frame.std() == pytest.approx(info["noise_sigma"], rel=0.05)


def test_the_stamp_is_centred_on_the_galaxy_peak_near_the_centre():
    image = _galaxy(centre=(33, 26))
    stamp, info, _ = make_stamp(image, stamp_size=41)
    assert (info["y"], info["x"]) == (33, 26)
    assert np.unravel_index(np.argmax(stamp), stamp.shape) == (20, 20)
    _, info, _ = make_stamp(image, stamp_size=41, recentre=False)
    assert (info["y"], info["x"]) == (30, 30)


def test_the_same_seed_gives_the_same_stamp_and_nan_pixels_are_filled_and_counted():
    image = _galaxy()
    image[5:9, 5:9] = np.nan
    first, info, _ = make_stamp(image, stamp_size=80, rng=stamp_rng("g1", seed=3))
    again, _, _ = make_stamp(image, stamp_size=80, rng=stamp_rng("g1", seed=3))
    other, _, _ = make_stamp(image, stamp_size=80, rng=stamp_rng("g1", seed=4))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.isfinite(first).all() and info["nan_filled"] == 16


@pytest.mark.parametrize("image, reason", [
    (np.full((30, 30), np.nan), "entirely NaN"),
    (np.full((30, 30), 2.0), "constant"),
    (np.ones((5, 30)) + np.arange(30), "smaller than min_size"),
    (np.linspace(0, 1e38, 900).reshape(30, 30), "beyond what a float32 stamp holds"),
])
def test_unusable_images_are_rejected_with_the_reason(image, reason):
    with pytest.raises(Reject, match=reason):
        make_stamp(image, stamp_size=32)


def test_a_stamp_that_would_be_mostly_filled_noise_is_rejected():
    image = _galaxy()
    image[:, :45] = np.nan
    with pytest.raises(Reject, match="NaN/inf"):
        make_stamp(image, stamp_size=40, centre=(30, 30))
    _, info, _ = make_stamp(image, stamp_size=40, centre=(30, 30), max_nonfinite_fraction=0.9)
    assert info["nonfinite_fraction"] == pytest.approx(35 / 40, abs=1e-9)  # columns 10-44 of 10-49


def test_resampling_keeps_the_frame_fraction_and_scales_the_noise():
    image = _galaxy(shape=(200, 200), centre=(100, 100))
    stamp, info, rms = make_stamp(image, stamp_size=50, framing="resample", frame_fraction=0.5,
                                  rms=np.full(image.shape, 0.5))
    assert info["frame_side"] == 100 and stamp.shape == rms.shape == (50, 50)
    assert np.allclose(rms, 0.25)  # 2 x 2 pixels averaged: half the noise


def test_framing_auto_resamples_display_images_only():
    assert resolve_framing("auto", raster=True) == "resample"
    assert resolve_framing("auto", raster=False) == "crop"
    assert resolve_framing("crop", raster=True) == "crop"
    with pytest.raises(StampError, match="crop, resample or auto"):
        resolve_framing("zoom", raster=False)


def test_the_psf_kernel_is_centred_normalised_and_reports_the_flux_it_keeps():
    yy, xx = np.mgrid[:51, :51]
    psf = np.exp(-((yy - 22) ** 2 + (xx - 27) ** 2) / (2 * 2.0**2))
    kernel, inside = prepare_psf(psf, size=9)
    assert kernel.dtype == np.float32 and kernel.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == (4, 4)
    assert np.allclose(kernel, kernel[::-1, ::-1], atol=1e-7)  # symmetric about the peak
    r = np.hypot(yy - 22, xx - 27)
    assert inside == pytest.approx(psf[(np.abs(yy - 22) <= 4) & (np.abs(xx - 27) <= 4)].sum() / psf.sum())
    assert 0.9 < inside < 1.0 and r.max() > 20


@pytest.mark.parametrize("psf, reason", [
    (np.ones((3, 3, 3)), "3-dimensional"),
    (np.full((9, 9), np.nan), "NaN/inf"),
    (np.zeros((9, 9)), "no positive flux"),
])
def test_unusable_psfs_are_rejected(psf, reason):
    with pytest.raises(Reject, match=reason):
        prepare_psf(psf, size=5)


def test_a_field_window_marks_what_lies_outside_the_field():
    field = np.arange(100 * 100, dtype=float).reshape(100, 100)
    window, rms, valid, centre = field_window(field, centre=(50.0, 97.0), size=10, rms=np.ones_like(field))
    assert window.shape == valid.shape == rms.shape == (20, 20)
    assert centre == (10.0, 10.0)
    assert valid[:, :13].all() and not valid[:, 13:].any()
    assert np.isnan(window[~valid]).all() and np.isinf(rms[~valid]).all() and (rms[valid] == 1).all()
    assert window[10, 10] == field[50, 97]
    # near the low edges the window is padded before the field starts: the centre moves with it
    window, _, valid, centre = field_window(field, centre=(3.0, 4.0), size=10)
    assert centre == (10.0, 10.0) and window[10, 10] == field[3, 4]
    assert valid[7:, 6:].all() and not valid[:7].any() and not valid[:, :6].any()
    with pytest.raises(Reject, match="outside the image"):
        field_window(field, centre=(500.0, 500.0), size=10)


def test_detection_finds_the_sources_of_a_synthetic_field():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:150, :160]
    field = rng.normal(10.0, 1.0, (150, 160))
    truth = [(30.0, 40.0), (100.0, 120.0), (120.0, 30.0)]
    for y, x in truth:
        field += 30.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.5**2))
    field[0:5, 0:5] = np.nan  # NaN pixels become the background, not sources
    labels, x, y = detect_sources_in(field, nsigma=3.0, npixels=10)
    assert len(labels) == len(set(labels.tolist())) == 3
    found = sorted(zip(y.tolist(), x.tolist(), strict=True))
    for (fy, fx), (ty, tx) in zip(found, sorted(truth), strict=True):
        assert abs(fy - ty) < 0.5 and abs(fx - tx) < 0.5


def test_detection_says_why_a_field_gives_nothing():
    with pytest.raises(Reject, match="entirely NaN"):
        detect_sources_in(np.full((40, 40), np.nan))
    with pytest.raises(Reject, match="no sources above 5.0 sigma"):
        detect_sources_in(np.random.default_rng(0).normal(size=(60, 60)), nsigma=5.0)
