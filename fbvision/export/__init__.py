"""Exporting and training the detector (the `export` extra: ultralytics + torch, imported only when used).

``export_onnx``: YOLO11 -> ONNX with a dynamic batch, sidecar metadata, verification against PyTorch;
``model_cache``: cached random-weight YOLO11n exports for tests and benchmarks; ``train_demo``: the demo model.
``export/export_onnx.py`` and ``export/train_demo.py`` in the checkout are thin script wrappers.
"""
