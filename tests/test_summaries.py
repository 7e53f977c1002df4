"""Typed stage summaries (issue 18, finding 9): a missing key fails loudly in a run of this
skymorph, and an older run directory shows ``?``, never a silent 0."""

from __future__ import annotations

import json

import pytest

from skymorph.config import Config
from skymorph.io.rundir import RunDir
from skymorph.summaries import (
    SUMMARY_SCHEMA,
    TYPED_SUMMARIES,
    ClusterSummary,
    SummaryError,
    check_written,
    read_summary,
)

CLUSTER = {"n_galaxies": 100, "n_kept": 61, "kept_fraction": 0.61}


def test_a_summary_without_a_declared_key_is_refused_at_write():
    with pytest.raises(RuntimeError, match="stage cluster returned a summary without kept_fraction"):
        check_written("cluster", {"n_galaxies": 100, "n_kept": 61})
    assert check_written("cluster", CLUSTER)["summary_schema"] == SUMMARY_SCHEMA
    assert check_written("polar", {"n_stamps": 3}) == {"n_stamps": 3}  # not a typed stage


@pytest.mark.parametrize("stage", list(TYPED_SUMMARIES))
def test_a_record_of_this_version_missing_a_key_fails_with_what_to_do(stage):
    with pytest.raises(SummaryError, match=rf"stages/{stage}.json lacks .*skymorph {stage} RUN_DIR --force"):
        read_summary(stage, {"summary_schema": SUMMARY_SCHEMA})


def test_an_older_record_gives_none_and_the_report_prints_a_question_mark(tmp_path):
    assert read_summary("cluster", {"stage": "cluster", **CLUSTER}) == ClusterSummary(100, 61, 0.61)
    old = read_summary("cluster", {"stage": "cluster", "n_galaxies": 100})  # renamed/absent n_kept
    assert old.n_kept is None and old.kept_fraction is None
    from skymorph.stages.cluster import _report

    text = _report(RunDir.create(tmp_path / "run"), {"n_galaxies": 100}, {})
    assert text.startswith("? of 100 galaxies kept by the vote (?%)")


def test_the_validation_report_rows_show_unknown_values_as_question_marks():
    from skymorph.stages.validate import _settings_rows

    records = {"ingest": {"n_stamps": 100}, "cluster": {"n_galaxies": 100},
               "measure": {"n_galaxies": 100, "n_measured": 90}}
    rows = {r["label"]: r["value"] for r in _settings_rows(Config(), records)}
    assert rows["galaxies"] == "100 stamps (? rejected)"
    assert rows["kept by the consensus"] == "? of 100"
    assert rows["measured (valid non-parametric values)"] == "90 of 100"
    records["cluster"] = {**CLUSTER, "summary_schema": SUMMARY_SCHEMA}
    assert {r["label"]: r["value"] for r in _settings_rows(Config(), records)}[
        "kept by the consensus"] == "61 of 100 (61%)"
    records["cluster"] = {"n_galaxies": 100, "summary_schema": SUMMARY_SCHEMA}
    with pytest.raises(SummaryError, match="stages/cluster.json lacks n_kept, kept_fraction"):
        _settings_rows(Config(), records)


def test_a_real_stage_records_its_typed_summary(cosmos_run):
    info = json.loads((cosmos_run.path / "stages" / "ingest.json").read_text())
    assert info["summary_schema"] == SUMMARY_SCHEMA
    summary = read_summary("ingest", info)
    assert summary.n_stamps == 100 and summary.n_rejected is not None
