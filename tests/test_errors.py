"""One base for skymorph's errors; the command line tells them apart from bugs."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

import skymorph
from skymorph.cli import main
from skymorph.errors import SkymorphError
from skymorph.io.rundir import RunDir

SRC = Path(skymorph.__file__).parent


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in src/skymorph whose name says it is an error."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(("skymorph", *parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (node.name.endswith(("Error", "Reject", "Exception"))):
                found.append((module, node.name))
    return found


def test_every_exception_class_derives_from_skymorph_error():
    classes = _exception_classes()
    assert len(classes) >= 15
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, SkymorphError), f"{module}.{name}"


@pytest.mark.parametrize("module, name, builtin", [
    ("skymorph.config", "ConfigError", ValueError),
    ("skymorph.core.clustering", "ClusterError", ValueError),
    ("skymorph.core.reduction", "ReduceError", ValueError),
    ("skymorph.core.cae", "CAEError", ValueError),
    ("skymorph.io.rundir", "RunDirError", RuntimeError),
    ("skymorph.core.compute", "ComputeError", RuntimeError),
])
def test_the_old_builtin_bases_still_catch_them(module, name, builtin):
    assert issubclass(getattr(importlib.import_module(module), name), builtin)


def test_a_skymorph_error_is_one_sentence_and_v_brings_its_traceback(tmp_path, capsys):
    run = RunDir.create(tmp_path / "run")
    assert main(["cluster", str(run.path), "--set", "cluster.nope=1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "skymorph cluster: error: " in err and "nope" in err
    assert main(["cluster", str(run.path), "--set", "cluster.nope=1", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("skymorph cluster: error: ")


def test_any_other_exception_is_a_bug_shown_with_its_traceback(tmp_path, capsys, monkeypatch):
    """A numpy ValueError deep inside a command is not the user's mistake: before,
    the command line printed it as one line, like bad input, and hid where it came from."""
    run = RunDir.create(tmp_path / "run")

    def broken(self, **options):
        return np.zeros(2) @ np.zeros(3)  # a genuine numpy ValueError

    monkeypatch.setattr(RunDir, "summary", broken)
    assert main(["info", str(run.path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "matmul" in err and "in broken" in err
    assert "bug in skymorph" in err and "report it" in err
