"""Uncertainties, magnitudes and the saved segmentation of measure (issue 20 item 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.modeling.models import Sersic2D

from conftest import COSMOS_STAMPS
from skymorph import Config
from skymorph.config import MeasureConfig
from skymorph.core.photometry import magnitude, sersic_total_flux
from skymorph.io.rundir import RunDir
from skymorph.stages.measure import SEGMAP_CODES, measure, measure_stamp


def _sersic_image(n: float = 1.5, size: int = 61) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return Sersic2D(amplitude=2.0, r_eff=7.0, n=n, x_0=30.2, y_0=29.7, ellip=0.3, theta=0.6)(x, y)


@pytest.mark.slow
def test_sersic_errors_from_the_covariance_match_the_scatter_over_noise():
    """The covariance error of n agrees with the scatter of n over independent noise draws."""
    truth = _sersic_image()
    sigma = 0.05
    rng = np.random.default_rng(1)
    cfg = MeasureConfig(smooth_fwhm=2.0)
    fits_n, errors = [], []
    for _ in range(12):
        row = measure_stamp(truth + rng.normal(0, sigma, truth.shape), noise_sigma=sigma, config=cfg)
        assert row["flag_sersic"] <= 1, row["measure_reason"]
        fits_n.append(row["sersic_n"])
        errors.append(row["sersic_n_err"])
        assert row["sersic_rhalf_err"] > 0 and np.isfinite(row["sersic_amplitude_err"])
    scatter, error = float(np.std(fits_n, ddof=1)), float(np.median(errors))
    assert 0.5 < error / scatter < 2.0, (error, scatter)
    assert abs(np.mean(fits_n) - 1.5) < 4 * error  # the truth within the errors


def test_sersic_total_flux_and_magnitude():
    from scipy.integrate import quad
    from scipy.special import gammaincinv

    for n, ellip in ((1.0, 0.0), (2.5, 0.4), (4.0, 0.2)):
        bn = gammaincinv(2 * n, 0.5)
        # elliptical isophotes: the area inside semi-major axis a is pi a^2 (1 - ellip)
        def ring(a: float, n: float = n, bn: float = bn, ellip: float = ellip) -> float:
            return 2 * np.pi * a * (1 - ellip) * np.exp(-bn * ((a / 6.0) ** (1 / n) - 1))

        flux, _ = quad(ring, 0, np.inf, limit=200)
        assert sersic_total_flux(1.0, 6.0, n, ellip) == pytest.approx(flux, rel=1e-6)
    # and against the pixels of astropy's own model (a gentle profile that pixels sample well)
    y, x = np.mgrid[:801, :801]
    image = Sersic2D(amplitude=1.0, r_eff=20.0, n=0.7, x_0=400, y_0=400, ellip=0.3, theta=0.3)(x, y)
    assert sersic_total_flux(1.0, 20.0, 0.7, 0.3) == pytest.approx(image.sum(), rel=1e-3)
    assert magnitude(100.0, 25.0) == pytest.approx(20.0)
    assert np.isnan(magnitude(-1.0, 25.0)) and np.isnan(magnitude(1.0, np.nan))


@pytest.mark.slow
def test_noise_resampling_is_off_by_default_and_seeded(shared_data):
    data = fits.getdata(COSMOS_STAMPS / "real_galaxy_images_extension.fits", 3).astype(np.float64)
    sigma = float(np.std(data[:10, :]))
    off = measure_stamp(data, noise_sigma=sigma, config=MeasureConfig(include_sersic=False))
    assert "gini_err" not in off or np.isnan(off["gini_err"])
    cfg = MeasureConfig(include_sersic=False, resamples=4, seed=3)
    one = measure_stamp(data, noise_sigma=sigma, config=cfg)
    two = measure_stamp(data, noise_sigma=sigma, config=cfg)
    for q in ("gini", "m20", "concentration", "asymmetry"):
        assert one[f"{q}_err"] > 0 and one[f"{q}_err"] == two[f"{q}_err"]  # seeded per galaxy
    assert one["gini_err"] < 0.2


@pytest.mark.slow
def test_magnitudes_from_the_header_zero_point_or_the_setting_and_saved_segmaps(shared_data, tmp_path):
    """MAGZERO / PHOTZP of the input header give magnitudes; measure.zeropoint overrides them; the
    segmentation of every stamp is saved in the run."""
    from skymorph import ingest

    with fits.open(COSMOS_STAMPS / "real_galaxy_images_extension.fits") as hdul:
        images = [np.array(hdul[i].data, dtype=np.float32) for i in (3, 5, 8)]
    files = []
    for i, (image, key) in enumerate(zip(images, ("MAGZERO", "PHOTZP", "MAGZERO"), strict=True)):
        header = fits.Header()
        header[key] = 25.94
        path = tmp_path / f"g{i}.fits"
        fits.PrimaryHDU(image, header=header).writeto(path)
        files.append(path)
    run = ingest(files, tmp_path / "run", Config(), progress=False)
    assert run.sources()["zeropoint"].tolist() == [25.94] * 3
    config = Config().update({"measure": {"workers": 1, "include_sersic": False}})
    measure(run, config, progress=False)
    m = pd.read_parquet(run.path / "measurements.parquet")
    ok = m["flux_circ"] > 0
    assert ok.any()
    np.testing.assert_allclose(m.loc[ok, "mag_petro"], 25.94 - 2.5 * np.log10(m.loc[ok, "flux_circ"]))
    assert m["mag_sersic"].isna().all()  # no Sersic fit, no Sersic magnitude
    # the segmentation as measured: the galaxy's pixels are segment_area
    seg = np.asarray(RunDir(run.path).open_array("segmap"))
    assert seg.shape == run.open_array("stamps").shape
    assert seg.dtype == np.uint8
    for i, area in enumerate(m["segment_area"]):
        assert int((seg[i] == SEGMAP_CODES["galaxy"]).sum()) == area
    # the setting beats the header
    measure(run, config.update({"measure": {"zeropoint": 30.0}}), progress=False)
    m30 = pd.read_parquet(run.path / "measurements.parquet")
    np.testing.assert_allclose(m30.loc[ok, "mag_petro"] - m.loc[ok, "mag_petro"], 30.0 - 25.94)
