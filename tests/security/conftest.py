from __future__ import annotations

import sys
from pathlib import Path

FAULT_DIR = Path(__file__).resolve().parents[1] / "fault"
if str(FAULT_DIR) not in sys.path:
    sys.path.insert(0, str(FAULT_DIR))
