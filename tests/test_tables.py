"""One table reader (skymorph.io.tables): ids are exact text in every format, for every stage."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from conftest import GZ1
from skymorph import Config, ingest
from skymorph.io.tables import TableError, read_table
from skymorph.stages.evaluate import read_truth

IDS = [587722981741363294, 587722953303916935, 587722982825001149]


def test_18_digit_ids_survive_a_blank_id_in_a_csv(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("objid,mag\n" + "\n".join(f"{i},{17 + k}.5" for k, i in enumerate(IDS)) + "\n,20.0\n")
    table = read_table(path, id_col="objid")
    assert table["objid"].tolist() == [str(i) for i in IDS] + [""]
    assert table["mag"].dtype == np.float64  # only the id column is text


def test_the_same_ids_from_csv_parquet_and_fits(tmp_path):
    frame = pd.DataFrame({"objid": np.array(IDS, dtype=np.int64), "label": ["E", "S", "E"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet")
    Table.from_pandas(frame).write(tmp_path / "t.fits")
    Table.from_pandas(frame).write(tmp_path / "t.cat", format="fits")  # a FITS file by its content
    for name in ("t.csv", "t.tsv", "t.parquet", "t.fits", "t.cat"):
        table = read_table(tmp_path / name, id_col="objid", text_columns=["label"])
        assert table["objid"].tolist() == [str(i) for i in IDS], name
        assert table["label"].tolist() == ["E", "S", "E"], name


def test_leading_zeros_stay_and_float_ids_that_lost_digits_are_refused(tmp_path):
    (tmp_path / "z.csv").write_text("id,x\n007,1\n010,2\n")
    assert read_table(tmp_path / "z.csv", id_col="id")["id"].tolist() == ["007", "010"]
    pd.DataFrame({"id": np.array(IDS, dtype=np.float64)}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(TableError, match="floating point"):
        read_table(tmp_path / "f.parquet", id_col="id")
    with pytest.raises(TableError, match="catalog .* does not exist"):
        read_table(tmp_path / "none.csv", what="catalog")


def test_ingest_and_evaluate_read_the_same_ids_from_one_catalog(tmp_path):
    """An 18-digit objid column with one blank id: ingest used to read it as floating
    point (every image then had an id the catalog did not hold), evaluate as text."""
    labels = pd.read_csv(GZ1 / "labels.csv", dtype=str).head(4)
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("objid,gz1_name\n" + "".join(f"{r.objid},{r.gz1_name}\n" for r in labels.itertuples())
                       + ",unknown\n")
    images = [GZ1 / "images" / f"{objid}.jpeg" for objid in labels["objid"]]
    config = Config().update({"ingest": {"catalog": str(catalog), "id_col": "objid"}})
    run = ingest(images, tmp_path / "run", config, progress=False)
    ids = run.sources()["id"].tolist()
    assert sorted(ids) == sorted(labels["objid"])
    truth = read_truth(catalog, "objid", "gz1_name")
    assert set(ids) <= set(truth["id"])


def test_the_examples_in_the_docstrings_run():
    import doctest

    from skymorph.io import atomic, tables

    for module in (tables, atomic):
        result = doctest.testmod(module)
        assert result.attempted >= 2 and result.failed == 0, module.__name__


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary():
    import tempfile
    from pathlib import Path

    from skymorph.io.atomic import write_text_atomic

    path = Path(tempfile.mkdtemp()) / "evaluation.json"
    write_text_atomic(path, '{"old": 1}')
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "\ud800")  # cannot be encoded: the write fails half way
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in path.parent.iterdir()] == ["evaluation.json"]


def test_a_writer_that_fails_inside_atomic_file_leaves_the_old_table(tmp_path):
    from skymorph.io.atomic import atomic_file

    path = tmp_path / "subclusters.parquet"
    pd.DataFrame({"id": ["a"]}).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="half written"), atomic_file(path) as tmp:
        pd.DataFrame({"id": ["b", "c"]}).to_parquet(tmp, index=False)
        raise ValueError("half written")
    assert pd.read_parquet(path)["id"].tolist() == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["subclusters.parquet"]
    with atomic_file(path, unique=True) as tmp:
        assert str(os.getpid()) in tmp.name
        pd.DataFrame({"id": ["b"]}).to_parquet(tmp, index=False)
    assert pd.read_parquet(path)["id"].tolist() == ["b"]
