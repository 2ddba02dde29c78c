"""StanfordDataset on the real on-disk format: decoding, areas, errors, loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.data import (
    MISSING_CODE, Sample, StanfordDataset, decode_semantic, get_dataloaders, get_test_dataloader, load_label_lut,
    room_of, split_by_room,
)
from labcode.errors import DatasetError
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


def test_dataset_items_match_hand_written_files(tiny_root):
    ds = StanfordDataset(tiny_root["root"])
    assert len(ds) == 3 and ds.areas == ["1", "5a", "5b"]
    assert ds.labels == list(CLASSES) and ds.num_labels == NUM_CLASSES == 14 and ds.unknown_label == 0
    for i, sample in enumerate(ds.files):
        image, mask = ds[i]
        want_rgb, want_mask = tiny_root["expected"][sample.area]
        assert image.dtype == np.uint8 and image.shape == (*want_mask.shape, 3)
        np.testing.assert_array_equal(image, want_rgb)  # RGBA converted to RGB, channel order kept
        assert mask.dtype == np.int64 and mask.shape == want_mask.shape
        np.testing.assert_array_equal(mask, want_mask)
        assert sample.semantic.name.endswith("_domain_semantic.png")
        assert sample.rgb.name.replace("_domain_rgb.png", "") == sample.semantic.name.replace("_domain_semantic.png", "")


def test_missing_and_out_of_range_codes_are_unknown(tiny_root):
    ds = StanfordDataset(tiny_root["root"], areas=["1"])
    _, mask = ds[0]
    assert mask[1, 1] == 0  # 0x0D0D0D
    assert mask[2, 0] == 0 and mask[2, 3] == 0  # 7 and 1000 are past the 7-entry list


def test_area_filtering_5a_vs_5b(tiny_root):
    a = StanfordDataset(tiny_root["root"], areas=["5a"])
    b = StanfordDataset(tiny_root["root"], areas=["area_5b"])
    both = StanfordDataset(tiny_root["root"], areas=["5a", "5b"])
    assert [s.area for s in a.files] == ["5a"] and [s.area for s in b.files] == ["5b"]
    assert len(both) == 2 and a.files[0].rgb != b.files[0].rgb


def test_transforms_interfaces(tiny_root):
    seen = {}

    def paired(image, mask):
        seen["paired"] = (image.shape, mask.dtype)
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask.astype(np.int32))

    image, mask = StanfordDataset(tiny_root["root"], transforms=paired, areas=["1"])[0]
    assert image.shape == (3, 3, 5) and mask.dtype == torch.int64
    image, mask = StanfordDataset(tiny_root["root"], transform=lambda x: x[::-1], target_transform=lambda m: m + 1,
                                  areas=["1"])[0]
    np.testing.assert_array_equal(mask, tiny_root["expected"]["1"][1] + 1)
    with pytest.raises(ValueError, match="either"):
        StanfordDataset(tiny_root["root"], transforms=paired, transform=lambda x: x)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_root", "data root not found"),
        ("no_json", "label file not found"),
        ("bad_json", "cannot parse label file"),
        ("unknown_class", "unknown class"),
        ("no_twin", "has no semantic twin"),
        ("bad_png", "cannot decode image file"),
    ],
)
def test_clear_errors(tiny_root, breakage, message):
    root = tiny_root["root"]
    if breakage == "no_root":
        root = root / "missing"
    elif breakage == "no_json":
        (root / "assets" / "semantic_labels.json").unlink()
    elif breakage == "bad_json":
        (root / "assets" / "semantic_labels.json").write_text("[not json")
    elif breakage == "unknown_class":
        (root / "assets" / "semantic_labels.json").write_text(json.dumps(TINY_ENTRIES + ["sky_1_roof_1_1"]))
    elif breakage == "no_twin":
        next((root / "area_5b" / "data" / "semantic").glob("*.png")).unlink()
    elif breakage == "bad_png":
        next((root / "area_1" / "data" / "rgb").glob("*.png")).write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=message) as info:
        ds = StanfordDataset(root)
        ds[0]
    if breakage in ("no_twin", "bad_png"):
        assert "camera_" in str(info.value)  # the file is named


def test_unknown_area_lists_existing_ones(tiny_root):
    with pytest.raises(DatasetError, match=r"area '7' not found .*available areas: 1, 5a, 5b"):
        StanfordDataset(tiny_root["root"], areas=["7"])


def test_empty_selection(tiny_root):
    shutil.rmtree(tiny_root["root"] / "area_1" / "data" / "rgb")
    (tiny_root["root"] / "area_1" / "data" / "rgb").mkdir()
    with pytest.raises(DatasetError, match="no image found"):
        StanfordDataset(tiny_root["root"], areas=["1"])


def test_empty_area_requested_beside_another_one_is_an_error(tiny_root):
    rgb_dir = tiny_root["root"] / "area_1" / "data" / "rgb"
    shutil.rmtree(rgb_dir)
    rgb_dir.mkdir()
    with pytest.raises(DatasetError) as info:
        StanfordDataset(tiny_root["root"], areas=["1", "5a"])
    assert str(info.value) == f"no image found in area '1': no *_domain_rgb.png file in {rgb_dir}"
    assert StanfordDataset(tiny_root["root"]).areas == ["5a", "5b"]  # all areas: the empty one has nothing to give


def test_grayscale_rgb_is_converted(tiny_root):
    from tests.conftest import write_png_rgb

    ds = StanfordDataset(tiny_root["root"], areas=["1"])
    gray = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10
    write_png_rgb(ds.files[0].rgb, gray)
    image, _ = ds[0]
    assert image.shape == (3, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray)


def _views(area: str, rooms: dict[str, int]) -> list[Sample]:
    """Samples named like the real data set: ``rooms`` maps a room (``office_12``) to its number of frames."""
    names = [f"camera_{k:032x}_{room}_frame_{frame}_domain" for k, (room, frames) in enumerate(rooms.items())
             for frame in range(frames)]
    return [Sample(Path(f"area_{area}/data/rgb/{n}_rgb.png"), Path(f"area_{area}/data/semantic/{n}_semantic.png"),
                   area) for n in names]


def test_room_of_reads_the_room_from_the_file_name():
    sample = _views("5a", {"office_12": 1})[0]
    assert room_of(sample) == ("5a", "office_12")
    assert room_of(_views("2", {"WC_1": 1})[0]) == ("2", "WC_1")
    odd = Sample(Path("area_1/data/rgb/photo_domain_rgb.png"), Path("x"), "1")
    assert room_of(odd) == ("1", "photo")  # not a 2D-3D-S name: the image is its own room


def test_split_by_room_keeps_rooms_whole_seeded_and_near_the_ratio():
    samples = (_views("1", {f"office_{i}": 2 + i % 5 for i in range(12)})
               + _views("3", {"hallway_1": 4, "hallway_2": 3, "auditorium_1": 6, "office_1": 2})
               + _views("6", {"office_1": 5, "WC_1": 3}))  # office_1 of area 6 is not office_1 of area 3
    train, valid = split_by_room(samples, 0.2, seed=3)
    assert sorted(train + valid) == list(range(len(samples))) and train and valid
    train_rooms, valid_rooms = {room_of(samples[i]) for i in train}, {room_of(samples[i]) for i in valid}
    assert not train_rooms & valid_rooms
    for area in ("1", "3", "6"):  # every area keeps a room for training
        assert any(room[0] == area for room in train_rooms), area
    assert abs(len(valid) - 0.2 * len(samples)) <= 6, len(valid)
    assert split_by_room(samples, 0.2, seed=3) == (train, valid)
    assert any(split_by_room(samples, 0.2, seed=s) != (train, valid) for s in range(4, 9))
    with pytest.raises(ValueError):
        split_by_room(samples, 1.5, seed=0)


def test_split_by_room_holds_out_a_room_of_tiny_areas_and_refuses_a_single_room():
    samples = _views("1", {"office_1": 3}) + _views("2", {"lounge_1": 1, "office_1": 2})
    train, valid = split_by_room(samples, 0.1, seed=0)  # 0.1 of 3 images: no area gives a room by itself
    assert [room_of(samples[i]) for i in valid] == [("2", "lounge_1")]  # the smallest room of an area with two
    with pytest.raises(DatasetError, match="at least two rooms"):
        split_by_room(_views("1", {"office_1": 4}), 0.25, seed=0)


def test_loaders_shapes_and_dtypes(synth_root):
    train, valid = get_dataloaders(synth_root, ["1", "2"], ["5a"], img_size=32, batch_size=3, num_workers=0)
    images, masks = next(iter(train))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    assert int(masks.min()) >= 0 and int(masks.max()) < NUM_CLASSES
    assert len(valid.dataset) == 4 and {s.area for s in valid.dataset.files} == {"5a"}
    # no validation area: whole rooms of the training areas are held out
    train, valid = get_dataloaders(synth_root, ["1", "2"], None, valid_ratio=0.25, img_size=32, batch_size=2,
                                   num_workers=0)
    assert len(train.dataset) + len(valid.dataset) == 8 and len(valid.dataset) >= 1 and len(train.dataset) >= 1
    assert not set(train.dataset.indices) & set(valid.dataset.indices)
    files = train.dataset.dataset.files
    assert not {room_of(files[i]) for i in train.dataset.indices} & {room_of(files[i]) for i in valid.dataset.indices}


def test_test_loader_keeps_native_resolution(synth_root):
    loader = get_test_dataloader(synth_root, ["5b"], num_workers=0)
    images, masks = next(iter(loader))
    assert images.shape == (1, 3, 64, 64) and masks.shape == (1, 64, 64)


def test_loaders_load_in_the_main_process_where_workers_cannot_start(synth_root, monkeypatch, caplog):
    import multiprocessing

    from labcode import data

    class NoSemaphores:
        def Lock(self):  # what multiprocessing raises in a sandbox without a writable /dev/shm
            raise PermissionError(13, "Permission denied")

    data.worker_processes_possible.cache_clear()
    monkeypatch.setattr(multiprocessing, "get_context", lambda *args: NoSemaphores())
    try:
        train, valid = get_dataloaders(synth_root, ["1", "2"], ["5a"], img_size=32, batch_size=2, num_workers=2)
        assert train.num_workers == 0 and valid.num_workers == 0
        assert "loading in the main process" in caplog.text
        images, masks = next(iter(train))
        assert images.shape == (2, 3, 32, 32)
    finally:
        data.worker_processes_possible.cache_clear()
    monkeypatch.undo()
    assert data.worker_processes_possible()  # this machine can
    train, _ = get_dataloaders(synth_root, ["1"], ["5a"], img_size=32, batch_size=2, num_workers=2)
    assert train.num_workers == 2
