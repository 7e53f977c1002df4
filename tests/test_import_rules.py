"""The layers of docs/architecture.md import only downwards (lazy imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import skymorph

SRC = Path(skymorph.__file__).parent


def _module_name(path: Path) -> str:
    return ".".join(("skymorph", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def _imports() -> dict[str, set[str]]:
    """Module -> every skymorph module it imports (``from . import x`` resolved to ``package.x``)."""
    out: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("skymorph")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("skymorph"):
                    continue
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}  # ``from . import cae``
        out[name] = found
    return out


IMPORTS = _imports()
MODULES = set(IMPORTS)

KNOWN: set[str] = set()
"""Exceptions still to remove; each must still exist, so the list only shrinks."""


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module, targets in IMPORTS.items():
        if module == layer or module.startswith(layer + "."):
            for target in sorted(targets):
                if target in MODULES and any(target == f or target.startswith(f + ".") for f in forbidden):
                    bad.append(f"{module} imports {target}")
    return bad


def test_the_import_graph_was_read():
    assert "skymorph.core.clustering" in IMPORTS["skymorph.stages.cluster"]
    assert "skymorph.core.cae" in IMPORTS["skymorph.stages.denoise"]  # a lazy ``from ..core import cae``


@pytest.mark.parametrize("layer, forbidden", [
    ("skymorph.core", ("skymorph.stages", "skymorph.io", "skymorph.inspection")),
    ("skymorph.inspection", ("skymorph.stages",)),
    ("skymorph.config", ("skymorph.stages", "skymorph.io", "skymorph.inspection", "skymorph.core")),
])
def test_a_layer_does_not_import_the_layers_above_it(layer, forbidden):
    assert [v for v in _violations(layer, forbidden) if v not in KNOWN] == []


def test_stage_modules_do_not_import_each_other():
    stages = {m for m in MODULES if m.startswith("skymorph.stages.")}
    bad = [f"{module} imports {target}" for module in sorted(stages)
           for target in sorted(IMPORTS[module] & stages) if target != module]
    assert bad == []  # no exception left: they share code through core/, io/, inspection/


def test_the_known_exceptions_still_exist():
    """Remove an entry from KNOWN once its import is gone."""
    found = set(_violations("skymorph.inspection", ("skymorph.stages",)))
    found |= {f"{m} imports {t}" for m in MODULES if m.startswith("skymorph.stages.")
              for t in IMPORTS[m] if t.startswith("skymorph.stages.") and t in MODULES and t != m}
    assert KNOWN <= found
