"""Prepared sample cache: decode every PNG once, resize, and keep compact ``uint8`` arrays on disk.

Layout of a cache folder::

    index.json     what was cached (source root, areas, size, files) and whether it is complete
    images.npy     uint8 (N, S, S, 3), memory-mapped
    masks.npy      uint8 (N, S, S), memory-mapped
    done.npy       bool (N,): which items are written (the resume point after an interruption)

``index.json`` says ``"complete": true`` only after every item was written and flushed, and it is replaced
atomically, so an interrupted ``prepare`` never leaves a cache that looks complete; running it again resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from labcode.data import Sample, SegmentationDataset, StanfordDataset
from labcode.errors import DatasetError

CACHE_VERSION = 1
_FLUSH_EVERY = 16


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area interpolation) and its mask (nearest neighbour) to ``size`` x ``size``."""
    if image.shape[:2] == (size, size):
        return image, mask
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def _index_for(dataset: StanfordDataset, size: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "source": str(dataset.root.resolve()),
        "size": size,
        "areas": dataset.areas,
        "files": [[str(s.rgb.relative_to(dataset.root)), str(s.semantic.relative_to(dataset.root)), s.area]
                  for s in dataset.files],
        "complete": False,
    }


def prepare_cache(
    datadir: str | Path,
    out: str | Path,
    *,
    size: int,
    areas: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Decode, resize and store the chosen areas in ``out``; resume an interrupted run of the same request.

    Args:
        datadir: data set root in the 2D-3D-S format.
        out: cache folder (created).
        size: side of the stored square images.
        areas: areas to cache (all when ``None``).
        progress: show a progress bar.

    Returns:
        ``out``, holding a complete cache.

    Raises:
        DatasetError: ``out`` holds a cache of another request (other source, areas or size).
    """
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    dataset = StanfordDataset(datadir, areas=areas)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    wanted = _index_for(dataset, size)
    n = len(dataset)
    shapes = {"images": (n, size, size, 3), "masks": (n, size, size), "done": (n,)}
    dtypes = {"images": np.uint8, "masks": np.uint8, "done": np.bool_}
    resume = False
    if index_path.is_file():
        existing = json.loads(index_path.read_text())
        if {k: v for k, v in existing.items() if k != "complete"} != {k: v for k, v in wanted.items() if k != "complete"}:
            raise DatasetError(f"{out} already holds a cache of another data set, size or areas; choose another --out")
        if existing["complete"]:
            return out
        resume = all((out / f"{name}.npy").is_file() for name in shapes)
    if not resume:
        _write_json_atomic(index_path, wanted)
    arrays = {
        name: np.lib.format.open_memmap(out / f"{name}.npy", mode="r+" if resume else "w+", dtype=dtypes[name],
                                        shape=shapes[name])
        for name in shapes
    }
    if any(arrays[name].shape != shapes[name] for name in shapes):
        raise DatasetError(f"cache arrays in {out} have unexpected shapes; delete the folder and prepare again")
    todo = np.flatnonzero(~arrays["done"])
    pending = []
    for count, i in enumerate(tqdm(todo, desc=f"caching {size}px", disable=not progress, unit="img"), 1):
        image, mask = resize_pair(dataset.load_image(int(i)), dataset.load_mask(int(i)), size)
        arrays["images"][i] = image
        arrays["masks"][i] = mask
        pending.append(i)
        if count % _FLUSH_EVERY == 0 or count == len(todo):
            arrays["images"].flush()
            arrays["masks"].flush()
            arrays["done"][pending] = True  # marked only once the pixels are on disk
            arrays["done"].flush()
            pending = []
    del arrays
    _write_json_atomic(index_path, {**wanted, "complete": True})
    return out


class CachedDataset(SegmentationDataset):
    """A prepared cache read like :class:`labcode.data.StanfordDataset` (same items, at the cached size).

    Args:
        cache_dir: folder written by :func:`prepare_cache`.
        transforms: callable ``(image, mask) -> (image, mask)``; exclusive with the two below.
        transform: callable applied to the image alone.
        target_transform: callable applied to the mask alone.
        areas: keep only these areas (must have been cached).

    Raises:
        DatasetError: the folder holds no cache, or an incomplete one (run ``prepare`` again to resume it).
    """

    def __init__(self, cache_dir: str | Path, transforms: Callable | None = None, transform: Callable | None = None,
                 target_transform: Callable | None = None, areas: Sequence[str] | None = None) -> None:
        self._set_transforms(transforms, transform, target_transform)
        self.root = Path(cache_dir)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise DatasetError(f"no prepared cache in {self.root} (missing index.json); run `python -m labcode prepare`")
        index = json.loads(index_path.read_text())
        if not index.get("complete") or index.get("version") != CACHE_VERSION:
            raise DatasetError(f"the cache in {self.root} is incomplete or outdated; run `python -m labcode prepare` "
                               "again with the same options to resume it")
        self.size = index["size"]
        self.images = np.load(self.root / "images.npy", mmap_mode="r")
        self.masks = np.load(self.root / "masks.npy", mmap_mode="r")
        done = np.load(self.root / "done.npy")
        n = len(index["files"])
        if self.images.shape != (n, self.size, self.size, 3) or self.masks.shape != (n, self.size, self.size) \
                or not done.all():
            raise DatasetError(f"the cache in {self.root} does not match its index; delete it and prepare again")
        source = Path(index["source"])
        all_areas = [f[2] for f in index["files"]]
        if areas is not None:
            missing = sorted(set(map(str, areas)) - set(all_areas))
            if missing:
                raise DatasetError(f"areas {', '.join(missing)} are not in the cache {self.root}; "
                                   f"cached areas: {', '.join(index['areas'])}")
        keep = set(map(str, areas)) if areas is not None else set(all_areas)
        self.indices = [i for i, area in enumerate(all_areas) if area in keep]
        self.files = [Sample(source / index["files"][i][0], source / index["files"][i][1], index["files"][i][2])
                      for i in self.indices]
        self.areas = sorted(keep)

    def __len__(self) -> int:
        return len(self.indices)

    def load_image(self, index: int) -> np.ndarray:
        """The cached RGB image of item ``index``, ``uint8`` (S, S, 3)."""
        return np.array(self.images[self.indices[index]])

    def load_mask(self, index: int) -> np.ndarray:
        """The cached class indices of item ``index``, ``uint8`` (S, S)."""
        return np.array(self.masks[self.indices[index]])

    def __repr__(self) -> str:
        return f"CachedDataset(root={str(self.root)!r}, areas={self.areas}, size={len(self)}, side={self.size})"
