"""Ingest on hostile inputs (issue #11: bounded reads, nothing lost silently) and the
per-stamp extras that measure reads (issue #12: the linear flag, rms and psf arrays)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import COSMOS_STAMPS, GZ1
from skymorph import Config, RunDir, ingest
from skymorph.core.stamps import make_stamp, prepare_psf
from skymorph.stages.ingest import IngestError


def _config(**ingest_settings) -> Config:
    return Config().update({"ingest": ingest_settings})


def _galaxy(index: int = 0) -> np.ndarray:
    return fits.getdata(COSMOS_STAMPS / "real_galaxy_images_extension.fits", index).astype(np.float32)


def _reasons(run) -> dict[str, str]:
    return run.rejects("ingest").set_index("id")["reason"].to_dict()


def _overlap(row, side: int) -> int:
    """Pixels of the original image inside the stamp cut around the row's centre."""
    y0, x0 = int(row["y"]) - side // 2, int(row["x"]) - side // 2
    h, w = int(row["orig_height"]), int(row["orig_width"])
    return (min(h, y0 + side) - max(0, y0)) * (min(w, x0 + side) - max(0, x0))


def _header_only_fits(path, ny: int, nx: int) -> None:
    """A FITS file whose header promises ny x nx float32 pixels but holds one block of data."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx),
                          ("NAXIS2", ny)])
    path.write_bytes(header.tostring().encode() + b"\0" * 2880)


# --- issue 11.2: every input bounded before it is read ------------------------------------


def test_header_bomb_is_rejected_and_the_run_goes_on(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    fits.writeto(inputs / "good.fits", _galaxy(1))
    _header_only_fits(inputs / "bomb.fits", 100_000, 100_000)  # 37 GiB claimed by a 5.7 kB file
    _header_only_fits(inputs / "liar.fits", 3_000, 3_000)  # under max_pixels, but 36 MB claimed
    assert (inputs / "bomb.fits").stat().st_size < 6000
    run = ingest([inputs], tmp_path / "run", Config(), progress=False)
    assert run.sources()["id"].tolist() == ["good"]
    reasons = _reasons(run)
    assert set(reasons) == {"bomb", "liar"}
    assert "100000 x 100000" in reasons["bomb"] and "max_pixels" in reasons["bomb"]
    assert "truncated" in reasons["liar"]


def test_max_pixels_is_read_from_every_format_header(tmp_path):
    galaxy = _galaxy(2)
    assert galaxy.size > 1000
    fits.writeto(tmp_path / "g.fits", galaxy)
    np.save(tmp_path / "g_npy.npy", galaxy)
    (tmp_path / "g_jpeg.jpeg").write_bytes((GZ1 / "images" / "587722953303916935.jpeg").read_bytes())
    files = [tmp_path / "g.fits", tmp_path / "g_npy.npy", tmp_path / "g_jpeg.jpeg"]
    with pytest.raises(IngestError, match="none of the inputs gave a usable stamp"):
        ingest(files, tmp_path / "run", _config(max_pixels=1000), progress=False)
    reasons = _reasons(RunDir(tmp_path / "run"))
    assert "HDU 0's header claims" in reasons["g"] and "max_pixels = 1e+03" in reasons["g"]
    assert "NPY header claims" in reasons["g_npy"]
    assert reasons["g_jpeg"].startswith("JPEG header claims 423 x 423")


# --- issue 11.3: nothing lost or altered silently ---------------------------------------


def test_links_and_fifos_in_a_directory_are_rejects(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    fits.writeto(inputs / "good.fits", _galaxy(3))
    os.symlink("loop_b.fits", inputs / "loop_a.fits")
    os.symlink("loop_a.fits", inputs / "loop_b.fits")
    os.symlink("self.fits", inputs / "self.fits")
    os.symlink("gone.fits", inputs / "dangling.fits")
    os.mkfifo(inputs / "pipe.fits")  # would block a reader for ever
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    fits.writeto(linked / "far.fits", _galaxy(4))
    os.symlink(linked, inputs / "linked_dir")  # followed, once
    os.symlink(".", inputs / "linked_dir_loop")  # back to inputs: not searched twice
    run = ingest([inputs], tmp_path / "run", Config(), progress=False)
    assert sorted(run.sources()["id"]) == ["far", "good"]
    reasons = _reasons(run)
    assert set(reasons) == {"loop_a", "loop_b", "self", "dangling", "pipe", "linked_dir_loop"}
    assert all("symbolic link loop" in reasons[k] for k in ("loop_a", "loop_b", "self"))
    assert "dangling symbolic link" in reasons["dangling"] and "gone.fits" in reasons["dangling"]
    assert "FIFO" in reasons["pipe"]
    assert "already searched" in reasons["linked_dir_loop"]


def test_links_matched_by_a_glob_are_rejects_not_a_traceback(tmp_path):
    fits.writeto(tmp_path / "good.fits", _galaxy(5))
    os.symlink("self.fits", tmp_path / "self.fits")
    os.symlink("missing.fits", tmp_path / "dangling.fits")
    run = ingest([str(tmp_path / "*.fits")], tmp_path / "run", Config(), progress=False)
    assert run.sources()["id"].tolist() == ["good"]
    reasons = _reasons(run)
    assert "symbolic link loop" in reasons["self"] and "dangling" in reasons["dangling"]


def _unlistable_directory(base) -> str:
    """A directory under ``base`` whose path is longer than PATH_MAX: os.scandir and open
    fail on it (ENAMETOOLONG) even for root, so its files cannot be read by path.  Made
    step by step through directory descriptors; returns the name of its first component."""
    name = "d" * 250
    fd = os.open(base, os.O_RDONLY)
    try:
        for _ in range(17):  # 17 x 251 characters > 4096
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open("lost.fits", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(file_fd, b"SIMPLE  =                    T" + b" " * 2850)
        os.close(file_fd)
    finally:
        os.close(fd)
    return name


def test_a_directory_that_cannot_be_listed_is_a_reject(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    fits.writeto(inputs / "good.fits", _galaxy(6))
    _unlistable_directory(inputs)
    try:
        run = ingest([inputs], tmp_path / "run", Config(), progress=False)
        assert run.sources()["id"].tolist() == ["good"]
        rejects = run.rejects("ingest")
        assert len(rejects) == 1
        assert "cannot be listed" in rejects["reason"].iloc[0]
        assert "File name too long" in rejects["reason"].iloc[0]
        assert len(rejects["origin"].iloc[0]) > 4000
    finally:
        shutil.rmtree(inputs / ("d" * 250))


def test_complex_and_boolean_npy_are_rejected(tmp_path):
    galaxy = _galaxy(7)
    np.save(tmp_path / "complex.npy", galaxy + 1j * galaxy)
    np.save(tmp_path / "mask.npy", galaxy > np.median(galaxy))
    np.save(tmp_path / "real.npy", galaxy)
    run = ingest([tmp_path / "complex.npy", tmp_path / "mask.npy", tmp_path / "real.npy"], tmp_path / "run",
                 Config(), progress=False)
    assert run.sources()["id"].tolist() == ["real"]
    reasons = _reasons(run)
    assert "complex" in reasons["complex"] and "boolean" in reasons["mask"]


def test_mostly_infinite_image_is_rejected(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (100, 100)).astype(np.float32)
    image.ravel()[rng.permutation(image.size)[:9900]] = np.inf  # 99% inf
    fits.writeto(tmp_path / "inf99.fits", image)
    holes = _galaxy(8)
    holes[:4, :4] = np.nan
    fits.writeto(tmp_path / "holes.fits", holes)
    run = ingest([tmp_path / "inf99.fits", tmp_path / "holes.fits"], tmp_path / "run", Config(),
                 progress=False)
    assert run.sources()["id"].tolist() == ["holes"]
    assert "99% of the stamp's pixels are NaN/inf" in _reasons(run)["inf99"]
    # the threshold is a setting
    run = ingest([tmp_path / "inf99.fits"], tmp_path / "run2", _config(max_nonfinite_fraction=1.0),
                 progress=False)
    assert run.sources()["nonfinite_fraction"].iloc[0] == pytest.approx(0.99, abs=0.005)


def test_pixels_beyond_a_field_edge_are_padding_not_nan():
    rng = np.random.default_rng(2)
    window = rng.normal(0, 1, (200, 200))
    window[60:140, 60:140] += 20 * np.exp(-((np.mgrid[:80, :80] - 40) ** 2).sum(0) / 50)
    valid = np.zeros(window.shape, dtype=bool)
    valid[:, 130:] = True  # a source near a field's left edge: most of its window lies outside
    window[~valid] = np.nan
    stamp, info, rms = make_stamp(window, framing="crop", rng=rng, centre=(100.0, 100.0),
                                  rms=np.ones_like(window), valid=valid)
    assert info["padded"] and info["nonfinite_fraction"] == 0.0
    assert np.isinf(rms[:, :80]).all() and (rms[:, 80:] == 1).all()


def test_files_beside_a_collection_catalog_are_read_or_listed(tmp_path):
    collection = tmp_path / "collection"
    collection.mkdir()
    for path in COSMOS_STAMPS.iterdir():
        os.symlink(path, collection / path.name)
    fits.writeto(collection / "stray.fits", _galaxy(9))
    run = ingest([collection], tmp_path / "run", _config(select=["MAG < 22.5"]), progress=False)
    catalog = Table.read(COSMOS_STAMPS / "real_galaxy_catalog_26_extension_example.fits")
    assert len(run.sources()) == int((catalog["MAG"] < 22.5).sum()) == 5
    reasons = _reasons(run)
    assert list(reasons) == ["stray"] and "none of its files" in reasons["stray"]


# --- issue 12: what measure needs -------------------------------------------------------


def test_linear_flag_fits_vs_jpeg(tmp_path):
    fits.writeto(tmp_path / "fits_galaxy.fits", _galaxy(10))
    jpeg = GZ1 / "images" / "587722953303916935.jpeg"
    run = ingest([tmp_path / "fits_galaxy.fits", jpeg], tmp_path / "run", Config(), progress=False)
    linear = run.sources().set_index("id")["linear"]
    assert linear.dtype == bool
    assert linear.to_dict() == {"fits_galaxy": True, "587722953303916935": False}
    info = run.stage_info("ingest")
    assert (info["n_linear"], info["n_nonlinear"]) == (1, 1)


def test_cosmos_collection_gives_rms_and_psf_in_stamp_order(cosmos_run):
    catalog = Table.read(COSMOS_STAMPS / "real_galaxy_catalog_26_extension_example.fits")
    sources = cosmos_run.sources()
    rms = np.asarray(cosmos_run.open_array("rms"))
    psf = np.asarray(cosmos_run.open_array("psf"))
    assert rms.shape == (100, 100, 100) and rms.dtype == np.float32
    assert psf.shape == (100, 41, 41) and psf.dtype == np.float32
    assert sources["has_rms"].all() and sources["has_psf"].all()
    info = cosmos_run.stage_info("ingest")
    assert info["n_rms"] == info["n_psf"] == 100
    assert info["rms_sources"] == {"catalog NOISE_VARIANCE": 100}
    assert info["psf_sources"] == {"real_galaxy_PSF_images_extension.fits": 100}
    # each stamp's own noise: sqrt(NOISE_VARIANCE) of its catalog row over its own pixels,
    # inf over the padding
    for i in range(100):
        finite = np.isfinite(rms[i])
        assert finite.sum() == _overlap(sources.iloc[i], 100)
        assert np.allclose(rms[i][finite], np.sqrt(catalog["NOISE_VARIANCE"][i]), rtol=1e-6)
    assert len(np.unique(rms[:, 50, 50])) > 90  # distinct per galaxy, so the order is tested
    # each PSF: its catalog row's PSF HDU, peak on the central pixel, sum 1
    assert np.allclose(psf.sum(axis=(1, 2)), 1, atol=1e-5)
    assert all(np.unravel_index(p.argmax(), p.shape) == (20, 20) for p in psf)
    with fits.open(COSMOS_STAMPS / "real_galaxy_PSF_images_extension.fits") as hdul:
        for i in (0, 37, 99):
            expected, fraction = prepare_psf(hdul[int(catalog["PSF_HDU"][i])].data, size=41)
            assert np.array_equal(psf[i], expected)
            assert sources["psf_flux_fraction"][i] == pytest.approx(fraction)
    assert 0.98 < sources["psf_flux_fraction"].min() < 0.99


def test_wht_extension_becomes_rms_cut_like_the_stamp(tmp_path):
    rng = np.random.default_rng(3)
    big = rng.normal(0, 1, (80, 80)).astype(np.float32)
    big[30:50, 30:50] += 30
    weight = np.tile(np.linspace(1, 4, 80, dtype=np.float32) ** -2, (80, 1))  # rms 1..4 along x
    weight[:, 70:] = 0  # no exposure: no information
    psf = np.exp(-((np.mgrid[:15, :15] - 7) ** 2).sum(0) / 4.0)
    fits.HDUList([fits.PrimaryHDU(big), fits.ImageHDU(weight, name="WHT"),
                  fits.ImageHDU(psf, name="PSF")]).writeto(tmp_path / "b_wht.fits")
    small = _galaxy(11)
    fits.HDUList([fits.PrimaryHDU(small), fits.ImageHDU(np.full(small.shape, 0.25, np.float32),
                                                        name="VAR")]).writeto(tmp_path / "c_var.fits")
    fits.writeto(tmp_path / "a_plain.fits", _galaxy(12))
    # one stamp per chunk, the first without a map: its all-NaN chunk must still be stored
    run = ingest([tmp_path], tmp_path / "run", _config(stamp_size=64, chunk_size=1, psf_size=11),
                 progress=False)
    sources = run.sources().set_index("id")
    assert list(sources.index) == ["a_plain", "b_wht", "c_var"]
    assert sources["has_rms"].tolist() == [False, True, True]
    assert sources.loc["b_wht", "rms_source"] == "HDU 1 WHT (weight)"
    info = run.stage_info("ingest")
    assert info["rms_sources"] == {"HDU WHT (weight)": 1, "HDU VAR (variance)": 1}
    assert info["psf_sources"] == {"HDU PSF": 1} and info["n_psf"] == 1
    rms = np.asarray(run.open_array("rms"))
    stamps = np.asarray(run.open_array("stamps"))
    assert rms.shape == (3, 64, 64) and np.isnan(rms[0]).all()
    # b: the same 64x64 square of the image and of 1/sqrt(weight)
    y, x = int(sources.loc["b_wht", "y"]), int(sources.loc["b_wht", "x"])
    y0, x0 = y - 32, x - 32
    assert np.array_equal(stamps[1], big[y0 : y0 + 64, x0 : x0 + 64])
    expected = 1 / np.sqrt(weight[y0 : y0 + 64, x0 : x0 + 64].astype(np.float64))
    assert np.allclose(rms[1], expected, rtol=1e-6)  # inf where the weight is 0
    assert np.isinf(rms[1][:, 70 - x0 :]).all() and np.isfinite(rms[1][:, : 70 - x0]).all()
    # c: variance 0.25 -> rms 0.5 over its pixels, inf over the padding
    finite = np.isfinite(rms[2])
    assert np.allclose(rms[2][finite], 0.5)
    assert finite.sum() == _overlap(sources.loc["c_var"], 64) and sources.loc["c_var", "padded"]
    # the PSF HDU of b
    kernels = np.asarray(run.open_array("psf"))
    assert kernels.shape == (3, 11, 11)
    assert np.isnan(kernels[0]).all() and np.isnan(kernels[2]).all()
    assert kernels[1].sum() == pytest.approx(1, abs=1e-6) and kernels[1].argmax() == 60


def test_companion_error_maps_by_pattern(tmp_path):
    images, maps = tmp_path / "images", tmp_path / "maps"
    images.mkdir()
    maps.mkdir()
    for i in range(3):
        fits.writeto(images / f"g{i}.fits", _galaxy(20 + i))
    for i in range(2):
        fits.writeto(maps / f"g{i}_rms.fits", np.full(_galaxy(20 + i).shape, 0.1 * (i + 1), np.float32))
    run = ingest([images], tmp_path / "run", _config(error_maps=str(maps / "{stem}_*.fits")),
                 progress=False)
    sources = run.sources().set_index("id")
    assert sources["has_rms"].tolist() == [True, True, False]
    assert "no file matches" in sources.loc["g2", "note"]
    rms = np.asarray(run.open_array("rms"))
    assert np.nanmax(np.where(np.isinf(rms[0]), np.nan, rms[0])) == pytest.approx(0.1)
    assert np.nanmax(np.where(np.isinf(rms[1]), np.nan, rms[1])) == pytest.approx(0.2)


def test_resampled_stamp_rms_and_psf_follow_the_pixel_scale():
    rng = np.random.default_rng(4)
    image = rng.normal(0, 1, (200, 200))
    image[90:110, 90:110] += 10
    rms_map = np.ones_like(image)
    rms_map[:, :20] = np.inf  # unmeasured columns stay unmeasured after resampling
    stamp, info, rms = make_stamp(image, framing="resample", rng=rng, frame_fraction=1.0, recentre=False,
                                  rms=rms_map)
    assert info["frame_side"] == 200 and stamp.shape == rms.shape == (100, 100)
    # 2 x 2 pixels averaged: the noise halves, as the stamp's own noise does
    assert np.allclose(rms[:, 12:], 0.5) and np.isinf(rms[:, :10]).all()
    assert info["noise_sigma"] == pytest.approx(0.5, rel=0.1)
    # a PSF 8 pixels wide becomes 4 pixels wide
    y, x = np.mgrid[:41, :41] - 20
    wide = np.exp(-(x**2 + y**2) / (2 * 8.0**2))
    kernel, _ = prepare_psf(wide, size=41, zoom=0.5)
    profile = kernel[20] / kernel[20, 20]
    assert np.interp(np.exp(-0.5), profile[20:][::-1], np.arange(21)[::-1]) == pytest.approx(4, abs=0.3)


def test_collection_without_its_psf_file_keeps_stamps_and_says_why(tmp_path):
    collection = tmp_path / "collection"
    collection.mkdir()
    for path in COSMOS_STAMPS.iterdir():
        if "PSF" not in path.name:
            os.symlink(path, collection / path.name)
    run = ingest([collection], tmp_path / "run", _config(select=["MAG < 22.5"]), progress=False)
    sources = run.sources()
    assert len(sources) == 5 and sources["has_rms"].all() and not sources["has_psf"].any()
    assert sources["note"].str.contains("real_galaxy_PSF_images_extension.fits").all()
    assert run.has_array("rms") and not run.has_array("psf")
    assert run.stage_info("ingest")["n_psf"] == 0 and len(run.rejects("ingest")) == 0
