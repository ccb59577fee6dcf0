import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbvision.core import wire
from fbvision.core.letterbox import Letterbox
from fbvision.core.wire import FrameMessage, ResultMessage, Timeline, WireError

camera_ids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32, min_value=-1e6, max_value=1e6)


def frame_of(*, src_w, src_h, input_w, input_h, scale, pad_x, pad_y, **fields) -> FrameMessage:
    """A FrameMessage from the wire's flat field names (the tests vary each one)."""
    return FrameMessage(letterbox=Letterbox(src_w, src_h, input_w, input_h, scale, pad_x, pad_y), **fields)


def make_frame(**kw) -> FrameMessage:
    base = dict(camera_id="stall-1", seq=7, capture_ts=1.7e9, push_ts=1.7e9 + 0.004, src_w=1280, src_h=720,
                input_w=640, input_h=640, scale=0.5, pad_x=0.0, pad_y=140.0, jpeg=b"\xff\xd8fakejpeg\xff\xd9")
    base.update(kw)
    return frame_of(**base)


def make_result(n=3, **kw) -> ResultMessage:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 500, (n, 2)).astype(np.float32)
    base = dict(camera_id="stall-1", seq=9, src_w=1280, src_h=720,
                timeline=Timeline(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), batch_size=4,
                boxes=np.hstack([xy, xy + 50]).astype(np.float32), scores=rng.uniform(0, 1, n).astype(np.float32),
                class_ids=rng.integers(0, 80, n).astype(np.int32))
    base.update(kw)
    return ResultMessage(**base)


@settings(max_examples=200, deadline=None)
@given(camera_id=camera_ids, seq=st.integers(0, 2**64 - 1), ts=st.floats(0, 4e9), w=st.integers(1, 16384),
       h=st.integers(1, 16384), scale=st.floats(0.0625, 64, width=32), pad=finite, jpeg=st.binary(min_size=1, max_size=4096))
def test_frame_round_trip(camera_id, seq, ts, w, h, scale, pad, jpeg):
    msg = make_frame(camera_id=camera_id, seq=seq, capture_ts=ts, push_ts=ts + 1, src_w=w, src_h=h, input_w=min(w, 65535),
                     input_h=min(h, 65535), scale=scale, pad_x=pad, pad_y=-pad, jpeg=jpeg)
    assert wire.decode_frame(wire.encode_frame(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(camera_id=camera_ids, n=st.integers(0, 50), seq=st.integers(0, 2**64 - 1))
def test_result_round_trip(camera_id, n, seq):
    msg = make_result(n, camera_id=camera_id, seq=seq)
    got = wire.decode_result(wire.encode_result(msg))
    assert (got.camera_id, got.seq, got.src_w, got.src_h, got.timeline, got.batch_size) == (
        camera_id, seq, 1280, 720, msg.timeline, 4)
    np.testing.assert_array_equal(got.boxes, msg.boxes)
    np.testing.assert_array_equal(got.scores, msg.scores)
    np.testing.assert_array_equal(got.class_ids, msg.class_ids)
    assert got.boxes.dtype == np.float32 and got.class_ids.dtype == np.int32


def test_max_boxes_fits_in_the_size_limit():
    data = wire.encode_result(make_result(wire.MAX_BOXES))
    assert len(data) <= wire.MAX_RESULT_MESSAGE_BYTES
    assert len(wire.decode_result(data).scores) == wire.MAX_BOXES


GOOD_FRAME = wire.encode_frame(make_frame())
GOOD_RESULT = wire.encode_result(make_result())


def _with_version(data: bytes, version: int) -> bytes:
    return data[:2] + bytes([version]) + data[3:]


BAD_FRAMES = [
    ("empty", b"", "truncated"),
    ("garbage", b"\x89PNG\r\n\x1a\n" + b"x" * 100, "garbage"),
    ("text", b"hello world, this is not a frame", "garbage"),
    ("header only", GOOD_FRAME[:4], "truncated"),
    ("truncated fields", GOOD_FRAME[:20], "truncated"),
    ("truncated jpeg", GOOD_FRAME[:-3], "truncated"),
    ("trailing bytes", GOOD_FRAME + b"\x00", "invalid"),
    ("wrong version", _with_version(GOOD_FRAME, wire.WIRE_VERSION + 1), "version"),  # 2 is the current one
    ("version zero", _with_version(GOOD_FRAME, 0), "version"),
    ("result given to frame decoder", GOOD_RESULT, "kind"),
    ("oversized", GOOD_FRAME[:4] + b"\x00" * (wire.MAX_FRAME_MESSAGE_BYTES + 1), "too_large"),
    ("jpeg length lies", GOOD_FRAME[: -len(make_frame().jpeg) - 4] + struct.pack("<I", 2**31) + b"xx", "too_large"),
    ("bad camera id", GOOD_FRAME[:4] + bytes([3]) + b"a b" + GOOD_FRAME[4 + 1 + 7:], "invalid"),
    ("zero length camera id", GOOD_FRAME[:4] + bytes([0]) + GOOD_FRAME[4 + 1 + 7:], "invalid"),
    ("not bytes", "a string", "garbage"),
]


@pytest.mark.parametrize("data, reason", [(d, r) for _, d, r in BAD_FRAMES], ids=[i for i, _, _ in BAD_FRAMES])
def test_bad_frames_raise_typed_error(data, reason):
    with pytest.raises(WireError) as exc:
        wire.decode_frame(data)
    assert exc.value.reason == reason


def test_frame_with_zero_size_is_rejected():
    data = bytearray(GOOD_FRAME)
    # src_w sits after header(4) + id len(1) + id(7) + seq(8) + two doubles(16)
    struct.pack_into("<I", data, 4 + 1 + 7 + 8 + 16, 0)
    with pytest.raises(WireError, match="src_w=0"):
        wire.decode_frame(bytes(data))


BAD_RESULTS = [
    ("truncated boxes", GOOD_RESULT[:-5], "truncated"),
    ("frame given to result decoder", GOOD_FRAME, "kind"),
    ("wrong version", _with_version(GOOD_RESULT, 9), "version"),
    ("oversized", GOOD_RESULT + b"\x00" * wire.MAX_RESULT_MESSAGE_BYTES, "too_large"),
    ("box count lies", GOOD_RESULT[:-3 * 24 - 2] + struct.pack("<H", 60000) + GOOD_RESULT[-3 * 24:], "too_large"),
]


@pytest.mark.parametrize("data, reason", [(d, r) for _, d, r in BAD_RESULTS], ids=[i for i, _, _ in BAD_RESULTS])
def test_bad_results_raise_typed_error(data, reason):
    with pytest.raises(WireError) as exc:
        wire.decode_result(data)
    assert exc.value.reason == reason


def test_nan_boxes_rejected():
    msg = make_result(2)
    boxes = msg.boxes.copy()
    boxes[0, 0] = np.nan
    data = wire.encode_result(make_result(2, boxes=boxes))
    with pytest.raises(WireError, match="non-finite"):
        wire.decode_result(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(data):
    for decode in (wire.decode_frame, wire.decode_result):
        try:
            decode(data)
        except WireError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD_FRAME) - 1), st.integers(0, 255))
def test_single_byte_corruption_is_caught_or_harmless(pos, value):
    data = bytearray(GOOD_FRAME)
    data[pos] = value
    try:
        msg = wire.decode_frame(bytes(data))
    except WireError:
        return
    assert isinstance(msg, FrameMessage)


@pytest.mark.parametrize("kw, reason", [
    (dict(camera_id="has space"), "invalid"),
    (dict(camera_id="x" * 65), "invalid"),
    (dict(jpeg=b""), "invalid"),
    (dict(jpeg=b"x" * (wire.MAX_JPEG_BYTES + 1)), "too_large"),
    (dict(src_w=0), "invalid"),
    (dict(seq=-1), "invalid"),
])
def test_encode_refuses_bad_frames(kw, reason):
    with pytest.raises(WireError) as exc:
        wire.encode_frame(make_frame(**kw))
    assert exc.value.reason == reason


def test_encode_refuses_too_many_boxes():
    with pytest.raises(WireError) as exc:
        wire.encode_result(make_result(wire.MAX_BOXES + 1))
    assert exc.value.reason == "too_large"


def test_peek_kind():
    assert wire.peek_kind(GOOD_FRAME) == wire.KIND_FRAME
    assert wire.peek_kind(GOOD_RESULT) == wire.KIND_RESULT
    with pytest.raises(WireError):
        wire.peek_kind(b"FB")
