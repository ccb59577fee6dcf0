#!/usr/bin/env python3
"""Run the logic stage alone, against a shared Redis (REDIS_URL). Same as `fbvision logic`."""

import sys

from fbvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["logic", *sys.argv[1:]]))
