"""Ingest on the real COSMOS, field and Galaxy Zoo data, and on broken inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from conftest import COSMOS_FIELDS, COSMOS_STAMPS, GZ1
from skymorph import Config, RunDir, ingest
from skymorph.io.rundir import RunDirError
from skymorph.stages.ingest import IngestError, select_rows


def _config(**ingest_settings) -> Config:
    return Config().update({"ingest": ingest_settings})


def _cosmos_stamp(index: int = 0) -> np.ndarray:
    return fits.getdata(COSMOS_STAMPS / "real_galaxy_images_extension.fits", index).astype(np.float32)


def test_cosmos_collection_ingests_under_ident(cosmos_run):
    catalog = Table.read(COSMOS_STAMPS / "real_galaxy_catalog_26_extension_example.fits")
    sources = cosmos_run.sources()
    stamps = cosmos_run.open_array("stamps")
    assert stamps.shape == (100, 100, 100) and stamps.dtype == np.float32
    assert list(sources["id"]) == [str(i) for i in catalog["IDENT"]]
    assert list(sources["index"]) == list(range(100))
    # the companion *_fits.fits table is joined, so photo-z can be used for selection
    assert np.allclose(sources["ZPHOT"].min(), 0.09, atol=0.01)
    # stamps smaller than 100 px are padded, with noise and not zeros
    small = (sources["orig_height"] < 100) | (sources["orig_width"] < 100)
    assert small.sum() > 90 and sources["padded"][small].all()
    first = np.asarray(stamps[0])
    assert np.count_nonzero(first == 0) == 0
    corner = first[:20, :20]
    assert corner.std() == pytest.approx(sources["noise_sigma"][0], rel=0.3)
    # the original 36x36 pixels sit unchanged inside the stamp
    original = _cosmos_stamp(0)
    assert sources["orig_height"][0] == original.shape[0]
    assert np.isin(original.ravel(), first.ravel()).mean() > 0.99
    assert len(cosmos_run.rejects("ingest")) == 0


def test_selection_on_collection_catalog(tmp_path):
    run = ingest([COSMOS_STAMPS], tmp_path / "run", _config(select=["MAG < 23.5"]), progress=False)
    catalog = Table.read(COSMOS_STAMPS / "real_galaxy_catalog_26_extension_example.fits")
    assert len(run.sources()) == int((catalog["MAG"] < 23.5).sum()) == 12
    assert run.stage_info("ingest")["not_selected"] == 88


def test_paper_selection_and_missing_column_message():
    table = pd.DataFrame({"lp_type": [0, 0, 1, 0], "FLAG_COMBINED": [0, 1, 0, 0],
                          "z": [0.5, 0.5, 0.5, 1.5], "I": [24.0, 24.0, 24.0, 24.0]})
    paper = ["lp_type == 0", "FLAG_COMBINED == 0", "0.2 < z < 1.2", "I < 25"]
    assert select_rows(table, paper).tolist() == [True, False, False, False]
    with pytest.raises(IngestError, match=r"column\(s\) zphot .*columns are: lp_type, FLAG_COMBINED, z, I"):
        select_rows(table, ["zphot > 0.2"])


def test_file_inputs_with_catalog_selection(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        fits.writeto(images / f"gal{i}.fits", _cosmos_stamp(i))
    catalog = tmp_path / "cat.csv"
    pd.DataFrame({"ID": ["gal0", "gal1", "gal2"], "z": [0.5, 2.0, 0.7]}).to_csv(catalog, index=False)
    config = _config(catalog=str(catalog), id_col="ID", select=["0.2 < z < 1.2"])
    run = ingest([images], tmp_path / "run", config, progress=False)
    assert sorted(run.sources()["id"]) == ["gal0", "gal2"]
    rejects = run.rejects("ingest")
    assert rejects["id"].tolist() == ["gal3"] and "not found" in rejects["reason"][0]
    with pytest.raises(IngestError, match="'NAME' not found .*columns are: ID, z"):
        ingest([images], tmp_path / "run2", _config(catalog=str(catalog), id_col="NAME"), progress=False)


def test_field_detection_gives_stamps(tmp_path):
    run = ingest([COSMOS_FIELDS / "Cut_HST.fits", COSMOS_FIELDS / "Cut_HST1.fits"], tmp_path / "run",
                 _config(field=True), progress=False)
    sources = run.sources()
    per_field = sources["origin"].map(lambda p: p.rsplit("/", 1)[-1]).value_counts()
    assert 3 <= per_field["Cut_HST.fits"] <= 6 and 3 <= per_field["Cut_HST1.fits"] <= 8
    assert sources["ra"].between(149.4, 150.8).all() and sources["dec"].between(1.6, 2.8).all()  # COSMOS
    stamps = np.asarray(run.open_array("stamps"))
    # each stamp is centred on its source: the centre is brighter than the stamp's border
    centre = stamps[:, 45:55, 45:55].mean(axis=(1, 2))
    border = stamps[:, :10, :].mean(axis=(1, 2))
    assert (centre > border).all()
    # exactly: the stamp's central pixel is the field's pixel at the source, also for the sources
    # less than a stamp size from the field's low x/y edges (their windows are padded there)
    fields = {name: fits.getdata(COSMOS_FIELDS / name).astype(np.float32) for name in ("Cut_HST.fits",
                                                                                      "Cut_HST1.fits")}
    near_low_edge = 0
    for stamp, row in zip(stamps, sources.itertuples(), strict=True):
        field = fields[row.origin.rsplit("/", 1)[-1]]
        assert stamp[50, 50] == field[int(round(row.y)), int(round(row.x))], row.id
        near_low_edge += min(row.x, row.y) < 50
    assert near_low_edge >= 2


def test_field_with_catalog_positions(tmp_path):
    detected = ingest([COSMOS_FIELDS / "Cut_HST.fits"], tmp_path / "det", _config(field=True),
                      progress=False).sources()
    catalog = tmp_path / "positions.csv"
    table = detected[["id", "ra", "dec"]].rename(columns={"id": "ID", "ra": "RA", "dec": "DEC"})
    table = pd.concat([table, pd.DataFrame({"ID": ["far"], "RA": [10.0], "DEC": [-30.0]})])
    table.to_csv(catalog, index=False)
    config = _config(field=True, catalog=str(catalog), id_col="ID")
    run = ingest([COSMOS_FIELDS / "Cut_HST.fits"], tmp_path / "run", config, progress=False)
    sources = run.sources()
    assert sorted(sources["id"]) == sorted(detected["id"])
    assert np.allclose(sources.set_index("id").loc[detected["id"], "x"], detected["x"], atol=0.01)
    assert run.rejects("ingest")["id"].tolist() == ["far"]


def test_gz1_jpegs_ingest_by_luminance_and_resampling(tmp_path):
    files = sorted(GZ1.glob("images/58772298*.jpeg"))
    run = ingest([str(GZ1 / "images" / "58772298*.jpeg")], tmp_path / "run", Config(), progress=False)
    sources = run.sources()
    assert sorted(sources["id"]) == sorted(f.stem for f in files)
    assert (sources["framing"] == "resample").all()
    assert (sources["orig_height"] == 423).all()
    stamps = np.asarray(run.open_array("stamps"))
    assert stamps.shape == (len(files), 100, 100)
    # the galaxy is at the centre of a Galaxy Zoo frame
    assert (stamps[:, 45:55, 45:55].mean(axis=(1, 2)) > stamps[:, :5].mean(axis=(1, 2)) + 10).all()


def test_png_and_npy_inputs(tmp_path):
    galaxy = _cosmos_stamp(5)
    scaled = (galaxy - galaxy.min()) / np.ptp(galaxy)
    Image.fromarray((scaled * 65535).astype(np.uint16)).save(tmp_path / "deep16.png")
    Image.fromarray((scaled * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "rgb8.png")
    np.save(tmp_path / "array.npy", galaxy)
    run = ingest([tmp_path / "deep16.png", tmp_path / "rgb8.png", tmp_path / "array.npy"],
                 tmp_path / "run", _config(framing="crop"), progress=False)
    sources = run.sources().set_index("id")
    assert sorted(sources.index) == ["array", "deep16", "rgb8"]
    stamps = np.asarray(run.open_array("stamps"))
    deep = stamps[sources.loc["deep16", "index"]]
    assert deep.max() > 60000  # 16-bit depth kept
    rgb = stamps[sources.loc["rgb8", "index"]]
    assert 200 < rgb.max() <= 255


def test_broken_inputs_are_rejected_with_reasons(tmp_path):
    good = tmp_path / "in"
    good.mkdir()
    fits.writeto(good / "ok.fits", _cosmos_stamp(1))
    fits.writeto(good / "truncated.fits", _cosmos_stamp(2))
    data = (good / "truncated.fits").read_bytes()
    (good / "truncated.fits").write_bytes(data[: len(data) - 4000])
    (good / "empty.fits").write_bytes(b"")
    (good / "notes.fits").write_text("this is not a FITS file\n" * 20)
    fits.writeto(good / "allnan.fits", np.full((50, 50), np.nan, dtype=np.float32))
    fits.writeto(good / "flat.fits", np.ones((50, 50), dtype=np.float32))
    fits.writeto(good / "tiny.fits", _cosmos_stamp(3)[:5, :5])
    Table({"a": [1, 2]}).write(good / "table.fits")
    holes = _cosmos_stamp(4).copy()
    holes[3:6, 3:6] = np.nan
    fits.writeto(good / "holes.fits", holes)
    (good / "broken.jpeg").write_bytes((GZ1 / "images" / "587722953303916935.jpeg").read_bytes()[:3000])
    run = ingest([good], tmp_path / "run", Config(), progress=False)
    assert sorted(run.sources()["id"]) == ["holes", "ok"]
    assert run.sources().set_index("id").loc["holes", "nan_filled"] == 9
    assert np.isfinite(np.asarray(run.open_array("stamps"))).all()
    reasons = run.rejects("ingest").set_index("id")["reason"].to_dict()
    assert set(reasons) == {"truncated", "empty", "notes", "allnan", "flat", "tiny", "table", "broken"}
    assert "truncated" in reasons["truncated"]
    assert "zero-byte" in reasons["empty"]
    assert "unreadable FITS" in reasons["notes"]
    assert "NaN" in reasons["allnan"]
    assert "constant" in reasons["flat"]
    assert "min_size" in reasons["tiny"]
    assert "no image HDU" in reasons["table"]
    assert "unreadable image" in reasons["broken"]
    origins = run.rejects("ingest").set_index("id")["origin"]
    assert origins["notes"].endswith("notes.fits")


def test_duplicate_ids_are_rejected(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        fits.writeto(tmp_path / sub / "same.fits", _cosmos_stamp(6))
    run = ingest([tmp_path / "a", tmp_path / "b"], tmp_path / "run", Config(), progress=False)
    assert len(run.sources()) == 1
    rejects = run.rejects("ingest")
    assert rejects["reason"].str.contains("duplicate id").tolist() == [True]
    assert rejects["origin"][0].endswith("b/same.fits")


def test_missing_path_and_empty_directory_give_clear_errors(tmp_path):
    with pytest.raises(IngestError, match="'/no/such/dir' does not exist"):
        ingest(["/no/such/dir"], tmp_path / "run", Config(), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="contains no image files"):
        ingest([tmp_path / "empty"], tmp_path / "run", Config(), progress=False)
    with pytest.raises(IngestError, match="matches no files"):
        ingest([str(tmp_path / "*.fits")], tmp_path / "run", Config(), progress=False)


def test_unchanged_ingest_is_not_recomputed(tmp_path, cosmos_run):
    run_dir = tmp_path / "run"
    shutil.copytree(cosmos_run.path, run_dir)
    before = RunDir(run_dir).stage_info("ingest")["finished"]
    stamps_mtime = (run_dir / "stamps.zarr" / "zarr.json").stat().st_mtime_ns
    ingest([COSMOS_STAMPS], run_dir, Config(), progress=False)
    assert RunDir(run_dir).stage_info("ingest")["finished"] == before
    assert (run_dir / "stamps.zarr" / "zarr.json").stat().st_mtime_ns == stamps_mtime
    run = ingest([COSMOS_STAMPS], run_dir, _config(stamp_size=64), progress=False)
    assert run.open_array("stamps").shape == (100, 64, 64)
    assert "stamp_size = 64" in (run_dir / "config.toml").read_text()


def test_run_directory_from_another_format_version(tmp_path, cosmos_run):
    run_dir = tmp_path / "old"
    shutil.copytree(cosmos_run.path, run_dir)
    (run_dir / "skymorph.json").write_text(json.dumps({"format_version": 0, "created_by": "0.0.1"}))
    with pytest.raises(RunDirError, match="format 0.*new directory"):
        RunDir(run_dir)


def test_a_field_read_by_worker_processes_gives_the_stamps_of_one_process(tmp_path):
    """More than 200 positions start the worker pool, whose processes see a blanked ``__main__``:
    a library imported there on first use (astropy.nddata for the cut-outs) used to fail, and
    the first source of each worker was rejected as unreadable."""
    rng = np.random.default_rng(0)
    catalog = tmp_path / "positions.csv"
    pd.DataFrame({"ID": [f"s{i}" for i in range(210)], "X": rng.uniform(10, 240, 210),
                  "Y": rng.uniform(10, 240, 210)}).to_csv(catalog, index=False)
    settings = dict(field=True, catalog=str(catalog), id_col="ID", x_col="X", y_col="Y", stamp_size=32)
    pooled = ingest([COSMOS_FIELDS / "Cut_HST.fits"], tmp_path / "pool", _config(workers=2, **settings),
                    progress=False)
    alone = ingest([COSMOS_FIELDS / "Cut_HST.fits"], tmp_path / "one", _config(workers=1, **settings),
                   progress=False)
    assert len(pooled.rejects("ingest")) == 0
    assert np.array_equal(np.asarray(pooled.open_array("stamps")), np.asarray(alone.open_array("stamps")))
