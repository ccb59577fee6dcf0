"""Write a scenario to an MP4 (or a folder of JPEG frames) with its ground truth beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
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
