"""The registry is the single list of stages: help, exports and sections are derived from it."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import skymorph
from skymorph import cli, registry
from skymorph.config import _SECTIONS, Config
from skymorph.stages import get_stage


def test_help_summaries_are_the_stage_declarations():
    """``skymorph --help`` reads the summaries without importing the stages; they are the
    ``Stage.summary`` of the imported declarations, word for word."""
    read = registry.summaries()
    assert list(read) == list(registry.STAGES)
    for name, summary in read.items():
        assert summary == get_stage(name).summary, name
        if name not in cli.INSPECT_STAGES:
            assert cli.COMMANDS[name] == summary


def test_every_stage_is_a_public_function_of_its_module():
    for name, target in registry.STAGES.items():
        function = getattr(skymorph, name)
        assert function is getattr(importlib.import_module(target.partition(":")[0]), name)
        assert callable(function) and name in skymorph.__all__


def test_sections_are_the_fields_of_config():
    # (the last field, ``plugins``, holds the sections of stages from other packages)
    assert [*_SECTIONS, "plugins"] == [f.name for f in dataclasses.fields(Config)]
    assert all(isinstance(getattr(Config(), name), cls) for name, cls in _SECTIONS.items())


def test_help_loads_no_heavy_library():
    code = ("import sys; from skymorph.cli import build_parser; text = build_parser(None).format_help(); "
            "assert 'consensus of K-means' in text; "
            "print(sorted(m for m in ('numpy', 'pandas', 'torch', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
