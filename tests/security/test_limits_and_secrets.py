"""Message and batch size limits, and secrets kept out of committed files."""

from __future__ import annotations

import re
import struct
import subprocess

import numpy as np
import pytest
import requests

from fbvision.core import wire
from fbvision.core.config import REPO_ROOT, ConfigError, load_settings
from fbvision.core.letterbox import Letterbox
from fbvision.core.transport import Transport

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _frame(jpeg: bytes = b"\xff\xd8jpeg") -> bytes:
    return wire.encode_frame(wire.FrameMessage("cam-a", 1, 1.0, 1.0, Letterbox(640, 480, 320, 320, 0.5, 0.0, 40.0), jpeg))


def test_oversized_messages_rejected_before_parsing():
    with pytest.raises(wire.WireError) as err:
        wire.decode_frame(b"FB\x01\x01" + b"\x00" * wire.MAX_FRAME_MESSAGE_BYTES)
    assert err.value.reason == "too_large"
    with pytest.raises(wire.WireError) as err:
        wire.decode_result(b"FB\x01\x02" + b"\x00" * wire.MAX_RESULT_MESSAGE_BYTES)
    assert err.value.reason == "too_large"


def test_lengths_inside_a_message_are_not_trusted():
    msg = bytearray(_frame())
    # claim a 4 GB JPEG: refused by the limit, nothing allocated for it
    jpeg_len_at = len(msg) - len(b"\xff\xd8jpeg") - 4
    msg[jpeg_len_at:jpeg_len_at + 4] = struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(wire.WireError) as err:
        wire.decode_frame(bytes(msg))
    assert err.value.reason == "too_large"
    msg[jpeg_len_at:jpeg_len_at + 4] = struct.pack("<I", 1000)  # more than there is
    with pytest.raises(wire.WireError) as err:
        wire.decode_frame(bytes(msg))
    assert err.value.reason == "truncated"


def test_encoders_refuse_what_decoders_would():
    with pytest.raises(wire.WireError):
        _frame(b"x" * (wire.MAX_JPEG_BYTES + 1))
    n = wire.MAX_BOXES + 1
    with pytest.raises(wire.WireError):
        wire.encode_result(wire.ResultMessage("cam-a", 1, 640, 480, wire.Timeline(), 1, np.zeros((n, 4), np.float32),
                                              np.zeros(n, np.float32), np.zeros(n, np.int32)))


def test_batch_and_queue_limits(redis_url):
    with pytest.raises(ConfigError, match="max_batch"):
        load_settings(environ={"FBV_INFERENCE__MAX_BATCH": "33"})
    t = Transport(redis_url, frame_queue_cap=10)
    try:
        assert t.push_frames([b"f%d" % i for i in range(25)]).dropped_by_cap == 15
        assert t.frame_queue_depth() == 10 and t.stats("queue")["dropped:queue_full"] == 15
        assert len(t.pop_frames(4, 0.1)) == 4  # never more than asked for
    finally:
        t.close()


def test_backend_refuses_oversized_alert(tmp_path):
    from fbvision.alerts.backend import MAX_BODY_BYTES, EmbeddedBackend

    with EmbeddedBackend(tmp_path / "a.sqlite") as backend:
        reply = requests.post(backend.url, data=b"{" + b" " * MAX_BODY_BYTES + b"}",
                              headers={"Content-Type": "application/json"}, timeout=10)
        assert reply.status_code == 413
        assert backend.alerts() == []


USERINFO_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s:@'\"]+:[^/\s@'\"]+@", re.IGNORECASE)


def test_committed_configs_carry_no_credentials():
    files = subprocess.run(["git", "ls-files", "configs", "*.yaml", "*.yml", "*.env", "*.toml", "*.ini"],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert any(f.startswith("configs/") for f in files)
    hits = []
    for name in files:
        text = (REPO_ROOT / name).read_text(errors="replace")
        hits += [f"{name}: {m.group(0)}" for m in USERINFO_WITH_PASSWORD.finditer(text)]
        hits += [f"{name}: {line.strip()}" for line in text.splitlines()
                 if re.match(r"\s*(password|passwd|secret|token|api_key)\s*[:=]\s*\S", line, re.IGNORECASE)]
    assert hits == [], hits


def test_secrets_come_from_the_environment():
    s = load_settings(environ={"REDIS_URL": "rediss://:pw-from-env@redis.internal:6380/0",
                               "FBV_CAMERAS__0__SOURCE": "rtsp://u:cam-pw-from-env@10.0.0.5/stream"})
    assert s.redis.url == "rediss://:pw-from-env@redis.internal:6380/0"
    assert s.cameras[0].source.startswith("rtsp://u:cam-pw-from-env@")
