"""Secrets holding ``'``, ``"`` and spaces (issue 24: a token with a quote, or a ``'`` in a Redis URL's password,
was shown in clear by the regex redaction, and a ``"`` made ``config show`` crash).

The config's secrets are masked on the parsed model (core/configbase.py: ``backend_token`` a SecretStr, the URL
fields' credentials masked structurally in every dump), and the run's log masks the known values literally. Each
test puts the same secrets through one exit: ``config show``, a validation error, the run report, log lines."""

from __future__ import annotations

import json
import logging
import time

import pytest
import yaml

from fbvision.cli import main as cli
from fbvision.core.config import ConfigError, Settings, load_settings
from fbvision.core.configbase import dump_json_with_secrets, secret_values

pytestmark = pytest.mark.timeout(120)

TOKEN = "tok'en\"-0123456789-Quote'd\""  # visible ASCII: a valid bearer token, quotes and all
REDIS_PW = "pa'ss \"w d"  # quote, double quote, spaces
CAM_PW = "ca'm \"pw"
BACKEND_PW = "ba'ck\"end pw"
REDIS_URL = f"redis://:{REDIS_PW}@redis.local:6379/0"
CAM_URL = f"rtsp://viewer:{CAM_PW}@10.0.0.5:554/stall"
BACKEND_URL = f"https://alerts:{BACKEND_PW}@alerts.example:8443/alerts"
SECRETS = (TOKEN, REDIS_PW, CAM_PW, BACKEND_PW, "0123456789-Quote", "ss \"w", "m \"pw", "end pw")
ENV = {"REDIS_URL": REDIS_URL, "FBV_ALERTS__BACKEND_TOKEN": TOKEN, "FBV_ALERTS__BACKEND_URL": BACKEND_URL,
       "FBV_CAMERAS__0__SOURCE": CAM_URL}


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shown in clear"


def test_the_parsed_model_keeps_the_values_and_masks_every_dump_and_repr():
    s = load_settings(environ=ENV)
    assert s.redis.url == REDIS_URL and s.cameras[0].source == CAM_URL
    assert s.alerts.backend_token.get_secret_value() == TOKEN
    for text in (s.model_dump_json(), json.dumps(s.model_dump(mode="json")), repr(s), str(s.alerts.backend_token)):
        assert_no_secret(text)
    assert s.model_dump(mode="json")["alerts"]["backend_token"] == "***"
    # The hand-over to a stage process keeps them: it parses back to the same secrets.
    back = Settings.model_validate_json(dump_json_with_secrets(s))
    assert back.redis.url == REDIS_URL and back.alerts.backend_token.get_secret_value() == TOKEN
    assert back.alerts.backend_url == BACKEND_URL and back.cameras[0].source == CAM_URL


def test_config_show_masks_quoted_secrets_and_does_not_crash(monkeypatch, capsys):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert cli(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert_no_secret(out)
    tree = yaml.safe_load(out)
    assert tree["redis"]["url"] == "redis://***@redis.local:6379/0"
    assert tree["alerts"]["backend_token"] == "***"
    assert tree["alerts"]["backend_url"] == "https://***@alerts.example:8443/alerts"
    assert tree["cameras"][0]["source"] == "rtsp://***@10.0.0.5:554/stall"


@pytest.mark.parametrize("environ, field", [
    ({"REDIS_URL": f"http://:{REDIS_PW}@redis.local/0"}, "redis.url"),  # wrong scheme
    ({"FBV_ALERTS__BACKEND_TOKEN": "sh'o\"rt"}, "alerts.backend_token"),  # too short
    ({"FBV_ALERTS__BACKEND_TOKEN": TOKEN.replace("-", " ")}, "alerts.backend_token"),  # spaces: not visible ASCII
    ({"FBV_ALERTS__BACKEND_URL": f"ftp://u:{BACKEND_PW}@h/x"}, "alerts.backend_url"),
])
def test_a_validation_error_names_the_field_and_masks_the_secret(environ, field):
    with pytest.raises(ConfigError) as exc:
        load_settings(environ=environ)
    msg = str(exc.value)
    assert f"{field}:" in msg and "(given: " in msg and "***" in msg
    assert_no_secret(msg)
    assert_no_secret(msg.replace(" ", ""))


def test_log_lines_mask_the_configured_secrets(tmp_path):
    from fbvision.run.logs import RUN_LOG, RunLog

    settings = load_settings(environ=ENV)
    log = RunLog(tmp_path, logging.INFO, secrets=secret_values(settings)).start()
    try:
        logger = logging.getLogger("fbvision.test.secrets")
        logger.warning("connecting to %s with token %s", REDIS_URL, TOKEN)
        logger.error("camera %s failed: %r", CAM_URL, {"url": BACKEND_URL})
        try:
            raise RuntimeError(f"backend said no to password {BACKEND_PW}")
        except RuntimeError:
            logger.exception("delivery failed")
    finally:
        log.stop()
    text = (tmp_path / RUN_LOG).read_text()
    assert "connecting to redis://***@redis.local:6379/0 with token ***" in text
    assert "delivery failed" in text and "backend said no to password ***" in text
    pane = " ".join(line for *_, line in log.pane.recent())
    assert "camera rtsp://***@10.0.0.5:554/stall failed" in pane
    assert_no_secret(text)
    assert_no_secret(pane)


def test_the_run_report_masks_quoted_secrets(tmp_path):
    from fbvision.run.redis_server import EmbeddedRedis
    from fbvision.run.report import build_report, render_markdown
    from fbvision.run.runner import PipelineRun

    settings = load_settings(environ=ENV)
    with EmbeddedRedis() as server:
        run = PipelineRun(settings, tmp_path, dashboard=False)
        run.redis_url = server.url
        from fbvision.core.transport import Transport

        run.transport = Transport(server.url)
        run.started_at = time.time() - 5
        try:
            report = build_report(run, time.time())
        finally:
            run.transport.close()
    text = json.dumps(report, default=str) + render_markdown(report)
    assert_no_secret(text)
    assert report["config"]["redis"]["url"] == "redis://***@redis.local:6379/0"
    assert report["config"]["alerts"]["backend_token"] == "***"
    assert report["config"]["cameras"][0]["source"] == "rtsp://***@10.0.0.5:554/stall"
