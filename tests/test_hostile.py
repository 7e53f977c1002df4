"""Hostile and careless input (issue 23): one bad file never stops a run, ``--select`` runs no
code, every CSV is spreadsheet-safe, non-finite features get no type.

The bad inputs are tables: add a row to :data:`BAD_FILES` (a name, a function that writes the
file into a directory, and a piece of the reason expected in rejects.csv) or to
:data:`HOSTILE_SELECTIONS` (an expression and a piece of the expected error).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from conftest import COSMOS_STAMPS
from skymorph import Config, RunDir, ingest
from skymorph.cli import main
from skymorph.io.csvfile import escape_cell, read_csv, safe_frame
from skymorph.io.selection import SelectionError, evaluate_selection
from skymorph.stages.ingest import IngestError, select_rows


def _galaxy(index: int = 0) -> np.ndarray:
    return fits.getdata(COSMOS_STAMPS / "real_galaxy_images_extension.fits", index).astype(np.float32)


def _npy_header(text: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


# --- the table of bad files -------------------------------------------------------------------
# Each writer puts one file into ``d`` and returns its name (the id is its stem).


def _npy_header_cut_in_a_tuple(d: Path) -> str:
    # numpy's header parser raises tokenize.TokenError on this (not a ValueError)
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (10,\n"
    (d / "cut_tuple.npy").write_bytes(_npy_header(header))
    return "cut_tuple.npy"


def _npy_header_cut_short(d: Path) -> str:
    buf = io.BytesIO()
    np.save(buf, _galaxy(1))
    (d / "cut_short.npy").write_bytes(buf.getvalue()[:40])
    return "cut_short.npy"


def _npy_header_not_a_dict(d: Path) -> str:
    (d / "notdict.npy").write_bytes(_npy_header(b"[1, 2, 3]\n"))
    return "notdict.npy"


def _float64_near_1e306(d: Path) -> str:
    np.save(d / "huge.npy", _galaxy(2).astype(np.float64) * 1e304 + 1e306)
    return "huge.npy"


def _fits_named_png(d: Path) -> str:
    fits.writeto(d / "fits_inside.png", _galaxy(3))
    return "fits_inside.png"


def _png_named_fits(d: Path) -> str:
    from PIL import Image

    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 200).save(d / "png_inside.fits",
                                                                                   format="PNG")
    return "png_inside.fits"


def _npz_beside_images(d: Path) -> str:
    np.savez(d / "bundle.npz", a=_galaxy(4))
    return "bundle.npz"


def _txt_beside_images(d: Path) -> str:
    (d / "notes.txt").write_text("observing log\n")
    return "notes.txt"


def _link_to_proc_mem(d: Path) -> str:
    os.symlink("/proc/1/mem", d / "mem.fits")
    return "mem.fits"


BAD_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("npy header cut inside a tuple", _npy_header_cut_in_a_tuple, "damaged header"),
    ("npy header cut short", _npy_header_cut_short, "unreadable NPY"),
    ("npy header not a dict", _npy_header_not_a_dict, "damaged header"),
    ("float64 beyond float32", _float64_near_1e306, "beyond what a float32 stamp holds"),
    ("FITS named .png", _fits_named_png, "holds FITS data but its name ends in .png; rename it"),
    ("PNG named .fits", _png_named_fits, "holds PNG data but its name ends in .fits"),
    (".npz beside images", _npz_beside_images, "not an image file (.npz)"),
    (".txt beside images", _txt_beside_images, "not an image file (.txt)"),
    ("link to /proc/1/mem", _link_to_proc_mem, "cannot be read"),
]


@pytest.mark.parametrize(("name", "make", "reason"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_a_reject_and_the_good_ones_all_go_in(tmp_path, name, make, reason):
    d = tmp_path / "in"
    d.mkdir()
    n_good = 70  # more than one batch of work
    galaxy = _galaxy(0)
    for i in range(n_good):
        np.save(d / f"good{i:03d}.npy", np.roll(galaxy, i, axis=1))
    bad = make(d)
    run = ingest([d], tmp_path / "run", Config().update({"ingest": {"workers": 1}}), progress=False)
    assert len(run.sources()) == n_good
    rejects = run.rejects("ingest")
    assert rejects["origin"].tolist() == [str(d / bad)]
    assert reason in rejects["reason"].iloc[0]
    assert np.isfinite(np.asarray(run.open_array("stamps"))).all()


# --- inputs that must go in --------------------------------------------------------------------


def test_gzip_fits_with_a_plain_fits_name_is_read(tmp_path):
    buf = io.BytesIO()
    fits.writeto(buf, _galaxy(5))
    (tmp_path / "packed.FITS").write_bytes(gzip.compress(buf.getvalue()))
    run = ingest([tmp_path / "packed.FITS"], tmp_path / "run", Config(), progress=False)
    assert run.sources()["id"].tolist() == ["packed"] and run.rejects("ingest").empty


def test_file_names_that_are_not_utf8_are_ingested_or_rejected_with_the_name_escaped(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = os.fsdecode(b"gal\xff")  # how Python holds a name that is not valid UTF-8
    np.save(os.path.join(d, good + ".npy"), _galaxy(6))
    (d / os.fsdecode(b"bad\xfe.fits")).write_bytes(b"")
    run = ingest([d], tmp_path / "run", Config(), progress=False)
    assert run.sources()["id"].tolist() == ["gal\\xff"]
    rejects = run.rejects("ingest")
    assert rejects["id"].tolist() == ["bad\\xfe"] and "zero-byte" in rejects["reason"].iloc[0]
    assert rejects["origin"].iloc[0].endswith("bad\\xfe.fits")


FORMULA_NAMES = ["=2+5", "@SUM(1+1)", "+cmd", "-2+3", "'quoted"]


def test_rejects_csv_is_spreadsheet_safe_and_reads_back_as_written(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "ok.npy", _galaxy(7))
    for name in FORMULA_NAMES:
        (d / f"{name}.fits").write_bytes(b"")  # empty: a reject whose id is the name
    run = ingest([d], tmp_path / "run", Config(), progress=False)
    with open(run.rejects_path, newline="", encoding="utf-8") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert sorted(run.rejects("ingest")["id"]) == sorted(FORMULA_NAMES)
    # a second ingest rewrites the file (clear_rejects) and keeps it safe
    ingest([d], tmp_path / "run", Config(), progress=False, force=True)
    assert sorted(RunDir(tmp_path / "run").rejects("ingest")["id"]) == sorted(FORMULA_NAMES)


def test_the_csv_helper_escapes_text_not_numbers(tmp_path):
    frame = pd.DataFrame({"type": ["=cmd", "SPH", "-x"], "value": [-1.5, 2.0, -3.0]})
    safe = safe_frame(frame)
    assert safe["type"].tolist() == ["'=cmd", "SPH", "'-x"] and safe["value"].tolist() == [-1.5, 2.0, -3.0]
    safe.to_csv(tmp_path / "t.csv", index=False)
    back = read_csv(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(back, frame)
    assert escape_cell("\tx") == "'\tx"


# --- --select: a whitelist, never code ---------------------------------------------------------

TABLE = pd.DataFrame({"z": [0.1, 0.5, 1.0, 1.5], "I": [24.0, 26.0, 23.0, 24.5],
                      "name": ["a", "b", "c", "d"], "my col": [1, 2, 3, 4]})

GOOD_SELECTIONS = [
    ("0.2 < z < 1.2", [False, True, True, False]),
    ("z > 0.2 and I < 25", [False, False, True, True]),
    ("(z > 0.2) & (I < 24.2) | (name == 'a')", [True, False, True, False]),
    ("not z > 0.2", [True, False, False, False]),
    ("abs(z - 1) < 0.6", [False, True, True, True]),
    ("isfinite(log10(z)) and sqrt(z) >= 1", [False, False, True, True]),
    ("`my col` % 2 == 0", [False, True, False, True]),
    ("-z < -1", [False, False, False, True]),
]


@pytest.mark.parametrize(("expression", "expected"), GOOD_SELECTIONS)
def test_allowed_selections(expression, expected):
    assert select_rows(TABLE, [expression]).tolist() == expected


HOSTILE_SELECTIONS = [
    ("z.values.tofile('{out}') == 1", "a call of 'z.values.tofile'"),
    ("__import__('os').system('touch {out}') == 0", "a call of \"__import__('os').system\""),
    ("open('{out}', 'w') == 1", "a call of 'open'"),
    ("exec('open(\"{out}\", \"w\")') == 1", "a call of 'exec'"),
    ("getattr(z, 'values') == 1", "a call of 'getattr'"),
    ("z.__class__ == 1", "attribute access"),
    ("`z`.values.tofile('{out}') == 1", "a call of '`z`.values.tofile'"),
    ("z.values == 1", "attribute access"),
    ("z[0] == 1", "indexing"),
    ("(lambda: 1)() == 1", "a call of"),
    ("[c for c in z] == 1", "ListComp"),
    ("z if z else z", "IfExp"),
    ("z == b'x'", "the constant b'x'"),
    ("abs(z, z) > 1", "takes one argument"),
    ("abs(x=z) > 1", "takes one argument"),
    ("@z > 1", "not a valid expression"),
    ("z +", "not a valid expression"),
    ("z + 1", "not a yes/no test"),
    ("name", "not a yes/no test"),
    ("z > 1 and 5", "yes/no tests"),
    ("nope > 1", "column(s) nope"),
    ("z > 0" + " and z > 0" * 200, "longer than 1000"),
]


@pytest.mark.parametrize(("expression", "error"), HOSTILE_SELECTIONS,
                         ids=[h[0][:40] for h in HOSTILE_SELECTIONS])
def test_hostile_selections_are_refused_and_run_nothing(tmp_path, expression, error):
    out = tmp_path / "written_by_a_selection"
    expression = expression.replace("{out}", str(out))
    with pytest.raises(IngestError) as caught:
        select_rows(TABLE, [expression])
    assert error in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
    assert not out.exists()


def test_hostile_selection_is_refused_before_config_toml_records_it(tmp_path):
    out = tmp_path / "written"
    np.save(tmp_path / "g.npy", _galaxy(8))
    (tmp_path / "cat.csv").write_text("id,z\ng,0.5\n")
    rc = main(["ingest", str(tmp_path / "g.npy"), "--out", str(tmp_path / "run"), "--catalog",
               str(tmp_path / "cat.csv"), "--id-col", "id", "--select", f"z.values.tofile('{out}') == 1"])
    assert rc == 1 and not out.exists()
    assert not (tmp_path / "run" / "config.toml").exists()


def test_selection_evaluator_needs_no_dataframe():
    mask = evaluate_selection("x > 1", {"x": np.array([0.0, 2.0, np.nan])}, 3)
    assert mask.tolist() == [False, True, False]
    with pytest.raises(SelectionError):
        evaluate_selection("x.sum() > 1", {"x": np.zeros(3)}, 3)


def test_a_selection_that_keeps_nothing_says_so(tmp_path):
    np.save(tmp_path / "g.npy", _galaxy(9))
    (tmp_path / "cat.csv").write_text("id,z\ng,0.5\n")
    config = Config().update({"ingest": {"catalog": str(tmp_path / "cat.csv"), "id_col": "id",
                                         "select": ["z > 5"]}})
    with pytest.raises(IngestError, match=r"keeps none of the 1 galaxies; loosen --select") as caught:
        ingest([tmp_path / "g.npy"], tmp_path / "run", config, progress=False)
    assert "rejects.csv" not in str(caught.value)


def test_duplicate_catalog_ids_are_rejects_not_the_first_row(tmp_path):
    for name in ("g1", "g2"):
        np.save(tmp_path / f"{name}.npy", _galaxy(int(name[1])))
    (tmp_path / "cat.csv").write_text("id,z\ng1,0.5\ng2,0.5\ng2,3.0\n")
    config = Config().update({"ingest": {"catalog": str(tmp_path / "cat.csv"), "id_col": "id"}})
    run = ingest([tmp_path / "g1.npy", tmp_path / "g2.npy"], tmp_path / "run", config, progress=False)
    assert run.sources()["id"].tolist() == ["g1"]
    reasons = run.rejects("ingest").set_index("id")["reason"]
    assert "appears 2 times" in reasons["g2"]


# --- a run that stops part-way is marked unfinished -------------------------------------------


def test_an_ingest_that_stops_part_way_is_marked_unfinished(tmp_path, capsys):
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(IngestError, match="none of the inputs"):
        ingest([tmp_path / "empty.fits"], tmp_path / "run", Config(), progress=False)
    run = RunDir(tmp_path / "run")
    assert "ingest" in run.unfinished()
    assert main(["info", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "UNFINISHED" in out and "(partial: ingest did not finish)" in out
    assert main(["encode", str(run.path)]) == 1
    err = capsys.readouterr().err
    assert "started but did not finish" in err and f"`skymorph ingest INPUT... --out {run.path}`" in err


# --- config.toml never claims settings the outputs were not made with --------------------------


@pytest.fixture
def small_run(tmp_path):
    """A real run: COSMOS stamps ingested at a non-default size (recorded in stages/ingest.json)."""
    config = Config().update({"ingest": {"stamp_size": 64, "workers": 1}})
    return ingest([COSMOS_STAMPS], tmp_path / "run", config, progress=False)


def _recorded_stamp_size(run: RunDir) -> int:
    from skymorph.config import load_config

    return load_config(run.path / "config.toml").ingest.stamp_size


@pytest.mark.parametrize("damage", ["empty", "comments only", "missing"])
def test_a_missing_or_empty_config_toml_is_rebuilt_from_the_stage_records(small_run, damage, capsys):
    path = small_run.path / "config.toml"
    if damage == "missing":
        path.unlink()
    else:
        path.write_text("" if damage == "empty" else "# nothing here\n\n")
    (small_run.path / "stages" / "encode.partial.json").write_text("{}")  # a resume record, not a stage's
    assert small_run.config().ingest.stamp_size == 64
    assert main(["polar", str(small_run.path)]) == 0
    assert _recorded_stamp_size(small_run) == 64
    assert small_run.config().polar.enabled  # the polar stage's own record
    assert np.asarray(RunDir(small_run.path).open_array("polar")).shape[0] == len(small_run.sources())


def test_a_config_toml_that_disagrees_with_the_stage_records_is_refused(small_run, capsys):
    path = small_run.path / "config.toml"
    path.write_text(path.read_text().replace("stamp_size = 64", "stamp_size = 80"))
    before = path.read_text()
    assert main(["polar", str(small_run.path)]) == 1
    err = capsys.readouterr().err
    assert "ingest.stamp_size is 80 in the settings, but the outputs of 'ingest'" in err
    assert "were made with 64 (stages/ingest.json)" in err and len(err.strip().splitlines()) == 1
    assert path.read_text() == before and not small_run.has_array("polar")
    # the same change given on the command line is refused too
    path.write_text(before.replace("stamp_size = 80", "stamp_size = 64"))
    assert main(["polar", str(small_run.path), "--set", "ingest.stamp_size=32"]) == 1
    assert _recorded_stamp_size(small_run) == 64


def test_an_empty_config_toml_with_records_from_an_older_skymorph_is_refused(small_run, capsys):
    record = small_run.path / "stages" / "ingest.json"
    info = __import__("json").loads(record.read_text())
    del info["settings_used"]  # as an older skymorph wrote it
    record.write_text(__import__("json").dumps(info))
    (small_run.path / "config.toml").write_text("")
    assert main(["polar", str(small_run.path)]) == 1
    err = capsys.readouterr().err
    assert "config.toml is empty and stages/ingest.json does not record the settings" in err


def test_a_binary_config_toml_is_named(small_run, capsys):
    (small_run.path / "config.toml").write_bytes(b"\xff\xfe\x00binary")
    assert main(["polar", str(small_run.path)]) == 1
    assert f"{small_run.path / 'config.toml'} cannot be read as settings" in capsys.readouterr().err


# --- a damaged run directory: one-line errors that name the file, no tracebacks, no loops ------


def _edit_json(path: Path, **changes) -> None:
    import json

    info = json.loads(path.read_text())
    for key, value in changes.items():
        if callable(value):
            value(info[key])
        else:
            info[key] = value
    path.write_text(json.dumps(info))


def _int_fingerprint(run: RunDir) -> None:
    _edit_json(run.path / "stages" / "ingest.json", fingerprint=5)


def _lost_chunk(run: RunDir) -> None:
    import shutil

    shutil.rmtree(run.array_path("stamps") / "c" / "0")


def _truncated_chunk(run: RunDir) -> None:
    chunk = run.array_path("stamps") / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:25])


def _fewer_rows_claimed(run: RunDir) -> None:
    _edit_json(run.array_path("stamps") / "zarr.json", shape=lambda shape: shape.__setitem__(0, 50))


def _truncated_sources(run: RunDir) -> None:
    path = run.path / "sources.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty_sources(run: RunDir) -> None:
    (run.path / "sources.parquet").write_bytes(b"")


def _binary_rejects(run: RunDir) -> None:
    run.rejects_path.write_bytes(b"\xff\xfe\x00\x01binary\x00" * 20)


DAMAGED_RUNS: list[tuple[str, Callable[[RunDir], None], list[str], str]] = [
    ("integer fingerprint", _int_fingerprint, ["polar"], "ingest.json is damaged (its fingerprint is 5"),
    ("lost chunk", _lost_chunk, ["polar"], "has lost 1 of"),
    ("lost chunk, info", _lost_chunk, ["info"], "DAMAGED: the 'stamps' array"),
    ("truncated chunk", _truncated_chunk, ["polar"], "stamps.zarr/c/0/0/0) holds 25 bytes"),
    ("truncated chunk, info", _truncated_chunk, ["info"], "DAMAGED: chunk 0 of the 'stamps' array"),
    ("zarr.json claims 50 rows", _fewer_rows_claimed, ["polar"], "has 50 rows but sources.parquet 100"),
    ("truncated sources.parquet", _truncated_sources, ["polar"], "sources.parquet is damaged"),
    ("empty sources.parquet", _empty_sources, ["polar"], "sources.parquet is damaged"),
    ("binary rejects.csv", _binary_rejects, ["info"], "rejects.csv is damaged"),
    ("scheduler with no host", lambda run: None, ["polar", "--scheduler", "tcp://"], "names no host"),
    ("scheduler over http", lambda run: None, ["polar", "--scheduler", "http://127.0.0.1:80"],
     "http:// is not a Dask protocol"),
]


@pytest.mark.parametrize(("name", "damage", "command", "message"), DAMAGED_RUNS,
                         ids=[d[0] for d in DAMAGED_RUNS])
def test_a_damaged_run_gives_one_line_that_names_the_damage(small_run, capsys, name, damage, command,
                                                             message):
    damage(small_run)
    rc = main([command[0], str(small_run.path), *command[1:]])
    out, err = capsys.readouterr()
    text = out + err
    assert message in text
    assert "Traceback" not in text
    if command[0] != "info":
        assert rc == 1 and len(err.strip().splitlines()) == 1


def test_a_stage_whose_output_is_damaged_computes_it_again(small_run):
    _lost_chunk(small_run)
    config = Config().update({"ingest": {"stamp_size": 64, "workers": 1}})
    ingest([COSMOS_STAMPS], small_run.path, config, progress=False)  # no --force needed
    stamps = RunDir(small_run.path).open_array("stamps")
    assert stamps.shape[0] == 100 and np.isfinite(np.asarray(stamps)).all()


def test_weights_that_are_a_directory_are_named_as_such(tmp_path):
    from skymorph.core.encoders import EncoderError, weights_identity

    config = Config().update({"encode": {"weights": str(tmp_path)}})
    with pytest.raises(EncoderError, match="is a directory"):
        weights_identity(config.encode)


def test_a_binary_votes_file_is_named(tmp_path):
    from skymorph.inspection import InspectError
    from skymorph.inspection.merge import read_votes

    (tmp_path / "votes.csv").write_bytes(b"\xff\xfe\x00binary\x00" * 10)
    with pytest.raises(InspectError, match="vote file .*votes.csv cannot be read as CSV text"):
        read_votes([tmp_path / "votes.csv"], ["SPH", "UNC"])


def test_a_damaged_catalog_is_named(small_run):
    from skymorph.io.rundir import RunDirError

    (small_run.path / "catalog.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RunDirError, match="catalog.parquet is damaged"):
        small_run.catalog()
