"""Run the whole pipeline on this host: ``fbvision run`` (= ``python runners/run_all.py`` in a checkout).

With no arguments: a private redis-server, four synthetic stall cameras with known scenarios, the demo
model, the logic worker and an embedded alert backend, each stage in its own supervised process, a live
dashboard, and a run report (Markdown + JSON) at the end. With ``--config FILE`` it runs the cameras of
that file (RTSP, files, devices) instead; ``REDIS_URL`` points it at a shared Redis.

Ctrl-C once: stop the cameras, finish what is queued, deliver the alerts, write the report (the dashboard
shows each step). Ctrl-C twice: stop now.

Every stage's log records go to ``<run dir>/run.log``; with the dashboard on, the last warnings and errors show
in its log pane and nothing else is written to the terminal. When stdout is not a terminal the dashboard is off
(one line says so; ``--dashboard`` forces it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from fbvision.core.config import ConfigError, load_settings
from fbvision.run.logs import StageName


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a whole run (shared by ``fbvision run`` and ``runners/run_all.py``)."""
    parser.add_argument("--config", help="YAML config (default: the demo config, fbvision/data/demo.yaml)")
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="report/recording folder (default: runner.report_dir/<time>, runs/ in the current directory)")
    parser.add_argument("--no-dashboard", action="store_true", help="plain logs instead of the live dashboard")
    parser.add_argument("--dashboard", action="store_true",
                        help="the live dashboard even when stdout is not a terminal (e.g. piped into tee)")
    parser.add_argument("--no-record", action="store_true", help="do not write the per-result parquet recording")
    parser.add_argument("--preview", action="store_true",
                        help="at the end, an annotated MP4 per synthetic camera (previews/ in the run folder)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args: argparse.Namespace) -> int:
    """One run with parsed options; the exit status (1 when a stage ended in a crash loop)."""
    from fbvision.run.runner import PipelineRun

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    level = getattr(logging, args.log_level)
    wanted = (settings.runner.dashboard or getattr(args, "dashboard", False)) and not args.no_dashboard
    forced = getattr(args, "dashboard", False) and not args.no_dashboard
    dashboard = wanted and (sys.stdout.isatty() or forced)
    if wanted and not dashboard:
        print("dashboard off: stdout is not a terminal (plain logs follow; --dashboard forces it, "
              "--no-dashboard silences this line)", file=sys.stderr, flush=True)
    if dashboard:
        # Nothing on the terminal but the dashboard (it would be painted over): records go to run.log and to the
        # dashboard's log pane (fbvision.run.logs).
        logging.getLogger().setLevel(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s [%(stage)s] %(name)s: %(message)s")
        for handler in logging.getLogger().handlers:
            handler.addFilter(StageName("runner"))
    # A relative report_dir (runs/ by default) is taken from the current directory.
    run_dir = args.run_dir or Path(settings.runner.report_dir) / time.strftime("%Y%m%d-%H%M%S")
    if args.preview and args.no_record:
        print("--preview needs the recording: drop --no-record", file=sys.stderr)
        return 2
    pipeline = PipelineRun(settings, run_dir, dashboard=dashboard, log_level=level, record=not args.no_record,
                           preview=args.preview, force_terminal=forced)
    pipeline.install_signal_handlers()
    outcome = pipeline.execute(args.duration)
    md = (outcome.run_dir / "report.md").read_text()
    print(md)
    print(f"report: {outcome.run_dir / 'report.md'} and report.json")
    return 1 if outcome.exit_reason.startswith("crash loop") else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
