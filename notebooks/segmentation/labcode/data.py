# Your copy of the course library: labcode/data.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Stanford 2D-3D-S for the course in one import: the notebooks, the commands and the book use these names.

They live in the module of their concern:

- :mod:`labcode.storage.dataformat`: the on-disk format (layout, file names, label codes) and reading it: the label
  table, the decoders, the files of a data set and the room of a view;
- :mod:`labcode.storage.datasets`: :class:`StanfordDataset` and the base class it shares with the prepared cache;
- :mod:`labcode.storage.loaders`: the default data set, the room-disjoint validation split and the data loaders.

A semantic pixel ``(R, G, B)`` is the index ``R * 65536 + G * 256 + B`` into the JSON list of instance names such as
``"wall_1_office_12_3"``; the class is the part before the first underscore. The code ``0x0D0D0D`` marks missing
data and, like any index past the end of the list, decodes to ``<UNK>``.
"""

from __future__ import annotations

from labcode.storage.dataformat import (
    LABELS_JSON,
    MISSING_CODE,
    RGB_SUFFIX,
    SEMANTIC_SUFFIX,
    Sample,
    available_areas,
    class_of_entry,
    classes_of_codes,
    decode_semantic,
    list_samples,
    load_label_lut,
    read_rgb,
    read_semantic,
    room_of,
)
from labcode.storage.datasets import SegmentationDataset, StanfordDataset
from labcode.storage.loaders import (
    default_datadir,
    default_num_workers,
    get_dataloaders,
    get_test_dataloader,
    split_by_room,
    worker_processes_possible,
)

__all__ = [
    "LABELS_JSON", "MISSING_CODE", "RGB_SUFFIX", "SEMANTIC_SUFFIX", "Sample", "SegmentationDataset", "StanfordDataset",
    "available_areas", "class_of_entry", "classes_of_codes", "decode_semantic", "default_datadir",
    "default_num_workers", "get_dataloaders", "get_test_dataloader", "list_samples", "load_label_lut", "read_rgb",
    "read_semantic", "room_of", "split_by_room", "worker_processes_possible",
]
