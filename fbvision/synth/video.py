"""Write a scenario to an MP4 (or a folder of JPEG frames) with its ground truth beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fbvision.synth.renderer import SceneRenderer, events
from fbvision.synth.scenario import Scenario

logger = logging.getLogger(__name__)


def truth_paths(video_path: str | Path) -> tuple[Path, Path]:
    """Where the truth tables of a video live: ``<stem>.parquet`` (per frame) and ``<stem>.events.parquet``."""
    path = Path(video_path)
    return path.with_suffix(".parquet"), path.with_suffix(".events.parquet")


def _apply_jpeg(frame, quality: int | None):
    if quality is None:
        return frame
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write BGR frames as an MP4 (``mp4v``): the project's one MP4 writer (scenario videos here, run previews
    in the lab). Frames of another size are resized to the first one's; grey frames become BGR.

    Raises ValueError when ``frames`` is empty, RuntimeError when OpenCV cannot open the writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV could not open a video writer for {path} (mp4v, {size[0]}x{size[1]})")
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            writer.write(np.ascontiguousarray(frame, dtype=np.uint8))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise ValueError("no frames to write")
    logger.debug("%s: %d frames at %.1f fps", path, count, fps)
    return path


def write_h264(frames: Iterable[np.ndarray], path: str | Path, fps: float = 5.0, *,
               timestamps: Iterable[float] | None = None, crf: int = 28, preset: str = "veryfast") -> Path:
    """Write BGR frames as a browser-playable MP4: H.264 (libx264, yuv420p) with the index up front (faststart),
    through PyAV's bundled FFmpeg. ``timestamps`` (seconds, increasing) place each frame at its own time, so a gap
    in the frames is a pause in the video, not a fast-forward; without them frames are ``1/fps`` apart.

    Written to ``<path>.part`` and renamed when complete: a reader never sees half a file.
    Raises ValueError when ``frames`` is empty."""
    import av  # PyAV: FFmpeg with libx264 in its wheels (OpenCV's wheels have no H.264 encoder)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    ts_iter = iter(timestamps) if timestamps is not None else None
    container = av.open(str(part), mode="w", format="mp4", options={"movflags": "+faststart"})
    stream = None
    count, t0, last_pts = 0, None, -1
    try:
        for frame in frames:
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height = frame.shape[1] & ~1, frame.shape[0] & ~1  # yuv420p: even sizes
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(int(crf)), "preset": preset}
                stream.codec_context.time_base = Fraction(1, 1000)
            if (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                frame = cv2.resize(frame, (stream.width, stream.height), interpolation=cv2.INTER_AREA)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="bgr24")
            if ts_iter is not None:
                ts = float(next(ts_iter))
                t0 = ts if t0 is None else t0
                pts = max(int(round((ts - t0) * 1000)), last_pts + 1)
            else:
                pts = int(round(count * 1000 / fps))
            vf.pts, vf.time_base, last_pts = pts, Fraction(1, 1000), pts
            for packet in stream.encode(vf):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    if count == 0:
        part.unlink(missing_ok=True)
        raise ValueError("no frames to write")
    part.replace(path)
    logger.debug("%s: %d frames, H.264", path, count)
    return path


def write_video(scenario: Scenario, path_mp4: str | Path, jpeg_quality: int | None = None) -> Path:
    """Render ``scenario`` to an MP4 (mp4v) and write the truth tables next to it; returns the video path.

    ``jpeg_quality`` adds JPEG artefacts to every frame before it is encoded (as a camera that streams MJPEG).
    """
    renderer = SceneRenderer(scenario)
    started = time.perf_counter()
    path = write_mp4((_apply_jpeg(renderer.frame(i), jpeg_quality) for i in range(renderer.n_frames)), path_mp4,
                     renderer.fps)
    frames_path, events_path = truth_paths(path)
    renderer.ground_truth().to_parquet(frames_path, index=False)
    events(scenario).to_parquet(events_path, index=False)
    logger.info(
        "wrote %s: %d frames in %.1f s, truth in %s",
        path,
        renderer.n_frames,
        time.perf_counter() - started,
        frames_path.name,
    )
    return path


def write_frames(scenario: Scenario, folder: str | Path, jpeg_quality: int | None = 90) -> Path:
    """Render every frame as ``frame_000000.jpg`` (or .png when ``jpeg_quality`` is None) plus the truth tables."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    renderer = SceneRenderer(scenario)
    for i in range(renderer.n_frames):
        frame = renderer.frame(i)
        if jpeg_quality is None:
            cv2.imwrite(str(folder / f"frame_{i:06d}.png"), frame)
        else:
            cv2.imwrite(
                str(folder / f"frame_{i:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
            )
    renderer.ground_truth().to_parquet(folder / "truth.parquet", index=False)
    events(scenario).to_parquet(folder / "events.parquet", index=False)
    return folder


def read_truth(video_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-frame truth and the event intervals written by :func:`write_video`."""
    frames_path, events_path = truth_paths(video_path)
    return pd.read_parquet(frames_path), pd.read_parquet(events_path)
