"""The ``fbvision`` command: one entry point for every stage and tool.

    fbvision run [--duration S] [...]      the whole pipeline on this host (= runners/run_all.py)
    fbvision camera   [--config F]         camera manager only      (= runners/run_camera.py)
    fbvision infer    [--config F]         batch inference worker   (= runners/run_inference.py)
    fbvision logic    [--config F] [--id]  logic worker             (= runners/run_logic.py)
    fbvision delivery [--config F]         alert delivery to alerts.backend_url
    fbvision backend  [--port --db]        the embedded alert backend (SQLite)
    fbvision review   --db F --evidence D  the review page on a backend database (= backend; docs/evidence-and-review.md)
    fbvision config check [FILE] [--probe] validate the config and what it points at (files, scenes, model, URLs)
    fbvision config show [FILE] [--diff]   print the effective config as YAML (secrets masked; --diff: non-defaults)
    fbvision --version

With no --config / FILE: the demo config that ships in the package (fbvision/data/demo.yaml).

Single stages need a shared Redis: ``REDIS_URL=redis://:password@host:6379/0`` (or ``redis.url``).
First Ctrl-C/SIGTERM: finish the current batch and exit; second: exit now.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import yaml

from fbvision import __version__
from fbvision.core.config import ConfigError, load_settings
from fbvision.core.configbase import dump_json_with_secrets
from fbvision.run import main as run_main


def _config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.action == "show":
        # YAML, as the config is written; --diff: only what differs from the defaults (pydantic's exclude_defaults,
        # field by field down the tree, cameras included).
        # Secrets masked by the model itself (SecretStr, URLs' credentials: core/configbase.py), whatever they hold.
        tree = settings.model_dump(mode="json", exclude_defaults=args.diff)
        print(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), end="")
        return 0
    from fbvision.run.configcheck import check_world

    problems = check_world(settings, probe=args.probe, probe_timeout_s=args.probe_timeout)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {args.file or 'the demo config'}:",
              file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    n, off = len(settings.cameras), sum(1 for cam in settings.cameras if not cam.enabled)
    print(f"ok: {n} camera{'s' if n != 1 else ''}" + (f" ({off} disabled, not checked)" if off else "")
          + f", model {settings.model.path}" + (" (sources probed)" if args.probe else ""))
    return 0


def _stop_on_signals() -> threading.Event:
    """The stage runners' signal policy: first signal = warm stop, second = exit now."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            logging.getLogger("fbvision").error("second signal: exiting now")
            raise SystemExit(130)
        logging.getLogger("fbvision").warning("stopping after the current batch (signal again to exit now)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _stage(args: argparse.Namespace) -> int:
    from fbvision.run import stages

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s %(levelname)-7s [{args.command}] %(name)s: %(message)s")
    url = settings.redis.url
    if not url and args.command != "backend":
        print("a single stage needs a shared Redis: set REDIS_URL (or redis.url in the config)", file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    cfg = dump_json_with_secrets(settings)  # the stage needs the secrets
    if args.command == "camera":
        stages.camera_stage(cfg, url, stop)
    elif args.command == "infer":
        stages.inference_stage(cfg, url, stop)
    elif args.command == "logic":
        stages.logic_stage(cfg, url, args.id or stages.default_name("logic"), args.record or "", stop)
    elif args.command == "delivery":
        if not settings.alerts.backend_url:
            print("delivery needs alerts.backend_url (or FBV_ALERTS__BACKEND_URL)", file=sys.stderr)
            return 2
        stages.delivery_stage(cfg, url, settings.alerts.backend_url, stop)
    return 0


def _backend(args: argparse.Namespace) -> int:
    from fbvision.alerts.backend import main as backend_main

    # The token from --token, else the backend reads FBV_BACKEND_TOKEN itself (keeps it off the command line).
    backend_main(["--host", args.host, "--port", str(args.port), "--db", args.db,
                  *(["--token", args.token] if args.token else []),
                  *(["--evidence", args.evidence] if args.evidence else [])])
    return 0


def _run(args: argparse.Namespace) -> int:
    return run_main.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbvision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="check or show a configuration")
    cfg.add_argument("action", choices=["check", "show"])
    cfg.add_argument("file", nargs="?", default=None, help="YAML file (default: the demo config)")
    cfg.add_argument("--diff", action="store_true", help="show: only the values that differ from the defaults")
    cfg.add_argument("--probe", action="store_true",
                     help="check: also try to open each RTSP/stream (and device) source, within --probe-timeout")
    cfg.add_argument("--probe-timeout", type=float, default=5.0, metavar="S", help="seconds per probe (default 5)")
    cfg.set_defaults(func=_config)
    for name, text in (("camera", "camera manager"), ("infer", "batch inference worker"),
                       ("logic", "logic worker"), ("delivery", "alert delivery")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default=None, help="YAML file (default: the demo config)")
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        if name == "logic":
            p.add_argument("--id", default=None, help="worker id (stable across restarts; default: logic@host:pid)")
            p.add_argument("--record", default=None, help="folder for the parquet recording (off by default)")
        p.set_defaults(func=_stage)
    for name, text in (("backend", "embedded alert backend (HTTP -> SQLite) with the review page"),
                       ("review", "the review page (/review) on a backend database and its evidence directory")):
        b = sub.add_parser(name, help=text)
        b.add_argument("--host", default="127.0.0.1")
        b.add_argument("--port", type=int, default=8088)
        b.add_argument("--db", default="runs/alerts.sqlite")
        b.add_argument("--evidence", default=None, help="evidence directory served under /evidence/ (snapshots, clips)")
        b.add_argument("--token", default=None, help="bearer token (or basic-auth password) required on /alerts and "
                       "the review page (default $FBV_BACKEND_TOKEN); needed unless --host is loopback")
        b.set_defaults(func=_backend)
    r = sub.add_parser("run", help="the whole pipeline on this host (= runners/run_all.py)",
                       description=run_main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_main.add_arguments(r)
    r.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
