import subprocess
import sys

import pytest

from fbvision.core.config import DEMO_CONFIG, ConfigError, Settings, apply_env_overrides, load_settings
from fbvision.core.redact import redact_url


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_demo_config_loads():
    s = load_settings(DEMO_CONFIG, environ={})
    assert len(s.cameras) == 4
    assert s.redis.url is None
    assert s.camera.jpeg_quality == 85
    assert all(c.source.startswith("synthetic:") for c in s.cameras)


def test_every_field_is_described():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            ann = field.annotation
            for sub in [ann, *getattr(ann, "__args__", ())]:
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub, f"{prefix}{name}.")

    walk(Settings)


def test_unknown_key_fails_naming_field_and_allowed(tmp_path):
    p = write(tmp_path, "inference:\n  max_bacth: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    msg = str(exc.value)
    assert "inference.max_bacth" in msg and "unknown field" in msg
    assert "max_batch" in msg  # the allowed names are listed


def test_out_of_range_value_fails_naming_field_and_bound(tmp_path):
    p = write(tmp_path, "inference:\n  max_batch: 64\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    msg = str(exc.value)
    assert "inference.max_batch" in msg and "32" in msg and "64" in msg


def test_bad_enum_lists_allowed_values(tmp_path):
    p = write(tmp_path, "model:\n  providers: [tensorrt, directml]\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    msg = str(exc.value)
    assert "model.providers.1" in msg and "'tensorrt', 'cuda' or 'cpu'" in msg


def test_camera_errors_name_the_index(tmp_path):
    p = write(tmp_path, "cameras:\n  - {id: a, source: synthetic:x}\n  - {id: 'bad id', source: x, fps: 500}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    msg = str(exc.value)
    assert "cameras.1.id" in msg and "cameras.1.fps" in msg


def test_duplicate_camera_ids_rejected(tmp_path):
    p = write(tmp_path, "cameras:\n  - {id: a, source: x}\n  - {id: a, source: y}\n")
    with pytest.raises(ConfigError, match="appears twice"):
        load_settings(p, environ={})


def test_env_overrides(tmp_path):
    p = write(tmp_path, "cameras:\n  - {id: a, source: x, fps: 5}\n")
    s = load_settings(p, environ={
        "FBV_INFERENCE__MAX_BATCH": "16", "FBV_CAMERAS__0__FPS": "12.5", "FBV_INFERENCE__AUTOTUNE": "false",
        "REDIS_URL": "redis://:pw@localhost:6380/0", "UNRELATED": "1",
    })
    assert s.inference.max_batch == 16
    assert s.cameras[0].fps == 12.5
    assert s.inference.autotune is False
    assert s.redis.url == "redis://:pw@localhost:6380/0"


def test_env_override_out_of_range_names_field(tmp_path):
    with pytest.raises(ConfigError, match="inference.max_wait_ms"):
        load_settings(write(tmp_path, "{}"), environ={"FBV_INFERENCE__MAX_WAIT_MS": "-1"})


def test_env_override_bad_list_index(tmp_path):
    with pytest.raises(ConfigError, match="out of range"):
        apply_env_overrides({"cameras": []}, {"FBV_CAMERAS__3__FPS": "1"})


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "mapping"),
    ("a: [", "not valid YAML"),
])
def test_malformed_files(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(write(tmp_path, text), environ={})


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings("/nonexistent/config.yaml", environ={})


def test_redis_url_scheme_checked(tmp_path):
    with pytest.raises(ConfigError, match="redis.url"):
        load_settings(write(tmp_path, "redis: {url: 'http://x'}"), environ={})


def test_secrets_never_shown_in_errors(tmp_path):
    p = write(tmp_path, "cameras:\n  - {id: a, source: 'rtsp://admin:hunter2@10.0.0.5/s', fps: 0}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    assert "hunter2" not in str(exc.value)


@pytest.mark.parametrize("text, expected", [
    ("rtsp://admin:hunter2@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
    ("rediss://user:p%40ss@h/1 and rtsp://u:p@x/y", "rediss://***@h/1 and rtsp://***@x/y"),
    ("http://host/a?token=abc&x=1", "http://host/a?token=***&x=1"),
    ("no secrets here", "no secrets here"),
])
def test_redact_url(text, expected):
    assert redact_url(text) == expected


def test_cli_check_reports_field(tmp_path):
    p = write(tmp_path, "camera:\n  jpeg_quality: 500\n")
    proc = subprocess.run([sys.executable, "-m", "fbvision.cli", "config", "check", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "camera.jpeg_quality" in proc.stderr


def test_an_unknown_section_is_refused_listing_the_sections(tmp_path):
    # (There was a special "renamed in 0.2" message for a `producer:` section here; a 0.1.0 package has no old
    # name to migrate from (issue 24), so it is an unknown field like any other, with the sections listed.)
    path = tmp_path / "old.yaml"
    path.write_text("producer:\n  jpeg_quality: 80\n")
    with pytest.raises(ConfigError, match=r"producer: unknown field allowed: alerts, camera, cameras"):
        load_settings(path, environ={})
    assert load_settings(write(tmp_path, "camera:\n  jpeg_quality: 80\n"), environ={}).camera.jpeg_quality == 80


def test_an_env_variable_for_a_section_that_does_not_exist_is_an_error_not_ignored(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "{}"), environ={"FBV_INFRENCE__MAX_BATCH": "4"})
    assert "infrence: unknown field" in str(exc.value)
    assert "[from environment variable FBV_INFRENCE__MAX_BATCH]" in str(exc.value)


def test_the_projects_other_fbv_variables_are_not_config(tmp_path):
    # The benchmarks, notebooks and backend read FBV_* variables of their own (docs/benchmarks.md, docs/alerts.md):
    # with one set, `fbvision run` must still start (it refused "bench_quick: unknown field" under `make bench`).
    s = load_settings(write(tmp_path, "{}"), environ={"FBV_BENCH_QUICK": "0", "FBV_BACKEND_TOKEN": "x" * 20,
                                                     "FBV_NOTEBOOK_FULL": "1", "FBV_INFERENCE__MAX_BATCH": "4"})
    assert s.inference.max_batch == 4
    with pytest.raises(ConfigError, match="infrence: unknown field"):  # a path (with __) is still checked
        load_settings(write(tmp_path, "{}"), environ={"FBV_BENCH_QUICK": "0", "FBV_INFRENCE__MAX_BATCH": "4"})


def test_env_values_are_typed_by_the_field_lists_and_null_as_yaml(tmp_path):
    s = load_settings(write(tmp_path, "runner: {prometheus_port: 9100}\n"), environ={
        "FBV_MODEL__PROVIDERS": "[cpu]", "FBV_RUNNER__PROMETHEUS_PORT": "null", "fbv_camera__jpeg_quality": "70",
        "FBV_CAMERAS": "[{id: a, source: 'synthetic:running'}]",
    })
    assert s.model.providers == ["cpu"] and s.runner.prometheus_port is None and s.camera.jpeg_quality == 70
    assert [c.id for c in s.cameras] == ["a"]
