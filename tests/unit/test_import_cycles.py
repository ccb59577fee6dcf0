"""No import cycle between modules of the package - type-level (``if TYPE_CHECKING:``) and function-level imports
included, which import-linter's layer contracts and Python itself let through (issue 24: run/'s dashboard, report
and runner used to import each other).

The graph is read from the source with :mod:`ast`: an edge ``a -> b`` for every ``import``/``from ... import`` in
``a`` that names module ``b`` (``from p import name`` is an edge to ``p.name`` when that is a module, else to
``p``). A package importing its own submodules (``__init__`` re-exports) is not a cycle by itself; a submodule
importing a sibling through the package is resolved to the package, as Python would.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import fbvision

PACKAGE = Path(fbvision.__file__).resolve().parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                if base.split(".")[0] != package:
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else resolve(base) for a in node.names]
            for target in targets:
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)  # (a module importing its own package is no cycle of modules)
    return graph


def cycles(root: Path, package: str) -> list[list[str]]:
    """The modules of one import cycle (sorted), or [] when there is none."""
    try:
        graphlib.TopologicalSorter(import_graph(root, package)).prepare()
    except graphlib.CycleError as exc:
        return [sorted(set(exc.args[1]))]
    return []


def test_the_package_has_no_import_cycle():
    found = cycles(PACKAGE, "fbvision")
    assert found == [], "import cycles (type-level and function-level imports count):\n" + "\n".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("b_source", [
    "from pkg import a\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",  # type-level
    "def f():\n    from . import a\n",  # function-level, relative
])
def test_a_cycle_is_found_whatever_the_import_looks_like(tmp_path, b_source):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg import a, b\n")  # re-exports: not a cycle
    (pkg / "a.py").write_text("import pkg.b\n")
    (pkg / "b.py").write_text(b_source)
    assert cycles(pkg, "pkg") == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text("import json\n")
    assert cycles(pkg, "pkg") == []
