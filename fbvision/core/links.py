"""Signed links: one action on one thing, no login, until an expiry (docs/notify.md, docs/evidence-and-review.md).

A notification carries a link that acknowledges *its* alert and nothing else: the link holds the purpose
(``"ack"``), the subject (the alert's episode key) and the expiry, signed with HMAC-SHA256 under a secret that
the sender (the notifier) and the verifier (the backend) share (``alerts.link_secret``). Whoever has the link can
do that one thing until it expires; changing any part of it (another episode key, a later expiry, another
purpose) breaks the signature. Nothing secret is in the link itself: the subject is readable, only its signature
is unforgeable.

Token format (URL-safe, no padding, ``.``-separated)::

    v1.<purpose>.<base64url(subject)>.<expires: unix seconds, integer>.<base64url(HMAC-SHA256(secret, message))>

where ``message = b"fbvision-link\\x00v1\\x00" + purpose + b"\\x00" + subject + b"\\x00" + expires``. Verification
compares signatures in constant time and answers a :class:`LinkError` with a fixed ``reason``
(``malformed``, ``signature``, ``expired``) - never which part was wrong beyond that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

VERSION = "v1"
#: Longest token accepted (a URL path segment): an episode key is at most a few hundred bytes.
MAX_TOKEN_CHARS = 2048
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_DOMAIN = b"fbvision-link"


class LinkError(ValueError):
    """A link that does not verify. ``reason``: ``malformed``, ``signature`` or ``expired``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass(frozen=True)
class LinkClaim:
    """What a verified link allows: ``purpose`` on ``subject`` until ``expires_at`` (unix seconds)."""

    purpose: str
    subject: str
    expires_at: int


def new_link_secret() -> str:
    """A fresh secret for ``alerts.link_secret`` (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < 16:
        raise ValueError("a link secret must be at least 16 bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise LinkError("malformed", "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LinkError("malformed", "not base64url") from exc


def _mac(key: bytes, purpose: str, subject: bytes, expires: int) -> bytes:
    message = b"\x00".join((_DOMAIN, VERSION.encode(), purpose.encode(), subject, str(expires).encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


def sign_link(purpose: str, subject: str, expires_at: float, secret: str | bytes) -> str:
    """A token that allows ``purpose`` on ``subject`` until ``expires_at`` (unix seconds, rounded down)."""
    if not _PURPOSE_RE.fullmatch(purpose):
        raise ValueError(f"purpose {purpose!r}: lowercase letters, digits and _ only")
    if not math.isfinite(expires_at) or expires_at <= 0:
        raise ValueError(f"expires_at {expires_at!r}: a finite unix time")
    expires = int(expires_at)
    raw = subject.encode("utf-8")
    token = ".".join((VERSION, purpose, _b64(raw), str(expires), _b64(_mac(_key(secret), purpose, raw, expires))))
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"subject too long for a link ({len(raw)} bytes)")
    return token


def verify_link(token: str, purpose: str, secret: str | bytes, now: float) -> LinkClaim:
    """The claim of a valid, unexpired ``token`` for ``purpose``; :class:`LinkError` otherwise."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise LinkError("malformed", "too long")
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != VERSION:
        raise LinkError("malformed", "not a link token")
    _, got_purpose, subject_b64, expires_text, sig_b64 = parts
    if not expires_text.isdigit() or len(expires_text) > 12:
        raise LinkError("malformed", "bad expiry")
    subject, sig, expires = _unb64(subject_b64), _unb64(sig_b64), int(expires_text)
    # The purpose is part of the signed message: a token for another purpose fails the signature check too.
    if not _PURPOSE_RE.fullmatch(got_purpose):
        raise LinkError("malformed", "bad purpose")
    expected = _mac(_key(secret), purpose, subject, expires)
    if got_purpose != purpose or not hmac.compare_digest(sig, expected):
        raise LinkError("signature")
    if now >= expires:
        raise LinkError("expired")
    try:
        text = subject.decode("utf-8")
    except UnicodeDecodeError as exc:  # signed by us, so never; but never trust
        raise LinkError("malformed", "subject not UTF-8") from exc
    return LinkClaim(purpose, text, expires)
