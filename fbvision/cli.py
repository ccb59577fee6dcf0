"""The ``fbvision`` command: one entry point for every stage and tool.

    fbvision config check [FILE]     validate a config file (names every bad field)
    fbvision config show [FILE]      print the effective config (after FBV_* overrides), secrets masked
"""

from __future__ import annotations

import argparse
import json
import sys

from fbvision.config import ConfigError, load_settings
from fbvision.redact import redact_url


def _config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.action == "show":
        print(redact_url(json.dumps(settings.model_dump(mode="json"), indent=2)))
    else:
        print(f"ok: {len(settings.cameras)} cameras, model {settings.model.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbvision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="check or show a configuration")
    cfg.add_argument("action", choices=["check", "show"])
    cfg.add_argument("file", nargs="?", default=None, help="YAML file (default: configs/demo.yaml)")
    cfg.set_defaults(func=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
