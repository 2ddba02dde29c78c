# Your copy of the course library: labcode/synth/layout.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Planning an area: its building style, its furnished rooms, annotation noise and camera shots."""

from __future__ import annotations

import numpy as np

from labcode.classes import AREAS
from labcode.synth.furniture import (
    _add_clutter,
    _add_furniture,
    _add_structure,
    _add_wall_things,
    _Layout,
)
from labcode.synth.scene import Material, Room, Shot
from labcode.synth.styles import _PAINTS, _ROOM_TYPES, _building_style, _jitter, _Style


def _plan_room(seed: int, area: str, index: int, number: dict[str, int], style: _Style) -> Room:
    rng = np.random.default_rng([seed, AREAS.index(area), 1, index])
    room_type = str(rng.choice(list(_ROOM_TYPES), p=style.room_weights))
    recipe = _ROOM_TYPES[room_type]
    number[room_type] = number.get(room_type, 40 if area == "5b" else 0) + 1  # 5b continues 5a's numbering
    dims = (rng.uniform(*recipe.width), rng.uniform(*recipe.length), rng.uniform(*recipe.height))
    if rng.random() < 0.5:
        dims = (dims[1], dims[0], dims[2])
    room = Room(area, room_type, number[room_type], dims)
    paint_color = _jitter(rng, style.paints[rng.integers(len(style.paints))], 0.03)
    paint = Material("paint", paint_color, scale=0.3, contrast=0.08)
    walls = [paint] * 4
    if rng.random() < 0.2:
        accent = _jitter(rng, _PAINTS[rng.integers(len(_PAINTS))])
        walls[rng.integers(4)] = Material("paint", accent, scale=0.3, contrast=0.1)
    room.surfaces = walls + [style.floors[rng.integers(3)], style.ceilings[rng.integers(2)]]
    for cls in ("wall", "wall", "wall", "wall", "floor", "ceiling"):
        room.add(cls)
    room.light = (rng.uniform(0.4, 0.55), rng.uniform(0.15, 0.35), style.lamp_power * rng.uniform(0.6, 1.3))
    warm = style.warmth + rng.normal(0, 0.02)
    room.white_balance = (1 + warm, 1.0, 1 - warm)
    nx, ny = 1 + int(dims[0] > 5), 1 + int(dims[1] > 5)
    room.lamps = [((i + 0.5) * dims[0] / nx, (j + 0.5) * dims[1] / ny, dims[2] - 0.05)
                  for i in range(nx) for j in range(ny)]
    lay = _Layout(room, style, rng)
    _add_wall_things(lay, recipe)
    _add_structure(lay, recipe)
    _add_furniture(lay, recipe)
    _add_clutter(lay, recipe)
    _add_annotation_noise(room, rng)
    _add_shots(room, rng)
    return room


_CONFUSED = {"chair": "sofa", "sofa": "chair", "table": "clutter", "bookcase": "clutter", "clutter": "bookcase",
             "board": "window", "column": "wall", "beam": "ceiling", "door": "wall", "window": "board"}


def _add_annotation_noise(room: Room, rng: np.random.Generator) -> None:
    """Give a few instances the wrong class in the label list, like annotation mistakes in the real scans."""
    for i, (cls, _) in enumerate(room.instances):
        if cls in _CONFUSED and rng.random() < 0.015:
            wrong = _CONFUSED[cls]
            room.instances[i] = (wrong, 1 + max((n for c, n in room.instances if c == wrong), default=0))
            room.relabelled.append(i)


def _add_shots(room: Room, rng: np.random.Generator) -> None:
    width, depth, height = room.dims
    for _ in range(rng.integers(1, 4)):
        for _ in range(20):
            x, y = rng.uniform(0.4, width - 0.4), rng.uniform(0.4, depth - 0.4)
            if all(not (a - 0.2 < x < c + 0.2 and b - 0.2 < y < d + 0.2) for a, b, c, d in room.footprints):
                break
        position = (float(x), float(y), float(min(height - 0.3, rng.uniform(1.0, 1.7))))
        camera = rng.bytes(16).hex()
        for frame in range(rng.integers(1, 4)):
            yaws = rng.uniform(-np.pi, np.pi, 4)
            reach = [_free_distance(room, x, y, a) for a in yaws]
            yaw = yaws[int(np.argmax(reach))] if rng.random() < 0.7 else yaws[0]
            pitch, roll = np.clip(rng.normal(-0.03, 0.2), -0.6, 0.5), rng.normal(0, 0.03)
            fov = np.radians(rng.uniform(50, 85))
            room.shots.append(Shot(camera, frame, position, float(yaw), float(pitch), float(roll), float(fov)))


def _free_distance(room: Room, x: float, y: float, yaw: float) -> float:
    dx, dy = np.cos(yaw), np.sin(yaw)
    tx = (room.dims[0] - x) / dx if dx > 1e-6 else (-x / dx if dx < -1e-6 else np.inf)
    ty = (room.dims[1] - y) / dy if dy > 1e-6 else (-y / dy if dy < -1e-6 else np.inf)
    return float(min(tx, ty))


def plan_area(seed: int, area: str, num_images: int) -> list[Room]:
    """The furnished rooms of one area and their frames, ``num_images`` frames in all (cheap: nothing rendered).

    Args:
        seed: base seed; the plan depends only on (seed, area, num_images).
        area: one of ``AREAS``.
        num_images: number of frames to plan in this area.
    """
    style, rooms, numbers, count = _building_style(seed, area), [], {}, 0
    while count < num_images:
        room = _plan_room(seed, area, len(rooms), numbers, style)
        room.shots = room.shots[: num_images - count]
        count += len(room.shots)
        rooms.append(room)
    return rooms
