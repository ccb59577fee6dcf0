"""A chosen rule setting as a YAML config snippet that load_settings loads unchanged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import yaml

from fbvision.core.logic_config import (
    RuleConfig,
    RulesConfig,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Config snippets


def config_snippet(rule_name: str, rule_config: RuleConfig | Mapping[str, Any], *, header: str | None = None,
                   full: bool = True) -> str:
    """YAML of one rule setting. ``full=True``: a settings file (``logic: rules: <rule>: ...``) that
    :func:`fbvision.core.config.load_settings` loads as is (other sections keep their defaults); ``full=False``:
    just ``<rule>: ...``, to paste under ``logic: rules:`` of an existing file. Validated before returning."""
    if rule_name not in RulesConfig.model_fields:
        raise ValueError(f"unknown rule {rule_name!r}; rules: {', '.join(RulesConfig.model_fields)}")
    dump = rule_config.model_dump(mode="json") if isinstance(rule_config, RuleConfig) else dict(rule_config)
    validated = getattr(RulesConfig.model_validate({rule_name: dump}), rule_name)
    tree: dict[str, Any] = {rule_name: validated.model_dump(mode="json")}
    if full:
        tree = {"logic": {"rules": tree}}
    text = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
    return text


