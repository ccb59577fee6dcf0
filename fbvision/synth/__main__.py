"""Render a scenario to an MP4 (or JPEG frames) with its ground truth.

python -m fbvision.synth --list
python -m fbvision.synth down_long out/down_long.mp4
python -m fbvision.synth my_scene.yaml out/frames/ --frames
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fbvision.synth import Scenario, builtin_scenarios, write_frames, write_video


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fbvision.synth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", nargs="?", help="built-in name or a scenario YAML file")
    parser.add_argument("output", nargs="?", type=Path, help="MP4 path, or a folder with --frames")
    parser.add_argument("--frames", action="store_true", help="write JPEG frames instead of an MP4")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="JPEG artefacts at this quality")
    parser.add_argument("--list", action="store_true", help="list the built-in scenarios")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.list or not args.scenario:
        for name in builtin_scenarios():
            scenario = Scenario.builtin(name)
            print(
                f"{name:14s} {scenario.effective_duration_s:6.0f} s  {scenario.look:5s}  {scenario.description}"
            )
        return 0
    if args.output is None:
        parser.error("output is required")
    path = Path(args.scenario)
    scenario = (
        Scenario.from_yaml(path) if path.suffix in (".yaml", ".yml") else Scenario.builtin(args.scenario)
    )
    if args.frames:
        write_frames(scenario, args.output, jpeg_quality=args.jpeg_quality or 90)
    else:
        write_video(scenario, args.output, jpeg_quality=args.jpeg_quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
