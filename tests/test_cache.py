"""The prepared cache gives the raw path's samples (up to the resize), and survives interruptions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import labcode.storage.cache as cache
from labcode.errors import DatasetError
from labcode.storage.cache import CachedDataset, prepare_cache
from labcode.storage.datasets import StanfordDataset
from labcode.storage.loaders import get_dataloaders


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


# --------------------------------------------------------------------------------------------------------------------
# Pairs of different sizes, checksums, damaged caches
# --------------------------------------------------------------------------------------------------------------------

def test_pair_of_different_sizes_is_refused_naming_both_files(synth_root, tmp_path, capsys):
    import shutil

    from labcode.commands.cli import main
    from tests.conftest import write_png_rgb

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    sample = StanfordDataset(data, areas=["2"]).files[1]
    semantic = cv2.cvtColor(cv2.imread(str(sample.semantic)), cv2.COLOR_BGR2RGB)
    write_png_rgb(sample.semantic, semantic[:40, :50])  # 50x40 beside a 64x64 photo
    expected = f"{sample.rgb} is 64x64 pixels but its semantic twin {sample.semantic} is 50x40"
    with pytest.raises(DatasetError) as info:
        prepare_cache(data, tmp_path / "lib", size=32, areas=["2"], progress=False)
    assert str(info.value) == expected
    assert json.loads((tmp_path / "lib" / "index.json").read_text())["complete"] is False

    status = main(["prepare", "--datadir", str(data), "--out", str(tmp_path / "cli"), "--size", "32", "--areas", "2"])
    err = capsys.readouterr().err  # a progress bar, then the error
    assert status == 2 and err.rstrip().splitlines()[-1] == f"error: {expected}" and "Traceback" not in err
    assert err.count("error") == 1
    with pytest.raises(DatasetError, match="incomplete"):
        CachedDataset(tmp_path / "cli")


def test_prepare_writes_the_checksum_of_every_array(synth_root, tmp_path):
    import zlib

    out = prepare_cache(synth_root, tmp_path / "c", size=32, areas=["3"], progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["version"] == cache.CACHE_VERSION and index["complete"] is True
    assert set(index["checksums"]) == {"images.npy", "masks.npy", "done.npy"}
    for name, recorded in index["checksums"].items():
        data = (out / name).read_bytes()
        assert recorded == {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}


def _flip(path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


_INDEX = "index.json"
#: name -> (what to do to the cache folder, file named by the error, words of verify's error, words of the error on
#: opening, or None when only the checksums can tell: flipped bytes are found by verify, not by opening)
DAMAGES = {
    "image bytes": (lambda c: _flip(c / "images.npy", 1000), "images.npy", "CRC-32 checksum differs", None),
    "mask label": (lambda c: _flip(c / "masks.npy", 7), "masks.npy", "CRC-32 checksum differs", None),
    "done flag": (lambda c: _flip(c / "done.npy", 1), "done.npy", "CRC-32 checksum differs", None),
    "array header": (lambda c: (c / "masks.npy").write_bytes(
        (c / "masks.npy").read_bytes().replace(b"'shape': (", b"'shape': [", 1)), "masks.npy", "checksum",
        "is damaged (ValueError"),
    "truncated": (lambda c: (c / "images.npy").write_bytes((c / "images.npy").read_bytes()[:-4096]), "images.npy",
                  "bytes instead of", "bytes instead of"),
    "missing": (lambda c: (c / "masks.npy").unlink(), "masks.npy", "is missing", "is missing"),
    "index not JSON": (lambda c: (c / _INDEX).write_text('{"version": 2, "size": 3'), _INDEX, "JSONDecodeError",
                       "JSONDecodeError"),
    "index without files": (lambda c: (c / _INDEX).write_text(json.dumps(
        {k: v for k, v in json.loads((c / _INDEX).read_text()).items() if k != "files"})), _INDEX,
        "missing or malformed files", "missing or malformed files"),
    "checksum not a record": (lambda c: (c / _INDEX).write_text(json.dumps(
        {**json.loads((c / _INDEX).read_text()), "checksums": {"images.npy": "0", "masks.npy": "0",
                                                               "done.npy": "0"}})), _INDEX,
        "missing or malformed checksums", "missing or malformed checksums"),
    "index without checksums": (lambda c: (c / _INDEX).write_text(json.dumps(
        {k: v for k, v in json.loads((c / _INDEX).read_text()).items() if k != "checksums"})), _INDEX,
        "missing or malformed checksums", "missing or malformed checksums"),
}


def _damage_message(call, out, named: str, words: str) -> str:
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert str(out / named) in message and words in message, message
    assert message.endswith("run `python -m labcode prepare` again with the same options to rebuild it")
    return message


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_cache_is_one_clear_error_and_prepare_rebuilds_it(synth_root, tmp_path, capsys, damage):
    from labcode.commands.cli import main

    out = prepare_cache(synth_root, tmp_path / "c", size=32, areas=["1", "3"], progress=False)
    pristine = {name: (out / name).read_bytes() for name in ("images.npy", "masks.npy")}
    breaks, named, verify_words, open_words = DAMAGES[damage]
    breaks(out)
    _damage_message(lambda: cache.verify_cache(out), out, named, verify_words)
    if open_words is None:  # opening reads no array: only verify reads every byte
        _damage_message(CachedDataset(out).verify, out, named, verify_words)
    else:
        message = _damage_message(lambda: CachedDataset(out), out, named, open_words)
        status = main(["train", "--datadir", str(synth_root), "--cache-dir", str(out), "--areas-train", "1",
                       "--areas-valid", "3", "--img-size", "32", "--num-workers", "0", "--logdir",
                       str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert status == 2 and err == f"error: {message}\n"

    prepare_cache(synth_root, out, size=32, areas=["1", "3"], progress=False)  # the advice of the message works
    rebuilt = CachedDataset(out)
    rebuilt.verify()
    assert len(rebuilt) == 8
    for name, data in pristine.items():
        assert (out / name).read_bytes() == data


def test_opening_reads_no_array_bytes_and_verify_reads_them_all(synth_root, tmp_path, monkeypatch):
    out = prepare_cache(synth_root, tmp_path / "c", size=32, areas=["3"], progress=False)
    summed, checksum = [], cache.file_checksum

    def counted(path, *args, **kwargs):
        summed.append(Path(path).name)
        return checksum(path, *args, **kwargs)

    monkeypatch.setattr(cache, "file_checksum", counted)
    opened = CachedDataset(out)
    assert summed == [] and len(opened) == 4
    opened.verify()
    assert sorted(summed) == ["done.npy", "images.npy", "masks.npy"]


def test_cache_of_an_older_version_is_rebuilt(synth_root, tmp_path):
    out = prepare_cache(synth_root, tmp_path / "c", size=32, areas=["3"], progress=False)
    index = json.loads((out / "index.json").read_text())
    del index["checksums"]
    (out / "index.json").write_text(json.dumps({**index, "version": 1}))
    with pytest.raises(DatasetError, match="incomplete or outdated"):
        CachedDataset(out)
    prepare_cache(synth_root, out, size=32, areas=["3"], progress=False)
    assert len(CachedDataset(out)) == 4


def test_prepare_refuses_an_empty_area_asked_for_beside_another(synth_root, tmp_path, capsys):
    import shutil

    from labcode.commands.cli import main

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    for photo in (data / "area_1" / "data" / "rgb").iterdir():
        photo.unlink()
    status = main(["prepare", "--datadir", str(data), "--out", str(tmp_path / "c"), "--areas", "1", "5a"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"error: no image found in area '1': no *_domain_rgb.png file in {data / 'area_1' / 'data' / 'rgb'}\n"
    assert not (tmp_path / "c").exists()
