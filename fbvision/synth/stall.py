"""The empty stall: back wall with boards and bars, side walls, straw floor, a lamp, day or infrared night."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class StallGeometry:
    """Where the floor is, in frame pixels; horses' feet stay inside the floor band."""

    width: int
    height: int
    wall_base_y: int  # back wall meets the floor
    floor_x: tuple[int, int]  # usable floor across the frame
    floor_y: tuple[int, int]  # feet line from the back (top) to the front (bottom)


def draw_stall(
    width: int, height: int, look: str, rng: np.random.Generator
) -> tuple[np.ndarray, StallGeometry]:
    """Return the background (BGR uint8) and its geometry. Costs tens of ms: done once per scene."""
    wall_base_y = int(height * rng.uniform(0.36, 0.50))
    inset_left = int(width * rng.uniform(0.04, 0.16))
    inset_right = int(width * rng.uniform(0.04, 0.16))
    image = np.zeros((height, width, 3), np.uint8)

    wood = np.array(rng.choice([(58, 92, 128), (70, 104, 140), (48, 70, 96), (96, 122, 140)]), np.float64)
    wood *= rng.uniform(0.85, 1.15)
    wall_mode = rng.choice(["boards_and_bars", "boards", "masonry"])

    # Back wall: boards in the lower part, bars over a dark aisle above (or plain masonry).
    boards_top = wall_base_y - int(height * rng.uniform(0.16, 0.28)) if wall_mode == "boards_and_bars" else 0
    if wall_mode == "masonry":
        masonry = np.array(rng.choice([(190, 196, 200), (160, 170, 178), (120, 140, 150)]), np.float64)
        image[:wall_base_y] = masonry
        brick_h = max(6, int(height * rng.uniform(0.03, 0.05)))
        for row, y in enumerate(range(0, wall_base_y, brick_h)):
            cv2.line(image, (0, y), (width, y), tuple(int(c * 0.8) for c in masonry), 1)
            offset = (row % 2) * brick_h
            for x in range(offset, width, brick_h * 3):
                cv2.line(
                    image, (x, y), (x, min(wall_base_y, y + brick_h)), tuple(int(c * 0.8) for c in masonry), 1
                )
    else:
        aisle = np.array((30, 34, 38), np.float64) * rng.uniform(0.7, 1.6)
        image[:wall_base_y] = aisle
        board_h = max(5, int(height * rng.uniform(0.035, 0.06)))
        for y in range(max(0, boards_top), wall_base_y, board_h):
            shade = wood * rng.uniform(0.85, 1.12)
            cv2.rectangle(
                image, (0, y), (width, min(wall_base_y, y + board_h)), tuple(int(c) for c in shade), -1
            )
            cv2.line(image, (0, y), (width, y), tuple(int(c * 0.55) for c in wood), 1)
        if wall_mode == "boards_and_bars" and boards_top > 0:
            spacing = max(8, int(width * rng.uniform(0.018, 0.035)))
            bar = tuple(int(c) for c in np.array((70, 72, 74)) * rng.uniform(0.8, 1.6))
            highlight = tuple(min(255, int(c * 1.6)) for c in bar)
            cv2.rectangle(
                image, (0, 0), (width, max(4, boards_top // 12)), tuple(int(c * 0.8) for c in wood), -1
            )
            for x in range(spacing // 2, width, spacing):
                cv2.line(image, (x, 0), (x, boards_top), bar, max(2, spacing // 6))
                cv2.line(image, (x - 1, 0), (x - 1, boards_top), highlight, 1)
            cv2.rectangle(
                image, (0, boards_top - 4), (width, boards_top + 2), tuple(int(c * 0.7) for c in wood), -1
            )

    # Side walls in perspective, a little darker than the back wall.
    for side in (0, 1):
        inset = inset_left if side == 0 else inset_right
        x_edge = 0 if side == 0 else width - 1
        x_in = inset if side == 0 else width - 1 - inset
        poly = np.array([(x_edge, 0), (x_in, 0), (x_in, wall_base_y), (x_edge, int(height * 0.98))], np.int32)
        side_colour = tuple(int(c) for c in wood * rng.uniform(0.55, 0.8))
        cv2.fillPoly(image, [poly], side_colour)
        for k in range(1, 6):
            y0 = int(wall_base_y * k / 6)
            y1 = int(height * 0.98 * k / 6)
            cv2.line(
                image, (x_edge, y1), (x_in, y0), tuple(int(c * 0.7) for c in side_colour), 1, cv2.LINE_AA
            )

    # Straw or shavings on the floor: a base colour, darker damp patches, thousands of short stalks.
    floor_poly = np.array(
        [
            (inset_left, wall_base_y),
            (width - 1 - inset_right, wall_base_y),
            (width - 1, height - 1),
            (0, height - 1),
        ],
        np.int32,
    )
    straw = np.array(
        rng.choice([(92, 170, 205), (80, 150, 190), (110, 175, 200), (70, 120, 150)]), np.float64
    )
    straw *= rng.uniform(0.85, 1.1)
    floor_mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(floor_mask, [floor_poly], 255)
    floor = np.empty((height, width, 3), np.uint8)
    floor[:] = (straw * 0.7).astype(np.uint8)
    patches = cv2.resize(
        rng.normal(0, 1, (8, 14)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    floor = (floor.astype(np.float32) * (1.0 + 0.12 * patches[..., None])).clip(0, 255).astype(np.uint8)
    n_stalks = int(width * height / 55)
    xs = rng.integers(0, width, n_stalks)
    ys = rng.integers(wall_base_y - 4, height, n_stalks)
    angles = rng.uniform(0, np.pi, n_stalks)
    lengths = rng.uniform(4, 18, n_stalks) * (
        0.5 + 0.7 * (ys - wall_base_y).clip(0) / max(1, height - wall_base_y)
    )
    tones = rng.uniform(0.6, 1.35, n_stalks)
    for x, y, angle, length, tone in zip(xs, ys, angles, lengths, tones, strict=True):
        dx, dy = length * np.cos(angle), length * np.sin(angle) * 0.5
        colour = tuple(int(min(255, c * tone)) for c in straw)
        cv2.line(floor, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), colour, 1)
    image[floor_mask > 0] = floor[floor_mask > 0]

    # A few objects that are not horses: a bucket, a feeder, a hay net.
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["bucket", "feeder", "haynet"])
        cx = int(rng.uniform(0.1, 0.9) * width)
        size = int(height * rng.uniform(0.05, 0.10))
        if kind == "bucket":
            cy = wall_base_y - size // 2
            colour = tuple(
                int(c) for c in rng.choice([(40, 40, 180), (160, 90, 30), (40, 140, 40), (30, 30, 30)])
            )
            cv2.rectangle(
                image, (cx - size // 2, cy - size // 2), (cx + size // 2, cy + size // 2), colour, -1
            )
            cv2.ellipse(image, (cx, cy - size // 2), (size // 2, size // 6), 0, 0, 360, (20, 20, 20), 1)
        elif kind == "feeder":
            cy = int(wall_base_y - height * rng.uniform(0.08, 0.2))
            cv2.rectangle(image, (cx - size, cy - size // 3), (cx + size, cy + size // 3), (70, 75, 80), -1)
        else:
            cy = int(wall_base_y - height * rng.uniform(0.15, 0.3))
            cv2.ellipse(
                image, (cx, cy), (size // 2, int(size * 0.7)), 0, 0, 360, tuple(int(c) for c in straw), -1
            )
            for k in range(-size // 2, size // 2, 4):
                cv2.line(image, (cx + k, cy - size), (cx + k // 2, cy + size), (30, 60, 90), 1)

    # Lamp light: brighter near the lamp, darker towards the corners.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    lamp_x, lamp_y = width * rng.uniform(0.2, 0.8), height * rng.uniform(-0.3, 0.4)
    distance = np.sqrt(((xx - lamp_x) / width) ** 2 + ((yy - lamp_y) / height) ** 2)
    strength = rng.uniform(0.3, 0.7)
    light = (1.15 - strength * distance).clip(0.35, 1.25) * rng.uniform(0.8, 1.15)
    if look == "night":
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        # IR illuminator on the camera: a bright centre and strong fall-off; everything grey.
        centre = np.sqrt(((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
        ir = (1.2 - 1.3 * centre).clip(0.25, 1.2)
        grey = (grey * 0.8 + 20) * ir * rng.uniform(0.8, 1.1)
        image = np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    else:
        image = (image.astype(np.float32) * light[..., None]).clip(0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (3, 3), 0.6)

    margin = int(width * 0.01)
    geometry = StallGeometry(
        width=width,
        height=height,
        wall_base_y=wall_base_y,
        floor_x=(margin, width - margin),
        floor_y=(wall_base_y + int(height * 0.05), height - int(height * 0.02)),
    )
    return np.ascontiguousarray(image), geometry
