"""``make lab``: set-up, then JupyterLab on notebooks/ with the project's kernel. Started on a free port, asked over
HTTP whether it serves the notebooks with the .venv's Python as kernel, then stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from fbvision.core.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_starts_jupyterlab_on_the_notebooks_with_the_project_kernel(tmp_path):
    if not (REPO_ROOT / "Makefile").exists():
        pytest.skip("not a source checkout")
    port, token = free_port(), "fbv-test-token-0123456789"
    args = f"--port {port} --ip 127.0.0.1 --no-browser --ServerApp.token={token} --ServerApp.port_retries=0"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(["make", "-C", str(REPO_ROOT), "lab", f"LAB_ARGS={args}"], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline, status = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = requests.get(f"{base}/api/status", headers=headers, timeout=2)
                if status.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert status is not None and status.status_code == 200, Path(log.name).read_text()[-3000:]
        assert requests.get(f"{base}/lab", headers=headers, timeout=10).status_code == 200  # the JupyterLab page
        contents = requests.get(f"{base}/api/contents", headers=headers, timeout=10).json()
        names = {item["name"] for item in contents["content"]}
        assert {"00_tour.ipynb", "01_smoothing_rules.ipynb"} <= names  # rooted at notebooks/
        specs = requests.get(f"{base}/api/kernelspecs", headers=headers, timeout=10).json()
        argv0 = specs["kernelspecs"]["python3"]["spec"]["argv"][0]
        assert Path(argv0).parent == REPO_ROOT / ".venv" / "bin"  # the project's kernel (not a resolved symlink)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # JupyterLab shuts down on SIGTERM
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
    with pytest.raises(requests.RequestException):
        requests.get(f"{base}/api/status", timeout=2)  # stopped
