#!/usr/bin/env python3
"""Run the whole pipeline on this host. Same as `fbvision run` (the code: fbvision/run/main.py).

Needs fbvision installed (`make run` / `pip install -e .` make .venv with it).
"""

import sys

from fbvision.run.main import main

if __name__ == "__main__":
    sys.exit(main())
