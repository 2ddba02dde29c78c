# Your copy of the course library: labcode/storage/datasets.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The torch data sets yielding ``(image, mask)``: the base class shared with the prepared cache
(:class:`labcode.storage.cache.CachedDataset`) and :class:`StanfordDataset` over the files of a 2D-3D-S root."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from labcode.classes import CLASSES, NUM_CLASSES, UNKNOWN_LABEL
from labcode.errors import DatasetError
from labcode.storage.dataformat import LABELS_JSON, list_samples, load_label_lut, read_rgb, read_semantic


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
