# Your copy of the course library: labcode/storage/loaders.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Where the data come from and how they are batched: the default data set, the room-disjoint validation split,
the training, validation and test loaders and their worker processes."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from labcode.errors import DatasetError
from labcode.storage.dataformat import Sample, room_of
from labcode.storage.datasets import SegmentationDataset, StanfordDataset

logger = logging.getLogger(__name__)


def default_datadir() -> Path:
    """The data set the course uses: ``$LABCODE_DATADIR`` (e.g. the real 2D-3D-S root on a cluster) when set,
    otherwise the generated offline data set (created on first use).

    Raises:
        DatasetError: ``$LABCODE_DATADIR`` names a folder that is missing or holds no data set (its label file
            ``assets/semantic_labels.json``); the message says what to set it to, or to unset it.
    """
    env = os.environ.get("LABCODE_DATADIR")
    if env:
        root = Path(env).expanduser()
        labels = root / "assets" / "semantic_labels.json"
        problem = ("does not exist" if not root.exists() else "is not a folder" if not root.is_dir()
                   else None if labels.is_file() else "holds no data set (no assets/semantic_labels.json)")
        if problem:
            raise DatasetError(f"LABCODE_DATADIR is set to {env}, which {problem}: set it to the root of Stanford "
                               "2D-3D-S (the folder holding assets/ and area_1 ... area_6), or unset it to use the "
                               "generated data set")
        return root
    from labcode.synth import ensure_default_dataset  # the generator loads only when its data set is needed

    return ensure_default_dataset()


def default_num_workers() -> int:
    """Loader workers to use: one per available core, at most 8 (decoding 1080x1080 PNGs is CPU-bound)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@functools.lru_cache(maxsize=1)
def worker_processes_possible() -> bool:
    """Whether this process can start data loader workers. They need POSIX semaphores, which some sandboxes and
    containers refuse (no writable ``/dev/shm``): the course's grading sandbox, for one."""
    try:
        multiprocessing.get_context().Lock()
    except OSError:  # PermissionError, or no semaphore implementation at all
        return False
    return True


def init_worker(worker_id: int) -> None:
    """Set up a loader worker process: OpenCV single-threaded (decoding already runs one process per core)."""
    cv2.setNumThreads(0)


def _loader(dataset, *, batch_size: int, shuffle: bool, num_workers: int | None, seed: int, drop_last: bool = False,
            sampler=None, pin_memory: bool | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers > 0 and not worker_processes_possible():
        logger.warning("no worker processes possible here (no POSIX semaphores): loading in the main process")
        num_workers = 0
    if num_workers > 0:
        # OpenCV's own thread pool does not survive fork(): a worker forked while this process holds one can hang
        # forever. The workers are forked from here, so OpenCV stays single-threaded in this process too.
        cv2.setNumThreads(0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
        worker_init_fn=init_worker if num_workers > 0 else None,
    )


def split_by_room(samples: Sequence[Sample], valid_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded room-disjoint split of ``samples`` into (train, valid) index lists.

    Every room goes whole to one side, so that no validation image shows a room the model was trained on (frames of
    one room share walls, furniture and lighting: a random split of images would let validation reward memorising
    them). In each area, rooms are drawn in a seeded random order and go to validation while they bring the area's
    validation images closer to ``valid_ratio`` of its images; each area keeps at least one room for training. If no
    area gave a room (tiny areas), the smallest room of an area with several rooms, else of any area, is held out.

    Raises:
        ValueError: ``valid_ratio`` outside (0, 1).
        DatasetError: fewer than two rooms in all, so no room-disjoint split exists.
    """
    if not 0.0 < valid_ratio < 1.0:
        raise ValueError(f"valid_ratio must be in (0, 1), got {valid_ratio}")
    rooms: dict[tuple[str, str], list[int]] = {}
    for index, sample in enumerate(samples):
        rooms.setdefault(room_of(sample), []).append(index)
    if len(rooms) < 2:
        raise DatasetError(f"a room-disjoint validation split needs at least two rooms, but the training images show "
                           f"only {', '.join('/'.join(key) for key in rooms) or 'none'}; give validation areas instead")
    rng = np.random.default_rng(seed)
    by_area: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(rooms):
        by_area.setdefault(key[0], []).append(key)
    held_out: list[tuple[str, str]] = []
    for keys in by_area.values():
        target = valid_ratio * sum(len(rooms[key]) for key in keys)
        taken = 0
        for position in rng.permutation(len(keys))[: len(keys) - 1]:  # one room at least stays for training
            size = len(rooms[keys[position]])
            if abs(taken + size - target) < abs(taken - target):
                held_out.append(keys[position])
                taken += size
    if not held_out:
        several = [key for keys in by_area.values() if len(keys) > 1 for key in keys]
        held_out = [min(several or sorted(rooms), key=lambda key: (len(rooms[key]), key))]
    valid = sorted(index for key in held_out for index in rooms[key])
    chosen = set(valid)
    return [index for index in range(len(samples)) if index not in chosen], valid


def _open_areas(source: str | Path, cached: bool, transforms: Callable,
                areas: Sequence[str] | None) -> SegmentationDataset:
    """The chosen areas of a data set root, or of a prepared cache when ``cached``."""
    if cached:
        from labcode.storage.cache import CachedDataset  # the prepared cache's machinery, only for a prepared cache

        return CachedDataset(source, transforms=transforms, areas=areas)
    return StanfordDataset(source, transforms=transforms, areas=areas)


def get_dataloaders(
    datadir: str | Path,
    areas_train: Sequence[str] | None,
    areas_valid: Sequence[str] | None = None,
    *,
    valid_ratio: float = 0.2,
    img_size: int = 256,
    batch_size: int = 8,
    num_workers: int | None = None,
    seed: int = 0,
    augment: bool = True,
    train_transform: Callable | None = None,
    cache_dir: str | Path | None = None,
    distributed: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders.

    Training uses ``areas_train``; validation uses ``areas_valid`` or, when it is empty, about ``valid_ratio`` of
    the training areas' images, whole rooms at a time (:func:`split_by_room`): no validation image shows a room seen
    in training.

    Args:
        datadir: data set root.
        areas_train: training areas (all areas when ``None``).
        areas_valid: validation areas, or ``None`` for a room-disjoint split of the training areas.
        valid_ratio: share of the training images held out (whole rooms) when ``areas_valid`` is empty.
        img_size: side of the square training/validation images.
        batch_size: images per batch.
        num_workers: loader worker processes (default: one per core, at most 8).
        seed: seed of the split and of the shuffling.
        augment: use :func:`labcode.transforms.train_transforms` for training (else the evaluation preset).
        train_transform: an albumentations pipeline replacing the training preset (e.g. the student's own).
        cache_dir: read the images from a cache made by ``python -m labcode prepare`` instead of the PNGs.
        distributed: shard the training set over the processes of ``torch.distributed``.

    Returns:
        ``(train_loader, valid_loader)`` yielding ``(B, 3, S, S)`` float32 images and ``(B, S, S)`` int64 masks.
    """
    # Imported here, not at the top: transforms.py holds a student exercise, and a broken copy of it must not stop
    # ``from labcode.data import StanfordDataset`` (notebook 1, which does not use it).
    from labcode.transforms import PairedTransform, eval_transforms, train_transforms

    if train_transform is None:
        train_transform = train_transforms(img_size) if augment else eval_transforms(img_size)
    train_tf, eval_tf = PairedTransform(train_transform), PairedTransform(eval_transforms(img_size))
    source = cache_dir if cache_dir is not None else datadir
    if areas_valid:
        train_set = _open_areas(source, cache_dir is not None, train_tf, areas_train)
        valid_set = _open_areas(source, cache_dir is not None, eval_tf, areas_valid)
    else:
        full_train = _open_areas(source, cache_dir is not None, train_tf, areas_train)
        full_valid = _open_areas(source, cache_dir is not None, eval_tf, areas_train)
        train_idx, valid_idx = split_by_room(full_train.files, valid_ratio, seed)
        train_set, valid_set = Subset(full_train, train_idx), Subset(full_valid, valid_idx)
    sampler = DistributedSampler(train_set, shuffle=True, seed=seed) if distributed else None
    train_loader = _loader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers, seed=seed,
                           drop_last=len(train_set) > batch_size, sampler=sampler)
    valid_loader = _loader(valid_set, batch_size=batch_size, shuffle=False, num_workers=num_workers, seed=seed)
    return train_loader, valid_loader


def get_test_dataloader(
    datadir: str | Path,
    areas: Sequence[str] | None,
    *,
    img_size: int | None = None,
    batch_size: int = 1,
    num_workers: int | None = None,
) -> DataLoader:
    """Loader over whole areas for testing, in file order; ``img_size=None`` keeps the native resolution."""
    from labcode.transforms import PairedTransform, eval_transforms  # a student exercise: see get_dataloaders

    dataset = StanfordDataset(datadir, transforms=PairedTransform(eval_transforms(img_size)), areas=areas)
    return _loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, seed=0)
