"""Stanford 2D-3D-S on disk: the semantic label table, the image readers (decoding itself is in
:mod:`labcode.images`), ``StanfordDataset`` and the data loaders.

On-disk layout (the real data set and the generated one share it)::

    ROOT/assets/semantic_labels.json
    ROOT/area_5a/data/rgb/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_rgb.png
    ROOT/area_5a/data/semantic/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_semantic.png

A semantic pixel ``(R, G, B)`` is the index ``R * 65536 + G * 256 + B`` into the JSON list of instance names such as
``"wall_1_office_12_3"``; the class is the part before the first underscore. The code ``0x0D0D0D`` marks missing
data and, like any index past the end of the list, decodes to ``<UNK>``.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from labcode import images
from labcode.classes import CLASSES, NUM_CLASSES, UNKNOWN_LABEL
from labcode.errors import DatasetError

logger = logging.getLogger(__name__)

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked after the main process used it can
# hang forever. Decoding runs in the loader workers anyway (one process per core), so OpenCV stays single-threaded.
cv2.setNumThreads(0)

MISSING_CODE = 0x0D0D0D
LABELS_JSON = Path("assets") / "semantic_labels.json"
RGB_SUFFIX = "_domain_rgb.png"
SEMANTIC_SUFFIX = "_domain_semantic.png"
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

    The three bytes are packed into one ``uint32`` code (:func:`labcode.images.pack_codes`), then looked up with
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


def read_rgb(path: str | Path, decoder: str | None = None) -> np.ndarray:
    """Read a colour image as ``uint8`` RGB (H, W, 3); grayscale, RGBA and 16-bit inputs are converted.

    Decoding is :func:`labcode.images.read_rgb` (the fastest installed PNG decoder unless ``decoder`` names one).
    """
    return images.read_rgb(path, decoder)


def read_semantic(path: str | Path, lut: np.ndarray, decoder: str | None = None) -> np.ndarray:
    """Read a semantic PNG and decode it to ``uint8`` class indices (H, W).

    The file is decoded straight to packed codes (:func:`labcode.images.read_codes`), then looked up in ``lut``.
    """
    return classes_of_codes(images.read_codes(path, decoder), lut)


# --------------------------------------------------------------------------------------------------------------------
# Dataset
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


class SegmentationDataset(Dataset):
    """Base of the data sets yielding ``(image, mask)``: subclasses provide ``load_image`` and ``load_mask``.

    ``transforms(image, mask)`` (paired) and ``transform``/``target_transform`` (separate) are exclusive; the mask
    comes out as ``int64`` whatever the transforms return.
    """

    labels: list[str] = list(CLASSES)
    unknown_label: int = UNKNOWN_LABEL
    num_labels: int = NUM_CLASSES

    def _set_transforms(self, transforms: Callable | None, transform: Callable | None,
                        target_transform: Callable | None) -> None:
        if transforms is not None and (transform is not None or target_transform is not None):
            raise ValueError("give either `transforms` or `transform`/`target_transform`, not both")
        self.transforms, self.transform, self.target_transform = transforms, transform, target_transform

    def load_image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def load_mask(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed image and mask of item ``index``, checked to have the same size.

        Raises:
            DatasetError: they differ in size (the message names both files).
        """
        image, mask = self.load_image(index), self.load_mask(index)
        if image.shape[:2] != mask.shape:
            files = self.files[index]
            raise DatasetError(f"{files.rgb} is {image.shape[1]}x{image.shape[0]} pixels but its semantic twin "
                               f"{files.semantic} is {mask.shape[1]}x{mask.shape[0]}")
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self.load_pair(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        else:
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                mask = self.target_transform(mask)
        return image, _as_int64(mask)


class StanfordDataset(SegmentationDataset):
    """The Stanford 2D-3D-S images with their pixel classes.

    Args:
        root: data set root (holds ``assets/`` and ``area_*``).
        transforms: callable ``(image, mask) -> (image, mask)`` applied to both (e.g. an albumentations pipeline
            wrapped by :class:`labcode.transforms.PairedTransform`). Exclusive with the two below.
        transform: callable applied to the image alone.
        target_transform: callable applied to the mask alone.
        areas: areas to keep, e.g. ``['1', '5a']``; all of them when ``None``.

    Items are ``(image, mask)``: without transform, ``image`` is ``uint8`` (H, W, 3) RGB and ``mask`` ``int64``
    (H, W); with transforms, whatever they return, the mask being cast to ``int64``. ``files[i]`` names the files
    of item ``i``.
    """

    def __init__(
        self,
        root: str | Path,
        transforms: Callable | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        areas: Sequence[str | int] | None = None,
    ) -> None:
        self._set_transforms(transforms, transform, target_transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"data root not found: {self.root}")
        self.lut = load_label_lut(self.root / LABELS_JSON)
        self.files = list_samples(self.root, areas)
        self.areas = sorted({s.area for s in self.files})

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> np.ndarray:
        """The RGB image of item ``index``, ``uint8`` (H, W, 3), untransformed."""
        return read_rgb(self.files[index].rgb)

    def load_mask(self, index: int) -> np.ndarray:
        """The class indices of item ``index``, ``uint8`` (H, W), untransformed."""
        return read_semantic(self.files[index].semantic, self.lut)

    def __repr__(self) -> str:
        return f"StanfordDataset(root={str(self.root)!r}, areas={self.areas}, size={len(self)})"


def _as_int64(mask):
    if isinstance(mask, torch.Tensor):
        return mask.long()
    if isinstance(mask, np.ndarray):
        return mask.astype(np.int64)
    return mask


# --------------------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------------------

def default_datadir() -> Path:
    """The data set the course uses: ``$LABCODE_DATADIR`` (e.g. the real 2D-3D-S root on a cluster) when set,
    otherwise the generated offline data set (created on first use)."""
    env = os.environ.get("LABCODE_DATADIR")
    if env:
        return Path(env)
    from labcode.synth import ensure_default_dataset

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


def _loader(dataset, *, batch_size: int, shuffle: bool, num_workers: int | None, seed: int, drop_last: bool = False,
            sampler=None, pin_memory: bool | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers > 0 and not worker_processes_possible():
        logger.warning("no worker processes possible here (no POSIX semaphores): loading in the main process")
        num_workers = 0
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
    )


#: The room of a view in a 2D-3D-S file name: ``camera_<hex>_<roomType>_<roomNum>_frame_<k>_domain_...``.
_ROOM_IN_NAME = re.compile(r"^camera_[0-9A-Za-z]+_(.+?)_frame_\d+_domain_")


def room_of(sample: Sample) -> tuple[str, str]:
    """``(area, room)`` of a sample, the room read from its file name (``office_12``).

    A file whose name does not follow the 2D-3D-S pattern is its own room (its file name without the suffix).
    """
    match = _ROOM_IN_NAME.match(sample.rgb.name)
    return sample.area, match[1] if match else sample.rgb.name.removesuffix(RGB_SUFFIX)


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
    from labcode.transforms import PairedTransform, eval_transforms, train_transforms

    if train_transform is None:
        train_transform = train_transforms(img_size) if augment else eval_transforms(img_size)
    train_tf, eval_tf = PairedTransform(train_transform), PairedTransform(eval_transforms(img_size))
    def open_areas(transforms, areas):
        if cache_dir is not None:
            from labcode.cache import CachedDataset

            return CachedDataset(cache_dir, transforms=transforms, areas=areas)
        return StanfordDataset(datadir, transforms=transforms, areas=areas)

    if areas_valid:
        train_set, valid_set = open_areas(train_tf, areas_train), open_areas(eval_tf, areas_valid)
    else:
        full_train, full_valid = open_areas(train_tf, areas_train), open_areas(eval_tf, areas_train)
        train_idx, valid_idx = split_by_room(full_train.files, valid_ratio, seed)
        train_set, valid_set = Subset(full_train, train_idx), Subset(full_valid, valid_idx)
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, shuffle=True, seed=seed)
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
    from labcode.transforms import PairedTransform, eval_transforms

    dataset = StanfordDataset(datadir, transforms=PairedTransform(eval_transforms(img_size)), areas=areas)
    return _loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, seed=0)
