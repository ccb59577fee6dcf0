"""Impossible times never get past the wire: NaN, ±inf and negative timestamps are a ``time`` WireError."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fbvision.core import wire
from fbvision.core.letterbox import Letterbox
from fbvision.core.wire import FrameMessage, ResultMessage, Timeline, WireError

BAD = [float("nan"), float("inf"), float("-inf"), -1.0]


def frame_of(*, src_w, src_h, input_w, input_h, scale, pad_x, pad_y, **fields) -> FrameMessage:
    """A FrameMessage from the wire's flat field names (the tests vary each one)."""
    return FrameMessage(letterbox=Letterbox(src_w, src_h, input_w, input_h, scale, pad_x, pad_y), **fields)


def frame(**kw) -> FrameMessage:
    base = dict(camera_id="stall-1", seq=7, capture_ts=1.7e9, push_ts=1.7e9 + 0.004, src_w=1280, src_h=720,
                input_w=640, input_h=640, scale=0.5, pad_x=0.0, pad_y=140.0, jpeg=b"\xff\xd8fakejpeg\xff\xd9")
    base.update(kw)
    return frame_of(**base)


def result(timeline: Timeline) -> ResultMessage:
    return ResultMessage(camera_id="stall-1", seq=9, src_w=1280, src_h=720, timeline=timeline, batch_size=1,
                         boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                         class_ids=np.zeros(0, np.int32))


def _patch_frame_time(data: bytes, field: int, value: float) -> bytes:
    """Overwrite capture_ts (field 0) or push_ts (1) of an encoded frame: what a foreign producer could send."""
    offset = 4 + 1 + len(b"stall-1") + 8 + 8 * field
    return data[:offset] + struct.pack("<d", value) + data[offset + 8:]


def _patch_result_time(data: bytes, index: int, value: float) -> bytes:
    offset = 4 + 1 + len(b"stall-1") + 8 + 4 + 4 + 2 + 8 * index
    return data[:offset] + struct.pack("<d", value) + data[offset + 8:]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("field", [0, 1])
def test_frame_with_impossible_time_is_refused_on_decode(field, value):
    data = _patch_frame_time(wire.encode_frame(frame()), field, value)
    with pytest.raises(WireError) as err:
        wire.decode_frame(data)
    assert err.value.reason == "time"
    assert ("capture_ts" if field == 0 else "push_ts") in err.value.detail


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("index", range(len(wire.TIMELINE_FIELDS)))
def test_result_with_impossible_time_is_refused_on_decode(index, value):
    data = _patch_result_time(wire.encode_result(result(Timeline(1.0, 2.0, 3.0, 4.0, 5.0, 6.0))), index, value)
    with pytest.raises(WireError) as err:
        wire.decode_result(data)
    assert err.value.reason == "time"
    assert wire.TIMELINE_FIELDS[index] in err.value.detail


@pytest.mark.parametrize("value", BAD)
def test_encoders_refuse_impossible_times_too(value):
    with pytest.raises(WireError, match="time"):
        wire.encode_frame(frame(capture_ts=value))
    with pytest.raises(WireError, match="time"):
        wire.encode_result(result(Timeline(captured=value)))


def test_zero_means_not_reached_and_is_fine():
    got = wire.decode_result(wire.encode_result(result(Timeline(captured=1.7e9))))
    assert got.timeline.published == 0.0
    assert wire.decode_frame(wire.encode_frame(frame(push_ts=0.0))).push_ts == 0.0
