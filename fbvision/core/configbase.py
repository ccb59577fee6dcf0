"""The one base of every configuration model, and the types of its secrets.

:class:`ConfigModel` is what every config tree (``core/config.py``, ``core/logic_config.py``, the synthetic
scenarios of ``synth/scenario.py``) derives from: unknown keys are refused (``extra="forbid"``: a misspelt key
fails at start with its name), assignments and defaults are validated. A model that is immutable says so with
``class X(ConfigModel, frozen=True)``. Pydantic's ``strict=True`` is *not* on: YAML and environment values are
text or plain numbers, and the lax conversions (``"12.5"`` -> float, ``"models/x.onnx"`` -> ``Path``, ``"vote"``
-> an enum) are what a config file wants; bounds and patterns are on the fields. How a validation error reads
(the field, what was given, where it came from: ``file:line`` or the environment variable) is decided in one
place, :func:`fbvision.core.config.format_validation_error`.

Secrets (docs/deploy.md 'Secrets'):

* :data:`SecretText` - a token or password: pydantic's ``SecretStr`` (``str()``/``repr()`` show ``**********``;
  ``.get_secret_value()`` is the only way to the text), dumped as ``"***"``.
* :data:`SecretUrlText` - a URL that may carry credentials (``redis://:pw@host``, ``rtsp://user:pw@cam``). It stays a
  ``str`` on the parsed model, because the stages hand it to redis-py / FFmpeg as it is, and is masked *on the
  model*: every dump (``model_dump``, ``model_dump_json``: ``config show``, the run report) writes
  :func:`fbvision.core.redact.mask_url` of it, and the model's ``repr`` too. The mask works on the parsed value,
  so a ``'``, ``"`` or space in a password cannot defeat it (a regex over a JSON text could be).

The one dump that keeps the secrets is the hand-over of the settings to the stage processes:
:func:`dump_json_with_secrets` (serialisation context :data:`REVEAL_SECRETS`).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, PlainSerializer, SecretStr, SerializationInfo

from fbvision.core.redact import MASK, mask_url, url_secrets

#: Serialisation context under which secrets are written in clear (the stage hand-over only).
REVEAL_SECRETS = {"fbv_reveal_secrets": True}


class _SecretMark:
    """Annotated metadata: this field holds a secret (format_validation_error masks its given value)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "text" (masked whole) or "url" (credentials masked)

    def mask(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return mask_url(value) if self.kind == "url" else MASK


SECRET_TEXT = _SecretMark("text")
SECRET_URL = _SecretMark("url")


def _revealing(info: SerializationInfo) -> bool:
    return bool(info.context and info.context.get("fbv_reveal_secrets"))


def _dump_secret_text(value: SecretStr | str | None, info: SerializationInfo) -> str | None:
    if value is None:
        return None
    return reveal(value) if _revealing(info) else MASK


def _dump_secret_url(value: str | None, info: SerializationInfo) -> str | None:
    if value is None or _revealing(info):
        return value
    return mask_url(value)


SecretText = Annotated[SecretStr, SECRET_TEXT, PlainSerializer(_dump_secret_text, return_type=str)]
SecretUrlText = Annotated[str, SECRET_URL, PlainSerializer(_dump_secret_url, return_type=str)]


def secret_mark(field: Any) -> _SecretMark | None:
    """The secret mark of a pydantic ``FieldInfo`` (None: not a secret): on the field, or inside its annotation
    (``SecretUrlText | None`` keeps it in the union's ``Annotated`` member)."""

    def find(metadata: Any, annotation: Any) -> _SecretMark | None:
        for meta in metadata or ():
            if isinstance(meta, _SecretMark):
                return meta
        for arg in get_args(annotation):
            found = find(getattr(arg, "__metadata__", ()), arg)
            if found is not None:
                return found
        return None

    return find(getattr(field, "metadata", ()), getattr(field, "annotation", None))


def reveal(value: SecretStr | str | None) -> str | None:
    """The clear text of a secret field's value (a ``SecretStr``, or a ``str`` set by ``model_copy(update=...)``)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class ConfigModel(BaseModel):
    """The base of every configuration model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    def __repr_args__(self):
        fields = type(self).model_fields
        for name, value in super().__repr_args__():
            mark = secret_mark(fields.get(name)) if name in fields else None
            yield name, (mark.mask(value) if mark is not None else value)


def dump_json_with_secrets(model: BaseModel) -> str:
    """``model`` as JSON with its secrets in clear: only for handing the settings to a stage process."""
    return model.model_dump_json(context=REVEAL_SECRETS)


def secret_values(model: BaseModel) -> set[str]:
    """Every secret text of a config tree, as it would appear in a log line (tokens whole; the credentials of
    the URL fields): what :class:`fbvision.core.redact.KnownSecrets` masks in the run's log."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, BaseModel):
            for name, field in type(node).model_fields.items():
                value = getattr(node, name)
                mark = secret_mark(field)
                if mark is not None and value is not None:
                    text = reveal(value)
                    found.update(url_secrets(text) if mark.kind == "url" else [text])
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(model)
    return found
