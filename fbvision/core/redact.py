"""Keep secrets out of logs and reports.

:func:`redact_url` masks, anywhere in a text (a log line, a JSON dump of the config, an error message):

* the user-info of every URL, ``scheme://user:password@host`` -> ``scheme://***@host``, also when the password
  holds ``@``, ``/``, ``:`` or spaces (the mask then reaches the LAST ``@`` before the next URL, quote or end of
  line: it can hide a bit more than the password, e.g. an e-mail address later on the same line - never less);
* ``name=value`` for every name that says secret (``password=``, ``pwd=``, ``token=``, ``access_token=``,
  ``api_key=``, ``apikey=``, ``client_secret=``, ``X-Amz-Signature=``, ``sig=``, ``key=`` ...), in a query string
  or in free text (``--api_key=...``);
* the same names as JSON/YAML/repr keys: ``"backend_token": "..."`` -> ``"backend_token": "***"``;
* ``Bearer <token>`` / ``Basic <credentials>`` (an ``Authorization`` header's value).

The masks stop at ``"``, ``'``, ``<`` and ``>``, so a JSON document stays JSON after redaction. That makes
:func:`redact_url` a net for free text (log lines, exception messages); a value known to be a URL or a secret is
masked on its own, structurally, by :func:`mask_url` / :data:`MASK` (the config's secret fields are, in every dump:
``fbvision.core.configbase``), which no quote or space in a password can defeat.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

_SCHEME = r"[a-z][a-z0-9+.\-]*://"
# Either a plain user-info without ':' (a user or a token: cannot hold '/', '@' or spaces), or "user:password"
# where the password may hold anything up to the last '@' before the next URL, quote or line end (greedy
# then backtracking finds that last '@').
_USERINFO = re.compile(
    rf"(?P<scheme>{_SCHEME})"
    rf"(?P<userinfo>[^:@/\s\"'<>]*:(?:(?!{_SCHEME})[^\"'<>\r\n\t])*|[^:@/\s\"'<>]+)"
    r"@",
    re.IGNORECASE,
)
# Names that end like this are secrets (access_token, client_secret, x-api-key, X-Amz-Signature); the short
# generic ones (key, sig, auth) only on their own, or idempotency_key / episode_key would be masked too.
_SECRET_NAME = (
    r"[\w.\-]*?(?:pass(?:word|wd|phrase)?|pwd|token|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key"
    r"|credentials?|signature)|key|sig|auth"
)
_SECRET_PARAM = re.compile(
    rf"(?P<key>(?<![\w.\-])(?:{_SECRET_NAME})=)(?P<value>[^&\s\"'<>]*)", re.IGNORECASE
)
# The same names as keys of JSON/YAML/repr text: ``"backend_token": "..."``, ``'password': '...'``.
_SECRET_FIELD = re.compile(
    rf"(?P<key>(?P<q>[\"'])(?:{_SECRET_NAME})(?P=q)\s*:\s*(?P<vq>[\"']))(?P<value>[^\"'\r\n]*)(?P=vq)",
    re.IGNORECASE,
)
# "Bearer x" anywhere; "Basic x" only as an Authorization value ("basic checks passed" is prose).
_AUTH_SCHEME = re.compile(
    r"(?P<scheme>\bbearer\s+|\bauthorization\s*[:=]\s*(?:basic\s+|bearer\s+)?)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE
)


MASK = "***"
_SECRET_PARAM_NAME = re.compile(rf"(?:{_SECRET_NAME})", re.IGNORECASE)


def _secret_param_value(param: str) -> str | None:
    """The value of one ``name=value`` query parameter when its name is a secret's (and it has one), else None."""
    name, eq, value = param.partition("=")
    return value if eq and value and _SECRET_PARAM_NAME.fullmatch(name) else None


def mask_url(url: str) -> str:
    """``url`` (one URL, or any config value that may be one) with its credentials masked, structurally.

    The user-info (everything between ``scheme://`` and the LAST ``@``: a password may hold ``@``, ``/``, ``:``,
    quotes and spaces) becomes ``***``, and so does the value of every secret-named query parameter
    (``?token=...``). Text that is not a ``scheme://`` URL (a file path, ``synthetic:running``) is returned as it is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return url
    if "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    head, qmark, query = rest.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        params = []
        for param in query.split("&"):
            secret = _secret_param_value(param)
            params.append(param if secret is None else f"{param.partition('=')[0]}={MASK}")
        rest = f"{head}?{'&'.join(params)}{hash_}{fragment}"
    return f"{scheme}://{rest}"


def redact_url(text: str) -> str:
    """Mask credentials in every URL (and every ``secret=value``, ``Bearer token``) inside ``text``.

    ``rtsp://admin:hunter2@10.0.0.5/stream?token=abc`` -> ``rtsp://***@10.0.0.5/stream?token=***``.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group('key')}***" if m.group("value") else m.group(0), text)
    text = _SECRET_FIELD.sub(
        lambda m: f"{m.group('key')}***{m.group('vq')}" if m.group("value") else m.group(0), text
    )
    return _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')}***", text)


def url_secrets(url: str) -> list[str]:
    """The secret parts of one URL, as they appear in it: the user-info, its password, secret query values."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    found = []
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2]]
    for param in rest.partition("?")[2].partition("#")[0].split("&"):
        secret = _secret_param_value(param)
        if secret is not None:
            found.append(secret)
    return [s for s in found if s]


class KnownSecrets(logging.Filter):
    """Masks the given secret values, literally, in every record's message (then :func:`redact_url` as a net).

    A value known from the configuration is found as it is, whatever quotes or spaces it holds, which no pattern
    over the text can promise. Values shorter than 4 characters are not searched (they would mask common words)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Also as a repr() or JSON string writes them (a dict in a %r, a JSON dump): quotes escaped there.
        forms = {form for s in secrets if s and len(s) >= 4
                 for form in (s, repr(s)[1:-1], repr(f"'{s}")[2:-1], json.dumps(s)[1:-1])}
        self.secrets = sorted({*self.secrets, *forms}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return redact_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:  # a traceback's text too (the exception's message)
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        return True
