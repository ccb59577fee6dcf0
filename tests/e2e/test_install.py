"""`pip install .` (not editable) works: the demo runs from any directory with the installed package alone.

A wheel is built from a copy of the package (fbvision/, pyproject.toml, README.md: nothing else of the checkout)
and installed with ``--no-deps`` into a fresh venv in tmp_path. The dependencies come from the project's .venv
through a ``.pth`` line (a path only: the .venv's own ``.pth`` files, the editable install's among them, are not
run), so nothing is downloaded. From a working directory outside the checkout, the installed ``fbvision`` then
checks the demo config and runs the demo for a few seconds (a private redis-server from PATH, the demo model
from the package's data) and writes its report under ./runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fbvision.core.config import REPO_ROOT
from fbvision.run.redis_server import find_redis_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with fbvision installed from a wheel; returns its paths and a clean environment."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(REPO_ROOT / "fbvision", src / "fbvision",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", dist, src], timeout=180)
    wheels = list(dist.glob("fbvision-*.whl"))
    assert len(wheels) == 1, wheels

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=60)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies (and pip) from this .venv, after the new venv's own site-packages.
    (site / "fbv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FBV_", "REDIS_URL", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(Path(find_redis_server()).parent), "/usr/bin", "/bin"])
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", "-q", wheels[0]], env=env, timeout=120)
    work = base / "elsewhere"
    work.mkdir()
    return {"venv": venv, "site": site, "python": python, "env": env, "cwd": work}


def test_the_installed_package_is_the_one_imported(installed):
    out = _run([installed["python"], "-c", "import fbvision, fbvision.cli; print(fbvision.__file__); "
                "print(fbvision.__version__)"], cwd=installed["cwd"], env=installed["env"]).stdout.split()
    module, version = Path(out[0]), out[1]
    assert module.is_relative_to(installed["site"]), module
    assert not module.is_relative_to(REPO_ROOT), module
    assert version == "0.1.0"
    package = installed["site"] / "fbvision"
    for data in ("py.typed", "data/demo.yaml", "data/models/horse-demo-yolo11n-320.onnx",
                 "data/models/horse-demo-yolo11n-320.json"):
        assert (package / data).is_file(), data
    assert not (installed["site"] / "runners").exists() and not (installed["site"] / "export").exists()
    version_out = _run([installed["python"], "-m", "fbvision", "--version"], cwd=installed["cwd"],
                       env=installed["env"]).stdout
    assert version_out.strip() == "fbvision 0.1.0"


def test_config_check_and_a_short_demo_run_from_elsewhere(installed):
    fbvision = installed["venv"] / "bin" / "fbvision"
    check = _run([fbvision, "config", "check"], cwd=installed["cwd"], env=installed["env"], timeout=60).stdout
    assert check.startswith("ok: 4 cameras, model ")
    model = Path(check.split("model ", 1)[1].strip())
    assert model == installed["site"] / "fbvision" / "data" / "models" / "horse-demo-yolo11n-320.onnx"

    done = _run([fbvision, "run", "--duration", "20", "--no-dashboard"], cwd=installed["cwd"], env=installed["env"],
                timeout=200)
    assert "# fbvision run report" in done.stdout
    runs = list((installed["cwd"] / "runs").iterdir())  # runner.report_dir: runs/ in the working directory
    assert len(runs) == 1
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["frames"]["inferred"] > 0 and report["frames"]["judged"] > 0
    assert set(report["frames"]["pushed_per_camera"]) == {"stall-01-down", "stall-02-running", "stall-03-rest",
                                                          "stall-04-walk"}
    assert all(n > 0 for n in report["frames"]["pushed_per_camera"].values())
    assert report["exit_reason"] == "duration"
    assert not (installed["site"] / "runs").exists() and not (installed["site"].parent / "runs").exists()
