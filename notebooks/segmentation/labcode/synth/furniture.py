# Your copy of the course library: labcode/synth/furniture.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Placing things in a room without overlaps: doors, windows, boards, beams, columns, furniture and clutter."""

from __future__ import annotations

import numpy as np

from labcode.synth.scene import Box, Material, Patch, Room
from labcode.synth.styles import (
    _BEAMS,
    _BRIGHTS,
    _COLUMNS,
    _DOORS,
    _METALS,
    _PAINTS,
    _SOFA_FABRICS,
    _WOODS,
    _jitter,
    _Recipe,
    _Style,
)

_INWARD = (0.0, np.pi, np.pi / 2, -np.pi / 2)  # heading that faces into the room from walls 0..3


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wall_length(room: Room, wall: int) -> float:
    return room.dims[1] if wall < 2 else room.dims[0]


def _wall_point(room: Room, wall: int, s: float, inset: float) -> tuple[float, float]:
    width, depth, _ = room.dims
    return [(inset, s), (width - inset, s), (s, inset), (s, depth - inset)][wall]


class _Layout:
    """Places things in a room without overlaps (floor footprints and wall intervals)."""

    def __init__(self, room: Room, style: _Style, rng: np.random.Generator):
        self.room, self.style, self.rng = room, style, rng
        self.wall_used: list[list[tuple[float, float, float, float]]] = [[] for _ in range(4)]

    def free(self, rect: tuple[float, float, float, float]) -> bool:
        width, depth, _ = self.room.dims
        x0, y0, x1, y1 = rect
        if x0 < -0.01 or y0 < -0.01 or x1 > width + 0.01 or y1 > depth + 0.01:
            return False
        return all(x1 <= a or x0 >= c or y1 <= b or y0 >= d for a, b, c, d in self.room.footprints)

    def part(self, label: int, xy: tuple[float, float], yaw: float, offset, half, material, front=None) -> None:
        center = np.array([xy[0], xy[1], 0.0]) + _rot(yaw) @ np.asarray(offset, dtype=float)
        self.room.boxes.append(Box(label, center, np.asarray(half, dtype=float), yaw, material, front))

    def spot(self, width: float, depth: float, wall: int | None = None, gap: float = 0.05):
        """A free floor spot for a width x depth object, against ``wall`` (facing in) or anywhere; or None."""
        room, rng = self.room, self.rng
        for _ in range(15):
            if wall is None:
                yaw = float(rng.choice(_INWARD)) + rng.normal(0, 0.15)
                xy = (rng.uniform(0.3, room.dims[0] - 0.3), rng.uniform(0.3, room.dims[1] - 0.3))
            else:
                length = _wall_length(room, wall)
                if length < width + 2 * gap:
                    return None
                s = rng.uniform(width / 2 + gap, length - width / 2 - gap)
                xy, yaw = _wall_point(room, wall, s, depth / 2 + 0.01), _INWARD[wall] - np.pi / 2
            r = 0.5 * (abs(np.cos(yaw)) * width + abs(np.sin(yaw)) * depth)
            q = 0.5 * (abs(np.sin(yaw)) * width + abs(np.cos(yaw)) * depth)
            rect = (xy[0] - r, xy[1] - q, xy[0] + r, xy[1] + q)
            if self.free(rect):
                self.room.footprints.append(rect)
                return xy, (yaw if wall is None else _INWARD[wall] - np.pi / 2)
        return None

    def wall_slot(self, wall: int, width: float, z0: float, z1: float) -> float | None:
        """Start ``s0`` of a free interval of the wall for a patch at heights z0..z1, or None."""
        length = _wall_length(self.room, wall)
        for _ in range(12):
            if length < width + 0.2:
                return None
            s0 = self.rng.uniform(0.1, length - width - 0.1)
            if all(s0 + width + 0.1 <= a or s0 >= b + 0.1 or z1 <= c or z0 >= d for a, b, c, d in self.wall_used[wall]):
                self.wall_used[wall].append((s0, s0 + width, z0, z1))
                return s0
        return None

    def patch(self, cls: str, wall: int, width: float, z0: float, z1: float, material: Material) -> Patch | None:
        s0 = self.wall_slot(wall, width, z0, z1)
        if s0 is None:
            return None
        patch = Patch(self.room.add(cls), wall, s0, s0 + width, z0, z1, material)
        self.room.patches.append(patch)
        return patch


def _mat(rng: np.random.Generator, kind: str, family: np.ndarray, **kw) -> Material:
    color = _jitter(rng, family[rng.integers(len(family))], 0.06)
    return Material(kind, color, salt=int(rng.integers(1 << 16)), **kw)


def _add_wall_things(lay: _Layout, recipe: _Recipe) -> None:
    room, rng, style = lay.room, lay.rng, lay.style
    height = room.dims[2]
    for _ in range(rng.integers(recipe.doors[0], recipe.doors[1] + 1)):
        wall = int(rng.choice([0, 1], p=[.5, .5]) if room.room_type == "hallway" else rng.integers(4))
        width = rng.choice([0.9, 1.0, 1.2, 1.6, 1.8]) * rng.uniform(0.95, 1.08)
        if rng.random() < 0.25:
            look = Material("opening", _jitter(rng, np.array([.25, .23, .2])), _jitter(rng, style.paints[0]))
        else:
            look = _mat(rng, "door", _DOORS, color2=_jitter(rng, style.metals[0]))
        patch = lay.patch("door", wall, width, 0.0, min(height - 0.15, rng.uniform(2.1, 2.5)), look)
        if patch is not None:  # keep the floor in front of the door clear
            a, b = _wall_point(room, wall, (patch.s0 + patch.s1) / 2, 0.45)
            half = (0.45, width / 2) if wall < 2 else (width / 2, 0.45)
            room.footprints.append((a - half[0], b - half[1], a + half[0], b + half[1]))
    for _ in range(int(rng.integers(1, 4)) if rng.random() < recipe.board_p else 0):
        paper, rim = _jitter(rng, np.array([.97, .97, .97]), 0.02), _jitter(rng, np.array([.12, .12, .14]))
        white = Material("board", paper, rim, salt=int(rng.integers(1 << 16)))
        slate, rim = _jitter(rng, np.array([.12, .40, .24]), 0.05), _jitter(rng, np.array([.12, .12, .14]))
        green = Material("board", slate, rim, salt=int(rng.integers(1 << 16)), contrast=1.0)
        z0 = rng.uniform(0.8, 1.0)
        lay.patch("board", int(rng.integers(4)), rng.uniform(2.2, 5.0), z0, z0 + rng.uniform(1.2, 1.6),
                  white if rng.random() < 0.7 else green)
    for wall in rng.permutation(4)[: 1 + int(rng.random() < 0.25)] if rng.random() < recipe.window_p else ():
        wall = int(wall)
        glass = Material("glass", _jitter(rng, np.array([.50, .72, .98]), 0.04), _jitter(rng, style.metals[0]),
                         scale=rng.uniform(0.6, 1.4), contrast=float(rng.random() < 0.1),  # contrast 1: blinds
                         salt=int(rng.integers(1 << 16)))
        z0 = 0.05 if room.room_type in ("lobby", "lounge") and rng.random() < 0.6 else rng.uniform(0.8, 1.1)
        for _ in range(rng.integers(1, 5)):
            width = min(_wall_length(room, wall) * 0.8, rng.uniform(1.0, 3.5))
            if lay.patch("window", wall, width, z0, min(height - 0.2, rng.uniform(2.2, 2.8)), glass) and z0 > 0.5:
                if rng.random() < 0.4:
                    lay.patch("clutter", wall, width * 0.8, 0.15, 0.65, _mat(rng, "tiles", style.metals, scale=0.08))
    for _ in range(rng.integers(2, 7)):  # posters, frames, signs, heaters
        z0 = rng.uniform(0.3, 1.6)
        look = _mat(rng, "poster", _BRIGHTS, color2=_jitter(rng, style.paints[2]), contrast=1.0)
        lay.patch("clutter", int(rng.integers(4)), rng.uniform(0.3, 1.2), z0, z0 + rng.uniform(0.3, 0.9), look)


def _structure_look(rng: np.random.Generator, family: np.ndarray) -> Material:
    """Beams (warm concrete or timber) and columns (mauve cladding): darker than the walls and ceiling, textured."""
    color = family[rng.integers(len(family))] * rng.uniform(0.9, 1.1)
    return Material("paint", _jitter(rng, color, 0.04), scale=0.3, contrast=0.25, salt=int(rng.integers(1 << 16)))


def _add_structure(lay: _Layout, recipe: _Recipe) -> None:
    room, rng = lay.room, lay.rng
    width, depth, height = room.dims
    if rng.random() < recipe.beam_p:
        along_x = rng.random() < 0.5
        span = width if along_x else depth
        other = depth if along_x else width
        look = _structure_look(rng, _BEAMS)
        for pos in rng.uniform(0.2, 0.8, rng.integers(1, 3)) * other:
            label = room.add("beam")
            thick, drop = rng.uniform(0.3, 0.55), rng.uniform(0.3, 0.5)
            center = (span / 2, pos) if along_x else (pos, span / 2)
            half = (span / 2, thick / 2, drop / 2) if along_x else (thick / 2, span / 2, drop / 2)
            room.boxes.append(Box(label, np.array([*center, height - drop / 2]), np.array(half), 0.0, look))
    if rng.random() < recipe.column_p:
        look = _structure_look(rng, _COLUMNS)
        for _ in range(rng.integers(1, 5)):
            side, out = rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.6)
            free_standing = room.room_type in ("lobby", "openspace", "auditorium") and rng.random() < 0.5
            wall = None if free_standing else int(rng.integers(4))
            spot = lay.spot(side, out, wall, gap=0.0)
            if spot is not None:
                half = (side / 2, out / 2, height / 2)
                lay.part(room.add("column"), spot[0], spot[1], (0, 0, height / 2), half, look)


def _add_chair(lay: _Layout, xy, heading: float, fabric: Material, metal: Material) -> None:
    rng, yaw = lay.rng, heading - np.pi / 2
    label = lay.room.add("chair")
    seat = rng.uniform(0.42, 0.5)
    lay.part(label, xy, yaw, (0, 0, seat), (0.24, 0.23, 0.045), fabric)
    lay.part(label, xy, yaw, (0, -0.22, seat + 0.3), (0.22, 0.035, rng.uniform(0.18, 0.3)), fabric)
    if rng.random() < 0.5:  # swivel chair: pole and star base
        lay.part(label, xy, yaw, (0, 0, seat / 2), (0.035, 0.035, seat / 2), metal)
        lay.part(label, xy, yaw + rng.uniform(0, 1.5), (0, 0, 0.045), (0.3, 0.04, 0.04), metal)
        lay.part(label, xy, yaw + rng.uniform(0, 1.5), (0, 0, 0.045), (0.04, 0.3, 0.04), metal)
    else:
        for dx, dy in ((-0.2, -0.19), (0.2, -0.19), (-0.2, 0.19), (0.2, 0.19)):
            lay.part(label, xy, yaw, (dx, dy, seat / 2), (0.03, 0.03, seat / 2), metal)
    if rng.random() < 0.4:
        for dx in (-0.26, 0.26):
            lay.part(label, xy, yaw, (dx, 0, seat + 0.2), (0.025, 0.17, 0.02), metal)


def _add_table(lay: _Layout, xy, yaw: float, size: tuple[float, float], top: Material, legs: Material) -> float:
    """A table (top and four legs or two side panels); returns the height of its top."""
    rng, label = lay.rng, lay.room.add("table")
    height = rng.uniform(0.71, 0.77)
    lay.part(label, xy, yaw, (0, 0, height), (size[0] / 2, size[1] / 2, rng.uniform(0.025, 0.04)), top)
    if rng.random() < 0.5:
        for sx in (-1, 1):
            for sy in (-1, 1):
                lay.part(label, xy, yaw, (sx * (size[0] / 2 - 0.06), sy * (size[1] / 2 - 0.06), height / 2),
                         (0.025, 0.025, height / 2), legs)
    else:
        for sx in (-1, 1):
            panel = (0.02, size[1] / 2 - 0.05, height / 2)
            lay.part(label, xy, yaw, (sx * (size[0] / 2 - 0.04), 0, height / 2), panel, top)
    return height + 0.03


def _add_table_things(lay: _Layout, xy, yaw: float, size: tuple[float, float], height: float, count: int) -> None:
    """Monitors, papers, books and boxes on a table top at ``height``."""
    rng, style = lay.rng, lay.style
    for _ in range(count):
        x, y = rng.uniform(-0.4, 0.4) * size[0], rng.uniform(-0.35, 0.35) * size[1]
        label = lay.room.add("clutter")
        if rng.integers(3) == 0:  # monitor on a foot
            screen = Material("screen", _jitter(rng, np.array([.08, .08, .1])), _jitter(rng, style.metals[1]))
            plastic = _mat(rng, "paint", _METALS[1:2])
            lay.part(label, xy, yaw, (x, y, height + 0.22), (0.27, 0.02, 0.17), plastic, screen)
            lay.part(label, xy, yaw, (x, y - 0.02, height + 0.03), (0.04, 0.04, 0.03), plastic)
        else:
            half = rng.uniform((0.05, 0.05, 0.01), (0.2, 0.16, 0.12))
            look = _mat(rng, "paint", np.vstack([_BRIGHTS[[0, 2, 4]], _METALS[[0, 2]], _PAINTS[[0]]]), contrast=0.2)
            lay.part(label, xy, yaw + rng.normal(0, 0.4), (x, y, height + half[2]), half, look)


def _add_meeting_table(lay: _Layout, fabric: Material, metal: Material, top: Material) -> None:
    """One long table in the middle of the room with chairs along both sides."""
    room, rng = lay.room, lay.rng
    length = min(room.dims[1] - 2.0, rng.uniform(2.0, 5.0))
    width = min(room.dims[0] - 1.8, rng.uniform(1.2, 1.8))
    center = (room.dims[0] / 2 + rng.normal(0, 0.2), room.dims[1] / 2 + rng.normal(0, 0.2))
    if length < 1.0 or width < 0.6:
        return
    yaw = float(rng.choice([0.0, np.pi]))
    (x, y), w, h = center, width / 2, length / 2
    room.footprints.append((x - w, y - h, x + w, y + h))
    height = _add_table(lay, center, yaw, (width, length), top, metal)
    _add_table_things(lay, center, yaw, (width, length), height, rng.integers(1, 5))
    for side in (-1, 1):
        for k in range(int(length / 0.75)):
            if rng.random() < 0.85:
                y = center[1] - length / 2 + 0.4 + k * 0.75 + rng.normal(0, 0.05)
                x = center[0] + side * (width / 2 + rng.uniform(0.15, 0.45))
                _add_chair(lay, (x, y), (np.pi if side > 0 else 0.0) + rng.normal(0, 0.3), fabric, metal)


def _add_desk(lay: _Layout, fabric: Material, metal: Material, top: Material) -> None:
    """A desk against a wall (or free), things on it and usually a chair in front."""
    rng = lay.rng
    size = (rng.uniform(1.2, 2.0), rng.uniform(0.7, 0.95))
    wall = int(rng.integers(4)) if rng.random() < 0.7 else None
    spot = lay.spot(size[0], size[1] + 0.7, wall)  # with room for the chair in front
    if spot is None:
        return
    (x, y), yaw = spot
    shift = _rot(yaw) @ np.array([0.0, -0.35, 0.0])
    desk_xy = (x + shift[0], y + shift[1])
    height = _add_table(lay, desk_xy, yaw, size, top, metal)
    _add_table_things(lay, desk_xy, yaw, size, height, rng.integers(1, 6))
    if rng.random() < 0.85:  # the desk faces yaw + pi/2, its chair the opposite way
        seat = _rot(yaw) @ np.array([rng.normal(0, 0.2), 0.2 + rng.uniform(0, 0.3), 0.0])
        _add_chair(lay, (x + seat[0], y + seat[1]), yaw + 1.5 * np.pi + rng.normal(0, 0.5), fabric, metal)


def _add_sofa(lay: _Layout, leather: Material) -> None:
    """A sofa: base, seat cushion, back and two arms."""
    rng, length = lay.rng, lay.rng.uniform(1.6, 2.6)
    spot = lay.spot(length, 0.9, int(rng.integers(4)) if rng.random() < 0.75 else None)
    if spot is None:
        return
    xy, yaw = spot
    label = lay.room.add("sofa")
    lay.part(label, xy, yaw, (0, 0.05, 0.22), (length / 2, 0.4, 0.22), leather)
    lay.part(label, xy, yaw, (0, 0.08, 0.48), (length / 2 - 0.18, 0.35, 0.05), leather)
    lay.part(label, xy, yaw, (0, -0.33, 0.55), (length / 2, 0.12, 0.3), leather)
    for side in (-1, 1):
        lay.part(label, xy, yaw, (side * (length / 2 - 0.09), 0.05, 0.32), (0.09, 0.42, 0.32), leather)


def _add_bookcases(lay: _Layout, count: int) -> None:
    """About ``count`` bookcases, in rows of one to three against the walls; each is its own instance."""
    rng = lay.rng
    case = _mat(rng, "planks", _WOODS[[1, 3]], scale=2.0, contrast=0.05)
    placed, height = 0, rng.choice([rng.uniform(0.9, 1.3), rng.uniform(1.8, 2.3)], p=[.2, .8])
    while placed < count:
        run, width, depth = int(rng.integers(1, 4)), rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.45)
        spot = lay.spot(run * width, depth, int(rng.integers(4)) if rng.random() < 0.9 else None)
        placed += run
        if spot is None:
            continue
        (x, y), yaw = spot
        for k in range(run):
            books = Material("books", case.color, scale=rng.uniform(0.3, 0.4), contrast=float(rng.uniform(0.8, 1.0)),
                             salt=int(rng.integers(1 << 16)))
            offset, half = ((k - (run - 1) / 2) * width, 0, height / 2), (width / 2 - 0.005, depth / 2, height / 2)
            lay.part(lay.room.add("bookcase"), (x, y), yaw, offset, half, case, books)


def _add_furniture(lay: _Layout, recipe: _Recipe) -> None:
    room, rng, style = lay.room, lay.rng, lay.style
    fabric = Material("fabric", _jitter(rng, style.fabrics[rng.integers(4)]), scale=1.0, contrast=0.2,
                      salt=int(rng.integers(1 << 16)))
    metal = _mat(rng, "paint", style.metals, contrast=0.05)
    top = _mat(rng, "planks", _WOODS[[0, 2]], color2=_jitter(rng, _WOODS[1]), scale=2.0, contrast=0.08)
    if rng.random() < recipe.meeting_p:
        _add_meeting_table(lay, fabric, metal, top)
    for _ in range(rng.integers(recipe.desks[0], recipe.desks[1] + 1)):
        _add_desk(lay, fabric, metal, top)
    if room.room_type == "auditorium":  # rows of seats facing the y = 0 wall
        for row in np.arange(2.0, room.dims[1] - 1.0, 1.0):
            for x in np.arange(1.0, room.dims[0] - 1.0, 0.6):
                if rng.random() < 0.9:
                    _add_chair(lay, (x, row), -np.pi / 2 + rng.normal(0, 0.05), fabric, metal)
    if rng.random() < recipe.sofas[0]:
        leather = Material("fabric", _jitter(rng, _SOFA_FABRICS[rng.integers(len(_SOFA_FABRICS))], 0.04),
                           scale=1.0, contrast=0.15, salt=int(rng.integers(1 << 16)))
        for _ in range(rng.integers(1, recipe.sofas[1] + 1)):
            _add_sofa(lay, leather)
    _add_bookcases(lay, rng.integers(recipe.bookcases[0], recipe.bookcases[1] + 1))
    if room.room_type in ("office", "lounge", "openspace", "pantry", "lobby"):
        for _ in range(rng.integers(0, 4)):  # chairs standing anywhere
            spot = lay.spot(0.6, 0.6)
            if spot is not None:
                _add_chair(lay, spot[0], rng.uniform(-np.pi, np.pi), fabric, metal)


def _add_clutter(lay: _Layout, recipe: _Recipe) -> None:
    room, rng, style = lay.room, lay.rng, lay.style
    # light metal or red/yellow/orange plastic: not the dark neutrals of doors and chairs, not wall paint, not the
    # blues and greens of sofas and windows
    looks = np.vstack([_METALS[[0, 2]], _BRIGHTS[[0, 2, 4]]])
    for _ in range(rng.integers(recipe.clutter[0], recipe.clutter[1] + 1)):
        kind = rng.choice(["cabinet", "box", "bin", "plant", "machine"], p=[.35, .25, .15, .1, .15])
        size = {"cabinet": ((0.5, 1.2), (0.45, 0.65), (0.8, 1.8)), "box": ((0.3, 0.7), (0.3, 0.6), (0.2, 0.6)),
                "bin": ((0.25, 0.4), (0.25, 0.4), (0.3, 0.6)), "plant": ((0.3, 0.5), (0.3, 0.5), (0.8, 1.6)),
                "machine": ((0.6, 1.2), (0.5, 0.9), (0.9, 1.8))}[kind]
        w, d, h = (rng.uniform(*r) for r in size)
        spot = lay.spot(w, d, int(rng.integers(4)) if rng.random() < 0.75 else None)
        if spot is None:
            continue
        label = room.add("clutter")
        if kind == "plant":
            lay.part(label, spot[0], spot[1], (0, 0, 0.2), (w / 3, d / 3, 0.2), _mat(rng, "paint", looks))
            leaves = Material("fabric", _jitter(rng, np.array([.30, .45, .12]), 0.1), scale=4.0, contrast=0.6)
            lay.part(label, spot[0], spot[1], (0, 0, h / 2 + 0.2), (w / 2, d / 2, h / 2 - 0.2), leaves)
        else:
            kind_look = "tiles" if kind == "cabinet" and rng.random() < 0.7 else "paint"
            drawers = h / rng.integers(2, 5)
            look = _mat(rng, kind_look, looks, color2=_jitter(rng, style.metals[1]), scale=drawers, contrast=0.05)
            lay.part(label, spot[0], spot[1], (0, 0, h / 2), (w / 2, d / 2, h / 2), look)
