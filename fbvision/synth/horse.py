"""A procedurally drawn horse, side view, in any posture between standing, lying and rolling.

The horse is a small skeleton in metres (x forward, y up, ground at y=0): a barrel with shoulder and quarters,
four two-segment legs, a neck, a head, a mane and a tail. A :class:`Pose` sets the joint angles; poses
interpolate linearly, which is how the getting-up and lying-down transitions are made. Each pose is drawn once
into a textured RGBA sprite (with 2x supersampling for soft edges); frames only blit sprites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

# Coat colours, BGR: body, mane/tail, lower legs ("points").
COATS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "bay": ((38, 64, 118), (22, 22, 26), (26, 28, 34)),
    "chestnut": ((42, 84, 158), (38, 70, 140), (42, 80, 150)),
    "black": ((34, 33, 36), (22, 22, 24), (28, 28, 30)),
    "grey": ((168, 170, 166), (120, 122, 120), (120, 120, 118)),
    "white": ((212, 218, 222), (200, 205, 210), (196, 200, 204)),
    "palomino": ((108, 176, 214), (196, 222, 236), (100, 160, 200)),
    "dun": ((96, 146, 180), (40, 46, 56), (40, 46, 56)),
}

# Canvas extent in metres around the horse origin (x=0 under the barrel centre, y=0 on the ground).
_X_MIN, _X_MAX = -1.75, 2.45
_Y_MAX = 2.55
_SUPERSAMPLE = 2

_UPPER_LEG, _LOWER_LEG = 0.50, 0.56


@dataclass(frozen=True)
class Pose:
    """Joint parameters of the skeleton; angles in degrees.

    Leg angles are measured from straight down, positive = swung forward (towards the head).
    ``leg_root_side`` is -1 when the legs leave the belly (standing, lying on the brisket) and +1 when the
    horse is on its back (rolling): the legs then leave the top of the barrel in the side view.
    """

    body_y: float = 1.15
    body_tilt: float = 0.0
    body_ry: float = 0.34
    neck_angle: float = 52.0
    head_angle: float = -62.0
    front_near: tuple[float, float] = (0.0, 0.0)
    front_far: tuple[float, float] = (0.0, 0.0)
    hind_near: tuple[float, float] = (0.0, 6.0)
    hind_far: tuple[float, float] = (0.0, 6.0)
    leg_root_side: float = -1.0
    tail_angle: float = -80.0

    def blend(self, other: Pose, weight: float) -> Pose:
        """Linear interpolation: weight 0 = self, 1 = other."""
        values = {}
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, tuple):
                values[field.name] = tuple(a + (b - a) * weight for a, b in zip(mine, theirs, strict=True))
            else:
                values[field.name] = mine + (theirs - mine) * weight
        return Pose(**values)


STANDING = Pose()
LYING_STERNAL = Pose(
    body_y=0.40,
    body_tilt=2.0,
    neck_angle=24.0,
    head_angle=-50.0,
    front_near=(95.0, -80.0),
    front_far=(88.0, -88.0),
    hind_near=(88.0, -70.0),
    hind_far=(80.0, -80.0),
    tail_angle=-120.0,
)
LYING_FLAT = Pose(
    body_y=0.36,
    body_tilt=-3.0,
    body_ry=0.33,
    neck_angle=-2.0,
    head_angle=-8.0,
    front_near=(72.0, 84.0),
    front_far=(62.0, 80.0),
    hind_near=(66.0, 82.0),
    hind_far=(56.0, 76.0),
    tail_angle=-160.0,
)
# Halfway down: front knees folded, quarters still up - the usual way a horse goes down.
KNEELING = Pose(
    body_y=0.78,
    body_tilt=-14.0,
    neck_angle=20.0,
    head_angle=-70.0,
    front_near=(70.0, -95.0),
    front_far=(62.0, -100.0),
    hind_near=(30.0, -20.0),
    hind_far=(24.0, -24.0),
    tail_angle=-100.0,
)


def rolling_pose(phase: float) -> Pose:
    """On the back, legs folded up and swinging; ``phase`` in [0, 1)."""
    swing = math.sin(2 * math.pi * phase)
    return Pose(
        body_y=0.40 + 0.03 * abs(swing),
        body_tilt=4.0 * swing,
        neck_angle=-6.0,
        head_angle=-14.0 + 6.0 * swing,
        front_near=(150.0 + 18.0 * swing, 75.0),
        front_far=(140.0 - 16.0 * swing, 80.0),
        hind_near=(-150.0 + 16.0 * swing, -70.0),
        hind_far=(-140.0 - 18.0 * swing, -75.0),
        leg_root_side=1.0,
        tail_angle=-175.0,
    )


def gait_pose(phase: float, gait: str) -> Pose:
    """Walking or running legs at ``phase`` in [0, 1) of the stride (diagonal pairs move together)."""
    angle = 2 * math.pi * phase
    if gait == "running":
        amplitude, knee, bob, neck = 34.0, 70.0, 0.05, 38.0
    else:
        amplitude, knee, bob, neck = 17.0, 35.0, 0.01, 48.0

    def leg(offset: float, hind: bool) -> tuple[float, float]:
        swing = math.sin(angle + offset)
        upper = amplitude * swing
        # The lower leg folds back while the leg swings forward, like a fetlock/knee flexing in the air.
        lower = upper - knee * max(0.0, math.cos(angle + offset)) * (0.6 if hind else 1.0)
        return (upper, lower + (6.0 if hind else 0.0))

    return replace(
        STANDING,
        body_y=1.15 + bob * math.sin(2 * angle),
        neck_angle=neck + 4.0 * math.sin(2 * angle),
        front_near=leg(0.0, False),
        hind_far=leg(0.0, True),
        front_far=leg(math.pi, False),
        hind_near=leg(math.pi, True),
        tail_angle=-60.0 if gait == "running" else -80.0,
    )


@dataclass(frozen=True)
class Sprite:
    """A drawn pose: premultiplied BGR float32, alpha float32 (h, w, 1), anchor and tight box in sprite pixels."""

    colour: np.ndarray
    alpha: np.ndarray
    anchor: tuple[float, float]  # sprite pixel of the horse origin (under the barrel, on the ground)
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive) of alpha >= 0.5

    def flipped(self) -> Sprite:
        width = self.colour.shape[1]
        x1, y1, x2, y2 = self.box
        return Sprite(
            colour=np.ascontiguousarray(self.colour[:, ::-1]),
            alpha=np.ascontiguousarray(self.alpha[:, ::-1]),
            anchor=(width - self.anchor[0], self.anchor[1]),
            box=(width - x2, y1, width - x1, y2),
        )


@dataclass(frozen=True)
class Coat:
    body: tuple[int, int, int]
    mane: tuple[int, int, int]
    points: tuple[int, int, int]
    socks: tuple[bool, bool, bool, bool]  # white lower legs: front near, front far, hind near, hind far
    blaze: bool


def random_coat(rng: np.random.Generator, name: str | None = None) -> Coat:
    if name is None:
        name = str(rng.choice(list(COATS)))
    if name not in COATS:
        raise ValueError(f"unknown coat {name!r}; known: {', '.join(COATS)}")
    body, mane, points = COATS[name]
    jitter = rng.uniform(0.85, 1.15)
    body = tuple(int(min(255, c * jitter)) for c in body)
    socks = tuple(bool(rng.random() < 0.2) for _ in range(4))
    return Coat(body=body, mane=mane, points=points, socks=socks, blaze=bool(rng.random() < 0.4))  # type: ignore[arg-type]


class HorseArtist:
    """Draws poses of one horse (one coat, one scale, one texture) into sprites."""

    def __init__(self, coat: Coat, px_per_m: float, rng: np.random.Generator) -> None:
        self.coat = coat
        self.px_per_m = float(px_per_m)
        scale = self.px_per_m * _SUPERSAMPLE
        self._width = int(math.ceil((_X_MAX - _X_MIN) * scale))
        self._height = int(math.ceil(_Y_MAX * scale))
        self._scale = scale
        # Coat texture: low-frequency patches (dapples, muscle shading) and fine hair noise, fixed per horse.
        small = rng.normal(0.0, 1.0, size=(max(2, self._height // 24), max(2, self._width // 24))).astype(
            np.float32
        )
        patches = cv2.resize(small, (self._width, self._height), interpolation=cv2.INTER_CUBIC)
        hair = rng.normal(0.0, 1.0, size=(self._height, self._width)).astype(np.float32)
        hair = cv2.GaussianBlur(hair, (0, 0), 0.8)
        self._texture = (1.0 + 0.10 * patches + 0.06 * hair).clip(0.6, 1.4)[..., None]
        rows = np.arange(self._height, dtype=np.float32)[:, None]
        self._rows = rows

    def _pt(self, x: float, y: float) -> tuple[float, float]:
        return ((x - _X_MIN) * self._scale, (_Y_MAX - y) * self._scale)

    def _poly(self, points: list[tuple[float, float]]) -> np.ndarray:
        return np.array([self._pt(x, y) for x, y in points], dtype=np.float32)

    def draw(self, pose: Pose) -> Sprite:
        h, w, s = self._height, self._width, self._scale
        colour = np.zeros((h, w, 3), np.uint8)
        shade = np.full((h, w), 255, np.uint8)  # per-part brightness, 255 = unshaded
        alpha = np.zeros((h, w), np.uint8)
        shift = 4  # sub-pixel precision for cv2 drawing
        k = 1 << shift

        def fill(poly: np.ndarray, bgr: tuple[int, int, int], part_shade: int = 255) -> None:
            pts = np.round(poly * k).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(colour, [pts], bgr, cv2.LINE_8, shift)
            cv2.fillPoly(shade, [pts], part_shade, cv2.LINE_8, shift)
            cv2.fillPoly(alpha, [pts], 255, cv2.LINE_8, shift)

        def ellipse(
            cx: float, cy: float, rx: float, ry: float, angle: float, bgr, part_shade: int = 255
        ) -> None:
            centre = self._pt(cx, cy)
            box = ((centre[0], centre[1]), (2 * rx * s, 2 * ry * s), -angle)
            poly = cv2.boxPoints(box)  # only used for degenerate sizes
            if rx * s < 1 or ry * s < 1:
                fill(poly, bgr, part_shade)
                return
            pts = cv2.ellipse2Poly(
                (int(round(centre[0])), int(round(centre[1]))),
                (int(round(rx * s)), int(round(ry * s))),
                int(round(-angle)),
                0,
                360,
                8,
            )
            fill(pts.astype(np.float32), bgr, part_shade)

        def limb(x0: float, y0: float, x1: float, y1: float, w0: float, w1: float, bgr, part_shade=255):
            dx, dy = x1 - x0, y1 - y0
            length = math.hypot(dx, dy) or 1e-6
            nx, ny = -dy / length, dx / length
            poly = [
                (x0 + nx * w0 / 2, y0 + ny * w0 / 2),
                (x1 + nx * w1 / 2, y1 + ny * w1 / 2),
                (x1 - nx * w1 / 2, y1 - ny * w1 / 2),
                (x0 - nx * w0 / 2, y0 - ny * w0 / 2),
            ]
            fill(self._poly(poly), bgr, part_shade)
            ellipse(x1, y1, w1 / 2, w1 / 2, 0.0, bgr, part_shade)

        tilt = math.radians(pose.body_tilt)

        def body_point(bx: float, by: float) -> tuple[float, float]:
            return (
                bx * math.cos(tilt) - by * math.sin(tilt),
                pose.body_y + bx * math.sin(tilt) + by * math.cos(tilt),
            )

        coat = self.coat
        legs = [
            ("front_far", 0.50, True, coat.socks[1]),
            ("hind_far", -0.56, True, coat.socks[3]),
            ("front_near", 0.56, False, coat.socks[0]),
            ("hind_near", -0.50, False, coat.socks[2]),
        ]

        def draw_leg(name: str, root_x: float, far: bool, sock: bool) -> None:
            upper_deg, lower_deg = getattr(pose, name)
            root = body_point(root_x, 0.22 * pose.leg_root_side)
            a1, a2 = math.radians(upper_deg), math.radians(lower_deg)
            knee = (root[0] + _UPPER_LEG * math.sin(a1), root[1] - _UPPER_LEG * math.cos(a1))
            hoof = (knee[0] + _LOWER_LEG * math.sin(a2), knee[1] - _LOWER_LEG * math.cos(a2))
            part_shade = 175 if far else 255
            lower_colour = (225, 228, 230) if sock else coat.points
            limb(root[0], root[1], knee[0], knee[1], 0.23, 0.12, coat.body, part_shade)
            limb(knee[0], knee[1], hoof[0], hoof[1], 0.11, 0.09, lower_colour, part_shade)
            ellipse(hoof[0], hoof[1], 0.06, 0.05, math.degrees(a2), (30, 32, 36), part_shade)

        for name, root_x, far, sock in legs[:2]:
            draw_leg(name, root_x, far, sock)

        # Tail hangs from the top of the quarters.
        tail_root = body_point(-0.80, 0.16)
        ta = math.radians(pose.tail_angle)
        tail_mid = (tail_root[0] + 0.35 * math.cos(ta) - 0.08, tail_root[1] + 0.35 * math.sin(ta))
        tail_end = (tail_mid[0] + 0.45 * math.cos(ta - 0.15) - 0.04, tail_mid[1] + 0.45 * math.sin(ta - 0.15))
        tail_end = (tail_end[0], max(0.02, tail_end[1]))
        limb(tail_root[0], tail_root[1], tail_mid[0], tail_mid[1], 0.14, 0.16, coat.mane, 220)
        limb(tail_mid[0], tail_mid[1], tail_end[0], tail_end[1], 0.16, 0.10, coat.mane, 220)

        # Barrel, quarters, shoulder.
        bx, by = body_point(0.0, 0.0)
        ellipse(bx, by, 0.82, pose.body_ry, pose.body_tilt, coat.body)
        qx, qy = body_point(-0.52, 0.06)
        ellipse(qx, qy, 0.40, pose.body_ry + 0.04, pose.body_tilt, coat.body)
        sx, sy = body_point(0.55, 0.05)
        ellipse(sx, sy, 0.36, pose.body_ry + 0.02, pose.body_tilt, coat.body)

        for name, root_x, far, sock in legs[2:]:
            draw_leg(name, root_x, far, sock)

        # Neck from the withers, head at its end.
        na = math.radians(pose.neck_angle + pose.body_tilt)
        neck_base_top = body_point(0.50, 0.30)
        neck_base_low = body_point(0.86, -0.10)
        neck_len = 0.78
        neck_top = (neck_base_top[0] + neck_len * math.cos(na), neck_base_top[1] + neck_len * math.sin(na))
        neck_low = (neck_top[0] + 0.28 * math.sin(na), neck_top[1] - 0.28 * math.cos(na))
        fill(self._poly([neck_base_top, neck_top, neck_low, neck_base_low]), coat.body)
        ha = math.radians(pose.head_angle + pose.body_tilt)
        head_centre = (
            (neck_top[0] + neck_low[0]) / 2 + 0.26 * math.cos(ha),
            (neck_top[1] + neck_low[1]) / 2 + 0.26 * math.sin(ha),
        )
        ellipse(head_centre[0], head_centre[1], 0.33, 0.13, math.degrees(ha), coat.body)
        muzzle = (head_centre[0] + 0.26 * math.cos(ha), head_centre[1] + 0.26 * math.sin(ha))
        ellipse(muzzle[0], muzzle[1], 0.11, 0.10, math.degrees(ha), coat.body, 200)
        if coat.blaze:
            ellipse(
                head_centre[0] + 0.05 * math.cos(ha),
                head_centre[1] + 0.05 * math.sin(ha) + 0.06,
                0.24,
                0.035,
                math.degrees(ha),
                (220, 224, 228),
            )
        # Ears and mane.
        ear_base = (neck_top[0] + 0.02, neck_top[1] + 0.02)
        ear_dir = na + math.radians(35)
        ear_tip = (ear_base[0] + 0.17 * math.cos(ear_dir), ear_base[1] + 0.17 * math.sin(ear_dir))
        fill(
            self._poly(
                [(ear_base[0] - 0.05, ear_base[1]), ear_tip, (ear_base[0] + 0.06, ear_base[1] - 0.02)]
            ),
            coat.body,
            210,
        )
        mane_a = neck_base_top
        limb(mane_a[0], mane_a[1] + 0.02, neck_top[0], neck_top[1] + 0.02, 0.10, 0.08, coat.mane, 230)
        eye = (head_centre[0] - 0.10 * math.cos(ha) + 0.03, head_centre[1] - 0.10 * math.sin(ha) + 0.05)
        ellipse(eye[0], eye[1], 0.03, 0.025, 0.0, (12, 12, 14))

        # Texture and a soft top-light: the belly and lower parts are darker.
        light = (0.75 + 0.35 * (1.0 - self._rows / h)).astype(np.float32)[..., None]
        shaded = (
            colour.astype(np.float32) * (shade.astype(np.float32)[..., None] / 255.0) * light * self._texture
        )
        alpha_f = alpha.astype(np.float32) / 255.0
        premult = shaded.clip(0, 255) * alpha_f[..., None]
        out_w, out_h = w // _SUPERSAMPLE, h // _SUPERSAMPLE
        premult = cv2.resize(premult, (out_w, out_h), interpolation=cv2.INTER_AREA)
        alpha_small = cv2.resize(alpha_f, (out_w, out_h), interpolation=cv2.INTER_AREA)
        return _crop_sprite(premult, alpha_small, anchor=(-_X_MIN * self.px_per_m, _Y_MAX * self.px_per_m))


def _crop_sprite(premult: np.ndarray, alpha: np.ndarray, anchor: tuple[float, float]) -> Sprite:
    """Trim empty borders (keeping one pixel of soft edge) so blits touch as few pixels as possible."""
    visible = alpha > 0.01
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    if rows.size == 0:
        raise ValueError("pose drew nothing")
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    premult, alpha = premult[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    solid = alpha >= 0.5
    srows, scols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    box = (int(scols[0]), int(srows[0]), int(scols[-1]) + 1, int(srows[-1]) + 1)
    return Sprite(
        colour=np.ascontiguousarray(premult, dtype=np.float32),
        alpha=np.ascontiguousarray(alpha[..., None], dtype=np.float32),
        anchor=(anchor[0] - x0, anchor[1] - y0),
        box=box,
    )


def to_night(sprite: Sprite, gain: float, offset: float) -> Sprite:
    """Infrared look: grey, coats reflect strongly so dark horses turn mid-grey."""
    alpha = sprite.alpha
    safe = np.maximum(alpha, 1e-3)
    straight = sprite.colour / safe
    grey = cv2.cvtColor(straight.clip(0, 255).astype(np.float32), cv2.COLOR_BGR2GRAY)
    grey = (grey * gain + offset).clip(0, 255)
    colour = np.repeat(grey[..., None], 3, axis=2) * alpha
    return replace(sprite, colour=np.ascontiguousarray(colour, dtype=np.float32))
