#!/usr/bin/env python3
"""Run the camera stage alone, against a shared Redis (REDIS_URL). Same as `fbvision camera`."""

import sys

from fbvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["camera", *sys.argv[1:]]))
