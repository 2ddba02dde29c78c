# Your copy of the course library: labcode/synth/params.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""What defines a generated data set: its parameters, the generator version, the real areas' sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labcode.classes import AREAS

#: Bumped whenever the rendered images change; names the default data set folder (``synth-<version>``).
SYNTH_VERSION: str = "4"

#: Number of images of each area of the real data set, as the course handout lists them: area 5 as one area (its
#: two halves, 5a and 5b, are not counted separately there).
REAL_AREA_IMAGES: dict[str, int] = {"1": 10327, "2": 15714, "3": 3704, "4": 13268, "5": 17593, "6": 9890}

#: Relative sizes of the generated areas: the real counts, with area 5 shared evenly between 5a and 5b. The even
#: share is the generator's assumption, not a count of the real halves.
AREA_WEIGHTS: dict[str, int] = {**{a: n for a, n in REAL_AREA_IMAGES.items() if a != "5"}, "5a": 8797, "5b": 8796}


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
