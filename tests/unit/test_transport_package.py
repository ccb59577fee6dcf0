"""The transport package's boundaries: no Redis key name outside it, each stage's facade has what the stage calls,
the Lua scripts ship as package data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fbvision.core.transport import (
    ROLE_TRANSPORTS,
    CameraTransport,
    DeliveryTransport,
    InferenceTransport,
    LogicTransport,
    RunnerTransport,
    Transport,
)
from fbvision.core.transport import keys as keys_module
from fbvision.core.transport.client import script_text

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fbvision"
TRANSPORT = PACKAGE / "core" / "transport"
#: String literals equal to a key name that are not keys (each with its reason).
NOT_KEYS = {
    ("fbvision/camera/evidence.py", "evidence:requests"): "a counter's name (requests served), not the stream",
}


def _literals(path: Path):
    """The string constants of a module, docstrings left out (they may well describe a key)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def key_name_literals(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if TRANSPORT in path.parents:
            continue
        rel = str(path.relative_to(ROOT)) if ROOT in path.parents else path.name
        for lineno, text in _literals(path):
            is_key = text in keys_module.FIXED_KEYS or any(
                text.startswith(p) and text != p.rstrip(":") for p in keys_module.KEY_PREFIXES)
            if is_key and (rel, text) not in NOT_KEYS:
                found.append(f"{rel}:{lineno}: {text!r}")
    return found


def test_no_redis_key_name_outside_the_transport_package():
    assert not key_name_literals(PACKAGE), "key names belong in fbvision/core/transport/keys.py"


def test_the_scan_finds_a_key_name(tmp_path):
    (tmp_path / "stage.py").write_text('"""A doc naming batch_frames is fine."""\n'
                                       'QUEUE = "alerts:outbox"\nq = f"batch_results:{3}"\nname = f"logic:{3}"\n')
    found = key_name_literals(tmp_path)
    assert len(found) == 2 and "'alerts:outbox'" in found[0] and "'batch_results:'" in found[1], found


def _transport_uses(folder: Path) -> set[str]:
    """Public attributes a stage's code uses on ``transport`` / ``self.transport`` / ``t``."""
    used = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or node.attr.startswith("_"):
                continue
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name in ("transport", "t") and not (isinstance(owner, ast.Name) and owner.id == "t"
                                                   and folder.name != "run"):
                used.add(node.attr)
    return used


@pytest.mark.parametrize("folder, facade", [
    ("camera", CameraTransport), ("inference", InferenceTransport), ("logic", LogicTransport),
    ("alerts", DeliveryTransport),
])
def test_each_stage_uses_only_what_its_facade_offers(folder, facade):
    used = _transport_uses(PACKAGE / folder)
    assert used, folder
    instance = facade("redis://127.0.0.1:1/0")  # redis-py connects lazily: nothing is sent
    missing = sorted(a for a in used if not hasattr(instance, a))
    assert not missing, f"{folder} uses {missing}, not in {facade.__name__}"


def test_the_facades_are_smaller_than_the_whole():
    whole = {a for a in dir(Transport) if not a.startswith("_")}
    for role, facade in ROLE_TRANSPORTS.items():
        mine = {a for a in dir(facade) if not a.startswith("_")}
        assert mine < whole, role
    assert not hasattr(CameraTransport, "commit_results") and not hasattr(CameraTransport, "read_alerts")
    assert not hasattr(InferenceTransport, "try_lease") and not hasattr(DeliveryTransport, "push_frames")
    assert not hasattr(RunnerTransport, "commit_results")


@pytest.mark.parametrize("name", ["push_bounded", "publish_once", "report_totals", "renew_lease", "release_lease",
                                  "commit_fenced", "read_fenced", "claim_fenced", "renew_leases", "ack_outbox"])
def test_every_script_is_package_data(name):
    assert "redis.call" in script_text(name)
    assert (TRANSPORT / "scripts" / f"{name}.lua").is_file()
