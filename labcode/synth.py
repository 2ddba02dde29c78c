"""Offline scene generator writing the exact on-disk format of Stanford 2D-3D-S.

The real scans cannot be downloaded in the course, so the notebooks, tests and the book use rooms rendered here. The
output is laid out, named and encoded exactly like the real data set, so the same reader works on both:

    ROOT/assets/semantic_labels.json   one global list of instance names; entry 0 is "<UNK>_0_<UNK>_0_0"
    ROOT/assets/synth.json             generation parameters (absent from the real data; readers ignore it)
    ROOT/area_<A>/data/rgb/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_rgb.png
    ROOT/area_<A>/data/semantic/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_semantic.png

A semantic pixel (R, G, B) holds the index R*65536 + G*256 + B of its instance name, e.g. "chair_3_office_12_1"
(class_instance_roomType_roomNum_area); the value 0x0D0D0D marks pixels the scanner did not reach.

How an image is made: each area is a "building" with its own paints, floors, furniture colours and lighting, drawn
from one shared family, so a held-out area shows new rooms of the same kind. A room is a box with doors, windows,
boards and posters on its walls, beams, columns and furniture built from oriented boxes. Several camera positions
per room each take a few frames (random heading, pitch, field of view); every frame is ray cast (one z-buffer over
the room planes and the boxes, each box tested only inside its projected bounding rectangle), shaded from a key light
and ceiling lamps, then degraded with sensor noise, blur and JPEG artefacts. Like the real scans, the labels are not
perfect: a few objects are ``<UNK>``, a few instances carry a wrong class, a few frames have their labels shifted by
some pixels, and holes, edge bands or far surfaces have no data. Everything is seeded from (seed, area, room or
image), so the same parameters give byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import cv2
import numpy as np

from labcode.classes import AREAS
from labcode.errors import DatasetError, LabError

logger = logging.getLogger(__name__)

#: Bumped whenever the rendered images change; names the default data set folder (``synth-<version>``).
SYNTH_VERSION: str = "4"

#: Number of images of each area of the real data set, as the course handout lists them: area 5 as one area (its
#: two halves, 5a and 5b, are not counted separately there).
REAL_AREA_IMAGES: dict[str, int] = {"1": 10327, "2": 15714, "3": 3704, "4": 13268, "5": 17593, "6": 9890}

#: Relative sizes of the generated areas: the real counts, with area 5 shared evenly between 5a and 5b. The even
#: share is the generator's assumption, not a count of the real halves.
AREA_WEIGHTS: dict[str, int] = {**{a: n for a, n in REAL_AREA_IMAGES.items() if a != "5"}, "5a": 8797, "5b": 8796}

MISSING_CODE: int = 0x0D0D0D  # semantic pixel value of "no data"
UNKNOWN_ENTRY: str = "<UNK>_0_<UNK>_0_0"


def area_image_counts(total: int, areas: tuple[str, ...] = AREAS) -> dict[str, int]:
    """Split ``total`` images over ``areas`` in the proportions of :data:`AREA_WEIGHTS` (at least one per area).

    One image each, then the rest by largest remainders: the counts add up to ``max(total, len(areas))``.
    """
    weights = np.array([AREA_WEIGHTS[a] for a in areas], dtype=float)
    rest = max(total - len(areas), 0)
    shares = rest * weights / weights.sum()
    counts = np.floor(shares).astype(int)
    counts[np.argsort(counts - shares, kind="stable")[: rest - counts.sum()]] += 1
    return {a: 1 + int(n) for a, n in zip(areas, counts)}


@dataclass(frozen=True)
class SynthParams:
    """The parameters that define a generated data set (the number of workers does not change the files).

    Args:
        size: side of the square images in pixels.
        images_per_area: pairs (area, number of images), in the order the areas are generated.
        seed: base seed of every random choice.
    """

    size: int
    images_per_area: tuple[tuple[str, int], ...]
    seed: int = 0

    def counts(self) -> dict[str, int]:
        """``images_per_area`` as a dict."""
        return dict(self.images_per_area)


#: The data set used by the main job, the notebooks and the book: 480 images of 320 px, areas in real proportions.
DEFAULT_SYNTH: SynthParams = SynthParams(size=320, images_per_area=tuple(area_image_counts(480).items()), seed=0)


# ---------------------------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Material:
    """How a surface looks: a texture kind (a key of ``_TEXTURES``), two colours, a pattern period, a contrast."""

    kind: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.1, 0.1, 0.1)
    scale: float = 1.0
    contrast: float = 0.1
    salt: int = 0


@dataclass
class Box:
    """An oriented box (rotated by ``yaw`` about the vertical axis); its local +y face is its front."""

    label: int
    center: np.ndarray
    half: np.ndarray
    yaw: float
    material: Material
    front: Material | None = None


@dataclass
class Patch:
    """A rectangle flat on wall ``wall`` (0: x=0, 1: x=W, 2: y=0, 3: y=D) spanning ``s`` along it and ``z`` up."""

    label: int
    wall: int
    s0: float
    s1: float
    z0: float
    z1: float
    material: Material


@dataclass
class Shot:
    """One frame: camera position and orientation (radians) and horizontal field of view."""

    camera: str
    frame: int
    position: tuple[float, float, float]
    yaw: float
    pitch: float
    roll: float
    fov: float


@dataclass
class Room:
    """A furnished room and the frames taken in it; ``instances`` holds (class, instance number) per label."""

    area: str
    room_type: str
    number: int
    dims: tuple[float, float, float]
    surfaces: list[Material] = field(default_factory=list)  # walls 0-3, floor, ceiling
    instances: list[tuple[str, int]] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    footprints: list[tuple[float, float, float, float]] = field(default_factory=list)
    lamps: list[tuple[float, float, float]] = field(default_factory=list)
    light: tuple[float, float, float] = (0.5, 0.4, 0.8)  # ambient, key, lamp power
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shots: list[Shot] = field(default_factory=list)
    relabelled: list[int] = field(default_factory=list)  # labels given a wrong class by _add_annotation_noise

    def add(self, cls: str) -> int:
        """Register a new instance of class ``cls`` and return its label."""
        number = 1 + sum(1 for c, _ in self.instances if c == cls)
        self.instances.append((cls, number))
        return len(self.instances) - 1

    def entries(self) -> list[str]:
        """The instance names of this room as they appear in ``semantic_labels.json``."""
        area_number = self.area.rstrip("ab")
        return [f"{c}_{n}_{self.room_type}_{self.number}_{area_number}" for c, n in self.instances]


# ---------------------------------------------------------------------------------------------------------------
# Building styles and room layouts
# ---------------------------------------------------------------------------------------------------------------

class _Recipe(NamedTuple):
    """What a room type looks like: sizes in metres and counts as (min, max), probabilities ``*_p``."""

    weight: float  # share of the rooms of a building (before its own random drift)
    width: tuple[float, float]
    length: tuple[float, float]
    height: tuple[float, float]
    doors: tuple[int, int]
    window_p: float
    board_p: float
    desks: tuple[int, int]
    meeting_p: float
    sofas: tuple[float, int]  # probability of any, most
    bookcases: tuple[int, int]
    clutter: tuple[int, int]
    beam_p: float
    column_p: float


_ROOM_TYPES: dict[str, _Recipe] = {
    "office":         _Recipe(.36, (3.0, 5.5), (3.5, 7.0), (2.6, 3.1), (1, 3), .80, .85,
                              (2, 6), .05, (.35, 1), (3, 9), (8, 16), .45, .45),
    "hallway":        _Recipe(.20, (1.8, 2.8), (7.0, 18.), (2.5, 3.0), (6, 12), .40, .70,
                              (0, 0), .00, (.08, 1), (0, 3), (3, 7), .50, .35),
    "conferenceRoom": _Recipe(.08, (4.0, 6.5), (5.0, 9.0), (2.7, 3.2), (1, 3), .80, .95,
                              (0, 0), .95, (.30, 1), (1, 4), (3, 8), .40, .40),
    "storage":        _Recipe(.06, (2.0, 4.0), (2.5, 5.0), (2.5, 3.0), (1, 2), .15, .10,
                              (0, 1), .00, (.00, 0), (4, 10), (8, 16), .30, .30),
    "WC":             _Recipe(.05, (2.0, 3.5), (2.5, 5.0), (2.5, 2.9), (2, 4), .50, .00,
                              (0, 0), .00, (.00, 0), (0, 0), (6, 12), .25, .20),
    "lounge":         _Recipe(.06, (4.0, 7.0), (4.5, 8.0), (2.7, 3.3), (1, 3), .85, .40,
                              (1, 2), .00, (.95, 3), (1, 4), (5, 10), .35, .45),
    "lobby":          _Recipe(.04, (5.0, 9.0), (6.0, 10.), (3.0, 4.0), (3, 6), .95, .30,
                              (1, 2), .00, (.60, 3), (0, 3), (6, 12), .40, .80),
    "pantry":         _Recipe(.04, (2.5, 4.5), (3.0, 5.5), (2.5, 3.0), (1, 2), .60, .40,
                              (0, 1), .40, (.15, 1), (1, 3), (8, 14), .35, .30),
    "copyRoom":       _Recipe(.03, (2.5, 4.0), (3.0, 5.0), (2.5, 3.0), (1, 2), .40, .50,
                              (0, 1), .00, (.00, 0), (2, 5), (7, 12), .35, .30),
    "openspace":      _Recipe(.05, (6.0, 10.), (7.0, 12.), (2.8, 3.4), (2, 4), .90, .70,
                              (4, 9), .20, (.60, 2), (3, 7), (8, 16), .45, .80),
    "auditorium":     _Recipe(.03, (8.0, 13.), (9.0, 14.), (3.5, 5.0), (2, 4), .40, .90,
                              (0, 0), .00, (.00, 0), (0, 2), (3, 6), .50, .60),
}

# Colour families. Every building draws its own members (with jitter) of the shared families, so a held-out area
# has new colours; each object class keeps a family of its own that overlaps the others little (wood is for tables
# and bookcases, teal for sofas, mauve for columns, warm brown-grey for beams, dark neutral paint for doors;
# clutter is light metal or bright plastic).
_PAINTS = np.array([
    (.86, .85, .80), (.80, .80, .78), (.85, .79, .67), (.72, .77, .81), (.75, .81, .72), (.88, .84, .74),
    (.70, .67, .62), (.83, .72, .65), (.62, .66, .70), (.84, .84, .82),
])
_WOODS = np.array([(.62, .45, .28), (.48, .32, .20), (.75, .60, .42), (.36, .24, .16), (.80, .70, .55)])
_FABRICS = np.array([  # office chairs: darker than the floors, never blue or green (the sofas' teal)
    (.10, .10, .12), (.18, .18, .20), (.26, .18, .14), (.24, .14, .22), (.34, .12, .14), (.12, .14, .20),
])
_SOFA_FABRICS = np.array([(.08, .55, .55), (.10, .60, .52), (.10, .52, .58)])  # teal: no other thing has it
_DOORS = np.array([(.28, .28, .30), (.22, .22, .25), (.40, .38, .34), (.36, .31, .28)])  # dark neutral paint
_BEAMS = np.array([(.50, .40, .30), (.42, .36, .30), (.55, .47, .38)])  # warm concrete or stained timber
_COLUMNS = np.array([(.52, .34, .56), (.46, .30, .52), (.58, .40, .62)])  # mauve cladding: not sky, not paint
_METALS = np.array([(.55, .56, .58), (.30, .31, .33), (.75, .75, .74), (.42, .44, .40)])
_CARPETS = np.array([(.46, .45, .43), (.40, .40, .41), (.50, .47, .42), (.44, .42, .40)])  # mid greys
_STONES = np.array([(.78, .77, .74), (.60, .60, .60), (.85, .84, .83), (.58, .59, .62)])  # cool greys
_BRIGHTS = np.array([(.85, .20, .15), (.15, .45, .80), (.95, .80, .15), (.20, .65, .30), (.95, .55, .10), (.7, .2, .6)])


@dataclass(frozen=True)
class _Style:
    """The look of one building (shared by its areas, e.g. 5a and 5b)."""

    paints: np.ndarray
    floors: tuple[Material, ...]
    ceilings: tuple[Material, ...]
    woods: np.ndarray
    fabrics: np.ndarray
    metals: np.ndarray
    room_weights: np.ndarray
    warmth: float
    lamp_power: float


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.05) -> tuple[float, float, float]:
    c = np.clip(np.asarray(color) * (1 + rng.normal(0, amount)) + rng.normal(0, amount / 2, 3), 0.02, 0.98)
    return (float(c[0]), float(c[1]), float(c[2]))


def _pick(rng: np.random.Generator, family: np.ndarray, k: int) -> np.ndarray:
    chosen = family[rng.choice(len(family), size=k, replace=k > len(family))]
    return np.clip(chosen * rng.uniform(0.85, 1.12, (k, 1)) + rng.normal(0, 0.03, (k, 3)), 0.02, 0.98)


def _building_style(seed: int, area: str) -> _Style:
    rng = np.random.default_rng([seed, 7919, int(area.rstrip("ab"))])
    floors = []
    for _ in range(3):
        kind = rng.choice(["carpet", "tiles"], p=[0.6, 0.4])
        if kind == "carpet":
            floors.append(Material("carpet", _jitter(rng, _pick(rng, _CARPETS, 1)[0]), scale=0.5, contrast=0.25))
        else:  # darker than the ceiling tiles; no wooden floors, the tables own the wood look
            stone = _pick(rng, _STONES, 1)[0] * 0.7
            grout = _jitter(rng, stone * 0.7)
            floors.append(Material("tiles", _jitter(rng, stone), grout, rng.uniform(0.3, 0.6), 0.08))
    ceilings = []
    for _ in range(2):
        white = _jitter(rng, np.array([.88, .88, .86]), 0.04)
        if rng.random() < 0.65:
            grid = _jitter(rng, np.array(white) * 0.78)
            ceilings.append(Material("tiles", white, grid, rng.choice([0.6, 0.6, 1.2]), 0.05))
        else:
            ceilings.append(Material("paint", white, scale=0.5, contrast=0.06))
    base = np.array([r.weight for r in _ROOM_TYPES.values()])
    return _Style(
        paints=_pick(rng, _PAINTS, 4), floors=tuple(floors), ceilings=tuple(ceilings), woods=_pick(rng, _WOODS, 3),
        fabrics=_pick(rng, _FABRICS, 4), metals=_pick(rng, _METALS, 2), room_weights=rng.dirichlet(base * 40),
        warmth=float(rng.uniform(-0.07, 0.09)), lamp_power=float(rng.uniform(0.5, 1.1)),
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


# ---------------------------------------------------------------------------------------------------------------
# Textures: each maps surface coordinates (metres, u along, v up, 0..extent) to colours (n, 3)
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _noise_fields() -> tuple[np.ndarray, np.ndarray]:
    """Two periodic smooth noise images (coarse, fine), zero mean and unit variance."""
    rng, n = np.random.default_rng(20240601), 256
    freq = np.fft.fftfreq(n)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    fields = []
    for sigma in (6.0, 1.2):
        spectrum = np.fft.fft2(rng.standard_normal((n, n))) * np.exp(-radius2 * (2 * np.pi * sigma) ** 2 / 2)
        img = np.fft.ifft2(spectrum).real
        fields.append(((img - img.mean()) / img.std()).astype(np.float32))
    return fields[0], fields[1]


def _noise(u: np.ndarray, v: np.ndarray, fine: bool = False) -> np.ndarray:
    """Bilinear sample of a noise field at texel coordinates (u, v), wrapping around."""
    img = _noise_fields()[int(fine)]
    n = img.shape[0]
    x0, y0 = np.floor(u), np.floor(v)
    fx, fy = (u - x0).astype(np.float32), (v - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64) & (n - 1), y0.astype(np.int64) & (n - 1)
    x1, y1 = (x0 + 1) & (n - 1), (y0 + 1) & (n - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _hash(i: np.ndarray, j: np.ndarray | int = 0, salt: int = 0) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer cells."""
    h = (np.atleast_1d(np.asarray(i, np.int64)) * 73856093) ^ (np.asarray(j, np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 9) & 0xFFFF).astype(np.float32) / 65536.0


def _rgb(color, k: np.ndarray | float = 1.0) -> np.ndarray:
    return np.asarray(color, np.float32)[None, :] * np.asarray(k, np.float32).reshape(-1, 1)


def _tex_paint(u, v, m: Material, ext):
    k = 1 + m.contrast * (0.7 * _noise(u * 8 / m.scale + m.salt, v * 8 / m.scale) + 0.3 * _noise(u * 90, v * 90, True))
    return _rgb(m.color, k)


def _tex_fabric(u, v, m: Material, ext):
    coarse = _noise(u * 20 * m.scale + m.salt, v * 20 * m.scale)
    k = 1 + m.contrast * (0.5 * coarse + 0.6 * _noise(u * 200, v * 200, True))
    return _rgb(m.color, k)


def _tex_carpet(u, v, m: Material, ext):
    tile = _hash(np.floor(u / m.scale), np.floor(v / m.scale), m.salt) - 0.5
    k = 1 + m.contrast * (0.5 * _noise(u * 10, v * 10) + 0.4 * _noise(u * 160, v * 160, True)) + 0.1 * tile
    return _rgb(m.color, k)


def _tex_tiles(u, v, m: Material, ext):
    cu, cv = u / m.scale, v / m.scale
    fu, fv = cu - np.floor(cu), cv - np.floor(cv)
    gap = 0.012 / m.scale
    grout = (np.minimum(fu, 1 - fu) < gap) | (np.minimum(fv, 1 - fv) < gap)
    k = 1 + m.contrast * (2 * (_hash(np.floor(cu), np.floor(cv), m.salt) - 0.5) + 0.5 * _noise(u * 120, v * 120, True))
    return np.where(grout[:, None], _rgb(m.color2), _rgb(m.color, k))


def _tex_planks(u, v, m: Material, ext):
    row = np.floor(v / m.scale)
    seg = np.floor(u / 1.2 + _hash(row, 0, m.salt) * 3)
    tint = _hash(row, seg, m.salt) - 0.5
    grain = np.sin(v * 160 + 6 * _noise(u * 6, v * 30 + row * 17))
    k = 1 + 2 * m.contrast * tint + 0.06 * grain
    edge = (v / m.scale - row) < 0.04
    return np.where(edge[:, None], _rgb(m.color2), _rgb(m.color, k))


def _tex_books(u, v, m: Material, ext):
    """A bookcase front: a frame, shelves every ``scale`` metres, books of random colours and heights."""
    width, height = ext
    shelf = np.floor(v / m.scale)
    fv = v / m.scale - shelf
    frame = (u < 0.03) | (u > width - 0.03) | (fv < 0.08) | (v > height - 0.03)
    book = np.floor(u / (0.025 + 0.035 * _hash(shelf, 1, m.salt)) + 7 * shelf)
    tall = fv < 0.55 + 0.4 * _hash(book, shelf, m.salt + 1)
    present = _hash(book, shelf, m.salt + 2) > 0.2 * (1 - m.contrast)
    hue = _hash(book, shelf, m.salt + 3)
    palette = np.vstack([_BRIGHTS, _FABRICS, _PAINTS[:3]]).astype(np.float32)
    colors = palette[(hue * len(palette)).astype(np.int64)] * (0.7 + 0.3 * _hash(book, 5, m.salt))[:, None]
    back = _rgb(m.color, 0.45)
    out = np.where((tall & present)[:, None], colors, back)
    return np.where(frame[:, None], _rgb(m.color), out)


def _tex_glass(u, v, m: Material, ext):
    """Outdoor light through a window: sky and buildings, mullions every ``scale`` metres, sometimes blinds."""
    width, height = ext
    sky = _rgb(m.color, 1.05 + 0.1 * v / max(height, 1e-3))
    ground = _rgb((0.45, 0.5, 0.45), 1 + 0.25 * _noise(u * 6 + m.salt, v * 6))
    horizon = height * (0.1 + 0.15 * _hash(m.salt)) + 0.25 * _noise(u * 3 + m.salt, 1.0)
    out = np.where((v < horizon)[:, None], ground, sky)
    if m.contrast > 0.5:  # blinds
        out = out * (0.75 + 0.25 * (np.sin(v * 90) > 0))[:, None]
    frame = (u < 0.05) | (u > width - 0.05) | (v < 0.05) | (v > height - 0.05)
    frame |= np.abs((u / m.scale) - np.round(u / m.scale)) * m.scale < 0.025
    return np.where(frame[:, None], _rgb(m.color2) * 0.6, out)


def _tex_board(u, v, m: Material, ext):
    """A whiteboard (or a green chalkboard, ``contrast`` 1) with a dark frame and rows of writing."""
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v < 0.06) | (v > height - 0.06)
    row = np.floor(v / 0.09)
    band = np.abs(v / 0.09 - row - 0.5) < 0.18
    words = _noise(u * 30 + m.salt, row * 13.0) > 0.6
    line_end = width * (0.4 + 0.6 * _hash(row, 1, m.salt))
    written = band & words & (_hash(row, 0, m.salt) < 0.6) & (u > 0.1) & (u < line_end)
    ink = _rgb(np.array([(0.1, 0.15, 0.5), (0.12, 0.12, 0.12), (0.55, 0.1, 0.1)])[m.salt % 3])
    surface = _rgb(m.color, 1 + 0.02 * _noise(u * 5, v * 5) + m.contrast * 0.15 * _noise(u * 150, v * 150, True))
    out = np.where(written[:, None], ink if m.contrast < 0.5 else _rgb((0.9, 0.9, 0.85)), surface)
    return np.where(frame[:, None], _rgb(m.color2), out)


def _tex_door(u, v, m: Material, ext):
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v > height - 0.06)
    leaf = np.abs(u - width / 2) < 0.01 if width > 1.4 else np.zeros_like(u, dtype=bool)
    handle = (np.abs(v - 1.0) < 0.03) & (np.abs(u - (width / 2 - 0.12 if width > 1.4 else width - 0.15)) < 0.07)
    k = 1 + 0.05 * _noise(u * 10 + m.salt, v * 10) + 0.03 * np.sin(v * 70 + 3 * _noise(u * 5, v * 20))
    out = np.where((leaf | handle)[:, None], _rgb(m.color2, 0.5), _rgb(m.color, k))
    return np.where(frame[:, None], _rgb(m.color2), out)


def _tex_opening(u, v, m: Material, ext):
    """An open door: the dim room behind it, framed."""
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v > height - 0.06)
    inside = _rgb(m.color, 0.7 + 0.5 * v / max(height, 1e-3) + 0.2 * _noise(u * 4 + m.salt, v * 4))
    return np.where(frame[:, None], _rgb(m.color2), inside)


def _tex_poster(u, v, m: Material, ext):
    width, height = ext
    cells = _hash(np.floor(u / max(width, 1e-3) * 3), np.floor(v / max(height, 1e-3) * 4), m.salt)
    colors = np.vstack([_BRIGHTS, _FABRICS[:2]]).astype(np.float32)  # no wall paint in a poster
    out = colors[(cells * len(colors)).astype(np.int64)]
    border = (u < 0.03) | (u > width - 0.03) | (v < 0.03) | (v > height - 0.03)
    return np.where(border[:, None], _rgb(m.color2, 0.6), out)


def _tex_screen(u, v, m: Material, ext):
    width, height = ext
    bezel = (u < 0.02) | (u > width - 0.02) | (v < 0.02) | (v > height - 0.02)
    glow = _rgb(m.color, 1 + 2.5 * (_noise(u * 8 + m.salt, v * 8) > 0.8))
    return np.where(bezel[:, None], _rgb(m.color2), glow)


_TEXTURES: dict[str, Callable] = {
    "paint": _tex_paint, "fabric": _tex_fabric, "carpet": _tex_carpet, "tiles": _tex_tiles, "planks": _tex_planks,
    "books": _tex_books, "glass": _tex_glass, "board": _tex_board, "door": _tex_door, "opening": _tex_opening,
    "poster": _tex_poster, "screen": _tex_screen,
}
_EMISSIVE = {"glass", "screen"}


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------

def _camera_basis(shot: Shot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors of a camera in room coordinates (z up)."""
    cy, sy, cp, sp = np.cos(shot.yaw), np.sin(shot.yaw), np.cos(shot.pitch), np.sin(shot.pitch)
    forward = np.array([cp * cy, cp * sy, sp])
    right = np.array([sy, -cy, 0.0])
    up = np.cross(right, forward)
    cr, sr = np.cos(shot.roll), np.sin(shot.roll)
    return forward, right * cr + up * sr, up * cr - right * sr


def render_frame(room: Room, shot: Shot, size: int, seed_sequence: list[int],
                 gaps: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast one frame of ``room``.

    Args:
        room: a planned room (from ``plan_area``).
        shot: one of ``room.shots``.
        size: image side in pixels.
        seed_sequence: seeds of the per-frame randomness (light direction, holes, camera artefacts).
        gaps: punch the holes of missing scanner data (label -1); off for a clean frame.

    Returns:
        ``(rgb, label)``: uint8 ``(size, size, 3)`` RGB image and int32 ``(size, size)`` labels, an index into
        ``room.instances`` or -1 where data is missing.
    """
    rng = np.random.default_rng(seed_sequence)
    forward, right, up = _camera_basis(shot)
    focal = size / 2 / np.tan(shot.fov / 2)
    grid = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) / focal
    dirs = (forward[:, None, None] + grid[None, None, :] * right[:, None, None]
            - grid[None, :, None] * up[:, None, None]).astype(np.float32)  # (3, H, W)
    origin = np.asarray(shot.position, np.float32)
    frame = _Frame(
        depth=np.full((size, size), np.inf, np.float32), label=np.zeros((size, size), np.int32),
        albedo=np.empty((size, size, 3), np.float32), normal=np.zeros((3, size, size), np.float32),
        emissive=np.zeros((size, size), bool),
    )
    _cast_room(room, origin, dirs, frame)
    for box in room.boxes:
        _cast_box(box, origin, dirs, (forward, right, up), focal, frame)
    rgb = _shade(room, origin, dirs, frame, rng)
    label = frame.label
    if gaps:
        rgb, label = _scanner_gaps(rgb, label, frame.depth, rng)
    return _camera_effects(rgb, rng), label


class _Frame(NamedTuple):
    """The z-buffer of a frame: per pixel distance along the ray, label, albedo, normal and light emission."""

    depth: np.ndarray     # (H, W) float32
    label: np.ndarray     # (H, W) int32
    albedo: np.ndarray    # (H, W, 3) float32
    normal: np.ndarray    # (3, H, W) float32
    emissive: np.ndarray  # (H, W) bool


def _cast_room(room: Room, origin: np.ndarray, dirs: np.ndarray, frame: _Frame) -> None:
    """Where each ray leaves the room box: walls 0-3, floor 4, ceiling 5 (also their labels), and the wall patches."""
    exits = []
    for k in range(3):
        d = np.where(np.abs(dirs[k]) < 1e-6, np.float32(1e-6), dirs[k])
        exits.append(np.where(d > 0, room.dims[k] - origin[k], -origin[k]) / d)
    ex, ey, ez = exits
    np.minimum(np.minimum(ex, ey), ez, out=frame.depth)
    surface = np.where(ex <= np.minimum(ey, ez), dirs[0] > 0, np.where(ey <= ez, 2 + (dirs[1] > 0), 4 + (dirs[2] > 0)))
    frame.label[...] = surface  # labels 0..5 are the walls, floor and ceiling of every room
    for sid in range(6):
        mask = surface == sid
        if not mask.any():
            continue
        t = frame.depth[mask]
        px, py, pz = (origin[k] + t * dirs[k][mask] for k in range(3))
        frame.normal[sid // 2][mask] = 1.0 if sid % 2 == 0 else -1.0
        if sid >= 4:
            frame.albedo[mask] = _TEXTURES[room.surfaces[sid].kind](px, py, room.surfaces[sid], (1.0, 1.0))
            continue
        s = py if sid < 2 else px
        colors = _TEXTURES[room.surfaces[sid].kind](s, pz, room.surfaces[sid], (1.0, 1.0))
        label, glow = frame.label[mask], np.zeros(len(s), bool)
        for patch in room.patches:
            if patch.wall == sid:
                inside = (s >= patch.s0) & (s <= patch.s1) & (pz >= patch.z0) & (pz <= patch.z1)
                if inside.any():
                    extent = (patch.s1 - patch.s0, patch.z1 - patch.z0)
                    look = _TEXTURES[patch.material.kind]
                    colors[inside] = look(s[inside] - patch.s0, pz[inside] - patch.z0, patch.material, extent)
                    label[inside] = patch.label
                    glow[inside] = patch.material.kind in _EMISSIVE
        frame.albedo[mask], frame.label[mask], frame.emissive[mask] = colors, label, glow


def _cast_box(box: Box, origin: np.ndarray, dirs: np.ndarray, basis, focal: float, frame: _Frame) -> None:
    """Intersect the rays inside the projected rectangle of ``box`` and keep the hits nearer than the z-buffer."""
    size = frame.depth.shape[0]
    c, s = float(np.cos(box.yaw)), float(np.sin(box.yaw))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = box.center + (_CUBE * box.half) @ rot.T
    rel = corners - origin
    forward, right, up = basis
    z = rel @ forward
    ahead = z > _NEAR
    if not ahead.any():
        return
    if not ahead.all():  # clip the box edges that cross the near plane, keep the crossing points
        i, j = _CUBE_EDGES[ahead[_CUBE_EDGES[:, 0]] != ahead[_CUBE_EDGES[:, 1]]].T
        t = (_NEAR - z[i]) / (z[j] - z[i])
        rel = np.concatenate([rel[ahead], rel[i] + t[:, None] * (rel[j] - rel[i])])
        z = rel @ forward
    px, py = size / 2 + focal * (rel @ right) / z, size / 2 - focal * (rel @ up) / z
    c0, c1 = max(int(px.min()) - 1, 0), min(int(np.ceil(px.max())) + 1, size)
    r0, r1 = max(int(py.min()) - 1, 0), min(int(np.ceil(py.max())) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return
    dx, dy, dz = dirs[0, r0:r1, c0:c1], dirs[1, r0:r1, c0:c1], dirs[2, r0:r1, c0:c1]
    local_dirs = (c * dx + s * dy, c * dy - s * dx, dz)  # rotated into the box frame
    rel_o = origin - box.center
    local_o = (c * rel_o[0] + s * rel_o[1], c * rel_o[1] - s * rel_o[0], rel_o[2])
    t_enter = []
    for k in range(3):
        inv = 1 / np.where(np.abs(local_dirs[k]) < 1e-6, np.float32(1e-6), local_dirs[k])
        ta, tb = (-box.half[k] - local_o[k]) * inv, (box.half[k] - local_o[k]) * inv
        t_enter.append(np.minimum(ta, tb))
        far = np.maximum(ta, tb) if k == 0 else np.minimum(far, np.maximum(ta, tb))
    near = np.maximum(np.maximum(t_enter[0], t_enter[1]), t_enter[2])
    depth = frame.depth[r0:r1, c0:c1]
    hit = (near <= far) & (near > 1e-3) & (near < depth)
    if not hit.any():
        return
    near_hit = near[hit]
    face = np.stack([t[hit] for t in t_enter], 1).argmax(1)
    d_hit = np.stack([d[hit] for d in local_dirs], 1)
    n = np.arange(len(face))
    sign = -np.sign(d_hit[n, face])
    local = np.asarray(local_o, np.float32) + near_hit[:, None] * d_hit + box.half.astype(np.float32)  # 0..2 half
    colors = np.empty((len(face), 3), np.float32)
    for axis, (a, b) in enumerate([(1, 2), (0, 2), (0, 1)]):
        on_face = face == axis
        front = on_face & (sign > 0) if axis == 1 and box.front is not None else np.zeros_like(on_face)
        for sel, mat in ((on_face & ~front, box.material), (front, box.front)):
            if sel.any():
                colors[sel] = _TEXTURES[mat.kind](local[sel, a], local[sel, b], mat, (2 * box.half[a], 2 * box.half[b]))
    n_local = np.zeros((len(face), 3), np.float32)
    n_local[n, face] = sign
    n_world = n_local @ rot.T.astype(np.float32)
    depth[hit] = near_hit
    frame.label[r0:r1, c0:c1][hit] = box.label
    frame.albedo[r0:r1, c0:c1][hit] = colors
    for k in range(3):
        frame.normal[k, r0:r1, c0:c1][hit] = n_world[:, k]
    glows = box.front is not None and box.front.kind in _EMISSIVE
    frame.emissive[r0:r1, c0:c1][hit] = glows & (face == 1) & (sign > 0)


_NEAR = 0.02  # metres: the near clipping plane of the bounding rectangles
_CUBE = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=float)
_CUBE_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(_CUBE[a] - _CUBE[b]).sum() == 2])


def _shade(room: Room, origin: np.ndarray, dirs: np.ndarray, frame: _Frame, rng) -> np.ndarray:
    """Ambient + key light + ceiling lamps, darker near corners and under furniture; auto exposure."""
    ambient, key, lamp_power = room.light
    points = [origin[k] + frame.depth * dirs[k] for k in range(3)]
    nx, ny, nz = frame.normal
    angle = rng.uniform(0, 2 * np.pi)
    key_dir = np.array([np.cos(angle), np.sin(angle), rng.uniform(0.5, 1.5)])
    key_dir /= np.linalg.norm(key_dir)
    light = ambient + key * np.clip(nx * key_dir[0] + ny * key_dir[1] + nz * key_dir[2], 0, None)
    light += 0.15 * np.clip(-nz, 0, None)  # light bounced off the floor
    for lamp in room.lamps:
        vx, vy, vz = (lamp[k] - points[k] for k in range(3))
        dist2 = vx * vx + vy * vy + vz * vz + 1e-3
        cos = (nx * vx + ny * vy + nz * vz) / np.sqrt(dist2)
        light += lamp_power * np.clip(cos, 0, None) / (1 + dist2 / 6.0)
    gap = np.full_like(light, 9.0)
    for k in range(3):  # distance to the nearest room plane other than the one a pixel lies on
        for g in (points[k], room.dims[k] - points[k]):
            np.minimum(gap, np.where(g < 0.02, np.float32(9.0), g), out=gap)
    light *= 1 - 0.3 * np.exp(-gap / 0.25)
    floor = frame.label == 4
    if floor.any():
        fx, fy = points[0][floor], points[1][floor]
        shadow = np.ones(len(fx), np.float32)
        for box in room.boxes:
            if box.center[2] - box.half[2] < 0.8:
                c, s = np.cos(box.yaw), np.sin(box.yaw)
                qx, qy = fx - box.center[0], fy - box.center[1]
                out = np.maximum(np.abs(c * qx + s * qy) - box.half[0], np.abs(c * qy - s * qx) - box.half[1])
                np.minimum(shadow, 0.55 + 0.45 * np.clip(out / 0.2, 0, 1), out=shadow)
        light[floor] *= shadow
    rgb = frame.albedo * (light[..., None] * np.asarray(room.white_balance, np.float32))
    rgb[frame.emissive] = frame.albedo[frame.emissive] * 1.1
    sample = rgb[::4, ::4][~frame.emissive[::4, ::4]]
    level = float(np.median(sample.mean(-1))) if len(sample) else 0.5
    return rgb * np.float32(rng.uniform(0.36, 0.44) / max(level, 1e-3))


def _scanner_gaps(rgb: np.ndarray, label: np.ndarray, depth: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mark pixels the scanner missed (label -1, nearly black): holes, an edge band, far away surfaces."""
    size = label.shape[0]
    missing = np.zeros((size, size), np.uint8)
    if rng.random() < 0.25:
        for _ in range(rng.integers(1, 4)):
            center = (int(rng.integers(size)), int(rng.integers(size)))
            axes = (int(size * rng.uniform(0.015, 0.07)) + 1, int(size * rng.uniform(0.015, 0.07)) + 1)
            cv2.ellipse(missing, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if rng.random() < 0.12:
        band = int(size * rng.uniform(0.01, 0.06)) + 1
        side = rng.integers(4)
        [missing[:band], missing[-band:], missing[:, :band], missing[:, -band:]][side][...] = 1
    gone = missing.astype(bool)
    if rng.random() < 0.2:
        gone |= depth > rng.uniform(9.0, 16.0)
    rgb[gone] = rng.uniform(0.0, 0.02)
    label[gone] = -1
    return rgb, label


def _camera_effects(rgb: np.ndarray, rng) -> np.ndarray:
    """Vignetting, tone curve, blur, sensor noise and sometimes JPEG artefacts; returns uint8 RGB."""
    size = rgb.shape[0]
    r = np.linspace(-1, 1, size, dtype=np.float32)
    vignette = 1 - np.float32(rng.uniform(0.1, 0.25)) * (r[None, :] ** 2 + r[:, None] ** 2) / 2
    rgb = 1 - np.exp(-1.6 * np.clip(rgb * vignette[..., None], 0, None))  # soft highlight roll-off
    sigma = rng.uniform(0.2, 0.6) * size / 400
    img = cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0.25 else rgb
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.5, 2.0))
    out = np.clip(img * np.float32(255 / (1 - np.exp(-1.6))) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _misregister(label: np.ndarray, rng) -> np.ndarray:
    """Shift a label map by a few pixels (a badly registered frame), repeating the border."""
    size = label.shape[0]
    dy, dx = (int(v) for v in rng.integers(-1, 2, 2) * max(2, size // 70))
    rows = np.clip(np.arange(size) - dy, 0, size - 1)
    cols = np.clip(np.arange(size) - dx, 0, size - 1)
    return label[rows][:, cols]


# ---------------------------------------------------------------------------------------------------------------
# Writing a data set
# ---------------------------------------------------------------------------------------------------------------

class _Task(NamedTuple):
    room: Room
    shot: Shot
    size: int
    offset: int  # global index of the room's label 0
    seeds: list[int]
    rgb_path: str
    semantic_path: str


def _render_task(task: _Task) -> int:
    """Render one frame and write its two PNG files; returns 1 (one image)."""
    rgb, label = render_frame(task.room, task.shot, task.size, task.seeds)
    rng = np.random.default_rng(task.seeds + [99])
    if rng.random() < 0.03:
        label = _misregister(label, rng)
    code = np.where(label < 0, MISSING_CODE, label + task.offset).astype(np.int64)
    semantic_bgr = np.stack([code & 255, (code >> 8) & 255, code >> 16], -1).astype(np.uint8)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if not (cv2.imwrite(task.rgb_path, np.ascontiguousarray(rgb[..., ::-1]), png)
            and cv2.imwrite(task.semantic_path, semantic_bgr, png)):
        raise DatasetError(f"could not write {task.rgb_path}")
    return 1


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _plan_dataset(root: Path, areas: tuple[str, ...], counts: dict[str, int], size: int, seed: int):
    """The label list and one task per image, in a fixed order."""
    entries, tasks = [UNKNOWN_ENTRY], []
    for area in areas:
        folder = root / f"area_{area}" / "data"
        image = 0
        for room in plan_area(seed, area, counts[area]):
            offset = len(entries)
            entries.extend(room.entries())
            for shot in room.shots:
                stem = f"camera_{shot.camera}_{room.room_type}_{room.number}_frame_{shot.frame}_domain"
                rgb, semantic = folder / "rgb" / f"{stem}_rgb.png", folder / "semantic" / f"{stem}_semantic.png"
                seeds = [seed, AREAS.index(area), 2, image]
                tasks.append(_Task(room, shot, size, offset, seeds, str(rgb), str(semantic)))
                image += 1
    return entries, tasks


def relabelled_codes(root: str | Path) -> np.ndarray | None:
    """Semantic codes of the instances the generator gave the class of a look-alike, in a data set it generated.

    Nothing in the files tells a relabelled instance from a correct one (its name is an ordinary name of the wrong
    class), but the generator is deterministic: the rooms are planned again from ``assets/synth.json`` (nothing is
    rendered, a few seconds for the default data set) and the codes of the relabelled instances collected.

    Returns:
        Sorted ``int64`` codes (indices into ``semantic_labels.json``), or ``None`` when ``root`` was not generated by
        this version of the generator (the real data set, for instance) or its label list does not match the plan.
    """
    root = Path(root)
    try:
        manifest = json.loads((root / "assets" / "synth.json").read_text())
        saved_entries = json.loads((root / "assets" / "semantic_labels.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("generator") != "labcode.synth" or manifest.get("version") != SYNTH_VERSION:
        return None
    entries, tasks = _plan_dataset(root, tuple(manifest["areas"]), manifest["images_per_area"], manifest["size"],
                                   manifest["seed"])
    if entries != saved_entries:
        return None
    offsets = {id(task.room): (task.offset, task.room) for task in tasks}
    codes = [offset + label for offset, room in offsets.values() for label in room.relabelled]
    return np.array(sorted(codes), dtype=np.int64)


def _check_args(areas, images_per_area, size: int) -> tuple[tuple[str, ...], dict[str, int]]:
    areas = tuple(str(a) for a in areas)
    unknown = [a for a in areas if a not in AREAS]
    if unknown or not areas:
        raise LabError(f"areas: unknown area(s) {unknown or '(none given)'}; valid areas: {', '.join(AREAS)}")
    counts = dict(images_per_area) if isinstance(images_per_area, Mapping) else {a: int(images_per_area) for a in areas}
    missing = [a for a in areas if a not in counts]
    if missing:
        raise LabError(f"images_per_area: no count for area(s) {', '.join(missing)}")
    if any(counts[a] < 1 for a in areas):
        raise LabError("images_per_area: every area needs at least one image")
    if size < 16:
        raise LabError(f"size: images must be at least 16 pixels wide, got {size}")
    return areas, {a: int(counts[a]) for a in areas}


def _manifest(areas: tuple[str, ...], counts: dict[str, int], size: int, seed: int) -> dict:
    return {"generator": "labcode.synth", "version": SYNTH_VERSION, "size": size, "seed": seed,
            "areas": list(areas), "images_per_area": counts, "num_images": sum(counts.values())}


def _spawn_safe() -> bool:
    """Spawned workers re-import the parent's main script, which is impossible when it came from standard input."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _write_into(tmp: Path, areas, counts, size: int, seed: int, workers: int, progress: bool) -> None:
    """Generate the whole data set inside ``tmp``; ``assets/synth.json`` is written last."""
    from tqdm.auto import tqdm

    entries, tasks = _plan_dataset(tmp, areas, counts, size, seed)
    (tmp / "assets").mkdir(parents=True)
    for area in areas:
        for kind in ("rgb", "semantic"):
            (tmp / f"area_{area}" / "data" / kind).mkdir(parents=True)
    (tmp / "assets" / "semantic_labels.json").write_text(json.dumps(entries))
    with tqdm(total=len(tasks), desc="generating scenes", unit="img", disable=not progress) as bar:
        if workers <= 1 or not _spawn_safe():
            for task in tasks:
                bar.update(_render_task(task))
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
            try:
                for done in pool.map(_render_task, tasks, chunksize=4):
                    bar.update(done)
            finally:  # on an error or Ctrl-C, drop the frames not started yet
                pool.shutdown(wait=True, cancel_futures=True)
    (tmp / "assets" / "synth.json").write_text(json.dumps(_manifest(areas, counts, size, seed), indent=1))


def _fresh_sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def generate_dataset(
    out: str | Path,
    *,
    areas: tuple[str, ...] | list[str] = AREAS,
    images_per_area: int | Mapping[str, int] = 40,
    size: int = 1080,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate a synthetic data set in the real Stanford 2D-3D-S layout and return its root.

    The files are written into a hidden sibling folder that is renamed to ``out`` only once complete, so an
    interrupted run never leaves a data set that looks whole.

    Args:
        out: root folder to create (it may exist if empty).
        areas: areas to generate, among ``AREAS``.
        images_per_area: images per area, one number for all or a dict ``{area: count}``.
        size: side of the square images in pixels (1080 like the real data).
        seed: base seed; the same parameters give byte-identical files.
        workers: processes rendering in parallel (does not change the files).
        progress: show a tqdm progress bar.
        overwrite: replace an existing non-empty ``out`` instead of refusing.
    """
    out = Path(out).resolve()
    areas, counts = _check_args(areas, images_per_area, size)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"{out} already exists and is not empty (use overwrite / --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(out, "partial")
    try:
        _write_into(tmp, areas, counts, size, seed, workers, progress)
        _publish(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``out`` (moving an old ``out`` aside first when overwriting)."""
    old = None
    if overwrite and out.exists():
        old = _fresh_sibling(out, "old")
        out.rename(old)
    elif out.exists() and not any(out.iterdir()):
        out.rmdir()
    try:
        tmp.rename(out)
    except OSError as err:
        raise DatasetError(f"{out} appeared while the data set was being generated ({err})") from err
    finally:
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()


def data_home() -> Path:
    """Folder of the generated data sets.

    ``$LABCODE_DATA_HOME`` when set; ``<repository>/data`` when the package runs from a checkout of the course
    repository; otherwise (the student copy of the library in an assignment folder) a per-user cache folder, so
    that the data never lands in a folder that ``nbgrader submit`` uploads.
    """
    import labcode

    if os.environ.get("LABCODE_DATA_HOME"):
        return Path(os.environ["LABCODE_DATA_HOME"])
    checkout = Path(labcode.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "labcode").is_dir():
        return checkout / "data"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labcode"


def _is_complete(root: Path, params: SynthParams) -> bool:
    try:
        manifest = json.loads((root / "assets" / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    areas = tuple(a for a, _ in params.images_per_area)
    return manifest == _manifest(areas, params.counts(), params.size, params.seed)


def ensure_default_dataset(
    progress: bool = True, *, params: SynthParams | None = None, workers: int | None = None
) -> Path:
    """The default generated data set, made on first use: ``data_home() / "synth-<version>"``.

    A complete copy (its ``assets/synth.json`` matches the parameters) is reused. Two processes may call this at
    once: both render, the first rename wins and the other discards its copy.

    Args:
        progress: show a progress bar while generating.
        params: parameters of the data set (``DEFAULT_SYNTH`` unless given).
        workers: rendering processes (default: up to 4, bounded by the CPU count).
    """
    params = params or DEFAULT_SYNTH
    root = data_home() / f"synth-{SYNTH_VERSION}"
    if _is_complete(root, params):
        return root
    workers = workers or min(4, os.cpu_count() or 1)
    areas = tuple(a for a, _ in params.images_per_area)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(root, "partial")
    try:
        _write_into(tmp, areas, params.counts(), params.size, params.seed, workers, progress)
        if _is_complete(root, params):  # another process finished first
            return root
        try:
            _publish(tmp, root, overwrite=root.exists())
        except DatasetError:
            if not _is_complete(root, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generated the default data set in %s", root)
    return root
