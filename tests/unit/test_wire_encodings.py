"""Wire version 2: the frame's encoding (jpeg | raw); version-1 frames still decode (as JPEG)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fbvision.core import wire
from fbvision.core.letterbox import Letterbox
from fbvision.core.wire import FrameMessage, WireError


def frame_of(*, src_w, src_h, input_w, input_h, scale, pad_x, pad_y, **fields) -> FrameMessage:
    """A FrameMessage from the wire's flat field names (the tests vary each one)."""
    return FrameMessage(letterbox=Letterbox(src_w, src_h, input_w, input_h, scale, pad_x, pad_y), **fields)


def frame(**kw) -> FrameMessage:
    base = dict(camera_id="stall-1", seq=7, capture_ts=1.7e9, push_ts=1.7e9 + 0.004, src_w=1280, src_h=720,
                input_w=32, input_h=24, scale=0.25, pad_x=0.0, pad_y=3.0, jpeg=b"\xff\xd8fakejpeg\xff\xd9")
    base.update(kw)
    return frame_of(**base)


def raw_frame(**kw) -> FrameMessage:
    image = np.arange(24 * 32 * 3, dtype=np.uint8).reshape(24, 32, 3)
    return frame(jpeg=image.tobytes(), encoding="raw", **kw)


def v1_bytes(msg: FrameMessage) -> bytes:
    """What a version-1 writer sent: no encoding byte."""
    cam = msg.camera_id.encode()
    fixed = struct.pack("<QddIIHHfff", msg.seq, msg.capture_ts, msg.push_ts, msg.src_w, msg.src_h, msg.input_w,
                        msg.input_h, msg.scale, msg.pad_x, msg.pad_y)
    return b"".join((b"FB", bytes((1, wire.KIND_FRAME, len(cam))), cam, fixed, struct.pack("<I", len(msg.jpeg)),
                     msg.jpeg))


def test_frames_are_written_as_version_2_results_stay_version_1():
    assert wire.encode_frame(frame())[2] == wire.FRAME_VERSION == 2
    assert wire.peek_kind(wire.encode_frame(raw_frame())) == wire.KIND_FRAME


def test_raw_round_trip():
    msg = raw_frame()
    data = wire.encode_frame(msg)
    got = wire.decode_frame(data)
    assert got == msg and got.encoding == "raw" and got.payload == msg.jpeg
    assert len(data) == len(msg.jpeg) + len(wire.encode_frame(frame(jpeg=b"x"))) - 1


def test_jpeg_round_trip_keeps_its_encoding():
    got = wire.decode_frame(wire.encode_frame(frame()))
    assert got.encoding == "jpeg" and got == frame()


def test_version_1_frames_still_decode_as_jpeg():
    msg = frame()
    got = wire.decode_frame(v1_bytes(msg))
    assert got == msg and got.encoding == "jpeg"
    assert wire.peek_kind(v1_bytes(msg)) == wire.KIND_FRAME


@pytest.mark.parametrize("image, reason", [
    (b"\x00" * (24 * 32 * 3 - 1), "invalid"),  # one byte short of H x W x 3
    (b"\x00" * (24 * 32 * 3 + 3), "invalid"),
    (b"", "invalid"),
    (b"\x00" * (wire.MAX_RAW_BYTES + 3), "too_large"),
])
def test_raw_size_must_be_h_w_3(image, reason):
    with pytest.raises(WireError) as exc:
        wire.encode_frame(frame(jpeg=image, encoding="raw"))
    assert exc.value.reason == reason
    # and the same on decode: a foreign writer's raw frame whose size lies
    good = wire.encode_frame(raw_frame())
    head = good[: -(24 * 32 * 3) - 4]
    with pytest.raises(WireError) as exc:
        wire.decode_frame(head + struct.pack("<I", len(image)) + image)
    assert exc.value.reason == reason


def test_unknown_encoding_is_refused():
    with pytest.raises(WireError) as exc:
        wire.encode_frame(frame(encoding="png"))
    assert exc.value.reason == "invalid"
    data = bytearray(wire.encode_frame(frame()))
    pos = len(data) - len(frame().jpeg) - 5  # the encoding byte sits before the u32 length
    assert data[pos] == 0
    data[pos] = 7
    with pytest.raises(WireError, match="encoding byte 7") as exc:
        wire.decode_frame(bytes(data))
    assert exc.value.reason == "invalid"


def test_truncated_raw_is_truncated():
    with pytest.raises(WireError) as exc:
        wire.decode_frame(wire.encode_frame(raw_frame())[:-10])
    assert exc.value.reason == "truncated"
