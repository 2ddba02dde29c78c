# Your copy of the course library: labcode/synth/styles.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Building styles and room recipes: what each room type holds, the colour families every building draws from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from labcode.synth.scene import Material


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
    "office": _Recipe(
        weight=.36, width=(3.0, 5.5), length=(3.5, 7.0), height=(2.6, 3.1),
        doors=(1, 3), window_p=.80, board_p=.85, desks=(2, 6), meeting_p=.05,
        sofas=(.35, 1), bookcases=(3, 9), clutter=(8, 16), beam_p=.45, column_p=.45,
    ),
    "hallway": _Recipe(
        weight=.20, width=(1.8, 2.8), length=(7.0, 18.), height=(2.5, 3.0),
        doors=(6, 12), window_p=.40, board_p=.70, desks=(0, 0), meeting_p=.00,
        sofas=(.08, 1), bookcases=(0, 3), clutter=(3, 7), beam_p=.50, column_p=.35,
    ),
    "conferenceRoom": _Recipe(
        weight=.08, width=(4.0, 6.5), length=(5.0, 9.0), height=(2.7, 3.2),
        doors=(1, 3), window_p=.80, board_p=.95, desks=(0, 0), meeting_p=.95,
        sofas=(.30, 1), bookcases=(1, 4), clutter=(3, 8), beam_p=.40, column_p=.40,
    ),
    "storage": _Recipe(
        weight=.06, width=(2.0, 4.0), length=(2.5, 5.0), height=(2.5, 3.0),
        doors=(1, 2), window_p=.15, board_p=.10, desks=(0, 1), meeting_p=.00,
        sofas=(.00, 0), bookcases=(4, 10), clutter=(8, 16), beam_p=.30, column_p=.30,
    ),
    "WC": _Recipe(
        weight=.05, width=(2.0, 3.5), length=(2.5, 5.0), height=(2.5, 2.9),
        doors=(2, 4), window_p=.50, board_p=.00, desks=(0, 0), meeting_p=.00,
        sofas=(.00, 0), bookcases=(0, 0), clutter=(6, 12), beam_p=.25, column_p=.20,
    ),
    "lounge": _Recipe(
        weight=.06, width=(4.0, 7.0), length=(4.5, 8.0), height=(2.7, 3.3),
        doors=(1, 3), window_p=.85, board_p=.40, desks=(1, 2), meeting_p=.00,
        sofas=(.95, 3), bookcases=(1, 4), clutter=(5, 10), beam_p=.35, column_p=.45,
    ),
    "lobby": _Recipe(
        weight=.04, width=(5.0, 9.0), length=(6.0, 10.), height=(3.0, 4.0),
        doors=(3, 6), window_p=.95, board_p=.30, desks=(1, 2), meeting_p=.00,
        sofas=(.60, 3), bookcases=(0, 3), clutter=(6, 12), beam_p=.40, column_p=.80,
    ),
    "pantry": _Recipe(
        weight=.04, width=(2.5, 4.5), length=(3.0, 5.5), height=(2.5, 3.0),
        doors=(1, 2), window_p=.60, board_p=.40, desks=(0, 1), meeting_p=.40,
        sofas=(.15, 1), bookcases=(1, 3), clutter=(8, 14), beam_p=.35, column_p=.30,
    ),
    "copyRoom": _Recipe(
        weight=.03, width=(2.5, 4.0), length=(3.0, 5.0), height=(2.5, 3.0),
        doors=(1, 2), window_p=.40, board_p=.50, desks=(0, 1), meeting_p=.00,
        sofas=(.00, 0), bookcases=(2, 5), clutter=(7, 12), beam_p=.35, column_p=.30,
    ),
    "openspace": _Recipe(
        weight=.05, width=(6.0, 10.), length=(7.0, 12.), height=(2.8, 3.4),
        doors=(2, 4), window_p=.90, board_p=.70, desks=(4, 9), meeting_p=.20,
        sofas=(.60, 2), bookcases=(3, 7), clutter=(8, 16), beam_p=.45, column_p=.80,
    ),
    "auditorium": _Recipe(
        weight=.03, width=(8.0, 13.), length=(9.0, 14.), height=(3.5, 5.0),
        doors=(2, 4), window_p=.40, board_p=.90, desks=(0, 0), meeting_p=.00,
        sofas=(.00, 0), bookcases=(0, 2), clutter=(3, 6), beam_p=.50, column_p=.60,
    ),
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
