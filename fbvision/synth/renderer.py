"""Render a :class:`Scenario` frame by frame, with the ground truth of every horse in every frame.

All the expensive work (stall background, horse sprites, every horse's trajectory, the noise pool) is done
when the renderer is built; a frame is then a background copy, a few alpha blits and two saturating adds
(about 2-4 ms for 960x540 on one core). The truth comes from the same sprite that is blitted, so the box is
exactly what is drawn (its alpha >= 0.5 extent, clipped to the frame).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from fbvision.synth.horse import (
    KNEELING,
    LYING_FLAT,
    LYING_STERNAL,
    STANDING,
    HorseArtist,
    Pose,
    Sprite,
    gait_pose,
    random_coat,
    rolling_pose,
    to_night,
)
from fbvision.synth.scenario import HorseScript, Scenario, Segment
from fbvision.synth.stall import StallGeometry, draw_stall

logger = logging.getLogger(__name__)

# Motion, in standing body lengths (box width) per second. The logic stage's "too fast" rule relies on
# running >= 1.5 BL/s and walking <= 0.5 BL/s, so keep a margin on both sides.
WALK_SPEED_BL = 0.30
RUN_SPEED_BL = 3.0
WALK_STRIDES_PER_S = 0.9
RUN_STRIDES_PER_S = 1.7
ROLLS_PER_S = 0.5
GAIT_STEPS = 8  # sprites per stride cycle
TRANSITION_STEPS = 9  # sprites from standing to lying on the brisket
ROLL_STEPS = 8

# What a behaviour turns into when the script ends before the scene does.
_CONTINUATION = {"lying_down": "lying_sternal", "getting_up": "standing"}

Posture = str  # "standing" | "lying" | "absent"


@dataclass(frozen=True)
class HorseTruth:
    """Ground truth of one horse in one frame; ``box`` is x1, y1, x2, y2 in source pixels (NaN when absent)."""

    horse_id: str
    box: tuple[float, float, float, float]
    posture: Posture
    behaviour: str
    visible: bool


@dataclass(frozen=True)
class _HorseFrame:
    behaviour: str
    posture: Posture
    pose_key: tuple[str, int] | None  # None = not drawn
    x: float  # centre of the standing box, frame pixels
    feet_y: float
    facing: int  # +1 right, -1 left


def _pose_for(key: tuple[str, int]) -> Pose:
    kind, step = key
    if kind == "stand":
        return STANDING
    if kind == "walk":
        return gait_pose(step / GAIT_STEPS, "walking")
    if kind == "run":
        return gait_pose(step / GAIT_STEPS, "running")
    if kind == "down":
        fraction = step / (TRANSITION_STEPS - 1)
        if fraction < 0.5:
            return STANDING.blend(KNEELING, fraction * 2)
        return KNEELING.blend(LYING_STERNAL, (fraction - 0.5) * 2)
    if kind == "flat":
        return LYING_FLAT
    if kind == "roll":
        return rolling_pose(step / ROLL_STEPS)
    raise ValueError(f"unknown pose key {key}")


def _timeline(horse: HorseScript, duration_s: float) -> list[tuple[float, float, Segment]]:
    """Segments as (start_s, end_s, segment), extended to ``duration_s`` with the continuation behaviour."""
    spans = []
    start = 0.0
    for segment in horse.script:
        end = start + segment.duration_s
        spans.append((start, end, segment))
        start = end
    if start < duration_s:
        last = horse.script[-1].behaviour
        tail = Segment(behaviour=_CONTINUATION.get(last, last), duration_s=duration_s - start)
        spans.append((start, duration_s, tail))
    return [(s, min(e, duration_s), seg) for s, e, seg in spans if s < duration_s]


class _Horse:
    """One horse: its artist, sprite cache and precomputed trajectory."""

    def __init__(self, index: int, script: HorseScript, scenario: Scenario, geometry: StallGeometry) -> None:
        self.script = script
        self.id = script.id
        rng = np.random.default_rng([scenario.seed, index, 1])
        coat = random_coat(rng, script.coat)
        height_frac = script.height_frac if script.height_frac is not None else float(rng.uniform(0.30, 0.48))
        width, height = scenario.size
        # The standing sprite is ~2.25 m tall (hoof to ear tips) in the horse's own metres.
        self.artist = HorseArtist(coat, px_per_m=height_frac * height / 2.25, rng=rng)
        self.night = scenario.look == "night"
        self.night_gain = float(rng.uniform(0.45, 0.7))
        self.night_offset = float(rng.uniform(80, 130))
        self._sprites: dict[tuple[str, int], tuple[Sprite, Sprite]] = {}

        standing = self.sprite(("stand", 0), +1)
        flat = self.sprite(("flat", 0), +1)
        self.body_length_px = float(standing.box[2] - standing.box[0])
        self.standing_height_px = float(standing.box[3] - standing.box[1])
        # The trajectory is the standing box centre, not the sprite origin, so turning round (a mirrored
        # sprite) does not make the box jump: the centre is what the logic stage measures speed on.
        self.centre_offset = (standing.box[0] + standing.box[2]) / 2 - standing.anchor[0]
        extents = []
        for s in (standing, flat):
            left, right = (
                s.box[0] - s.anchor[0] - self.centre_offset,
                s.box[2] - s.anchor[0] - self.centre_offset,
            )
            extents += [abs(left), abs(right)]  # mirrored sprites swap the two sides
        reach = max(extents)
        x_lo, x_hi = geometry.floor_x[0] + reach, geometry.floor_x[1] - reach
        if x_lo > x_hi:
            x_lo = x_hi = width / 2
        y_lo, y_hi = max(geometry.floor_y[0], self.standing_height_px + 4), geometry.floor_y[1]
        y_lo = min(y_lo, y_hi)
        self.x_range, self.y_range = (x_lo, x_hi), (y_lo, y_hi)
        start_x = script.start_x if script.start_x is not None else float(rng.uniform(0, 1))
        start_y = script.start_y if script.start_y is not None else float(rng.uniform(0, 1))
        facing = {"right": 1, "left": -1}.get(script.facing or "", int(rng.choice([-1, 1])))
        self.frames = self._simulate(
            scenario, x_lo + start_x * (x_hi - x_lo), y_lo + start_y * (y_hi - y_lo), facing, rng
        )

    def sprite(self, key: tuple[str, int], facing: int) -> Sprite:
        pair = self._sprites.get(key)
        if pair is None:
            right = self.artist.draw(_pose_for(key))
            if self.night:
                right = to_night(right, self.night_gain, self.night_offset)
            pair = (right, right.flipped())
            self._sprites[key] = pair
        return pair[0] if facing > 0 else pair[1]

    def _simulate(
        self, scenario: Scenario, x: float, y: float, facing: int, rng: np.random.Generator
    ) -> list[_HorseFrame]:
        fps = scenario.fps
        dt = 1.0 / fps
        timeline = _timeline(self.script, scenario.effective_duration_s)
        (x_lo, x_hi), (y_lo, y_hi) = self.x_range, self.y_range
        body = self.body_length_px
        gait_phase = float(rng.uniform(0, 1))
        roll_phase = 0.0
        drift = 0.0
        ellipse = None  # (cx, cy, a, b, theta, direction) while running
        frames: list[_HorseFrame] = []
        segment_index = -1
        span_index = 0
        for i in range(scenario.n_frames):
            t = i / fps
            while span_index < len(timeline) - 1 and t >= timeline[span_index][1]:
                span_index += 1
            start, end, segment = timeline[span_index]
            behaviour = segment.behaviour
            fraction = min(1.0, max(0.0, (t - start) / max(end - start, 1e-9)))
            entering = span_index != segment_index
            segment_index = span_index
            if behaviour != "running":
                ellipse = None

            if behaviour == "walking":
                if entering:
                    drift = float(rng.uniform(-0.06, 0.06)) * body
                if i > 0:
                    x += facing * WALK_SPEED_BL * body * dt
                    y += drift * dt
                    if x > x_hi or x < x_lo:
                        x = float(np.clip(2 * (x_hi if x > x_hi else x_lo) - x, x_lo, x_hi))
                        facing = -facing
                    if y > y_hi or y < y_lo:
                        y = float(np.clip(y, y_lo, y_hi))
                        drift = -drift
                    gait_phase += WALK_STRIDES_PER_S * dt
            elif behaviour == "running":
                if ellipse is None:
                    ellipse = self._start_loop(x, y, facing)
                if i > 0:
                    x, y, facing, ellipse = self._run_step(ellipse, RUN_SPEED_BL * body * dt, facing)
                    gait_phase += RUN_STRIDES_PER_S * dt
            elif behaviour == "rolling" and i > 0:
                roll_phase += ROLLS_PER_S * dt

            key: tuple[str, int] | None
            posture = "standing"
            if behaviour == "standing":
                key = ("stand", 0)
            elif behaviour == "walking":
                key = ("walk", int(gait_phase * GAIT_STEPS) % GAIT_STEPS)
            elif behaviour == "running":
                key = ("run", int(gait_phase * GAIT_STEPS) % GAIT_STEPS)
            elif behaviour == "lying_down":
                key = ("down", int(round(fraction * (TRANSITION_STEPS - 1))))
                posture = "lying" if fraction >= 0.5 else "standing"
            elif behaviour == "getting_up":
                key = ("down", int(round((1.0 - fraction) * (TRANSITION_STEPS - 1))))
                posture = "lying" if fraction < 0.5 else "standing"
            elif behaviour == "lying_sternal":
                key, posture = ("down", TRANSITION_STEPS - 1), "lying"
            elif behaviour == "lying_flat":
                key, posture = ("flat", 0), "lying"
            elif behaviour == "rolling":
                key, posture = ("roll", int(roll_phase * ROLL_STEPS) % ROLL_STEPS), "lying"
            else:  # absent
                key, posture = None, "absent"
            frames.append(_HorseFrame(behaviour, posture, key, x, y, facing))
        return frames

    def _start_loop(self, x: float, y: float, facing: int) -> tuple[float, float, float, float, float, int]:
        """An ellipse around the stall through the current position, run in the current heading."""
        (x_lo, x_hi), (y_lo, y_hi) = self.x_range, self.y_range
        cx, a = (x_lo + x_hi) / 2, max(1.0, (x_hi - x_lo) / 2)
        b = max(1.0, min((y_hi - y_lo) / 2, 0.6 * a))
        cos_t = float(np.clip((x - cx) / a, -1.0, 1.0))
        sin_abs = math.sqrt(max(0.0, 1 - cos_t * cos_t))
        # Pick the half of the ellipse whose centre stays nearest the middle of the floor band.
        candidates = [(abs((y - b * s) - (y_lo + y_hi) / 2), s) for s in (sin_abs, -sin_abs)]
        _, sin_t = min(candidates)
        cy = float(np.clip(y - b * sin_t, y_lo + b, y_hi - b)) if y_hi - y_lo >= 2 * b else (y_lo + y_hi) / 2
        theta = math.atan2(sin_t, cos_t)
        # dx/dtheta = -a sin(theta): choose the direction that keeps the horse heading the way it faces.
        direction = -facing if math.sin(theta) >= 0 else facing
        return (cx, cy, a, b, theta, direction)

    @staticmethod
    def _run_step(ellipse, distance: float, facing: int):
        cx, cy, a, b, theta, direction = ellipse
        x_before = cx + a * math.cos(theta)
        steps = 16
        for _ in range(steps):
            speed = math.hypot(a * math.sin(theta), b * math.cos(theta)) or 1e-6
            theta += direction * (distance / steps) / speed
        x, y = cx + a * math.cos(theta), cy + b * math.sin(theta)
        if abs(x - x_before) > 1e-3:
            facing = 1 if x > x_before else -1
        return x, y, facing, (cx, cy, a, b, theta, direction)

    def placement(self, i: int) -> tuple[Sprite, int, int] | None:
        """The sprite to draw in frame ``i`` and its top-left corner in frame pixels, or None when absent."""
        state = self.frames[i]
        if state.pose_key is None:
            return None
        sprite = self.sprite(state.pose_key, state.facing)
        origin_x = state.x - state.facing * self.centre_offset
        return sprite, int(round(origin_x - sprite.anchor[0])), int(round(state.feet_y - sprite.anchor[1]))


class SceneRenderer:
    """Frames and ground truth of one scenario; deterministic for (scenario, seed, frame index)."""

    CACHE_FRAMES = 4  # shared_frame's cache: readers of one scene sit within a frame or two of each other

    def __init__(self, scenario: Scenario, *, precompute: bool = True) -> None:
        self.scenario = scenario
        self.fps = float(scenario.fps)
        self.size = (int(scenario.size[0]), int(scenario.size[1]))
        self.n_frames = scenario.n_frames
        width, height = self.size
        rng = np.random.default_rng([scenario.seed, 0xBAC])
        self.background, self.geometry = draw_stall(width, height, scenario.look, rng)
        self._horses = [
            _Horse(k, script, scenario, self.geometry) for k, script in enumerate(scenario.horses)
        ]
        noise_sigma = scenario.camera.noise
        if noise_sigma is None:
            noise_sigma = 3.0 if scenario.look == "day" else 7.0
        self._noise = _NoisePool(
            width,
            height,
            noise_sigma,
            scenario.look == "night",
            np.random.default_rng([scenario.seed, 0x4015E]),
        )
        self._shadows = (
            {h.id: _shadow_mask(h.body_length_px) for h in self._horses} if scenario.camera.shadows else {}
        )
        if precompute:
            for horse in self._horses:
                for i in range(self.n_frames):
                    horse.placement(i)
        # The last few rendered frames, shared by every reader of this renderer (shared_frame).
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        logger.debug("scene %s ready: %d frames, %d horses", scenario.name, self.n_frames, len(self._horses))

    @property
    def horse_ids(self) -> list[str]:
        return [horse.id for horse in self._horses]

    def body_length_px(self, horse_id: str) -> float:
        """Standing box width of a horse, the unit of the motion semantics."""
        return next(h.body_length_px for h in self._horses if h.id == horse_id)

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} outside scenario {self.scenario.name!r} (0..{self.n_frames - 1})")

    def truth(self, i: int) -> list[HorseTruth]:
        self._check_index(i)
        width, height = self.size
        truths = []
        for horse in self._horses:
            state = horse.frames[i]
            placed = horse.placement(i)
            if placed is None:
                truths.append(HorseTruth(horse.id, (math.nan,) * 4, "absent", state.behaviour, False))
                continue
            sprite, left, top = placed
            x1, y1, x2, y2 = sprite.box
            box = (
                float(min(max(left + x1, 0), width)),
                float(min(max(top + y1, 0), height)),
                float(min(max(left + x2, 0), width)),
                float(min(max(top + y2, 0), height)),
            )
            visible = box[2] - box[0] >= 1 and box[3] - box[1] >= 1
            truths.append(
                HorseTruth(horse.id, box, state.posture if visible else "absent", state.behaviour, visible)
            )
        return truths

    def render(self, i: int, *, noise: bool = True, shadows: bool = True, jpeg: bool = True) -> np.ndarray:
        """Frame ``i`` with control over the artefacts (tests switch them off to compare pixels with truth)."""
        self._check_index(i)
        frame = self.background.copy()
        placed = [(h, h.placement(i)) for h in self._horses]
        drawn = sorted(((h, p) for h, p in placed if p is not None), key=lambda hp: hp[0].frames[i].feet_y)
        if shadows:
            for horse, _ in drawn:
                shadow = self._shadows.get(horse.id)
                if shadow is not None:
                    state = horse.frames[i]
                    _darken(
                        frame,
                        shadow,
                        int(round(state.x - shadow.shape[1] / 2)),
                        int(round(state.feet_y - shadow.shape[0] / 2)),
                    )
        for _, (sprite, left, top) in drawn:
            _blit(frame, sprite, left, top)
        if noise:
            self._noise.apply(frame, np.random.default_rng([self.scenario.seed, i, 0x0153]))
        quality = self.scenario.camera.jpeg_quality
        if jpeg and quality is not None:
            ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if ok:
                frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        return frame

    def frame(self, i: int) -> np.ndarray:
        """BGR uint8 (h, w, 3) frame ``i``."""
        return self.render(i)

    def shared_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as :meth:`frame` renders it, from a small cache of the last :attr:`CACHE_FRAMES` frames
        shared by every reader of this renderer - **read-only**, never to be written to.

        A scene is deterministic in ``i``, and its readers (the cameras playing it, each at its fps, usually above
        the scene's own) ask for the same few recent indices: each is then rendered once, not once per reader
        and per sample."""
        with self._cache_lock:  # one render per index; other scenes' renderers are not held up
            frame = self._cache.get(i)
            if frame is not None:
                self._cache.move_to_end(i)
                return frame
            frame = self.render(i)
            frame.setflags(write=False)
            self._cache[i] = frame
            while len(self._cache) > self.CACHE_FRAMES:
                self._cache.popitem(last=False)
            return frame

    def frames(self) -> Iterator[tuple[int, float, np.ndarray, list[HorseTruth]]]:
        for i in range(self.n_frames):
            yield i, i / self.fps, self.frame(i), self.truth(i)

    def ground_truth(self) -> pd.DataFrame:
        rows = []
        for i in range(self.n_frames):
            for truth in self.truth(i):
                x1, y1, x2, y2 = truth.box
                rows.append(
                    (
                        i,
                        i / self.fps,
                        truth.horse_id,
                        x1,
                        y1,
                        x2,
                        y2,
                        truth.posture,
                        truth.behaviour,
                        truth.visible,
                    )
                )
        return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).astype(
            {
                "frame": "int64",
                "t": "float64",
                "x1": "float64",
                "y1": "float64",
                "x2": "float64",
                "y2": "float64",
                "visible": "bool",
            }
        )


TRUTH_COLUMNS = ("frame", "t", "horse_id", "x1", "y1", "x2", "y2", "posture", "behaviour", "visible")
EVENT_COLUMNS = ("horse_id", "behaviour", "start_s", "end_s")


class _NoisePool:
    """Pre-generated sensor noise; each frame takes a window at a seeded random offset (two saturating adds)."""

    _PAD = 48

    def __init__(self, width: int, height: int, sigma: float, grey: bool, rng: np.random.Generator) -> None:
        self.width, self.height = width, height
        self.enabled = sigma > 0
        if not self.enabled:
            return
        shape = (height + self._PAD, width + self._PAD, 1 if grey else 3)
        noise = rng.normal(0.0, sigma, size=shape).astype(np.float32)
        if grey:
            noise = np.repeat(noise, 3, axis=2)
        self.positive = np.ascontiguousarray(noise.clip(0, 255).astype(np.uint8))
        self.negative = np.ascontiguousarray((-noise).clip(0, 255).astype(np.uint8))

    def apply(self, frame: np.ndarray, rng: np.random.Generator) -> None:
        if not self.enabled:
            return
        ox, oy = (int(v) for v in rng.integers(0, self._PAD, size=2))
        window = (slice(oy, oy + self.height), slice(ox, ox + self.width))
        cv2.add(frame, self.positive[window], dst=frame)
        cv2.subtract(frame, self.negative[window], dst=frame)


def _shadow_mask(body_length_px: float) -> np.ndarray:
    width = max(8, int(body_length_px * 1.05))
    height = max(4, int(body_length_px * 0.16))
    mask = np.zeros((height * 2, width + height), np.float32)
    cv2.ellipse(mask, (mask.shape[1] // 2, mask.shape[0] // 2), (width // 2, height // 2), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, height / 4))
    return (1.0 - 0.45 * mask)[..., None]


def _clip_region(frame: np.ndarray, h: int, w: int, left: int, top: int):
    fh, fw = frame.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + w, fw), min(top + h, fh)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _blit(frame: np.ndarray, sprite: Sprite, left: int, top: int) -> None:
    h, w = sprite.alpha.shape[:2]
    regions = _clip_region(frame, h, w, left, top)
    if regions is None:
        return
    dst, src = regions
    region = frame[dst].astype(np.float32)
    alpha = sprite.alpha[src]
    frame[dst] = (region - region * alpha + sprite.colour[src]).clip(0, 255).astype(np.uint8)


def _darken(frame: np.ndarray, factor: np.ndarray, left: int, top: int) -> None:
    h, w = factor.shape[:2]
    regions = _clip_region(frame, h, w, left, top)
    if regions is None:
        return
    dst, src = regions
    frame[dst] = (frame[dst].astype(np.float32) * factor[src]).astype(np.uint8)


def ground_truth(scenario: Scenario) -> pd.DataFrame:
    """One row per frame per horse: frame, t, horse_id, x1, y1, x2, y2, posture, behaviour, visible."""
    return SceneRenderer(scenario, precompute=False).ground_truth()


def events(scenario: Scenario) -> pd.DataFrame:
    """Behaviour intervals per horse (consecutive equal behaviours merged): horse_id, behaviour, start_s, end_s."""
    rows: list[list] = []
    duration = scenario.effective_duration_s
    for horse in scenario.horses:
        for start, end, segment in _timeline(horse, duration):
            if rows and rows[-1][0] == horse.id and rows[-1][1] == segment.behaviour and rows[-1][3] == start:
                rows[-1][3] = end
            else:
                rows.append([horse.id, segment.behaviour, start, end])
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype({"start_s": "float64", "end_s": "float64"})
