"""``python -m fbvision`` = the ``fbvision`` command."""

import sys

from fbvision.cli import main

if __name__ == "__main__":
    sys.exit(main())
