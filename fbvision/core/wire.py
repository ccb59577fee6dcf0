"""Versioned binary messages that travel between the stages (see docs/wire-format.md).

Two kinds of message, both little-endian, both starting with the same 4-byte header::

    magic  b"FB"   (2 bytes)
    version u8     (frames: FRAME_VERSION = 2; results: RESULT_VERSION = 1; both versions are read)
    kind    u8     (1 = frame, 2 = result)

Version 2 added the frame's *encoding* (one byte before the image: ``jpeg`` = 0, ``raw`` = 1: uint8 H x W x 3 BGR,
row-major, exactly ``input_h * input_w * 3`` bytes); a version-1 frame is JPEG. The result layout did not change,
so results are still written as version 1 (an older logic worker reads a newer inference worker's results).

Decoding never trusts its input: anything that does not parse raises :class:`WireError` with a short
machine-readable ``reason`` (``"garbage"``, ``"truncated"``, ``"version"``, ``"kind"``, ``"too_large"``,
``"invalid"``, ``"time"``: a non-finite or negative timestamp) so callers can count, skip and dead-letter
without ever crashing. No pickle, no eval.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from fbvision.core.letterbox import Letterbox

MAGIC = b"FB"
#: The newest version: frames are written with it (results with RESULT_VERSION, whose layout it did not change).
WIRE_VERSION = 2
FRAME_VERSION = WIRE_VERSION
RESULT_VERSION = 1
#: Versions this build decodes.
READ_VERSIONS = (1, 2)
KIND_FRAME = 1
KIND_RESULT = 2

#: Hard limits, checked on encode and on decode.
MAX_CAMERA_ID_BYTES = 64
MAX_JPEG_BYTES = 4 * 1024 * 1024
MAX_RAW_BYTES = 1280 * 1280 * 3  # a raw frame is input_h x input_w x 3: up to a 1280x1280 model input
MAX_FRAME_MESSAGE_BYTES = max(MAX_JPEG_BYTES, MAX_RAW_BYTES) + 256
MAX_BOXES = 1000
MAX_RESULT_MESSAGE_BYTES = 256 + MAX_BOXES * 24
MAX_IMAGE_SIDE = 16384

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

_HEADER = struct.Struct("<2sBB")
# frame: seq, capture_ts, push_ts, src_w, src_h, input_w, input_h, scale, pad_x, pad_y
_FRAME_FIXED = struct.Struct("<QddIIHHfff")
#: Frame encodings (version 2's encoding byte).
ENCODINGS = ("jpeg", "raw")
_ENCODING_BYTE = {name: i for i, name in enumerate(ENCODINGS)}
# result: seq, src_w, src_h, batch_size, then the timeline (6 doubles), then n_boxes
_RESULT_FIXED = struct.Struct("<QIIH6dH")
_BOX_DTYPE = np.dtype([("x1", "<f4"), ("y1", "<f4"), ("x2", "<f4"), ("y2", "<f4"), ("score", "<f4"), ("class_id", "<u2"), ("_pad", "<u2")])
assert _BOX_DTYPE.itemsize == 24

#: Order of the timeline fields in a result message.
TIMELINE_FIELDS = ("captured", "pushed", "popped", "infer_start", "infer_end", "published")


class WireError(ValueError):
    """A message that cannot be decoded (or encoded). ``reason`` is one of a few fixed words."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameMessage:
    """One camera frame, already letterboxed to the model input, JPEG-encoded or raw, with the
    :class:`~fbvision.core.letterbox.Letterbox` that placed it there (the inference worker maps its boxes back with
    it as it is: the record crosses the boundary whole).

    ``jpeg`` holds the image bytes whatever the ``encoding`` (the name predates raw frames): a JPEG file, or with
    ``encoding="raw"`` the letterboxed image as uint8 ``input_h x input_w x 3`` (BGR, row-major). ``src_w`` ...
    ``pad_y`` are read-only views of the letterbox (the wire's field names)."""

    camera_id: str
    seq: int
    capture_ts: float  # unix seconds, when the frame was read from the source
    push_ts: float  # unix seconds, when the camera manager pushed it to Redis
    letterbox: Letterbox  # source size, model input size, scale and padding: input = source * scale + pad
    jpeg: bytes = field(repr=False)
    encoding: str = "jpeg"  # "jpeg" or "raw" (ENCODINGS)

    @property
    def payload(self) -> bytes:
        """The image bytes (JPEG or raw)."""
        return self.jpeg

    @property
    def src_w(self) -> int:
        return self.letterbox.src_w

    @property
    def src_h(self) -> int:
        return self.letterbox.src_h

    @property
    def input_w(self) -> int:
        return self.letterbox.dst_w

    @property
    def input_h(self) -> int:
        return self.letterbox.dst_h

    @property
    def scale(self) -> float:
        return self.letterbox.scale

    @property
    def pad_x(self) -> float:
        return self.letterbox.pad_x

    @property
    def pad_y(self) -> float:
        return self.letterbox.pad_y


@dataclass(frozen=True)
class Timeline:
    """Unix-second timestamps of one frame's way through the pipeline (0.0 = not reached)."""

    captured: float = 0.0
    pushed: float = 0.0
    popped: float = 0.0
    infer_start: float = 0.0
    infer_end: float = 0.0
    published: float = 0.0

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in TIMELINE_FIELDS)


@dataclass(frozen=True)
class ResultMessage:
    """Candidate boxes for one frame, in source-frame pixels, with the frame's timeline."""

    camera_id: str
    seq: int
    src_w: int
    src_h: int
    timeline: Timeline
    batch_size: int
    boxes: np.ndarray = field(repr=False)  # float32 [n, 4] xyxy
    scores: np.ndarray = field(repr=False)  # float32 [n]
    class_ids: np.ndarray = field(repr=False)  # int32 [n]

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or len(self.class_ids) != n:
            raise WireError("invalid", f"boxes {self.boxes.shape}, scores {n}, class_ids {len(self.class_ids)} disagree")


def _check_camera_id(camera_id: str) -> bytes:
    if not isinstance(camera_id, str) or not CAMERA_ID_RE.match(camera_id):
        raise WireError("invalid", f"camera id {camera_id!r} must match {CAMERA_ID_RE.pattern}")
    return camera_id.encode("ascii")


def _check_sizes(**sides: int) -> None:
    for name, value in sides.items():
        if not 0 < value <= MAX_IMAGE_SIDE:
            raise WireError("invalid", f"{name}={value} outside 1..{MAX_IMAGE_SIDE}")


def _check_times(**times: float) -> None:
    """Timestamps are unix seconds (0 = not reached): NaN, infinities and negatives are impossible times.
    Downstream ages and episode clocks are differences of these, so one NaN would poison a camera's state."""
    for name, value in times.items():
        if not (math.isfinite(value) and value >= 0.0):
            raise WireError("time", f"{name}={value!r} is not a finite, non-negative unix time")


def _check_payload(encoding: str, size: int, input_w: int, input_h: int) -> None:
    if encoding == "raw":
        if size > MAX_RAW_BYTES:
            raise WireError("too_large", f"raw image of {size} bytes > {MAX_RAW_BYTES}")
        if size != input_w * input_h * 3:
            raise WireError("invalid", f"raw image of {size} bytes, {input_w}x{input_h}x3 = {input_w * input_h * 3}")
        return
    if size > MAX_JPEG_BYTES:
        raise WireError("too_large", f"jpeg of {size} bytes > {MAX_JPEG_BYTES}")
    if size == 0:
        raise WireError("invalid", "empty jpeg")


def encode_frame(msg: FrameMessage) -> bytes:
    """A frame message of version :data:`FRAME_VERSION` (2: with its encoding byte)."""
    cam = _check_camera_id(msg.camera_id)
    if msg.encoding not in _ENCODING_BYTE:
        raise WireError("invalid", f"encoding {msg.encoding!r}, expected one of {', '.join(ENCODINGS)}")
    _check_sizes(src_w=msg.src_w, src_h=msg.src_h, input_w=msg.input_w, input_h=msg.input_h)
    _check_payload(msg.encoding, len(msg.jpeg), msg.input_w, msg.input_h)
    _check_times(capture_ts=msg.capture_ts, push_ts=msg.push_ts)
    try:
        fixed = _FRAME_FIXED.pack(
            msg.seq, msg.capture_ts, msg.push_ts, msg.src_w, msg.src_h, msg.input_w, msg.input_h,
            msg.scale, msg.pad_x, msg.pad_y,
        )
    except struct.error as exc:
        raise WireError("invalid", str(exc)) from None
    return b"".join(
        (_HEADER.pack(MAGIC, FRAME_VERSION, KIND_FRAME), bytes((len(cam),)), cam, fixed,
         struct.pack("<BI", _ENCODING_BYTE[msg.encoding], len(msg.jpeg)), msg.jpeg)
    )


def encode_result(msg: ResultMessage) -> bytes:
    cam = _check_camera_id(msg.camera_id)
    n = len(msg.scores)
    if n > MAX_BOXES:
        raise WireError("too_large", f"{n} boxes > {MAX_BOXES}")
    _check_times(**dict(zip(TIMELINE_FIELDS, msg.timeline.as_tuple(), strict=True)))
    boxes = np.zeros(n, dtype=_BOX_DTYPE)
    xyxy = np.asarray(msg.boxes, dtype=np.float32).reshape(n, 4)
    boxes["x1"], boxes["y1"], boxes["x2"], boxes["y2"] = xyxy.T
    boxes["score"] = msg.scores
    boxes["class_id"] = msg.class_ids
    try:
        fixed = _RESULT_FIXED.pack(msg.seq, msg.src_w, msg.src_h, msg.batch_size, *msg.timeline.as_tuple(), n)
    except struct.error as exc:
        raise WireError("invalid", str(exc)) from None
    return b"".join((_HEADER.pack(MAGIC, RESULT_VERSION, KIND_RESULT), bytes((len(cam),)), cam, fixed, boxes.tobytes()))


class _Reader:
    """Bounds-checked cursor over a message; every short read is a ``truncated`` WireError."""

    def __init__(self, data: bytes):
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.view):
            raise WireError("truncated", f"{what}: need {n} bytes at offset {self.pos}, have {len(self.view) - self.pos}")
        chunk = self.view[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def camera_id(self) -> str:
        (n,) = self.take(1, "camera id length")
        raw = bytes(self.take(n, "camera id"))
        try:
            camera_id = raw.decode("ascii")
        except UnicodeDecodeError:
            raise WireError("invalid", f"camera id {raw[:16]!r} is not ASCII") from None
        _check_camera_id(camera_id)
        return camera_id

    def done(self) -> None:
        if self.pos != len(self.view):
            raise WireError("invalid", f"{len(self.view) - self.pos} trailing bytes")


def _header(data: bytes, kind: int, limit: int) -> tuple[_Reader, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("garbage", f"expected bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise WireError("too_large", f"{len(data)} bytes > {limit}")
    reader = _Reader(bytes(data))
    magic, version, got_kind = reader.unpack(_HEADER, "header")
    if magic != MAGIC:
        raise WireError("garbage", f"bad magic {bytes(magic)!r}")
    if version not in READ_VERSIONS:
        raise WireError("version", f"version {version}, this build reads {', '.join(map(str, READ_VERSIONS))}")
    if got_kind != kind:
        raise WireError("kind", f"message kind {got_kind}, expected {kind}")
    return reader, version


def peek_kind(data: bytes) -> int:
    """The kind byte of a message, after checking magic and version."""
    if len(data) < _HEADER.size:
        raise WireError("truncated", "shorter than the header")
    magic, version, kind = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("garbage", f"bad magic {bytes(magic)!r}")
    if version not in READ_VERSIONS:
        raise WireError("version", f"version {version}, this build reads {', '.join(map(str, READ_VERSIONS))}")
    return kind


def decode_frame(data: bytes) -> FrameMessage:
    reader, version = _header(data, KIND_FRAME, MAX_FRAME_MESSAGE_BYTES)
    camera_id = reader.camera_id()
    seq, capture_ts, push_ts, src_w, src_h, input_w, input_h, scale, pad_x, pad_y = reader.unpack(_FRAME_FIXED, "frame fields")
    _check_sizes(src_w=src_w, src_h=src_h, input_w=input_w, input_h=input_h)
    _check_times(capture_ts=capture_ts, push_ts=push_ts)
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(pad_x) and np.isfinite(pad_y)):
        raise WireError("invalid", f"letterbox scale={scale} pad=({pad_x}, {pad_y})")
    encoding = "jpeg"
    if version >= 2:
        (code,) = reader.take(1, "encoding")
        if code >= len(ENCODINGS):
            raise WireError("invalid", f"encoding byte {code}, known: {', '.join(ENCODINGS)}")
        encoding = ENCODINGS[code]
    (size,) = reader.unpack(struct.Struct("<I"), "image length")
    # Checked before reading: a raw image must be exactly input_h x input_w x 3 (the inference worker then checks
    # that this is its model's input), a JPEG non-empty and within its limit.
    _check_payload(encoding, size, input_w, input_h)
    image = bytes(reader.take(size, encoding))
    reader.done()
    return FrameMessage(camera_id, seq, capture_ts, push_ts,
                        Letterbox(src_w, src_h, input_w, input_h, scale, pad_x, pad_y), image, encoding)


def decode_result(data: bytes) -> ResultMessage:
    reader, _version = _header(data, KIND_RESULT, MAX_RESULT_MESSAGE_BYTES)
    camera_id = reader.camera_id()
    seq, src_w, src_h, batch_size, *times, n = reader.unpack(_RESULT_FIXED, "result fields")
    _check_sizes(src_w=src_w, src_h=src_h)
    _check_times(**dict(zip(TIMELINE_FIELDS, times, strict=True)))
    if n > MAX_BOXES:
        raise WireError("too_large", f"{n} boxes > {MAX_BOXES}")
    boxes = np.frombuffer(reader.take(n * _BOX_DTYPE.itemsize, "boxes"), dtype=_BOX_DTYPE)
    reader.done()
    xyxy = np.stack([boxes["x1"], boxes["y1"], boxes["x2"], boxes["y2"]], axis=1).astype(np.float32).reshape(n, 4)
    if not np.isfinite(xyxy).all() or not np.isfinite(boxes["score"]).all():
        raise WireError("invalid", "non-finite box coordinates or scores")
    return ResultMessage(
        camera_id=camera_id, seq=seq, src_w=src_w, src_h=src_h, timeline=Timeline(*times), batch_size=batch_size,
        boxes=xyxy, scores=boxes["score"].astype(np.float32), class_ids=boxes["class_id"].astype(np.int32),
    )
