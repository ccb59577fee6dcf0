#!/usr/bin/env python3
"""Run the camera stage alone, against a shared Redis (REDIS_URL). Same as `fbvision camera`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fbvision.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["camera", *sys.argv[1:]]))
