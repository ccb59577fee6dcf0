#!/usr/bin/env python3
"""Run the whole pipeline on this host.

With no arguments: a private redis-server, four synthetic stall cameras with known scenarios, the demo
model, the logic worker and an embedded alert backend, each stage in its own supervised process, a live
dashboard, and a run report (Markdown + JSON) at the end. With ``--config FILE`` it runs the cameras of
that file (RTSP, files, devices) instead; ``REDIS_URL`` points it at a shared Redis.

Ctrl-C once: stop the cameras, finish what is queued, deliver the alerts, write the report.
Ctrl-C twice: stop now.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fbvision.core.config import ConfigError, load_settings  # noqa: E402
from fbvision.run.runner import PipelineRun  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
    parser.add_argument("--run-dir", type=Path, default=None, help="report/recording folder (default: runs/<time>)")
    parser.add_argument("--no-dashboard", action="store_true", help="plain logs instead of the live dashboard")
    parser.add_argument("--no-record", action="store_true", help="do not write the per-result parquet recording")
    parser.add_argument("--preview", action="store_true",
                        help="at the end, an annotated MP4 per synthetic camera (previews/ in the run folder)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    level = getattr(logging, args.log_level)
    dashboard = settings.runner.dashboard and not args.no_dashboard and sys.stdout.isatty()
    # With the dashboard on, the stages' INFO chatter would scroll it away: warnings only.
    stage_level = max(level, logging.WARNING) if dashboard else level
    logging.basicConfig(level=stage_level, format="%(asctime)s %(levelname)-7s [runner] %(name)s: %(message)s")
    run_dir = args.run_dir or Path(settings.runner.report_dir) / time.strftime("%Y%m%d-%H%M%S")
    if args.preview and args.no_record:
        print("--preview needs the recording: drop --no-record", file=sys.stderr)
        return 2
    run = PipelineRun(settings, run_dir, dashboard=dashboard, log_level=stage_level, record=not args.no_record,
                      preview=args.preview)
    run.install_signal_handlers()
    outcome = run.execute(args.duration)
    md = (outcome.run_dir / "report.md").read_text()
    print(md)
    print(f"report: {outcome.run_dir / 'report.md'} and report.json")
    return 1 if outcome.exit_reason.startswith("crash loop") else 0


if __name__ == "__main__":
    sys.exit(main())
