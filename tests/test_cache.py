"""The prepared cache gives the raw path's samples (up to the resize), and survives interruptions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import labcode.cache as cache
from labcode.cache import CachedDataset, prepare_cache
from labcode.data import StanfordDataset, get_dataloaders
from labcode.errors import DatasetError


def test_same_labels_as_raw_path_at_equal_size(synth_root, tmp_path):
    out = prepare_cache(synth_root, tmp_path / "c64", size=64, areas=["1", "5a"], progress=False)
    raw, cached = StanfordDataset(synth_root, areas=["1", "5a"]), CachedDataset(out)
    assert len(cached) == len(raw) and cached.areas == ["1", "5a"]
    for i in range(len(raw)):
        image_raw, mask_raw = raw[i]
        image_c, mask_c = cached[i]
        np.testing.assert_array_equal(mask_c, mask_raw)
        np.testing.assert_array_equal(image_c, image_raw)
        assert mask_c.dtype == np.int64 and cached.files[i].rgb == raw.files[i].rgb


def test_resized_cache_matches_nearest_resize(synth_root, tmp_path):
    out = prepare_cache(synth_root, tmp_path / "c32", size=32, areas=["2"], progress=False)
    raw, cached = StanfordDataset(synth_root, areas=["2"]), CachedDataset(out)
    for i in range(len(raw)):
        want = cv2.resize(raw.load_mask(i), (32, 32), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(cached.load_mask(i), want)
        assert cached.load_image(i).shape == (32, 32, 3)


def test_interrupted_prepare_is_detected_and_resumed(synth_root, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    monkeypatch.setattr(cache, "_FLUSH_EVERY", 2)
    real_resize, calls = cache.resize_pair, []

    def crash_after_five(image, mask, size):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # e.g. Ctrl-C or a killed job
        return real_resize(image, mask, size)

    monkeypatch.setattr(cache, "resize_pair", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(synth_root, out, size=32, progress=False)
    assert json.loads((out / "index.json").read_text())["complete"] is False
    assert np.load(out / "done.npy").sum() == 4  # flushed in pairs: the fifth item was never marked
    with pytest.raises(DatasetError, match="incomplete"):
        CachedDataset(out)

    calls.clear()
    monkeypatch.setattr(cache, "resize_pair", lambda *a: (calls.append(1), real_resize(*a))[1])
    prepare_cache(synth_root, out, size=32, progress=False)
    n = len(StanfordDataset(synth_root))
    assert len(calls) == n - 4  # only the missing items were decoded again
    fresh = prepare_cache(synth_root, tmp_path / "fresh", size=32, progress=False)
    np.testing.assert_array_equal(np.load(out / "masks.npy"), np.load(fresh / "masks.npy"))
    np.testing.assert_array_equal(np.load(out / "images.npy"), np.load(fresh / "images.npy"))


def test_cache_of_another_request_is_refused(synth_root, tmp_path):
    out = prepare_cache(synth_root, tmp_path / "c", size=32, areas=["3"], progress=False)
    with pytest.raises(DatasetError, match="another data set, size or areas"):
        prepare_cache(synth_root, out, size=48, areas=["3"], progress=False)
    with pytest.raises(DatasetError, match="areas 5b are not in the cache"):
        CachedDataset(out, areas=["5b"])
    with pytest.raises(DatasetError, match="no prepared cache"):
        CachedDataset(tmp_path)


def test_loaders_read_the_cache(synth_root, tmp_path):
    out = prepare_cache(synth_root, tmp_path / "c", size=48, progress=False)
    train, valid = get_dataloaders(synth_root, ["1", "2"], ["5a"], img_size=32, batch_size=2, num_workers=0,
                                   cache_dir=out)
    images, masks = next(iter(train))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    assert isinstance(valid.dataset, CachedDataset) and valid.dataset.areas == ["5a"]


def test_prepare_refuses_an_empty_area_asked_for_beside_another(synth_root, tmp_path, capsys):
    import shutil

    from labcode.cli import main

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    for photo in (data / "area_1" / "data" / "rgb").iterdir():
        photo.unlink()
    status = main(["prepare", "--datadir", str(data), "--out", str(tmp_path / "c"), "--areas", "1", "5a"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"error: no image found in area '1': no *_domain_rgb.png file in {data / 'area_1' / 'data' / 'rgb'}\n"
    assert not (tmp_path / "c").exists()
