"""A stage from another package (entry-point group ``skymorph.stages``): a real package with its
``dist-info`` in a folder put on ``sys.path``, found by ``importlib.metadata`` as if installed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

import skymorph
from skymorph import registry
from skymorph.cli import build_parser, main
from skymorph.config import ConfigError, _fields
from skymorph.io.rundir import RunDir
from skymorph.stages import PluginError, get_stage

HELLO = '''\
"""A stage from another package: the mean of every stamp, written into the run directory."""

import json

import numpy as np

from skymorph.stages import Argument, Stage


def _compute(ctx):
    stamps = np.asarray(ctx.run.open_array("stamps")[:], dtype=float)
    scale = float(ctx.options.get("scale") or 1)
    means = stamps.reshape(len(stamps), -1).mean(axis=1) * scale
    (ctx.run.path / "brightness.json").write_text(json.dumps(means.tolist()))
    return {"n_galaxies": len(means)}


STAGE = Stage(
    name="brightness",
    summary="mean of every stamp -> brightness.json",
    compute=_compute,
    sections=("ingest",),
    upstream=lambda config: ("ingest",),
    outputs=("brightness.json",),
    extra=lambda ctx: ctx.options.get("scale"),
    arguments=(Argument("--scale", "multiply the means by X", metavar="X"),),
    flags=(),
)
'''

DYNAMIC = '''\
import dataclasses

from hello_stage.stages import STAGE as BRIGHTNESS

SUMMARY = "the brightness stage again, its summary " + "not a plain literal (100%)"
STAGE = dataclasses.replace(BRIGHTNESS, name="dynamic", summary=SUMMARY)
'''

FAILS = '''\
import not_installed_dependency_of_fails  # the import fails, the summary can still be read

from skymorph.stages import Stage

STAGE = Stage(
    name="fails",
    summary="a stage whose dependency is not installed",
    compute=lambda ctx: {},
)
'''

CLIPPED = '''\
"""A stage from another package with its own settings section, [clipped]."""

import json
from dataclasses import dataclass

import numpy as np

from skymorph.config import Section, setting
from skymorph.stages import Stage


@dataclass
class ClippedSettings(Section):
    clip: float = setting(3.0, "clip every pixel at CLIP times the stamp's standard deviation",
                          gt=0, flag="--clip", metavar="CLIP")
    threads: int = setting(1, "threads (the result does not depend on them)", min=1, result=False)


def _compute(ctx):
    clip = ctx.config.clipped.clip
    stamps = np.asarray(ctx.run.open_array("stamps")[:], dtype=float)
    stamps = stamps.reshape(len(stamps), -1)
    limit = clip * stamps.std(axis=1, keepdims=True)
    means = np.clip(stamps, -limit, limit).mean(axis=1)
    (ctx.run.path / "clipped.json").write_text(json.dumps(means.tolist()))
    return {"n_galaxies": len(means)}


STAGE = Stage(
    name="clipped",
    summary="clipped mean of every stamp -> clipped.json",
    compute=_compute,
    sections=("ingest",),
    settings=ClippedSettings,
    upstream=lambda config: ("ingest",),
    outputs=("clipped.json",),
)
'''

PACKAGES = ("hello_stage", "broken_stage")


def _dist(site: Path, name: str, entries: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[console_scripts]\nother = x:y\n\n[skymorph.stages]\n{lines}")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on ``sys.path`` holding the packages ``hello_stage`` (the plugin) and
    ``broken_stage``; each test adds the distributions (``dist-info``) it needs."""
    site = tmp_path / "site"
    (site / "hello_stage").mkdir(parents=True)
    (site / "hello_stage" / "__init__.py").write_text("")
    (site / "hello_stage" / "stages.py").write_text(HELLO)
    (site / "hello_stage" / "clipped.py").write_text(CLIPPED)
    (site / "broken_stage").mkdir()
    (site / "broken_stage" / "__init__.py").write_text("")
    (site / "broken_stage" / "fails.py").write_text(FAILS)
    (site / "broken_stage" / "dynamic.py").write_text(DYNAMIC)
    monkeypatch.syspath_prepend(str(site))
    registry.plugins.cache_clear()
    sections = dict(_fields._SECTIONS)
    yield site
    registry.plugins.cache_clear()
    _forget_plugin_sections(sections)
    for module in list(sys.modules):
        if module.split(".")[0] in PACKAGES:
            del sys.modules[module]


def _forget_plugin_sections(sections: dict[str, type]) -> None:
    """Back to the built-in settings sections (as in a process that never imported a plugin)."""
    _fields._SECTIONS.clear()
    _fields._SECTIONS.update(sections)
    _fields._specs.cache_clear()


def _hello(site: Path) -> None:
    _dist(site, "hello-stage", {"brightness": "hello_stage.stages:STAGE"})


def _help() -> str:
    """``skymorph --help``, its lines joined (argparse wraps them at the terminal's width)."""
    return " ".join(build_parser(None).format_help().split())


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_help_lists_a_plugin_stage_after_the_builtins_without_importing_it(site, capsys):
    _hello(site)
    assert [e.name for e in entry_points(group=registry.GROUP)] == ["brightness"]
    assert list(registry.all_stages()) == [*registry.STAGES, "brightness"]
    assert "brightness" not in registry.PIPELINE
    text = _help()
    assert "mean of every stamp -> brightness.json [hello-stage 0.1]" in text
    assert text.index("info") < text.index("brightness")
    assert not any(m.split(".")[0] == "hello_stage" for m in sys.modules)  # not even its package

    with pytest.raises(SystemExit):
        main(["brightness", "--help"])
    out = capsys.readouterr().out
    assert "--scale X" in out and "RUN_DIR" in out and "--force" in out


def test_a_summary_that_is_not_a_plain_literal_is_read_by_importing_only_the_plugin_module(site):
    _dist(site, "dynamic-stage", {"dynamic": "broken_stage.dynamic:STAGE [extra]"})
    _hello(site)
    plugin = registry.plugins()["dynamic"]
    assert plugin.summary == "the brightness stage again, its summary not a plain literal (100%)"
    assert (plugin.target, plugin.dist) == ("broken_stage.dynamic:STAGE", "dynamic-stage 0.1")
    assert "broken_stage.dynamic" in sys.modules
    assert get_stage("dynamic").name == "dynamic"
    assert "not a plain literal (100%) [dynamic-stage 0.1]" in _help()


def test_the_quick_look_agrees_with_importlib_metadata(site):
    # the quick look may say "maybe" where there is none (an editable install's finder on
    # sys.meta_path, as in a fresh venv), never "none" where importlib.metadata finds one
    assert registry._may_have_plugins() or not entry_points(group=registry.GROUP)
    _hello(site)
    assert registry._may_have_plugins() is bool(entry_points(group=registry.GROUP)) is True


def _state(run: RunDir) -> dict[str, tuple[int, int]]:
    paths = [run.path / "stages" / "brightness.json", run.path / "brightness.json"]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_a_plugin_stage_runs_through_the_executor(site, cosmos_run, tmp_path, capsys):
    """It runs from the command line, is reused when nothing changed, recomputes with --force
    or another value of its Argument (in its fingerprint through ``extra``)."""
    _hello(site)
    run = RunDir(shutil.copytree(cosmos_run.path, tmp_path / "run"))
    assert main(["brightness", str(run.path), "-q"]) == 0
    stamps = np.asarray(run.open_array("stamps")[:], dtype=float)
    means = json.loads((run.path / "brightness.json").read_text())
    np.testing.assert_allclose(means, stamps.reshape(len(stamps), -1).mean(axis=1))
    info = run.stage_info("brightness")
    assert info["n_galaxies"] == len(stamps)
    assert info["made_from"] == {"ingest": run.stage_info("ingest")["fingerprint"]}
    assert "ingest" in info["settings_used"]
    before = _state(run)

    assert main(["brightness", str(run.path), "-q"]) == 0  # reused: nothing is written
    assert _state(run) == before
    skymorph.execute("brightness", run, progress=False)  # the Python API reuses it too
    assert _state(run) == before

    assert main(["brightness", str(run.path), "-q", "--force"]) == 0
    after = _state(run)
    assert all(after[name] != before[name] for name in before)
    assert run.stage_info("brightness")["fingerprint"] == info["fingerprint"]

    assert main(["brightness", str(run.path), "-q", "--scale", "2"]) == 0  # a new input: recomputed
    np.testing.assert_allclose(json.loads((run.path / "brightness.json").read_text()), 2 * np.asarray(means))
    assert run.stage_info("brightness")["fingerprint"] != info["fingerprint"]

    capsys.readouterr()
    assert main(["info", str(run.path)]) == 0
    assert "brightness finished" in capsys.readouterr().out


def test_a_plugin_stage_has_its_own_settings_section(site, cosmos_run, tmp_path, capsys, caplog):
    """``Stage(settings=...)`` declares ``[clipped]``: its flags, ``--set``, its checks, the
    fingerprint (result-changing settings only) and config.toml, read again in a process that
    has not imported the plugin, and kept unchecked where the plugin is not installed."""
    _dist(site, "clipped-stage", {"clipped": "hello_stage.clipped:STAGE"})
    sections = dict(_fields._SECTIONS)
    run = RunDir(shutil.copytree(cosmos_run.path, tmp_path / "run"))
    with pytest.raises(SystemExit):
        main(["clipped", "--help"])
    assert "--clip CLIP" in capsys.readouterr().out
    assert get_stage("clipped").sections == ("clipped", "ingest")  # its own section first

    def means() -> np.ndarray:
        return np.asarray(json.loads((run.path / "clipped.json").read_text()))

    assert main(["clipped", str(run.path), "-q"]) == 0
    default, info = means(), run.stage_info("clipped")
    assert info["settings_used"]["clipped"] == {"clip": 3.0, "threads": 1}
    assert main(["clipped", str(run.path), "-q", "--set", "clipped.threads=2"]) == 0  # not a result setting
    assert run.stage_info("clipped")["fingerprint"] == info["fingerprint"]
    assert main(["clipped", str(run.path), "-q", "--clip", "0.5"]) == 0
    assert run.stage_info("clipped")["fingerprint"] != info["fingerprint"]
    stamps = np.asarray(run.open_array("stamps")[:], dtype=float).reshape(len(default), -1)
    limit = 0.5 * stamps.std(axis=1, keepdims=True)
    np.testing.assert_allclose(means(), np.clip(stamps, -limit, limit).mean(axis=1))
    assert not np.allclose(means(), default)
    assert "[clipped]\nclip = 0.5\n" in (run.path / "config.toml").read_text()
    capsys.readouterr()
    assert main(["clipped", str(run.path), "--set", "clipped.clip=-1"]) == 1
    assert "clipped.clip = -1 is not allowed" in capsys.readouterr().err

    # another process: the recorded [clipped] declares itself by importing the plugin's module
    del sys.modules["hello_stage.clipped"]
    _forget_plugin_sections(sections)
    assert run.config().clipped.clip == 0.5
    assert "hello_stage.clipped" in sys.modules

    # the plugin uninstalled: the run still opens, and its section is kept as written
    shutil.rmtree(site / "clipped_stage-0.1.dist-info")
    registry.plugins.cache_clear()
    _forget_plugin_sections(sections)
    with caplog.at_level(logging.WARNING, logger="skymorph"):
        config = run.config()
    assert config.section("clipped") == {"clip": 0.5, "threads": 1}
    assert any("[clipped] is kept as written, unchecked" in w for w in _warnings(caplog))
    run.record_config(config)
    assert "[clipped]\nclip = 0.5\n" in (run.path / "config.toml").read_text()
    assert main(["info", str(run.path)]) == 0
    with pytest.raises(ConfigError, match=r"unknown config section \[clipped\]"):
        skymorph.Config().update({"clipped": {"clip": 1.0}})  # a settings file of the user's own


def test_a_plugin_section_must_be_a_section_with_usable_defaults(site):
    from dataclasses import dataclass

    from skymorph.config import Section, register_section, setting
    from skymorph.stages import Stage

    @dataclass
    class Negative(Section):
        clip: float = setting(-1.0, "a default outside its own range", gt=0)

    with pytest.raises(ConfigError, match=r"default settings of \[negative\] are not usable"):
        register_section("negative", Negative)
    assert "negative" not in _fields._SECTIONS
    with pytest.raises(ConfigError, match="built-in settings section"):
        Stage(name="cluster", summary="", compute=lambda ctx: {}, settings=Negative)
    with pytest.raises(ConfigError, match="deriving from skymorph.config.Section"):
        register_section("plain", dict)


def test_a_plugin_that_clashes_with_a_builtin_is_refused(site, tmp_path, monkeypatch, caplog):
    _dist(site, "clash-stage", {"cluster": "hello_stage.stages:STAGE", "run": "hello_stage.stages:STAGE",
                                "Bad-Name": "hello_stage.stages:STAGE"})
    _hello(site)
    later = tmp_path / "later"  # found after hello-stage, whose stage of that name stays
    later.mkdir()
    _dist(later, "twice-stage", {"brightness": "broken_stage.dynamic:STAGE"})
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    with caplog.at_level(logging.WARNING, logger="skymorph"):
        assert list(registry.plugins()) == ["brightness"]
    warnings = _warnings(caplog)
    assert len(warnings) == 4, warnings
    assert any("'cluster' of clash-stage 0.1" in w and "built-in stage" in w for w in warnings)
    assert any("'run' of clash-stage 0.1" in w and "built-in command" in w for w in warnings)
    assert any("'Bad-Name' of clash-stage 0.1" in w and "lower-case" in w for w in warnings)
    assert any("'brightness' of twice-stage 0.1" in w and "hello-stage 0.1" in w for w in warnings)
    assert registry.plugins()["brightness"].dist == "hello-stage 0.1"
    assert get_stage("cluster").summary.startswith("consensus of K-means")  # the built-in stays
    assert "consensus of K-means" in _help()


def test_a_broken_plugin_warns_and_the_cli_goes_on(site, cosmos_run, tmp_path, caplog, capsys):
    _dist(site, "broken-stage", {"missing": "broken_stage.missing:STAGE", "fails": "broken_stage.fails:STAGE",
                                 "misnamed": "hello_stage.stages:STAGE"})
    _hello(site)
    run = RunDir(shutil.copytree(cosmos_run.path, tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="skymorph"):
        with pytest.raises(SystemExit) as exit_help:
            main(["--help"])
    assert exit_help.value.code == 0
    out = capsys.readouterr().out
    assert "brightness" in out and "fails" in out and "missing" not in out
    (warning,) = _warnings(caplog)
    assert "'missing' of broken-stage 0.1" in warning and "ModuleNotFoundError" in warning

    # a plugin whose module fails to import: its command says why, in one line
    assert main(["fails", str(run.path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'fails' of broken-stage 0.1" in err
    assert "No module named 'not_installed_dependency_of_fails'" in err
    with pytest.raises(PluginError, match="Stage.name must agree"):
        get_stage("misnamed")

    # the other commands go on
    assert main(["brightness", str(run.path), "-q"]) == 0
    assert main(["info", str(run.path)]) == 0


def test_skymorph_help_in_a_fresh_process(site):
    """The console script's start: plugins are found through PYTHONPATH, warnings are one line each."""
    _hello(site)
    _dist(site, "broken-stage", {"missing": "broken_stage.missing:STAGE",
                                 "ingest": "hello_stage.stages:STAGE"})
    src = str(Path(skymorph.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), src, os.environ.get("PYTHONPATH", "")])}
    code = textwrap.dedent("""
        import sys
        from skymorph.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print("imported:", sorted(m for m in sys.modules if m.startswith(("hello_stage", "broken_stage"))))
    """)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "mean of every stamp -> brightness.json [hello-stage 0.1]" in " ".join(done.stdout.split())
    assert "imported: ['broken_stage']" in done.stdout  # only to look for broken_stage.missing
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert any("'missing' of broken-stage 0.1" in line and "ModuleNotFoundError" in line for line in lines)
    assert any("'ingest' of broken-stage 0.1" in line and "built-in stage" in line for line in lines)


def test_without_plugins_help_does_not_import_importlib_metadata():
    """Its import (email, zipfile, csv...) would cost ``skymorph --help`` a quarter of its start-up."""
    if registry._may_have_plugins():
        pytest.skip("a package on this machine adds a skymorph stage")
    code = ("import sys; from skymorph.cli import build_parser; build_parser(None).format_help(); "
            "print('importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
