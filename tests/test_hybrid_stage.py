"""reduce.descriptors and reduce.projection in the pipeline (issue #19): the descriptors array,
the catalog's labelled descriptor columns, the nuisance projection through the real encoder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from skymorph import Config, RunDir
from skymorph.config import ConfigError
from skymorph.core.descriptors import descriptors_at_levels
from skymorph.stages.cluster import cluster
from skymorph.stages.encode import encode
from skymorph.stages.reduce import reduce

pytestmark = pytest.mark.slow  # ingest + encode of 100 stamps, then the nuisance copies

SETTINGS = {"encode": {"encoder": "efficientnet_lite0", "random_init": True, "rotations": 1},
            "cluster": {"k": 4}}


@pytest.fixture(scope="module")
def encoded(cosmos_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("hybrid") / "run"
    shutil.copytree(cosmos_run.path, path)
    encode(path, Config().update(SETTINGS), progress=False)
    return RunDir(path)


def test_descriptors_and_nuisance_projection_in_the_pipeline(encoded):
    cfg = Config().update({**SETTINGS, "reduce": {
        "descriptors": 0.5, "deep_dims": 8, "projection": "nuisance", "projection_dims": 6,
        "nuisance_sample": 24, "nuisance_copies": 1, "method": "none", "map_2d": False}})
    reduce(encoded.path, cfg, progress=False)
    cluster(encoded.path, cfg, progress=False)
    desc = encoded.open_array("descriptors")
    stamps = np.asarray(encoded.open_array("stamps")[:], dtype=np.float32)
    values, names = descriptors_at_levels(stamps, levels=(0.05, 0.2))
    np.testing.assert_allclose(desc[:], values, rtol=1e-5, equal_nan=True)
    assert list(desc.attrs["columns"]) == names
    assert encoded.open_array("embedding").shape == (stamps.shape[0], 6)
    catalog = encoded.catalog()
    assert {f"desc_{c}" for c in names} <= set(catalog.columns)
    from astropy.table import Table

    table = Table.read(encoded.path / "catalog.fits")
    assert "not a physical measurement" in table["desc_gini_p20"].description
    assert str(table["desc_r50_p5"].unit) == "pix"
    info = encoded.stage_info("reduce")
    assert {"descriptors", "nuisance_copies", "prepare"} <= set(info["seconds"])

    # switched off again: the plain features, and no stale descriptors
    plain = cfg.update({"reduce": {"descriptors": 0.0, "projection": "none"}})
    reduce(encoded.path, plain, progress=False)
    cluster(encoded.path, plain, progress=False)
    assert not encoded.has_array("descriptors")
    assert encoded.open_array("embedding").shape[1] == encoded.open_array("features").shape[1]
    assert not any(c.startswith("desc_") for c in encoded.catalog().columns)


def test_nuisance_projection_needs_the_stamps_the_encoder_reads(encoded, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(encoded.path, path)
    cfg = Config().update({**SETTINGS, "polar": {"enabled": True},
                           "reduce": {"projection": "nuisance", "method": "none", "map_2d": False}})
    # a cross-section rule of the settings: refused before reduce writes anything
    with pytest.raises(ConfigError, match="switch denoise and polar off"):
        reduce(path, cfg, progress=False, force=True)


def test_the_readme_commands(encoded, tmp_path):
    from skymorph.cli import main

    path = tmp_path / "run"
    shutil.copytree(encoded.path, path)
    # README, "Hybrid features ...": the commands as written there (myrun -> this run)
    assert main(["reduce", str(path), "--descriptors", "1", "--method", "none", "-q"]) == 0
    deep_dims = RunDir(path).config().reduce.deep_dims  # the run's own setting, kept by the CLI
    assert RunDir(path).open_array("embedding").shape == (100, deep_dims + 18)
    assert main(["reduce", str(path), "--descriptors", "1", "--projection", "nuisance", "--method", "none",
                 "-q"]) == 0
    cfg = RunDir(path).config().reduce
    assert cfg.projection == "nuisance"
    assert RunDir(path).open_array("embedding").shape == (100, cfg.projection_dims)
