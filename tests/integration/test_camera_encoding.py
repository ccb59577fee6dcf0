"""The camera manager encodes each camera's frames as configured (camera.encoding, a camera's own encoding
overrides it) and pushes wire-v2 frames the inference side decodes to the letterboxed pixels."""

from __future__ import annotations

import numpy as np

from fbvision.camera.manager import CameraManager
from fbvision.core.config import CameraConfig, CameraManagerConfig, Settings
from fbvision.core.letterbox import letterbox
from fbvision.core.wire import decode_frame
from fbvision.inference.decode import decode_image


def test_per_camera_encoding_reaches_the_queue(transport):
    settings = Settings(
        camera=CameraManagerConfig(encoding="jpeg"),
        cameras=[CameraConfig(id="cam-jpeg", source="synthetic:normal_walk"),
                 CameraConfig(id="cam-raw", source="synthetic:normal_walk", encoding="raw")],
    )
    manager = CameraManager(settings, transport, (64, 48), name="test")
    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    for seq, cam in enumerate(("cam-jpeg", "cam-raw")):
        manager._enqueue(manager._encode(cam, seq, frame, 1.7e9))
    assert manager._push_buffered() == 2
    got = {m.camera_id: m for m in map(decode_frame, transport.pop_frames(10, 0.1))}
    assert got["cam-jpeg"].encoding == "jpeg" and got["cam-raw"].encoding == "raw"
    expected, _ = letterbox(frame, (64, 48))
    assert len(got["cam-raw"].payload) == 64 * 48 * 3
    np.testing.assert_array_equal(decode_image(got["cam-raw"], 64, 48), expected)  # exact pixels
    jpeg_image = decode_image(got["cam-jpeg"], 64, 48)
    assert jpeg_image.shape == (48, 64, 3) and np.abs(jpeg_image.astype(int) - expected).mean() < 40
