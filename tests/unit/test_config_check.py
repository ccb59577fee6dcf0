"""``fbvision config check|show``: what a config points at is checked (files, scenes, model, URLs), errors
name their true origin (environment variable or file:line) with a did-you-mean, and show prints YAML."""

from __future__ import annotations

import socket

import pytest
import yaml

from fbvision.cli import main as cli
from fbvision.core.config import DEMO_MODEL, ConfigError, load_settings

pytestmark = pytest.mark.timeout(60)


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def check(capsys, *argv):
    code = cli(["config", "check", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- errors name their origin ------------------------------------------------------------------------------------


def test_an_environment_mistake_names_the_variable_not_the_file(tmp_path):
    p = write(tmp_path, "inference:\n  max_batch: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={"FBV_INFERENCE__MAX_BACTH": "16"})
    msg = str(exc.value)
    assert "inference.max_bacth: unknown field" in msg
    assert "[from environment variable FBV_INFERENCE__MAX_BACTH]" in msg
    assert "did you mean 'max_batch'?" in msg
    assert f"{p}:" not in msg  # no file line is blamed


def test_a_file_mistake_names_file_and_line_and_the_closest_key(tmp_path):
    p = write(tmp_path, "redis:\n  frame_queue_cap: 64\ninference:\n  max_batch: 4\n  max_wiat_ms: 5\n"
                        "cameras:\n  - id: a\n    source: synthetic:running\n  - id: b\n    source: x\n    fps: 500\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    lines = str(exc.value).splitlines()
    wait = next(line for line in lines if "inference.max_wiat_ms" in line)
    assert "did you mean 'max_wait_ms'?" in wait and wait.endswith(f"[from {p}:5]")
    fps = next(line for line in lines if "cameras.1.fps" in line)
    assert fps.endswith(f"[from {p}:11]")


def test_an_env_override_of_a_list_item_is_named(tmp_path):
    p = write(tmp_path, "cameras:\n  - {id: a, source: 'synthetic:running'}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={"FBV_CAMERAS__0__FPS": "500"})
    assert "cameras.0.fps" in str(exc.value) and "[from environment variable FBV_CAMERAS__0__FPS]" in str(exc.value)


def test_no_suggestion_when_nothing_is_close(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "inference:\n  zzzz: 1\n"), environ={})
    assert "did you mean" not in str(exc.value) and "allowed: autotune" in str(exc.value)


# -- config show -------------------------------------------------------------------------------------------------


def test_show_prints_yaml_that_loads_back_and_masks_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-secret@redis.local:6379/0")
    monkeypatch.setenv("FBV_ALERTS__BACKEND_TOKEN", "tok-0123456789abcdef-secret")
    assert cli(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "0123456789abcdef" not in out
    tree = yaml.safe_load(out)
    assert tree["redis"]["url"] == "redis://***@redis.local:6379/0"
    assert tree["inference"]["max_batch"] == 8 and len(tree["cameras"]) == 4
    assert "camera_offline" in tree["logic"]["rules"]  # every default is there


def test_show_diff_prints_only_what_differs_from_the_defaults(tmp_path, capsys, monkeypatch):
    for key in ("REDIS_URL", "FBV_ALERTS__BACKEND_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    p = write(tmp_path, "inference: {max_batch: 4}\ncameras:\n  - {id: a, source: 'synthetic:running', fps: 5}\n"
                        "logic: {rules: {horse_down: {cooldown_s: 10}}}\n")
    assert cli(["config", "show", str(p), "--diff"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["inference"] == {"max_batch": 4}
    assert tree["cameras"] == [{"id": "a", "source": "synthetic:running"}]  # fps 5 is the default
    assert tree["logic"] == {"rules": {"horse_down": {"cooldown_s": 10.0}}}
    assert set(tree) == {"inference", "cameras", "logic", "model"}  # model.path: resolved to an absolute path


# -- config check: the world -------------------------------------------------------------------------------------


def test_the_demo_config_checks_ok(capsys):
    code, out, err = check(capsys)
    assert code == 0, err
    assert out.startswith("ok: 4 cameras, model ")


def test_check_one_camera_says_camera_not_cameras(tmp_path, capsys):
    code, out, _ = check(capsys, write(tmp_path, "cameras:\n  - {id: a, source: 'synthetic:running'}\n"))
    assert code == 0 and out.startswith("ok: 1 camera, model ")
    code, out, _ = check(capsys, write(tmp_path, "cameras:\n  - {id: a, source: 'synthetic:running'}\n"
                                                 "  - {id: b, source: /nonexistent.mp4, enabled: false}\n"))
    assert code == 0 and out.startswith("ok: 2 cameras (1 disabled, not checked), model ")


@pytest.mark.parametrize("camera, fragment", [
    ("{id: a, source: /nonexistent/stall.mp4}", "cameras[a].source: video file not found: /nonexistent/stall.mp4"),
    ("{id: a, source: 'synthetic:down_lnog'}", "no built-in scenario 'down_lnog'"),
    ("{id: a, source: 'synthetic:down_lnog'}", "did you mean 'synthetic:down_long'?"),
    ("{id: a, source: 'synthetic:/nonexistent/scene.yaml'}", "scenario file not found: /nonexistent/scene.yaml"),
    ("{id: a, source: 'rtsp://admin:pw@cam:99999/live'}", "does not parse as a URL"),
    ("{id: a, source: 'rtsp:///live'}", "has no host"),
    ("{id: a, source: 'device:x'}", "'device:<index>'"),
])
def test_each_broken_camera_fails_the_check(tmp_path, capsys, camera, fragment):
    code, out, err = check(capsys, write(tmp_path, f"cameras:\n  - {camera}\n"))
    assert code == 1 and out == ""
    assert fragment in err
    assert "pw@" not in err  # credentials masked


def test_a_file_that_is_not_video_fails_the_check(tmp_path, capsys):
    bogus = tmp_path / "stall.mp4"
    bogus.write_bytes(b"this is not a video\n" * 100)
    code, _, err = check(capsys, write(tmp_path, f"cameras:\n  - {{id: a, source: '{bogus}'}}\n"))
    assert code == 1 and "cameras[a].source" in err and ("cannot open it as video" in err or "no frame" in err)


def test_a_real_video_file_passes(tmp_path, capsys):
    import cv2
    import numpy as np

    video = tmp_path / "stall.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    code, out, err = check(capsys, write(tmp_path, f"cameras:\n  - {{id: a, source: '{video}'}}\n"))
    assert code == 0, err


@pytest.mark.parametrize("model, fragment", [
    ("path: /nonexistent/model.onnx", "model.path: model file not found: /nonexistent/model.onnx"),
])
def test_a_missing_model_fails_the_check(tmp_path, capsys, model, fragment):
    code, _, err = check(capsys, write(tmp_path, f"model: {{{model}}}\ncameras: []\n"))
    assert code == 1 and fragment in err


def test_a_class_the_model_lacks_fails_the_check(tmp_path, capsys):
    code, _, err = check(capsys, write(tmp_path, f"model: {{path: '{DEMO_MODEL}'}}\ninference: {{class_names: [zebra]}}\n"))
    assert code == 1 and "inference.class_names" in err and "no class named 'zebra'" in err


def test_a_model_without_a_dynamic_batch_fails_the_check(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(DEMO_MODEL))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    sidecar = DEMO_MODEL.with_suffix(".json")
    if sidecar.exists():
        (tmp_path / "fixed.json").write_text(sidecar.read_text())
    code, _, err = check(capsys, write(tmp_path, f"model: {{path: '{fixed}'}}\n"))
    assert code == 1 and "model.path" in err and "batch" in err


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    """The issue's case: a missing file, a misspelt scene and a missing model - one run, exit 1, all three named."""
    p = write(tmp_path, "model: {path: models/missing.onnx}\ncameras:\n"
                        "  - {id: file-cam, source: /nonexistent/stall.mp4}\n"
                        "  - {id: scene-cam, source: 'synthetic:runing'}\n"
                        "  - {id: good, source: 'synthetic:running'}\n")
    code, out, err = check(capsys, p)
    assert code == 1 and out == ""
    assert err.startswith(f"3 problems in {p}:")
    assert "cameras[file-cam].source: video file not found" in err
    assert "cameras[scene-cam].source: no built-in scenario 'runing'" in err
    assert "model.path: model file not found" in err and "missing.onnx" in err


def test_probe_reports_an_rtsp_camera_that_does_not_answer(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = write(tmp_path, f"cameras:\n  - {{id: gate, source: 'rtsp://viewer:pw@127.0.0.1:{port}/live'}}\n")
    code, _, _ = check(capsys, p)
    assert code == 0  # without --probe only the URL is checked
    code, _, err = check(capsys, p, "--probe", "--probe-timeout", "3")
    assert code == 1 and f"cameras[gate].source: rtsp://***@127.0.0.1:{port}/live" in err and "(probe)" in err
