"""Rough edges of the command line (issue 20, items 7, 10, 11, 12): execution-only settings
stay with their command, `--no-*` flags say what they do, options are offered only where
they act, and tables, `info` and the log read well."""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tomllib

import pandas as pd
import pytest

from conftest import COSMOS_STAMPS
from skymorph.cli import COMMANDS, build_parser, config_from_args, main
from skymorph.config import Config, all_settings
from skymorph.io.rundir import RunDir


def _skymorph(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymorph.cli", *args], capture_output=True, text=True)


def _recorded(run_path) -> dict:
    return tomllib.loads((run_path / "config.toml").read_text())


def _subparser(command: str, *path: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    for name in (command, *path):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


# --- item 7: execution-only settings apply to one command -----------------------------------------


@pytest.fixture
def run_copy(cosmos_run, tmp_path) -> RunDir:
    shutil.copytree(cosmos_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def test_a_scheduler_given_once_is_not_saved_for_later_commands(tmp_path):
    out = tmp_path / "run"
    assert main(["ingest", str(COSMOS_STAMPS), "--out", str(out), "--scheduler", "synchronous",
                 "--workers", "1", "--stamp-size", "64", "-q"]) == 0
    recorded = _recorded(out)
    assert recorded["compute"]["scheduler"] == "local" and recorded["ingest"]["workers"] == 0
    assert recorded["ingest"]["stamp_size"] == 64  # a result setting is recorded as before
    # the next command on the run starts from the local default, not the one-off scheduler
    parser = build_parser("polar")
    assert config_from_args(parser.parse_args(["polar", str(out)])).compute.scheduler == "local"


def test_save_settings_records_execution_settings_on_purpose(run_copy):
    path = str(run_copy.path)
    # the stage is reused (ingest is current), and the settings are still saved as asked
    assert main(["ingest", str(COSMOS_STAMPS), "--out", path, "--scheduler", "synchronous", "--workers", "1",
                 "--save-settings", "-q"]) == 0
    recorded = _recorded(run_copy.path)
    assert recorded["compute"]["scheduler"] == "synchronous" and recorded["ingest"]["workers"] == 1
    # a later one-off value does not overwrite the saved one
    assert main(["polar", path, "--scheduler", "threads", "--batch-size", "7", "-q"]) == 0
    recorded = _recorded(run_copy.path)
    assert recorded["compute"]["scheduler"] == "synchronous" and recorded["polar"]["batch_size"] == 1024
    assert recorded["polar"]["enabled"] is True  # the switch a stage run by hand turns on is kept


def test_python_api_keywords_of_execution_settings_are_not_recorded(run_copy):
    import skymorph

    skymorph.polar(run_copy, batch_size=16, progress=False)
    assert _recorded(run_copy.path)["polar"]["batch_size"] == 1024
    assert run_copy.config().polar.enabled


def test_execution_only_settings_are_those_that_change_no_result():
    execution = {s.key for s in all_settings() if s.execution}
    assert {"compute.scheduler", "ingest.workers", "measure.workers", "encode.batch_size", "encode.device",
            "encode.threads", "denoise.device", "polar.batch_size"} <= execution
    assert not any(s.result for s in all_settings() if s.execution)
    # switches that decide what later stages read are recorded like results
    assert not {"denoise.enabled", "polar.enabled", "denoise.checkpoint"} & execution
    config = Config().update({"compute": {"scheduler": "threads"}, "cluster": {"k": 7}})
    kept = config.with_execution_settings(Config())
    assert kept.compute.scheduler == "local" and kept.cluster.k == 7


# --- item 10: --no-* flags say that they switch something off -------------------------------------


@pytest.mark.parametrize("command,flag", [("measure", "--no-sersic"), ("ingest", "--no-recentre"),
                                          ("measure", "--no-rms-array"), ("measure", "--no-psf-array"),
                                          ("polar", "--no-mirror"), ("reduce", "--no-map")])
def test_no_flags_describe_switching_off(command, flag):
    parser = _subparser(command)
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert action.help.startswith("switch off"), action.help
    assert "=false" in action.help and "default: True" not in action.help
    args = parser.parse_args(["RUN", flag] if command != "ingest" else ["x", "--out", "RUN", flag])
    assert getattr(args, action.dest) is False


# --- item 11: options only where they act, help and README agree ----------------------------------


CHUNKED = ("ingest", "denoise", "polar", "encode", "reduce", "cluster", "measure")


@pytest.mark.parametrize("command", ["extend", "validate", "evaluate", "info"])
def test_scheduler_is_offered_only_where_chunks_run(command):
    assert "--scheduler" not in _options(_subparser(command))


@pytest.mark.parametrize("command", CHUNKED)
def test_chunked_stages_offer_the_scheduler(command):
    assert "--scheduler" in _options(_subparser(command))


def test_inspect_actions_offer_no_scheduler_and_run_does():
    for action in ("montage", "serve", "merge", "auto"):
        assert "--scheduler" not in _options(_subparser("inspect", action)), action
    assert "--scheduler" in _options(_subparser("run"))


def test_force_and_verbosity_are_where_the_readme_says():
    no_force = {("inspect", "serve"), ("inspect", "auto"), ("evaluate",), ("run",), ("info",)}
    for command in COMMANDS:
        paths = [(command, a) for a in ("montage", "serve", "merge", "auto")] if command == "inspect" \
            else [(command,)]
        for path in paths:
            options = _options(_subparser(*path))
            assert ("--force" in options) == (path not in no_force), path
            assert ("--set" in options) == (path != ("info",)), path
            assert ("-v" in options) == (path != ("info",)), path


def test_evaluate_help_has_no_classs_typo():
    result = _skymorph("evaluate", "--help")
    assert result.returncode == 0
    assert "classs" not in result.stdout and "table of known classes" in result.stdout


# --- item 12: CLI cosmetics --------------------------------------------------------------------------


def test_long_type_names_keep_the_tables_aligned():
    from skymorph.inspection.merge import format_counts

    counts = pd.DataFrame({"type": ["ELLIPTICAL_GALAXY", "SPH", "total"], "n_clusters": [3, 12, 15],
                           "n_galaxies": [1234, 56, 1290], "fraction": [0.957, 0.043, 1.0]})
    lines = format_counts(counts).splitlines()
    assert "ELLIPTICAL_GALAXY " in lines[1]  # never runs into the next column
    ends = {len(line) for line in lines}
    assert len(ends) == 1, lines  # right-aligned numbers end in one column


def test_evaluate_confusion_table_keeps_long_class_names():
    from skymorph.stages.evaluate import format_report, score_labels

    truth = ["elliptical_galaxy"] * 6 + ["spiral_anticlockwise"] * 6
    r = score_labels(truth, [0] * 5 + [1] * 7, per_cluster=10, seed=0)
    text = format_report(r)
    assert "spiral_anticlockwise" in text and "elliptical_galaxy" in text
    table = text[text.index("confusion"):].splitlines()[1:4]
    assert len({len(line) for line in table}) == 1, table


def test_info_lists_stages_in_pipeline_order(run_copy):
    import skymorph

    skymorph.cluster  # noqa: B018 - the API is importable
    for name in ("reduce", "cluster", "encode"):  # finished in this (odd) order
        run_copy.mark_done(name, "x")
    result = _skymorph("info", str(run_copy.path))
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if " finished " in line]
    assert listed == ["ingest", "encode", "reduce", "cluster"]
    arrays = [line.split()[0] for line in result.stdout.splitlines()
              if line.startswith("  ") and " x " in line and " finished " not in line]
    assert arrays[0] == "stamps"


def test_info_into_a_closed_pipe_is_quiet(run_copy):
    process = subprocess.Popen([sys.executable, "-m", "skymorph.cli", "info", str(run_copy.path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head` does once it has its lines: closed before anything is written
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait(60) == 0
    assert "Broken pipe" not in stderr and "disk has room" not in stderr and "Traceback" not in stderr, stderr


def test_default_verbosity_prints_no_info_lines(run_copy, capfd):
    logging.getLogger("skymorph").setLevel(logging.NOTSET)
    try:
        result = _skymorph("polar", str(run_copy.path))
        assert result.returncode == 0, result.stderr
        assert "INFO" not in result.stderr and "INFO" not in result.stdout
        assert "polar.enabled was false" in result.stderr  # warnings still show
        verbose = _skymorph("polar", str(run_copy.path), "-v")
        assert "INFO skymorph" in verbose.stderr and "unchanged, reusing" in verbose.stderr
    finally:
        logging.getLogger("skymorph").setLevel(logging.NOTSET)
