"""Imports go one way down the pipeline, and plug-ins attach only through the
contract (:mod:`pgmdl.plugins`): checked on the source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "pgmdl"
PLUGINS = ("observe", "multiset", "boltzmann")

# what each part of pgmdl may import from pgmdl (besides errors, arguments, plugins)
ALLOWED = {
    "nn": {"nn"},
    "graph": {"graph"},
    "guides": {"graph", "guides", "nn"},
    "infer": {"graph", "guides", "infer", "nn"},
}
SHARED = {"errors", "arguments", "plugins"}


def pgmdl_imports(path: Path) -> set[str]:
    """The pgmdl subpackages or modules ``path`` imports (``graph``, ``multiset``...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pgmdl" and len(parts) > 1:
                found.add(parts[1])
    return found


def modules(part: str) -> list[Path]:
    return sorted((PACKAGE / part).rglob("*.py"))


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_the_core_imports_down_the_pipeline_and_no_plugin(part):
    for path in modules(part):
        bad = pgmdl_imports(path) - ALLOWED[part] - SHARED
        assert not bad, f"{path.relative_to(ROOT)} imports pgmdl.{sorted(bad)}"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_plugin_imports_another(plugin):
    others = set(PLUGINS) - {plugin}
    for path in modules(plugin):
        bad = pgmdl_imports(path) & others
        assert not bad, f"{path.relative_to(ROOT)} imports the plug-in(s) {sorted(bad)}"


def test_the_contract_imports_nothing_of_pgmdl_at_run_time():
    source = (PACKAGE / "plugins.py").read_text()
    tree = ast.parse(source)
    top = [n for n in tree.body if isinstance(n, ast.ImportFrom | ast.Import)]
    assert all(not (getattr(n, "module", "") or "").startswith("pgmdl") for n in top)
