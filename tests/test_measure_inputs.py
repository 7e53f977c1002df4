"""Measure's inputs: linear pixels only (or marked), PSFs and per-pixel errors against statmorph."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import zarr
from astropy.io import fits

from conftest import COSMOS_FIELDS, COSMOS_STAMPS, GZ1
from skymorph import Config, ingest
from skymorph.io.rundir import RunDir
from skymorph.stages.measure import (
    MeasureError,
    linear_flags,
    load_psf,
    measure,
    measure_stamp,
    read_measurements,
)

FIELD_PSF = COSMOS_FIELDS / "PSF_HST.fits"
GALAXY_FITS = COSMOS_FIELDS / "147246.0_150.416558_1.998697_masknoise.fits"
QUICK = {"workers": 1, "include_sersic": False}


# --- linear pixels -------------------------------------------------------------------------


def test_linear_flags_from_column_or_suffix():
    sources = pd.DataFrame({"origin": ["a.fits", "b.JPEG", "c.png", "d.npy", "e.jpg"]})
    assert linear_flags(sources).tolist() == [True, False, False, True, False]
    # ingest's column wins; a missing value falls back on the suffix
    sources["linear"] = pd.array([False, True, None, True, None], dtype="boolean")
    assert linear_flags(sources).tolist() == [False, True, False, True, False]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, shared_data):
    """Two SDSS JPEGs and one COSMOS FITS galaxy, ingested together."""
    jpegs = sorted((GZ1 / "images").glob("*.jpeg"))[:2]
    out = tmp_path_factory.mktemp("mixed") / "run"
    return ingest([*map(str, jpegs), str(GALAXY_FITS)], out, Config(), progress=False)


def test_nonlinear_stamps_refused_with_reason(mixed_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(mixed_run.path, path)
    with pytest.raises(MeasureError, match=r"2 of 3 stamps are not linear in flux \(2 \.jpeg\).*"
                                           r"display-scaled.*--allow-nonlinear"):
        measure(path, progress=False, **QUICK)
    # refused before anything was written or recorded
    assert not (path / "measurements.parquet").exists()
    assert RunDir(path).stage_info("measure") is None


def test_nonlinear_cli_message(mixed_run, tmp_path, capsys):
    from skymorph.cli import main

    path = tmp_path / "run"
    shutil.copytree(mixed_run.path, path)
    assert main(["measure", str(path), "--workers", "1", "--no-sersic", "-q"]) == 1
    assert "2 of 3 stamps are not linear" in capsys.readouterr().err


def test_allow_nonlinear_marks_every_value(mixed_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(mixed_run.path, path)
    run = RunDir(path)
    sources = run.sources()
    run.write_catalog(pd.DataFrame({"id": sources["id"].astype(str), "consensus": True}))
    measure(run, progress=False, allow_nonlinear=True, **QUICK)
    table = read_measurements(run)
    expected = ~sources["origin"].str.endswith(".jpeg")
    assert table["measure_linear"].tolist() == expected.tolist() == [False, False, True]
    assert table["measure_ok"].all()
    assert run.config().measure.allow_nonlinear  # recorded: the next command keeps it
    catalog = run.catalog()
    assert catalog["measure_linear"].tolist() == [False, False, True]
    assert "NON-LINEAR" in run.summary()
    from astropy.table import Table

    fits_table = Table.read(path / "catalog.fits")
    assert list(fits_table["measure_linear"]) == [False, False, True]
    assert "display-scaled" in fits_table["measure_linear"].description


# --- PSF and per-pixel errors --------------------------------------------------------------


@pytest.fixture(scope="module")
def bright_run(tmp_path_factory, shared_data):
    """The five COSMOS stamps brighter than I = 22.5, ingested (real ingest, a selection)."""
    out = tmp_path_factory.mktemp("bright") / "run"
    return ingest([COSMOS_STAMPS], out, Config().update({"ingest": {"select": ["MAG < 22.5"]}}),
                  progress=False)


def _rms(stamps: np.ndarray, sources: pd.DataFrame, gain: float = 2000.0) -> np.ndarray:
    """A per-pixel 1-sigma map: background noise plus the galaxy's Poisson noise."""
    sky = sources["noise_sigma"].to_numpy()[:, None, None]
    signal = np.clip(stamps - sources["background"].to_numpy()[:, None, None], 0, None)
    return np.sqrt(sky ** 2 + signal / gain).astype(np.float32)


def _direct(image, noise_sigma, weightmap, psf):
    """statmorph called by hand, on the segmap measure makes; pixels without a usable error
    (ingest's inf: padding) masked, as measure documents."""
    import statmorph

    from skymorph.core.morphometry import make_segmap

    cfg = Config().measure
    bad = ~(np.isfinite(weightmap) & (weightmap > 0))
    weightmap = np.where(bad, np.median(weightmap[~bad]), weightmap)
    segmap, others = make_segmap(image, noise_sigma, cfg.detect_nsigma, cfg.detect_npixels, cfg.smooth_fwhm,
                                 cfg.deblend, cfg.deblend_contrast, mask=bad if bad.any() else None)
    mask = others | bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statmorph's own, recorded by measure in measure_warnings
        return statmorph.source_morphology(image, segmap, mask=mask if mask.any() else None,
                                           weightmap=weightmap, psf=psf)[0]


KEYS = ("sersic_n", "sersic_rhalf", "sersic_amplitude", "sersic_ellip", "gini", "m20", "concentration",
        "asymmetry", "smoothness", "rhalf_circ")


@pytest.fixture(scope="module")
def psf_rms_run(bright_run, tmp_path_factory):
    """The bright stamps measured with what ingest wrote for the GalSim collection: each
    stamp's own PSF (``psf``, N x P x P) and per-pixel errors (``rms``)."""
    assert bright_run.has_array("psf") and bright_run.has_array("rms")  # ingest's contract
    path = tmp_path_factory.mktemp("psf") / "run"
    shutil.copytree(bright_run.path, path)
    run = RunDir(path)
    measure(run, progress=False, workers=1)
    return run, np.asarray(run.open_array("psf"), dtype=np.float64)


def test_psf_and_rms_arrays_as_statmorph(psf_rms_run):
    run, psfs = psf_rms_run
    table = read_measurements(run)
    assert (table["measure_psf"] == "array").all() and (table["measure_weights"] == "rms").all()
    sources, stamps = run.sources(), np.asarray(run.open_array("stamps"))
    rms = np.asarray(run.open_array("rms"), dtype=np.float64)
    for i in (0, 3):
        image = stamps[i].astype(np.float64) - sources["background"][i]
        direct = _direct(image, sources["noise_sigma"][i], rms[i], psfs[i] / psfs[i].sum())
        assert direct.flag_sersic == table["flag_sersic"][i] == 0
        for key in KEYS:
            assert table[key][i] == pytest.approx(float(direct[key]), rel=1e-10, abs=1e-12), key


def test_psf_changes_the_sersic_fit(psf_rms_run, tmp_path):
    """Without the PSF the same stamps give other Sersic values: the PSF really reaches the fit.
    The blur of the PSF flattens a profile's core, so a fit that ignores it finds a lower n
    (measured: n with / without the PSF 0.75-2.6 per galaxy, median 1.6)."""
    run, _ = psf_rms_run
    with_psf = read_measurements(run)
    path = tmp_path / "run"
    shutil.copytree(run.path, path)
    measure(path, progress=False, psf_array=False)
    without = read_measurements(path)
    assert (without["measure_psf"] == "none").all()
    ok = (with_psf["flag_sersic"] == 0) & (without["flag_sersic"] == 0)
    assert ok.sum() >= 4
    n_ratio = with_psf.loc[ok, "sersic_n"] / without.loc[ok, "sersic_n"]
    assert (abs(n_ratio - 1) > 0.05).all()
    assert n_ratio.median() > 1.2
    np.testing.assert_allclose(with_psf["gini"], without["gini"])  # non-parametric: no PSF


def test_psf_file_and_weight_array_override(psf_rms_run, tmp_path):
    run, _ = psf_rms_run
    path = tmp_path / "run"
    shutil.copytree(run.path, path)
    run = RunDir(path)
    sources, stamps = run.sources(), np.asarray(run.open_array("stamps"))
    errors = _rms(stamps, sources, gain=500.0)
    run.create_array("errors", stamps.shape, 8)[:] = errors
    measure(run, progress=False, psf_file=str(FIELD_PSF), weight_array="errors")
    table = read_measurements(run)
    assert (table["measure_psf"] == "file").all() and (table["measure_weights"] == "errors").all()
    psf = load_psf(FIELD_PSF)
    assert psf.sum() == pytest.approx(1.0)
    i = 1
    image = stamps[i].astype(np.float64) - sources["background"][i]
    direct = _direct(image, sources["noise_sigma"][i], errors[i].astype(np.float64), psf)
    for key in KEYS:
        assert table[key][i] == pytest.approx(float(direct[key]), rel=1e-10, abs=1e-12), key


def test_weightmap_holes_are_masked_and_bad_psf_refused(bright_run, tmp_path):
    run = bright_run
    stamp = np.asarray(run.open_array("stamps")[0], dtype=np.float64)
    sources = run.sources()
    cfg = Config().update({"measure": {"include_sersic": False}}).measure
    weights = np.full(stamp.shape, float(sources["noise_sigma"][0]))
    full = measure_stamp(stamp, sources["noise_sigma"][0], sources["background"][0], weights, cfg)
    holed = weights.copy()
    holed[:, :5] = 0.0  # padding without an error estimate
    row = measure_stamp(stamp, sources["noise_sigma"][0], sources["background"][0], holed, cfg)
    assert row["measure_ok"] and full["measure_ok"]
    assert row["gini"] == pytest.approx(full["gini"], abs=0.02)
    bad = tmp_path / "bad_psf.fits"
    fits.PrimaryHDU(np.zeros((5, 5))).writeto(bad)
    with pytest.raises(MeasureError, match="positive sum"):
        load_psf(bad)
    with pytest.raises(MeasureError, match="does not exist"):
        measure(run.path, progress=False, psf_file=str(tmp_path / "missing.fits"))


def test_r_e_in_arcsec(psf_rms_run):
    run, _ = psf_rms_run
    table = read_measurements(run)
    assert (table["stamp_pixel_scale"] == 0.03).all()  # COSMOS ACS, cropped at native scale
    np.testing.assert_allclose(table["sersic_rhalf_arcsec"], 0.03 * table["sersic_rhalf"])


def test_stamps_without_psf_or_rms_fall_back(bright_run, tmp_path):
    """ingest writes NaN for a stamp of ``psf`` / ``rms`` that has none: that stamp is
    measured without a PSF / with its constant noise, and its row says so."""
    path = tmp_path / "run"
    shutil.copytree(bright_run.path, path)
    run = RunDir(path)
    psf = zarr.open_array(str(run.array_path("psf")), mode="r+")
    rms = zarr.open_array(str(run.array_path("rms")), mode="r+")
    psf[1] = np.nan
    rms[2] = np.nan
    measure(run, progress=False, workers=1)
    table = read_measurements(run)
    assert table["measure_psf"].tolist() == ["array", "none", "array", "array", "array"]
    assert table["measure_weights"].tolist() == ["rms", "rms", "noise_sigma", "rms", "rms"]
    assert table["flag"].between(0, 2).all()  # statmorph measured every stamp (measure_ok: flag 0/1)
    sources, stamps = run.sources(), np.asarray(run.open_array("stamps"))
    weights = np.asarray(run.open_array("rms")[1], dtype=np.float64)
    alone = measure_stamp(stamps[1], sources["noise_sigma"][1], sources["background"][1], weights)
    assert table["sersic_n"][1] == pytest.approx(alone["sersic_n"], rel=1e-10)  # no PSF
    alone = measure_stamp(stamps[2], sources["noise_sigma"][2], sources["background"][2],
                          psf=np.asarray(run.open_array("psf")[2], dtype=np.float64))
    assert table["gini"][2] == pytest.approx(alone["gini"], rel=1e-12)  # constant noise
    assert table["sersic_n"][2] == pytest.approx(alone["sersic_n"], rel=1e-10)
