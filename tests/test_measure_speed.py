"""Issue 21 (measurement speed): the faster statmorph internals give statmorph's own numbers.

skymorph's ``FastSourceMorphology`` replaces statmorph's hottest helpers (photutils aperture
sums, the asymmetry's rotations, the multimode clump counts, the sky box search, the
PSF-convolved Sersic model) by code doing the same floating-point operations in the same
order, so the values are not merely within the reference test's tolerances (test_measure.py)
but equal to a plain statmorph call, bit for bit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from skymorph.core import fast_apertures as fa
from skymorph.core import fast_statmorph, rotate180
from skymorph.core.morphometry import STATMORPH_QUANTITIES, make_segmap

COSMOS_PSF = "real_galaxy_PSF_images_extension.fits"


def test_fast_apertures_equal_photutils():
    from photutils.aperture import CircularAnnulus, CircularAperture, EllipticalAnnulus, EllipticalAperture

    rng = np.random.default_rng(5)
    for _ in range(300):
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        image = rng.normal(size=shape) + 2.0
        mask = rng.random(shape) < 0.1
        # centres inside and beyond the edges: partial overlaps give strided weight views
        xy = np.array([rng.uniform(-15, shape[1] + 15), rng.uniform(-15, shape[0] + 15)])
        r = rng.uniform(0.3, 60)
        r_out = r + rng.uniform(0.1, 5)
        theta, elongation = rng.uniform(-4, 4), rng.uniform(1, 4)
        pairs = [
            (CircularAperture(xy, r), fa.circle(xy, r, shape)),
            (CircularAnnulus(xy, r, r_out), fa.circular_annulus(xy, r, r_out, shape)),
            (EllipticalAperture(xy, r, r / elongation, theta=theta),
             fa.ellipse(xy, r, r / elongation, theta, shape)),
            (EllipticalAnnulus(xy, r, r_out, r_out / elongation, theta=theta),
             fa.elliptical_annulus(xy, r, r_out, r_out / elongation, theta, shape)),
        ]
        for aperture, weights in pairs:
            name = type(aperture).__name__
            expected = aperture.do_photometry(image, method="exact")[0][0]
            assert np.array_equal(fa.aperture_sum(weights, image), expected, equal_nan=True), name
            for m in (None, mask):
                assert np.array_equal(fa.area_overlap(weights, m), aperture.area_overlap(image, mask=m),
                                      equal_nan=True), name
            assert weights.area == aperture.area, name


def test_fast_apertures_hand_odd_sizes_to_photutils():
    from photutils.aperture import CircularAperture

    # a non-positive radius is photutils' error, not a silent zero
    with pytest.raises(ValueError):
        CircularAperture((5.0, 5.0), 0.0)
    with pytest.raises(ValueError):
        fa.circle((5.0, 5.0), 0.0, (10, 10))
    # no overlap with the image: NaN sum and area, as photutils
    far = fa.circle((100.0, 100.0), 2.0, (10, 10))
    assert np.isnan(fa.aperture_sum(far, np.ones((10, 10)))) and np.isnan(fa.area_overlap(far))


def test_rotations_without_numba_equal_skimage(monkeypatch):
    import skimage.transform

    monkeypatch.setattr(rotate180, "_KERNELS", {})  # the numpy code path
    rng = np.random.default_rng(8)
    for i in range(20):
        image = rng.normal(size=(30, 44)) + (4.0 if i % 3 == 0 else 0.0)
        mask = rng.random((30, 44)) < 0.2
        xc, yc = rng.uniform(0, 44), rng.uniform(0, 30)
        region = (slice(3, 25), slice(5, 40))
        expected = skimage.transform.rotate(image, 180.0, center=(xc, yc))
        np.testing.assert_array_equal(fast_statmorph.rotate_180(image, xc, yc, region), expected[region])
        expected_mask = skimage.transform.rotate(mask.copy(), 180.0, center=(xc, yc)) >= 0.5
        np.testing.assert_array_equal(fast_statmorph.rotate_mask_180(mask, xc, yc, region),
                                      expected_mask[region])


def _cases(cosmos_run, shared_data, indices):
    stamps = np.asarray(cosmos_run.open_array("stamps"), dtype=np.float64)
    sources = cosmos_run.sources()
    with fits.open(shared_data / "cosmos_f814w" / "stamps_100" / COSMOS_PSF) as hdul:
        psfs = {i: np.asarray(hdul[int(sources["PSF_HDU"][i])].data, dtype=np.float64) for i in indices}
    for i in indices:
        data = stamps[i] - sources["background"][i]
        segmap, others = make_segmap(data, sources["noise_sigma"][i])
        kwargs = {"mask": others if others.any() else None,
                  "weightmap": np.full(data.shape, sources["noise_sigma"][i])}
        yield i, data, segmap, kwargs, psfs[i] / psfs[i].sum()


@pytest.mark.slow
def test_fast_statmorph_is_statmorph_bit_for_bit(cosmos_run, shared_data):
    import statmorph
    import statmorph.statmorph as module

    original_convolved = module.ConvolvedSersic2D
    # stamp 40: elliptical apertures beyond the stamp's edge (strided area sums) and masked
    # neighbours; 5 and 11 with neighbours masked; 11 also with its PSF in the Sersic fit
    for i, data, segmap, kwargs, psf in _cases(cosmos_run, shared_data, [40, 5, 11]):
        for with_psf in ((False, True) if i == 11 else (False,)):
            extra = {"psf": psf} if with_psf else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plain = statmorph.SourceMorphology(data, segmap, 1, **kwargs, **extra)
                fast = fast_statmorph.fast_class()(data, segmap, 1, **kwargs, **extra)
            for name in STATMORPH_QUANTITIES + ["flag", "flag_sersic"]:
                assert np.array_equal(getattr(fast, name), getattr(plain, name), equal_nan=True), (i, name)
    # the faster PSF-convolved model is statmorph's only while a fast fit runs
    assert module.ConvolvedSersic2D is original_convolved


@pytest.mark.slow
def test_bench_measure_prints_the_before_after_ratio():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout: --baseline exports a revision with git archive")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_measure.py"), "--n", "3",
                          "--modes", "measure_1", "--baseline", "HEAD"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "measure_1@baseline N=" in out.stdout
    assert "speed-up of measure_1 over HEAD" in out.stdout


@pytest.mark.slow
def test_profile_measure_prints_the_steps():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "profile_measure.py"), "--n", "2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "_asymmetry_center" in out.stdout and "sersic_amplitude" in out.stdout and "total" in out.stdout
