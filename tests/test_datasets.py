"""StanfordDataset on the real on-disk format: items, areas, transforms, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.errors import DatasetError
from labcode.storage.datasets import StanfordDataset
from tests.conftest import TINY_ENTRIES


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
        stem = sample.rgb.name.replace("_domain_rgb.png", "")
        assert stem == sample.semantic.name.replace("_domain_semantic.png", "")


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
