"""Nothing that comes from the network is unpickled or evaluated: a static check over every module of the
package (``ast``), so a later change cannot slip one in unnoticed.

Forbidden anywhere in ``fbvision/``: importing pickle-like modules (pickle, cPickle, marshal, shelve, dill,
cloudpickle, joblib), calling eval/exec/compile/__import__, ``yaml.load``/``unsafe_load``/``full_load`` (only
``safe_load``), ``numpy.load(..., allow_pickle=True)``, ``pandas.read_pickle``, ``torch.load`` without
``weights_only=True``. Allowed: ``ast.literal_eval`` (literals only). The only pickling in a run is
multiprocessing's, between a supervisor and the stage processes it spawned, over a local pipe.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fbvision"
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(PACKAGE.parent)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            out.append(f"{where}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Call):
            fn = node.func
            kwargs = {k.arg: k.value for k in node.keywords}
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_BUILTINS:
                out.append(f"{where}:{node.lineno} calls {fn.id}()")
            elif isinstance(fn, ast.Attribute):
                owner = fn.value.id if isinstance(fn.value, ast.Name) else None
                if owner == "yaml" and fn.attr in UNSAFE_YAML:
                    out.append(f"{where}:{node.lineno} calls yaml.{fn.attr}() (use yaml.safe_load)")
                if owner in ("np", "numpy") and fn.attr == "load":
                    flag = kwargs.get("allow_pickle")
                    if isinstance(flag, ast.Constant) and flag.value is True:
                        out.append(f"{where}:{node.lineno} calls np.load(allow_pickle=True)")
                if owner in ("pd", "pandas") and fn.attr == "read_pickle":
                    out.append(f"{where}:{node.lineno} calls pandas.read_pickle()")
                if owner == "torch" and fn.attr == "load":
                    flag = kwargs.get("weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        out.append(f"{where}:{node.lineno} calls torch.load() without weights_only=True")
                if fn.attr in ("loads", "load") and owner in FORBIDDEN_MODULES:
                    out.append(f"{where}:{node.lineno} calls {owner}.{fn.attr}()")
    return out


def test_package_has_no_unpickling_or_eval():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in _problems(f)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("source,expected", [
    ("import pickle\n", "imports pickle"),
    ("from marshal import loads\n", "imports from marshal"),
    ("x = eval('1')\n", "calls eval()"),
    ("import yaml\nyaml.load(s)\n", "yaml.load"),
    ("import numpy as np\nnp.load(f, allow_pickle=True)\n", "allow_pickle"),
    ("import torch\ntorch.load(f)\n", "weights_only"),
])
def test_the_check_catches_what_it_should(tmp_path, source, expected, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    path = tmp_path / "mod.py"
    path.write_text(source)
    assert any(expected in p for p in _problems(path))


def test_literal_eval_and_safe_load_are_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    path = tmp_path / "mod.py"
    path.write_text("import ast, yaml, re\nast.literal_eval('1')\nyaml.safe_load('a: 1')\nre.compile('x')\n")
    assert _problems(path) == []
