# Your copy of the course library: labcode/synth/scene.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The scene model: materials, oriented boxes, wall patches, camera shots and rooms."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
