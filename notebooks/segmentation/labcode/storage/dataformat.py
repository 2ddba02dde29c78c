# Your copy of the course library: labcode/storage/dataformat.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The on-disk format of Stanford 2D-3D-S and reading it (no torch here): the names and codes the generator
(:mod:`labcode.synth`) writes and the data sets (:mod:`labcode.storage.datasets`) read, the label table, the
decoders (the decoding itself is in :mod:`labcode.storage.images`), the files of a data set and the room of a view::

    ROOT/assets/semantic_labels.json   one global list of instance names; entry 0 is "<UNK>_0_<UNK>_0_0"
    ROOT/area_<A>/data/rgb/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_rgb.png
    ROOT/area_<A>/data/semantic/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_semantic.png

A semantic pixel ``(R, G, B)`` is the index ``R * 65536 + G * 256 + B`` into the JSON list of instance names such as
``"wall_1_office_12_3"`` (class_instance_roomType_roomNum_area); :data:`MISSING_CODE` marks pixels the scanner did not
reach.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labcode.classes import CLASSES, UNKNOWN_LABEL
from labcode.errors import DatasetError
from labcode.storage import images

#: Semantic pixel code of "no data" (0x0D0D0D); like any index past the end of the label list, it means ``<UNK>``.
MISSING_CODE: int = 0x0D0D0D

#: The label list, relative to the data set root.
LABELS_JSON: Path = Path("assets") / "semantic_labels.json"

#: Entry 0 of the label list.
UNKNOWN_ENTRY: str = "<UNK>_0_<UNK>_0_0"

#: End of the file names of a view: ``<stem>_domain_rgb.png`` and its twin ``<stem>_domain_semantic.png``.
RGB_SUFFIX: str = "_domain_rgb.png"
SEMANTIC_SUFFIX: str = "_domain_semantic.png"

#: The room of a view in a 2D-3D-S file name: ``camera_<hex>_<roomType>_<roomNum>_frame_<k>_domain_...``.
_ROOM_IN_NAME = re.compile(r"^camera_[0-9A-Za-z]+_(.+?)_frame_\d+_domain_")

_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}


# --------------------------------------------------------------------------------------------------------------------
# Label table and decoders
# --------------------------------------------------------------------------------------------------------------------

def class_of_entry(entry: str) -> int:
    """Class index of a JSON entry such as ``"chair_3_office_1_2"`` (the text before the first underscore)."""
    return _CLASS_INDEX[entry.split("_", 1)[0]]


def load_label_lut(json_path: str | Path) -> np.ndarray:
    """Read ``semantic_labels.json`` into a lookup table from pixel code to class index.

    The table has one entry per JSON item plus a last ``<UNK>`` entry that out-of-range codes are clamped to.

    Args:
        json_path: path of ``assets/semantic_labels.json``.

    Returns:
        ``uint8`` array of length ``len(entries) + 1``.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetError(f"label file not found: {json_path}")
    try:
        entries = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot parse label file {json_path}: {err}") from err
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise DatasetError(f"label file {json_path} must hold a JSON list of strings")
    lut = np.full(len(entries) + 1, UNKNOWN_LABEL, dtype=np.uint8)
    for i, entry in enumerate(entries):
        try:
            lut[i] = class_of_entry(entry)
        except KeyError:
            raise DatasetError(f"label file {json_path}: entry {i} {entry!r} has an unknown class") from None
    if MISSING_CODE < len(entries):
        lut[MISSING_CODE] = UNKNOWN_LABEL
    return lut


def decode_semantic(semantic_bgr: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Turn a semantic PNG as loaded by OpenCV (BGR order) into class indices.

    The three bytes are packed into one ``uint32`` code (:func:`labcode.storage.images.pack_codes`), then looked up with
    :func:`classes_of_codes`: no per-pixel Python and a single 4-byte temporary.

    Args:
        semantic_bgr: ``uint8`` array (H, W, 3) in OpenCV's BGR order.
        lut: table from :func:`load_label_lut`.

    Returns:
        ``uint8`` array (H, W) of class indices.
    """
    return classes_of_codes(images.pack_codes(semantic_bgr), lut)


def classes_of_codes(codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Look ``uint32`` codes ``R * 65536 + G * 256 + B`` up in ``lut``; codes past its end give its last (``<UNK>``)
    entry (``np.take`` with ``mode="clip"`` clamps and looks up in one pass)."""
    return np.take(lut, codes, mode="clip")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image as ``uint8`` RGB (H, W, 3); grayscale, RGBA and 16-bit inputs are converted.

    Decoding is :func:`labcode.storage.images.read_rgb` (the fastest installed PNG decoder, chosen there).
    """
    return images.read_rgb(path)


def read_semantic(path: str | Path, lut: np.ndarray) -> np.ndarray:
    """Read a semantic PNG and decode it to ``uint8`` class indices (H, W).

    The file is decoded straight to packed codes (:func:`labcode.storage.images.read_codes`), then looked up in ``lut``.
    """
    return classes_of_codes(images.read_codes(path), lut)



# --------------------------------------------------------------------------------------------------------------------
# Files of a data set
# --------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """The files of one data set item."""

    rgb: Path
    semantic: Path
    area: str


def available_areas(root: str | Path) -> list[str]:
    """Names of the areas present under ``root`` (``['1', '2', '5a', ...]``), sorted."""
    return sorted(p.name[len("area_"):] for p in Path(root).glob("area_*") if (p / "data" / "rgb").is_dir())


def _area_name(area: str | int) -> str:
    name = str(area)
    return name[len("area_"):] if name.startswith("area_") else name


def list_samples(root: str | Path, areas: Sequence[str | int] | None = None) -> list[Sample]:
    """List the (rgb, semantic) file pairs of the chosen areas, in a stable order.

    Raises:
        DatasetError: unknown area (the message lists the existing ones), a requested area without images, an rgb
            image without its semantic twin, or nothing selected.
    """
    root = Path(root)
    present = available_areas(root)
    chosen = present if areas is None else [_area_name(a) for a in areas]
    for area in chosen:
        if area not in present:
            raise DatasetError(f"area {area!r} not found in {root}; available areas: {', '.join(present) or 'none'}")
    samples = []
    for area in chosen:
        data_dir = root / f"area_{area}" / "data"
        photos = sorted((data_dir / "rgb").glob(f"*{RGB_SUFFIX}"))
        if not photos and areas is not None:  # asked for by name: an empty area is not silently dropped
            raise DatasetError(f"no image found in area {area!r}: no *{RGB_SUFFIX} file in {data_dir / 'rgb'}")
        for rgb in photos:
            semantic = data_dir / "semantic" / (rgb.name[: -len(RGB_SUFFIX)] + SEMANTIC_SUFFIX)
            if not semantic.is_file():
                raise DatasetError(f"{rgb} has no semantic twin (expected {semantic})")
            samples.append(Sample(rgb, semantic, area))
    if not samples:
        raise DatasetError(f"no image found in {root} for areas {', '.join(chosen) or '(none)'}")
    return samples



def room_of(sample: Sample) -> tuple[str, str]:
    """``(area, room)`` of a sample, the room read from its file name (``office_12``).

    A file whose name does not follow the 2D-3D-S pattern is its own room (its file name without the suffix).
    """
    match = _ROOM_IN_NAME.match(sample.rgb.name)
    return sample.area, match[1] if match else sample.rgb.name.removesuffix(RGB_SUFFIX)
