"""The catalog files as an astropy user reads them: units, descriptions, provenance,
case-unique names, NOCONS; the same provenance in Parquet metadata and Zarr attributes."""

from __future__ import annotations

import json
import shutil
import tomllib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table

from skymorph import __version__
from skymorph.io.catalog import (
    NOCONS,
    column_info,
    normalise_types,
    read_provenance,
    unique_names,
)
from skymorph.io.rundir import RunDir


@pytest.fixture(scope="module")
def catalog_run(cosmos_run, tmp_path_factory):
    """The ingested COSMOS run with a catalog as cluster writes it: the sources plus
    cluster labels, a third of the galaxies without consensus."""
    path = tmp_path_factory.mktemp("catalog") / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    sources = run.sources()
    catalog = sources.copy()
    consensus = np.arange(len(catalog)) % 3 != 0
    catalog["cluster"] = np.where(consensus, np.arange(len(catalog)) % 4, -1)
    catalog["consensus"] = consensus
    catalog["morph_type"] = np.where(consensus, None, NOCONS)  # what cluster.py writes
    run.write_catalog(catalog)
    # inspect merge: types for the consensus galaxies, "" for the others
    merged = np.where(consensus, np.array(["SPH", "ETD", "LTD", "UNC"])[np.arange(len(catalog)) % 4], "")
    merged[1] = ""  # a consensus cluster nobody voted on yet
    run.update_catalog(pd.DataFrame({"id": catalog["id"], "morph_type": merged}))
    return run


def test_fits_units_descriptions_extname(catalog_run):
    path = catalog_run.path / "catalog.fits"
    table = Table.read(path, hdu="CATALOG")
    assert table["RA"].unit == "deg" and table["DEC"].unit == "deg"
    assert table["MAG"].unit == "mag" and table["HSC_i"].unit == "mag"
    assert table["PIXEL_SCALE"].unit == "arcsec / pix"
    assert table["x"].unit == "pix" and table["frame_side"].unit == "pix"
    assert table["cluster"].unit is None
    assert all(table[name].description for name in table.colnames)  # every column described
    assert "consensus cluster label" in table["cluster"].description
    with fits.open(path) as hdul:
        assert hdul[1].name == "CATALOG"
        header = hdul[1].header
        for i, name in enumerate(table.colnames, start=1):
            assert header[f"TTYPE{i}"] == name
            assert header[f"TCOMM{i}"] == column_info(name)[1]
        assert header[f"TUNIT{table.colnames.index('RA') + 1}"] == "deg"


def test_case_unique_names(catalog_run):
    """ingest's ra/dec (all NaN for the collection) beside the catalog's RA/DEC made
    hdul[1].data['Ra'] raise 'Ambiguous key name'."""
    with fits.open(catalog_run.path / "catalog.fits") as hdul:
        names = hdul[1].columns.names
        ra = hdul[1].data["Ra"]
    assert len({n.lower() for n in names}) == len(names)
    assert "ra" not in names and "RA" in names
    np.testing.assert_allclose(ra, catalog_run.sources()["RA"])
    assert "ra" not in catalog_run.catalog().columns  # Parquet the same

    both = pd.DataFrame({"id": ["a", "b"], "ra": [1.0, 2.0], "RA": [1.5, 2.5], "Ra": [np.nan, np.nan],
                         "flag": ["", ""], "FLAG": ["x", "y"]})
    unique = unique_names(both)
    assert list(unique.columns) == ["id", "ra", "RA_2", "FLAG"]
    assert unique["RA_2"].tolist() == [1.5, 2.5]


def test_morph_type_nocons_and_missing(catalog_run):
    catalog = catalog_run.catalog()
    consensus = catalog["consensus"].to_numpy()
    types = catalog["morph_type"]
    assert (types[~consensus] == NOCONS).all()
    assert types[1] is None or pd.isna(types[1])  # consensus, not typed yet: missing
    assert set(types[consensus].dropna()) == {"SPH", "ETD", "LTD", "UNC"}
    assert not (types.astype(str) == "").any()
    table = Table.read(catalog_run.path / "catalog.fits")
    column = table["morph_type"]
    assert list(column.mask.nonzero()[0]) == [1]  # missing stays missing (masked)
    assert set(column[~consensus]) == {NOCONS}
    assert "" not in set(column.filled("?"))
    # the same rules for a table given directly
    frame = pd.DataFrame({"consensus": [True, False, True], "morph_type": ["LTD", "", " "]})
    assert normalise_types(frame)["morph_type"].tolist() == ["LTD", NOCONS, None]


def test_provenance_in_fits_parquet_and_zarr(catalog_run):
    path = catalog_run.path
    header = fits.getheader(path / "catalog.fits", 0)
    assert header["ORIGIN"] == "skymorph" and header["SKYMVER"] == __version__
    assert header["DATE"].startswith("20") and header["NGALAXY"] == 100
    assert header["NINFILES"] == 1 and header["INFILE1"] == "real_galaxy_images_extension.fits"
    recorded = tomllib.loads((path / "config.toml").read_text())
    assert json.loads(header["SETTINGS"]) == recorded  # the whole config.toml, over CONTINUE cards
    assert "ingest" in json.loads(header["STAGES"])
    assert fits.getheader(path / "catalog.fits", "CATALOG")["SKYMVER"] == __version__

    schema = pq.read_schema(path / "catalog.parquet")
    record = json.loads(schema.metadata[b"skymorph"])
    assert record["version"] == __version__ and record["settings"] == recorded
    assert record["inputs"]["n_galaxies"] == 100 and record["inputs"]["kinds"] == {".fits": 1}
    assert schema.field("RA").metadata[b"unit"] == b"deg"
    assert b"unit" not in (schema.field("cluster").metadata or {})
    assert schema.field("consensus").metadata[b"description"].startswith(b"K-means")
    assert read_provenance(path / "catalog.fits")["settings"] == recorded
    assert read_provenance(path / "catalog.parquet")["written"] == record["written"]

    stamps = catalog_run.open_array("stamps")
    assert stamps.attrs["skymorph"]["version"] == __version__
    assert "ingest" in stamps.attrs["skymorph"]["settings"]
    new = catalog_run.create_array("scratch", (2, 3), 2, attributes={"units": "pix"})
    assert new.attrs["units"] == "pix" and new.attrs["skymorph"]["version"] == __version__


def test_info_shows_the_catalog(catalog_run, capsys):
    from skymorph.cli import main

    assert main(["info", str(catalog_run.path)]) == 0
    out = capsys.readouterr().out
    assert "catalog       100 rows" in out
    assert f"{NOCONS} 34" in out and "(not typed) 1" in out
    assert "RA [deg]" in out and "MAG [mag]" in out
    assert f"by skymorph {__version__}" in out and "100 galaxies from 1 file(s)" in out


def test_measured_catalog_units(catalog_run, tmp_path):
    """After measure: radii in pixels, r_e in arcsec, angles in radians, flags described."""
    from conftest import COSMOS_STAMPS
    from skymorph import Config, ingest
    from skymorph.stages.measure import measure

    # five stamps (IDENT 0-4, real ingest) with their rows of the catalog
    small = tmp_path / "small"
    ingest([COSMOS_STAMPS], small, Config().update({"ingest": {"select": ["IDENT < 5"]}}), progress=False)
    small_run = RunDir(small)
    small_run.write_catalog(catalog_run.catalog().iloc[:5])
    measure(small_run, progress=False, workers=1)
    table = Table.read(small / "catalog.fits")
    assert table["sersic_rhalf"].unit == "pix" and table["rhalf_circ"].unit == "pix"
    assert table["sersic_rhalf_arcsec"].unit == "arcsec"
    np.testing.assert_allclose(table["sersic_rhalf_arcsec"], 0.03 * table["sersic_rhalf"])
    assert "statmorph flag" in table["flag"].description
    assert table["morph_type"][0] == NOCONS  # measure's join keeps the types
    measurements = pq.read_schema(small / "measurements.parquet")
    assert measurements.field("orientation_centroid").metadata[b"unit"] == b"rad"
    assert json.loads(measurements.metadata[b"skymorph"])["settings"]["measure"]["g2_noise_tolerance"] == 2.45


def test_id_dtype_is_recorded_and_a_csv_join_needs_the_string_cast(catalog_run, tmp_path):
    """Issue 20 item 9: the catalog says how its ids are stored; ids read back from a CSV are
    integers and join only after the documented string cast."""
    catalog = catalog_run.catalog()
    assert read_provenance(catalog_run.path / "catalog.parquet")["id_dtype"] == "string"
    assert fits.getheader(catalog_run.path / "catalog.fits", 0)["ID_DTYPE"] == "string"
    assert "astype(str)" in column_info("id")[1]
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": catalog["id"], "label": "x"}).to_csv(labels, index=False)
    read = pd.read_csv(labels)
    assert read["id"].dtype.kind == "i"  # the ids are numbers in the CSV
    joined = catalog.merge(read.assign(id=read["id"].astype(str)), on="id")
    assert len(joined) == len(catalog)
