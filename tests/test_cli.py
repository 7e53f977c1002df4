"""The command line: every stage is listed, settings flow from flags into config.toml."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import COSMOS_STAMPS
from skymorph.cli import COMMANDS as STAGES
from skymorph.cli import config_from_args, main
from skymorph.config import Config, ConfigError, load_config


def _skymorph(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skymorph.cli", *args], capture_output=True, text=True)


def test_help_lists_every_stage_of_the_design():
    result = _skymorph("--help")
    assert result.returncode == 0
    for stage in ("ingest", "denoise", "polar", "encode", "reduce", "cluster", "inspect", "measure",
                  "validate", "evaluate", "run"):
        assert stage in STAGES
        assert f"    {stage}" in result.stdout


@pytest.mark.slow
def test_every_stage_has_help():
    for stage in STAGES:
        result = _skymorph(stage, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: skymorph" in result.stdout


def test_ingest_flags_and_set_reach_config_toml(tmp_path):
    out = tmp_path / "run"
    code = main(["ingest", str(COSMOS_STAMPS), "--out", str(out), "--stamp-size", "80",
                 "--set", "ingest.seed=7", "--select", "MAG < 24"])
    assert code == 0
    text = (out / "config.toml").read_text()
    assert "stamp_size = 80" in text and "seed = 7" in text and 'select = ["MAG < 24"]' in text


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["ingest", str(COSMOS_STAMPS), "--out", str(tmp_path / "r"), "--set", "ingest.nope=1"]) == 1
    assert "unknown setting(s) nope" in capsys.readouterr().err


def test_config_presets_and_toml(tmp_path):
    paper = load_config(preset="paper")
    assert paper.encode.encoder == "convnext_xlarge.fb_in22k" and paper.cluster.k == 20
    # the default's wider UMAP neighbourhood (issue 19) is not the paper's
    assert paper.reduce.n_neighbors == 15 and Config().reduce.n_neighbors == 30
    path = tmp_path / "settings.toml"
    path.write_text(Config().to_toml() + "\n")
    assert load_config(path) == Config()
    path.write_text("[cluster]\nk = 12\n")
    assert load_config(path).cluster.k == 12
    with pytest.raises(ConfigError, match="unknown config section"):
        Config().update({"clustering": {"k": 3}})


def test_later_stages_start_from_the_runs_recorded_settings(tmp_path):
    from skymorph.cli import build_parser

    out = tmp_path / "run"
    assert main(["ingest", str(COSMOS_STAMPS), "--out", str(out), "--set", "cluster.k=7"]) == 0
    parser = build_parser("cluster")
    assert config_from_args(parser.parse_args(["cluster", str(out)])).cluster.k == 7
    assert config_from_args(parser.parse_args(["cluster", str(out), "--k", "5"])).cluster.k == 5
    paper = config_from_args(parser.parse_args(["cluster", str(out), "--preset", "paper"]))
    assert paper.polar.enabled and paper.cluster.k == 20
