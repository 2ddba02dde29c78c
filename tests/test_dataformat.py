"""The on-disk format: the label table, the decoders, the room of a file name, and the generator writing what the
reader reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labcode.classes import CLASSES
from labcode.storage import images
from labcode.storage.dataformat import (
    LABELS_JSON,
    MISSING_CODE,
    RGB_SUFFIX,
    SEMANTIC_SUFFIX,
    Sample,
    decode_semantic,
    list_samples,
    load_label_lut,
    read_semantic,
    room_of,
)
from tests.conftest import TINY_CLASSES, TINY_ENTRIES, semantic_image


def test_label_table_maps_entries_to_classes(tiny_root):
    lut = load_label_lut(tiny_root["root"] / "assets" / "semantic_labels.json")
    assert lut.dtype == np.uint8 and len(lut) == len(TINY_ENTRIES) + 1
    assert lut[:-1].tolist() == TINY_CLASSES
    assert lut[-1] == 0
    assert [CLASSES[c] for c in TINY_CLASSES[1:]] == [e.split("_")[0] for e in TINY_ENTRIES[1:]]


def test_decode_semantic_pixel_by_pixel_against_formula():
    lut = np.array([0, 12, 9, 5, 0], dtype=np.uint8)
    codes = np.array([[0, 1, 2, 3], [MISSING_CODE, 4, 5, 0xFFFFFF], [256, 65536, 2, 1]])
    rgb = semantic_image(codes)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    got = decode_semantic(bgr, lut)
    # independent: R*65536 + G*256 + B, then table (4 entries) or <UNK> when out of range
    r, g, b = rgb[..., 0].astype(int), rgb[..., 1].astype(int), rgb[..., 2].astype(int)
    index = r * 65536 + g * 256 + b
    want = np.where(index < 4, lut[np.minimum(index, 3)], 0)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8


def views(area: str, rooms: dict[str, int]) -> list[Sample]:
    """Samples named like the real data set: ``rooms`` maps a room (``office_12``) to its number of frames."""
    names = [f"camera_{k:032x}_{room}_frame_{frame}_domain" for k, (room, frames) in enumerate(rooms.items())
             for frame in range(frames)]
    return [Sample(Path(f"area_{area}/data/rgb/{n}_rgb.png"), Path(f"area_{area}/data/semantic/{n}_semantic.png"),
                   area) for n in names]


def test_room_of_reads_the_room_from_the_file_name():
    sample = views("5a", {"office_12": 1})[0]
    assert room_of(sample) == ("5a", "office_12")
    assert room_of(views("2", {"WC_1": 1})[0]) == ("2", "WC_1")
    odd = Sample(Path("area_1/data/rgb/photo_domain_rgb.png"), Path("x"), "1")
    assert room_of(odd) == ("1", "photo")  # not a 2D-3D-S name: the image is its own room


def test_the_generator_writes_what_the_reader_reads(synth_root):
    """Every generated photo has its semantic twin, shows one room of the label list, and its missing pixels decode
    to <UNK>."""
    samples = list_samples(synth_root)
    assert len(samples) == len(list(synth_root.glob("area_*/data/rgb/*.png"))) == 7 * 4
    assert len({s.semantic for s in samples}) == len(list(synth_root.glob("area_*/data/semantic/*.png")))
    entries_rooms = {"_".join(entry.split("_")[2:4]) for entry in json.loads((synth_root / LABELS_JSON).read_text())}
    lut = load_label_lut(synth_root / LABELS_JSON)
    holes = 0
    for sample in samples:
        assert sample.rgb.name.endswith(RGB_SUFFIX) and sample.semantic.name.endswith(SEMANTIC_SUFFIX)
        assert room_of(sample)[1] in entries_rooms
        codes = images.read_codes(sample.semantic)
        missing = codes == MISSING_CODE
        holes += int(missing.sum())
        assert (read_semantic(sample.semantic, lut)[missing] == CLASSES.index("<UNK>")).all()
    assert holes > 0
