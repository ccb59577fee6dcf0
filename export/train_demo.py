#!/usr/bin/env python3
"""Train the demo horse detector and export it: see fbvision/export/train_demo.py, which this runs.
Needs the `export` extra (`pip install -e ".[export]"`).

    python export/train_demo.py [--epochs N ...]              # = python -m fbvision.export.train_demo ...
"""

import sys

from fbvision.export.train_demo import main

if __name__ == "__main__":
    sys.exit(main())
