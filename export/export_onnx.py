#!/usr/bin/env python3
"""Export a YOLO11 detector to ONNX (dynamic batch, sidecar metadata, verification): see
fbvision/export/export_onnx.py, which this runs. Needs the `export` extra (`pip install -e ".[export]"`).

    python export/export_onnx.py --weights yolo11n.yaml      # = python -m fbvision.export.export_onnx ...
"""

import sys

from fbvision.export.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
