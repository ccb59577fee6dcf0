#!/usr/bin/env python3
"""Run the inference stage alone, against a shared Redis (REDIS_URL). Same as `fbvision infer`."""

import sys

from fbvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
