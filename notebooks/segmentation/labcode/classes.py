# Your copy of the course library: labcode/classes.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The 14 classes of Stanford 2D-3D-S, their display colours and the real class frequencies."""

import numpy as np

#: Class names: ``<UNK>`` first, then the 13 semantic classes in alphabetical order.
CLASSES: tuple[str, ...] = (
    "<UNK>", "beam", "board", "bookcase", "ceiling", "chair", "clutter",
    "column", "door", "floor", "sofa", "table", "wall", "window",
)
NUM_CLASSES: int = len(CLASSES)
UNKNOWN_LABEL: int = 0

#: The areas of the data set as they are named on disk (``area_5a`` ...).
AREAS: tuple[str, ...] = ("1", "2", "3", "4", "5a", "5b", "6")

#: The course's protocol: the areas models train on (validation rooms are taken from them) and the areas that only
#: test a final model, never choose one (see :data:`labcode.reference.PROTOCOL`).
TRAIN_AREAS: tuple[str, ...] = ("1", "2", "3", "4", "6")
TEST_AREAS: tuple[str, ...] = ("5a", "5b")

#: Fraction of the labelled pixels of each class over the whole real data set (70,496 masks of 1080x1080),
#: in the order of ``CLASSES``. They sum to 1 (up to rounding of the published percentages).
REAL_CLASS_FREQUENCIES: np.ndarray = np.array(
    [1.26, 1.57, 2.71, 7.17, 9.94, 3.87, 11.23, 3.05, 10.98, 8.45, 0.33, 2.88, 33.67, 2.88]
) / 100.0

#: One RGB colour per class (uint8), chosen to be easy to tell apart; ``<UNK>`` is black.
CLASS_COLORS: np.ndarray = np.array(
    [
        (0, 0, 0),        # <UNK>
        (255, 187, 120),  # beam
        (31, 119, 180),   # board
        (140, 86, 75),    # bookcase
        (174, 199, 232),  # ceiling
        (255, 127, 14),   # chair
        (148, 103, 189),  # clutter
        (197, 176, 213),  # column
        (214, 39, 40),    # door
        (44, 160, 44),    # floor
        (227, 119, 194),  # sofa
        (188, 189, 34),   # table
        (127, 127, 127),  # wall
        (23, 190, 207),   # window
    ],
    dtype=np.uint8,
)
