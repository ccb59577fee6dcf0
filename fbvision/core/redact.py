"""Keep secrets out of logs and reports."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<userinfo>[^@/\s]+)@", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|key)=)[^&\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Mask credentials in every URL inside ``text``.

    ``rtsp://admin:hunter2@10.0.0.5/stream?token=abc`` -> ``rtsp://***@10.0.0.5/stream?token=***``.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}***", text)
