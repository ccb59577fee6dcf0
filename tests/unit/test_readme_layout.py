"""The README's Layout section lists every module of the package (issue 12: "every module is in it")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_every_module_of_the_package_is_in_the_readme_layout():
    block = _layout_block()
    named = set(re.findall(r"([A-Za-z_][\w]*\.py)", block))
    missing = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "fbvision").rglob("*.py")
        if p.name != "__init__.py" and p.name not in named
    )
    assert not missing, f"modules missing from README.md's Layout: {missing}"


def test_the_layout_names_no_module_that_does_not_exist():
    block = _layout_block()
    # the package's modules, and the scripts the entries mention (runners/run_all.py)
    existing = {p.name for p in (ROOT / "fbvision").rglob("*.py")} | {p.name for p in (ROOT / "runners").glob("*.py")}
    stale = sorted(set(re.findall(r"([A-Za-z_][\w]*\.py)", block)) - existing)
    assert not stale, f"README.md's Layout names modules that do not exist: {stale}"
