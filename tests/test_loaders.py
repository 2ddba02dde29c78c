"""The loaders: the room-disjoint validation split, batches, worker processes (and where none can start), OpenCV
left alone until workers start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from torch.utils.data import Dataset

from labcode.classes import NUM_CLASSES
from labcode.errors import DatasetError
from labcode.storage.dataformat import room_of
from labcode.storage.loaders import get_dataloaders, get_test_dataloader, split_by_room
from tests.test_dataformat import views


def test_split_by_room_keeps_rooms_whole_seeded_and_near_the_ratio():
    samples = (views("1", {f"office_{i}": 2 + i % 5 for i in range(12)})
               + views("3", {"hallway_1": 4, "hallway_2": 3, "auditorium_1": 6, "office_1": 2})
               + views("6", {"office_1": 5, "WC_1": 3}))  # office_1 of area 6 is not office_1 of area 3
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
    samples = views("1", {"office_1": 3}) + views("2", {"lounge_1": 1, "office_1": 2})
    train, valid = split_by_room(samples, 0.1, seed=0)  # 0.1 of 3 images: no area gives a room by itself
    assert [room_of(samples[i]) for i in valid] == [("2", "lounge_1")]  # the smallest room of an area with two
    with pytest.raises(DatasetError, match="at least two rooms"):
        split_by_room(views("1", {"office_1": 4}), 0.25, seed=0)


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

    from labcode.storage import loaders

    class NoSemaphores:
        def Lock(self):  # what multiprocessing raises in a sandbox without a writable /dev/shm
            raise PermissionError(13, "Permission denied")

    loaders.worker_processes_possible.cache_clear()
    monkeypatch.setattr(multiprocessing, "get_context", lambda *args: NoSemaphores())
    try:
        train, valid = get_dataloaders(synth_root, ["1", "2"], ["5a"], img_size=32, batch_size=2, num_workers=2)
        assert train.num_workers == 0 and valid.num_workers == 0
        assert "loading in the main process" in caplog.text
        images, masks = next(iter(train))
        assert images.shape == (2, 3, 32, 32)
    finally:
        loaders.worker_processes_possible.cache_clear()
    monkeypatch.undo()
    assert loaders.worker_processes_possible()  # this machine can
    train, _ = get_dataloaders(synth_root, ["1"], ["5a"], img_size=32, batch_size=2, num_workers=2)
    assert train.num_workers == 2


class ThreadsSeen(Dataset):
    """Its items are the number of threads OpenCV uses in the process that loads them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def test_importing_the_data_modules_leaves_opencv_and_the_transforms_alone():
    """No global setting changes at import; the students' transforms.py (an exercise) is imported only by the
    loaders that use it, so that a broken copy does not stop notebook 1."""
    code = ("import sys, cv2; cv2.setNumThreads(3); import labcode.data, labcode.synth, labcode.storage.cache; "
            "print(cv2.getNumThreads(), 'labcode.transforms' in sys.modules)")
    repo = Path(__file__).resolve().parents[1]  # python -c imports from its working folder first
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert out.split() == ["3", "False"]


def test_workers_and_the_process_forking_them_run_opencv_single_threaded(synth_root):
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        get_test_dataloader(synth_root, ["1"], num_workers=0)
        assert cv2.getNumThreads() == 2  # no worker: nothing to protect
        loader = get_test_dataloader(synth_root, ["1"], num_workers=1)
        assert cv2.getNumThreads() == 1  # OpenCV's pool must not be running when the workers are forked
        cv2.setNumThreads(2)
        spawned = torch.utils.data.DataLoader(ThreadsSeen(), batch_size=None, num_workers=1,
                                              worker_init_fn=loader.worker_init_fn, multiprocessing_context="spawn")
        assert [int(n) for n in spawned] == [1, 1]  # a fresh worker process, set up by the loaders' initialiser
    finally:
        cv2.setNumThreads(threads)
