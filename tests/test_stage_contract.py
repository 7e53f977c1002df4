"""The contract every registered stage keeps: its command's ``--help`` works and offers its
settings, its declaration agrees with the settings and the registry, and (for the stages cheap
enough to run here on the 100 real COSMOS stamps) a second call without ``--force`` reuses the
output untouched while ``--force`` computes it again under the same fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath

import pytest

from conftest import COSMOS_STAMPS
from skymorph import cli
from skymorph.cli import main
from skymorph.config import _SECTIONS, Config, section_settings
from skymorph.io.rundir import RunDir
from skymorph.registry import STAGES
from skymorph.stages import get_stage


def _command(name: str) -> list[str]:
    return ["inspect", name] if name in cli.INSPECT_STAGES else [name]


def _flags(name: str) -> list[str]:
    """The flags the stage's command offers for its settings (as the command line builds them)."""
    stage = get_stage(name)
    if stage.flags is not None:
        specs = [section_settings(key.split(".")[0])[key.split(".")[1]] for key in stage.flags]
    elif stage.sections:
        specs = list(section_settings(stage.sections[0]).values())
    else:
        specs = []
    return [spec.flag for spec in specs if spec.flag]


@pytest.mark.parametrize("name", list(STAGES))
def test_the_help_of_every_stage_works_and_offers_its_settings(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([*_command(name), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: skymorph {' '.join(_command(name))} ")
    for flag in _flags(name):
        assert flag in out, flag
    assert "--force" in out and "--set SECTION.KEY=VALUE" in out


def _all_switches_on() -> Config:
    config = Config()
    for name in STAGES:
        if get_stage(name).switch is not None:
            section, key = get_stage(name).switch.split(".")
            config = config.update({section: {key: True}})
    return config


@pytest.mark.parametrize("name", list(STAGES))
def test_every_declaration_agrees_with_the_settings_and_the_registry(name):
    stage = get_stage(name)
    assert stage.name == name and stage.summary and "\n" not in stage.summary
    # the sections it fingerprints are config sections; the first is its own (flags, overrides)
    assert set(stage.sections) <= set(_SECTIONS)
    if stage.sections and name not in cli.INSPECT_STAGES:
        assert stage.sections[0] == name
    for key in stage.flags or ():
        section, _, setting = key.partition(".")
        assert section in _SECTIONS and setting in section_settings(section), key
    if stage.switch is not None:
        section, _, key = stage.switch.partition(".")
        assert section in stage.sections and isinstance(getattr(Config().section(section), key), bool)
    # upstream stages are registered stages that come before it: the pipeline graph has no cycle
    for config in (Config(), _all_switches_on()):
        for upstream in stage.upstream(config):
            assert list(STAGES).index(upstream) < list(STAGES).index(name), upstream
    # outputs are paths inside the run directory; a stage without any recomputes on every call
    for output in stage.outputs:
        path = PurePosixPath(output)
        assert output and not path.is_absolute() and ".." not in path.parts, output
    assert stage.outputs or stage.always
    if stage.creates_run:
        assert stage.upstream(Config()) == ()


# --- reuse and --force on a small real run ------------------------------------------------------


@pytest.fixture(scope="module")
def clustered(cosmos_run, tmp_path_factory):
    """The COSMOS stamps with flattened pixels as features, reduced (PCA) and clustered (k = 4)."""
    from test_cluster import _features_run

    run = _features_run(cosmos_run, tmp_path_factory.mktemp("contract"))
    assert main(["reduce", str(run.path), "--method", "pca", "--dims", "5", "--no-map", "-q"]) == 0
    assert main(["cluster", str(run.path), "--k", "4", "-q"]) == 0
    return run


CHEAP = {
    "ingest": [],
    "polar": [],
    "reduce": ["--method", "pca", "--dims", "5", "--no-map"],
    "cluster": ["--k", "4"],
    "montage": [],
}
"""Stages that run in seconds on 100 stamps, with the settings of the ``clustered`` run."""


def _state(run: RunDir, name: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the stage's record and of every file of its outputs: an atomic rewrite
    changes both, a reuse neither."""
    paths = [run.path / "stages" / f"{name}.json"]
    for output in get_stage(name).outputs:
        path = run.path / output
        paths += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(run.path)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


@pytest.mark.parametrize("name", list(CHEAP))
def test_a_second_call_reuses_the_output_and_force_computes_it_again(name, clustered, tmp_path):
    run = RunDir(shutil.copytree(clustered.path, tmp_path / "run"))
    target = [str(COSMOS_STAMPS), "--out", str(run.path)] if get_stage(name).creates_run else [str(run.path)]
    argv = [*_command(name), *target, *CHEAP[name], "-q"]
    assert main(argv) == 0
    fingerprint = run.stage_info(name)["fingerprint"]
    before = _state(run, name)
    assert all(Path(run.path / output).exists() for output in get_stage(name).outputs)

    assert main(argv) == 0  # unchanged inputs and settings: nothing is written
    assert _state(run, name) == before

    assert main([*argv, "--force"]) == 0  # every output and the record are written again
    after = _state(run, name)
    rewritten = {path for path in before if after.get(path) != before[path]}
    assert f"stages/{name}.json" in rewritten
    for output in get_stage(name).outputs:
        assert any(path == output or path.startswith(output + "/") for path in rewritten), output
    assert json.loads((run.path / "stages" / f"{name}.json").read_text())["fingerprint"] == fingerprint
