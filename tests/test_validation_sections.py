"""The validation report's table views and sections on small tables, without a run directory."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from skymorph.core.validation_table import PartTable, ValidateError
from skymorph.report import Section
from skymorph.report.validation import build_sections, kept_rejected_section, per_type_section, types_section

TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC"]


def _data(**columns) -> PartTable:
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "morph_type": ["SPH", "UNC", "NOCONS", "LTD"],
                          **columns})
    return PartTable(table=table, raw=table.assign(raw=True), cols={"mass": None, "r_e_unit": "px"},
                     types=TYPES)


def test_part_table_views():
    data = _data(consensus=[True, None, False, True], index=[3, 2, None, 0])
    assert data.kept().tolist() == [True, False, False, True]
    assert data.rows().tolist() == [3, 2, -1, 0]  # no array row: -1
    notes: list[str] = []
    assert data.sample(notes, exclude_unc=True, min_mass=None)["id"].tolist() == ["a", "d"]
    assert data.sample(notes, exclude_unc=False, min_mass=None)["id"].tolist() == ["a", "b", "d"]
    sample = data.table.iloc[[1, 3]]
    assert data.raw_rows(sample)["raw"].all() and data.raw_rows(sample).index.tolist() == [1, 3]
    plain = _data()
    assert plain.kept() is None and plain.rows().tolist() == [-1] * 4


def test_sections_say_why_they_are_skipped():
    section = Section(key="kept_rejected", title="")
    kept_rejected_section(section, _data())
    assert section.result is None and section.notes == ["skipped: the catalog has no consensus column"]
    section = Section(key="kept_rejected", title="")
    kept_rejected_section(section, _data(consensus=True))
    assert section.notes == ["skipped: every galaxy is kept (or none is): nothing to compare"]
    section = Section(key="per_type", title="")
    per_type_section(section, _data(), exclude_unc=True, min_mass=None, g2_min_sn=0.0,
                     g2_noise_tolerance=None, rng=np.random.default_rng(0))
    assert section.notes == ["skipped: no measurements"] and not section.figures


def test_a_failing_part_becomes_a_note_and_a_validate_error_stops_the_report(caplog):
    def broken(data, section):
        raise ZeroDivisionError("boom")

    parts = [("types", "Sample", lambda data, s: types_section(s, data)), ("broken", "Broken", broken)]
    log = logging.getLogger("skymorph.test")
    with caplog.at_level(logging.WARNING, logger="skymorph.test"):
        types, failed = build_sections(parts, _data(), progress=False, log=log)
    assert types.result["unclassified"] == "UNC" and types.result["counts"]["SPH"] == 1
    assert failed.result is None and failed.notes == ["failed: ZeroDivisionError: boom"]
    assert "part broken failed: boom" in caplog.text

    def refused(data, section):
        raise ValidateError("bad input")

    with pytest.raises(ValidateError, match="bad input"):
        build_sections([("refused", "Refused", refused)], _data(), progress=False, log=log)
