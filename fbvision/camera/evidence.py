"""Evidence for every alert, from every camera kind: a bounded ring of recent frames per camera, and a writer
that turns an evidence request into an annotated snapshot (JPEG) and clip (H.264 MP4). docs/evidence-and-review.md.

* :class:`FrameRing` - one camera's recent source frames as JPEG (downscaled to ``max_width``) with their capture
  times on the reference clock; bounded by bytes (``ring_max_mb``, the stated memory budget) and by age
  (``ring_s``): the oldest frames go first, counted.
* :class:`EvidenceKeeper` - the rings of a camera manager plus a writer thread. A request (read by the manager's
  loop from ``evidence:requests``) gets its snapshot as soon as the decision frame is in the ring, and its clip
  once frames up to ``clip_post_s`` after the decision have arrived (or a grace period has passed: then the clip is
  shorter and the reason counted). Files are written under a temporary name and renamed, so the backend serves a
  file whole or answers 404.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fbvision.core.config import EvidenceConfig
from fbvision.core.evidence import CLIP_EXT, FILE_RE, SNAPSHOT_EXT, EvidenceRequest
from fbvision.core.metrics import Counters, LatencyStats

logger = logging.getLogger(__name__)

#: A frame this much past the decision time (or before it) still counts as the decision frame for the snapshot.
SNAPSHOT_MAX_GAP_S = 2.0
#: Once the reference clock is this far past ``decided_at + clip_post_s``, the clip is written with what there is.
CLIP_GRACE_S = 3.0
#: Retention is enforced at most this often.
PRUNE_INTERVAL_S = 30.0


@dataclass(frozen=True)
class KeptFrame:
    ts: float  # capture time, reference clock
    jpeg: bytes
    scale: float  # kept size / source size


class FrameRing:
    """One camera's recent frames; thread-safe; ``nbytes`` never exceeds ``max_bytes``."""

    def __init__(self, max_bytes: int, max_age_s: float):
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._frames: collections.deque[KeptFrame] = collections.deque()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.evicted_bytes_cap = 0  # frames dropped for the byte budget before their age was up
        self.too_large = 0

    def add(self, frame: KeptFrame) -> None:
        size = len(frame.jpeg)
        with self._lock:
            if size > self.max_bytes:
                self.too_large += 1
                return
            self._frames.append(frame)
            self.nbytes += size
            while self._frames and self._frames[0].ts < frame.ts - self.max_age_s:
                self.nbytes -= len(self._frames.popleft().jpeg)
            while self.nbytes > self.max_bytes:
                self.nbytes -= len(self._frames.popleft().jpeg)
                self.evicted_bytes_cap += 1

    def __len__(self) -> int:
        return len(self._frames)

    def latest_ts(self) -> float | None:
        with self._lock:
            return self._frames[-1].ts if self._frames else None

    def oldest_ts(self) -> float | None:
        with self._lock:
            return self._frames[0].ts if self._frames else None

    def window(self, t0: float, t1: float) -> list[KeptFrame]:
        with self._lock:
            return [f for f in self._frames if t0 <= f.ts <= t1]

    def nearest(self, t: float, max_gap_s: float) -> KeptFrame | None:
        with self._lock:
            best = min(self._frames, key=lambda f: abs(f.ts - t), default=None)
        return best if best is not None and abs(best.ts - t) <= max_gap_s else None


def downscale_jpeg(frame: np.ndarray, max_width: int, quality: int) -> tuple[bytes, float] | None:
    """The frame as JPEG at most ``max_width`` wide (aspect kept), and the scale applied."""
    h, w = frame.shape[:2]
    scale = 1.0
    if w > max_width:
        scale = max_width / w
        frame = cv2.resize(frame, (max_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return (buf.tobytes(), scale) if ok else None


def annotate(image: np.ndarray, req: EvidenceRequest, scale: float, note: str = "") -> np.ndarray:
    """The alert's box, track id and rule drawn on ``image`` (supervision annotators); camera and ``note`` on top."""
    import supervision as sv

    out = image.copy()
    label = f"{req.rule} {req.severity}" + (f" #{req.track_id}" if req.track_id is not None else "")
    if req.box is not None:
        xyxy = np.array([req.box], dtype=np.float32) * scale
        det = sv.Detections(xyxy=xyxy, tracker_id=None if req.track_id is None else np.array([req.track_id]))
        color = sv.Color.RED if req.severity == "critical" else sv.Color.from_hex("#ff9900")
        thickness = max(2, round(out.shape[1] / 400))
        lookup = sv.ColorLookup.INDEX
        out = sv.BoxAnnotator(color=color, thickness=thickness, color_lookup=lookup).annotate(out, det)
        out = sv.LabelAnnotator(color=color, text_scale=max(0.5, out.shape[1] / 1600), text_padding=4,
                                color_lookup=lookup).annotate(out, det, labels=[label])
    header = f"{req.camera_id}  {label}" + (f"  {note}" if note else "")
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, header[:120], (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


@dataclass
class _Pending:
    req: EvidenceRequest
    snapshot_done: bool = False
    clip_done: bool = False


class EvidenceKeeper:
    """The frame rings of one camera manager and the evidence writer thread.

    ``clock`` is the reference clock's ``now`` (capture times and decisions are on it); ``fps`` the cameras'
    sampled rates (the ring keeps at most ``evidence.fps`` of them)."""

    def __init__(self, config: EvidenceConfig, fps: dict[str, float], clock: Callable[[], float],
                 counters: Counters | None = None, latency: LatencyStats | None = None):
        self.config = config
        # The ring's rate per camera: the camera's own, at most evidence.fps (the clip plays at it).
        self.fps = {cam: min(float(rate), float(config.fps)) for cam, rate in fps.items()}
        self._next_keep: dict[str, float] = {}
        self.clock = clock
        self.dir = Path(config.dir) if config.dir is not None else Path("runs") / "evidence"
        self.counters = counters or Counters()
        self.latency = latency or LatencyStats()
        self.max_bytes = ring_budget_bytes(config, 1)  # per camera
        self.rings = {cam: FrameRing(self.max_bytes, config.ring_s) for cam in self.fps}
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    # -- readers' side ------------------------------------------------------------------------------------------
    def keep(self, camera_id: str, frame: np.ndarray, capture_ts: float) -> None:
        """Called by the camera's reader thread for every sampled frame; keeps (JPEG-encodes: that frees the GIL)
        at most ``evidence.fps`` of them per second."""
        ring = self.rings.get(camera_id)
        if ring is None:
            return
        # At most evidence.fps: a frame is kept when its time is due; the due time advances by whole periods
        # so that a 5 fps camera kept at 2 fps averages 2 fps (not every 3rd frame = 1.67), and starts afresh
        # after a gap.
        period = 1.0 / self.fps[camera_id]
        due = self._next_keep.get(camera_id)
        if due is not None and capture_ts < due - 1e-3 * period:
            return
        self._next_keep[camera_id] = capture_ts + period if due is None or capture_ts > due + period else due + period
        encoded = downscale_jpeg(frame, self.config.max_width, self.config.jpeg_quality)
        if encoded is None:
            self.counters.incr("evidence:encode_failed")
            return
        ring.add(KeptFrame(capture_ts, *encoded))

    def memory_bytes(self) -> int:
        return sum(r.nbytes for r in self.rings.values())

    def budget_bytes(self) -> int:
        """What the rings may hold at most, all cameras (:func:`ring_budget_bytes`)."""
        return self.max_bytes * len(self.rings)

    # -- requests -----------------------------------------------------------------------------------------------
    def owns(self, camera_id: str) -> bool:
        return camera_id in self.rings

    def submit(self, req: EvidenceRequest) -> bool:
        """Queue ``req`` (False when the camera is not one of ours, or its files exist already: a replay)."""
        if req.camera_id not in self.rings:
            return False
        snap, clip = self.paths(req.name)
        if snap.exists() and clip.exists():
            self.counters.incr("evidence:already_written")
            return False
        with self._lock:
            self._pending.append(_Pending(req, snapshot_done=snap.exists(), clip_done=clip.exists()))
        self.counters.incr("evidence:requests")
        self._wake.set()
        return True

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}{SNAPSHOT_EXT}", self.dir / f"{name}{CLIP_EXT}"

    # -- the writer ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        # The drawing and the H.264 writer's libraries are loaded now, not on the first alert: that import
        # (supervision ~60 MB resident, PyAV/FFmpeg ~15 MB, about a second of CPU) would otherwise delay the
        # first alert's evidence and show as memory growth mid-run (tests/fault/test_overload.py).
        import av  # noqa: F401
        import supervision  # noqa: F401

        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
        self._thread.start()

    def stop(self, finish: bool = True) -> None:
        """Stop the writer; ``finish``: first write every pending request with the frames there are."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if finish:
            self.process(force=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self.process()
            except Exception:  # evidence is a nicety next to the alert: log, carry on
                logger.exception("evidence writer error")
                self.counters.incr("evidence:errors")
                time.sleep(1.0)

    def process(self, force: bool = False) -> int:
        """Write what is due: snapshots whose frame is in, clips whose window has passed (all of them with
        ``force``). Returns how many files were written."""
        with self._lock:
            todo = list(self._pending)
        written = 0
        # Every due snapshot first (quick: one frame), then at most one clip (a second or so) before looking at
        # the snapshots again: a clip being written holds up a newer alert's snapshot by one clip at most.
        clips = 0
        for kind in ("snapshot", "clip"):
            for p in todo:
                if (p.snapshot_done and p.clip_done) or (kind == "clip" and clips and not force):
                    continue
                try:
                    if kind == "snapshot":
                        written += self._serve_snapshot(p, force)
                    else:
                        n = self._serve_clip(p, force)
                        written, clips = written + n, clips + n
                except Exception:  # one bad request must not block the others (nor be retried for ever)
                    logger.exception("camera %s: evidence %s failed", p.req.camera_id, p.req.name)
                    self.counters.incr("evidence:errors")
                    p.snapshot_done = p.clip_done = True
        with self._lock:
            for p in todo:
                if p.snapshot_done and p.clip_done and p in self._pending:
                    self._pending.remove(p)
            if clips and self._pending:
                self._wake.set()  # more may be due: come straight back
        if written:
            self._maybe_prune()
        return written

    def _serve_snapshot(self, p: _Pending, force: bool) -> int:
        req, ring = p.req, self.rings[p.req.camera_id]
        cfg = self.config
        now = self.clock()
        written = 0
        if not p.snapshot_done:
            frame = ring.nearest(req.decided_at, SNAPSHOT_MAX_GAP_S)
            latest = ring.latest_ts()
            if frame is None and (latest is None or latest < req.decided_at) and not force \
                    and now < req.decided_at + CLIP_GRACE_S:
                pass  # the decision frame is not in yet
            elif frame is None:
                # offline cameras (camera_offline) or a ring that lost the frame: the last frame before, if any
                before = [f for f in ring.window(req.decided_at - cfg.ring_s, req.decided_at)]
                if before:
                    self._write_snapshot(req, before[-1], note=f"last frame {req.decided_at - before[-1].ts:.0f} s "
                                                              "before the alert")
                    self.counters.incr("evidence:snapshot_not_at_decision")
                    written += 1
                else:
                    self.counters.incr("evidence:missing:snapshot_no_frame")
                p.snapshot_done = True
            else:
                self._write_snapshot(req, frame)
                written += 1
                p.snapshot_done = True
        return written

    def _serve_clip(self, p: _Pending, force: bool) -> int:
        req, ring = p.req, self.rings[p.req.camera_id]
        cfg = self.config
        now = self.clock()
        written = 0
        if p.snapshot_done and not p.clip_done:  # the clip never before its snapshot (the same frames, decided)
            end = req.decided_at + cfg.clip_post_s
            latest = ring.latest_ts()
            due = (latest is not None and latest >= end) or now >= end + CLIP_GRACE_S or force
            if due:
                frames = ring.window(req.decided_at - cfg.clip_pre_s, end)
                if frames:
                    self._write_clip(req, frames)
                    written += 1
                else:
                    self.counters.incr("evidence:missing:clip_no_frames")
                p.clip_done = True
        return written

    def _write_snapshot(self, req: EvidenceRequest, frame: KeptFrame, note: str = "") -> None:
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        out = annotate(image, req, frame.scale, note)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(self.config.jpeg_quality)])
        if not ok:
            self.counters.incr("evidence:errors")
            return
        snap, _ = self.paths(req.name)
        _atomic_write(snap, buf.tobytes())
        self.counters.incr("evidence:snapshots")
        self.latency.add("evidence_snapshot", max(0.0, self.clock() - req.requested_at))

    def _write_clip(self, req: EvidenceRequest, frames: list[KeptFrame]) -> None:
        from fbvision.synth.video import write_h264

        cfg = self.config
        fps = self.fps.get(req.camera_id, 5.0)
        period = 1.0 / fps
        tolerance = max(1.0, 2.5 * period)
        reasons = []
        if frames[0].ts - (req.decided_at - cfg.clip_pre_s) > tolerance:
            reasons.append("pre_frames_missing")
        if (req.decided_at + cfg.clip_post_s) - frames[-1].ts > tolerance:
            reasons.append("post_frames_missing")
        if any(b.ts - a.ts > tolerance for a, b in zip(frames, frames[1:], strict=False)):
            reasons.append("gap")
        for reason in reasons:
            self.counters.incr(f"evidence:short:{reason}")

        def images() -> Iterable[np.ndarray]:
            for f in frames:
                image = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
                yield annotate(image, req, f.scale, f"t{f.ts - req.decided_at:+.1f} s")

        _, clip = self.paths(req.name)
        try:
            write_h264(images(), clip, fps, timestamps=[f.ts for f in frames])
        finally:
            release_freed_memory()
        self.counters.incr("evidence:clips")
        self.counters.incr("evidence:clip_bytes", clip.stat().st_size)
        self.counters.incr("evidence:clip_seconds", round(frames[-1].ts - frames[0].ts + period, 3))
        self.latency.add("evidence_clip", max(0.0, self.clock() - req.requested_at))

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = time.monotonic()
        removed = prune(self.dir, self.config.retention_days * 86400, int(self.config.retention_max_mb * 1024 * 1024))
        if removed:
            self.counters.incr("evidence:pruned", removed)


def release_freed_memory() -> None:
    """Give the heap's freed pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    An H.264 clip at 960x540 needs a ~25-35 MB working set (decoded frames, annotation, the encoder's buffers);
    glibc keeps it after the clip is written, in whichever arena the writer thread got, so without this the camera
    manager's resident memory steps up by that much on the first clips of a run and stays there
    (tests/fault/test_overload.py::test_memory_stays_flat). Measured: 4 clips in a thread, +28-38 MB kept
    without, -5 MB with."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)


def prune(folder: Path, max_age_s: float, max_bytes: int, now: float | None = None) -> int:
    """Retention: delete evidence files older than ``max_age_s``, then the oldest until the rest fit ``max_bytes``.
    Only files named like evidence are touched. Returns how many were deleted."""
    now = time.time() if now is None else now
    files = []
    for path in Path(folder).glob("*"):
        if not FILE_RE.match(path.name):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, path))
    files.sort()
    removed = 0
    total = sum(size for _, size, _ in files)
    for mtime, size, path in files:
        if now - mtime > max_age_s or total > max_bytes:
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
    return removed


def ring_budget_bytes(config: EvidenceConfig, cameras: int) -> int:
    """The frame rings' memory budget for ``cameras`` cameras (what :class:`FrameRing` enforces)."""
    return int(math.ceil(config.ring_max_mb * 1024 * 1024)) * cameras
