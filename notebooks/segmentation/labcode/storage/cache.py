# Your copy of the course library: labcode/storage/cache.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Prepared sample cache: decode every PNG once, resize, and keep compact ``uint8`` arrays on disk.

Layout of a cache folder::

    index.json     what was cached (source root, areas, size, files), whether it is complete, and the checksums
    images.npy     uint8 (N, S, S, 3), memory-mapped
    masks.npy      uint8 (N, S, S), memory-mapped
    done.npy       bool (N,): which items are written (the resume point after an interruption)

``index.json`` says ``"complete": true`` only after every item was written and flushed, and it is replaced
atomically, so an interrupted ``prepare`` never leaves a cache that looks complete; running it again resumes.

A complete index also holds the size and CRC-32 of each ``.npy`` file (header included), computed when the cache is
written. :class:`CachedDataset` checks what costs nothing when it opens the cache (every file there with its recorded
size, the array headers, every item written); the checksums, which take one read of every array, are checked on
demand: :func:`verify_cache` (or :meth:`CachedDataset.verify`), and ``prepare`` run again on a complete cache, which
keeps it when it is intact and rebuilds it when it is damaged.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from labcode.errors import DatasetError
from labcode.runtime.progress import progress_bar
from labcode.storage.dataformat import Sample
from labcode.storage.datasets import SegmentationDataset, StanfordDataset

logger = logging.getLogger(__name__)

CACHE_VERSION = 2
_FLUSH_EVERY = 16
_ARRAYS = ("images", "masks", "done")
_REDO = "run `python -m labcode prepare` again with the same options to rebuild it"


class CacheDamagedError(DatasetError):
    """A cache file cannot be trusted; ``damage`` says which and why, the message adds how to rebuild the cache."""

    def __init__(self, damage: str) -> None:
        super().__init__(f"{damage}; {_REDO}")
        self.damage = damage


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def file_checksum(path: str | Path, chunk_bytes: int = 16 * 2**20) -> dict[str, Any]:
    """Size and CRC-32 of a whole file, read in chunks: ``{"bytes": 1234, "crc32": "89abcdef"}``."""
    crc, size = 0, 0
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            crc = zlib.crc32(view[:count], crc)
            size += count
    return {"bytes": size, "crc32": f"{crc:08x}"}


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


def _same_request(existing: dict, wanted: dict) -> bool:
    return all(existing.get(key) == wanted[key] for key in ("source", "size", "areas", "files"))


def read_index(root: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a cache folder, its structure checked.

    Raises:
        DatasetError: no index (no cache in ``root``).
        CacheDamagedError: not JSON, or without the expected entries (the message names the file).
    """
    path = Path(root) / "index.json"
    if not path.is_file():
        raise DatasetError(f"no prepared cache in {path.parent} (missing index.json); run `python -m labcode prepare`")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheDamagedError(f"cache index {path} is damaged ({type(exc).__name__}: {exc})") from None
    expected = {"version": int, "source": str, "size": int, "areas": list, "files": list, "complete": bool}
    wrong = [key for key, kind in expected.items() if not isinstance(index, dict) or not isinstance(index.get(key),
                                                                                                     kind)]
    if not wrong and not all(isinstance(f, list) and len(f) == 3 and all(isinstance(x, str) for x in f)
                             for f in index["files"]):
        wrong = ["files"]
    checksums = index.get("checksums") if isinstance(index, dict) else None
    if not wrong and index["complete"] and index["version"] == CACHE_VERSION and not (
            isinstance(checksums, dict) and set(checksums) == {f"{a}.npy" for a in _ARRAYS}
            and all(isinstance(c, dict) and isinstance(c.get("bytes"), int) and isinstance(c.get("crc32"), str)
                    for c in checksums.values())):
        wrong = ["checksums"]
    if wrong:
        raise CacheDamagedError(f"cache index {path} is damaged (missing or malformed {', '.join(wrong)})")
    return index


def verify_cache(root: str | Path, index: dict[str, Any] | None = None) -> None:
    """Check every array file of a complete cache against the size and CRC-32 recorded in its index (one read of
    every array).

    Args:
        root: the cache folder.
        index: its :func:`read_index` (read here when ``None``).

    Raises:
        CacheDamagedError: a file is missing, has another size, or other bytes (the message names it).
    """
    root = Path(root)
    index = read_index(root) if index is None else index
    _check_sizes(root, index)
    for name, expected in index["checksums"].items():
        if file_checksum(root / name)["crc32"] != expected["crc32"]:
            raise CacheDamagedError(f"cache file {root / name} is damaged (its CRC-32 checksum differs from the one "
                                    "written by prepare)")


def _check_sizes(root: Path, index: dict[str, Any]) -> None:
    """Every array file of a complete cache is there with the size its index records (no file is read)."""
    for name, expected in index["checksums"].items():
        path = root / name
        if not path.is_file():
            raise CacheDamagedError(f"cache file {path} is missing")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CacheDamagedError(f"cache file {path} is damaged ({size} bytes instead of {expected['bytes']}: "
                                    "truncated or overwritten)")


def _open_arrays(out: Path, shapes: dict, dtypes: dict, resume: bool) -> dict[str, np.memmap]:
    """The cache arrays, reopened to resume when ``resume`` and they are intact, else created anew."""
    if resume:
        try:
            arrays = {name: np.load(out / f"{name}.npy", mmap_mode="r+") for name in shapes}
            if all(arrays[n].shape == shapes[n] and arrays[n].dtype == dtypes[n] for n in shapes):
                return arrays
        except (OSError, ValueError, EOFError):  # a damaged header: start again
            pass
        logger.warning("the unfinished cache in %s cannot be resumed (damaged arrays); starting it again", out)
    return {name: np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtypes[name], shape=shapes[name])
            for name in shapes}


def prepare_cache(
    datadir: str | Path,
    out: str | Path,
    *,
    size: int,
    areas: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Decode, resize and store the chosen areas in ``out``; resume an interrupted run of the same request.

    A complete cache of the same request is checked against its checksums and kept, or rebuilt when it is damaged
    (as is a cache whose index cannot be read, or one written by an older version).

    Args:
        datadir: data set root in the 2D-3D-S format.
        out: cache folder (created).
        size: side of the stored square images.
        areas: areas to cache (all when ``None``).
        progress: show a progress bar.

    Returns:
        ``out``, holding a complete cache.

    Raises:
        DatasetError: ``out`` holds a cache of another request (other source, areas or size), or an rgb image and
            its semantic twin differ in size (both files are named).
    """
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    dataset = StanfordDataset(datadir, areas=areas)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = _index_for(dataset, size)
    n = len(dataset)
    shapes = {"images": (n, size, size, 3), "masks": (n, size, size), "done": (n,)}
    dtypes = {"images": np.dtype(np.uint8), "masks": np.dtype(np.uint8), "done": np.dtype(np.bool_)}
    state = _existing_state(out, wanted, shapes)
    if state == "complete":
        return out
    if state != "resume":
        _write_json_atomic(out / "index.json", wanted)
    arrays = _open_arrays(out, shapes, dtypes, state == "resume")
    _fill(dataset, arrays, size, progress)
    del arrays
    checksums = {f"{name}.npy": file_checksum(out / f"{name}.npy") for name in shapes}
    _write_json_atomic(out / "index.json", {**wanted, "complete": True, "checksums": checksums})
    return out


def _existing_state(out: Path, wanted: dict, shapes: dict) -> str:
    """What ``out`` holds for the request ``wanted``: ``"complete"`` (checked intact), ``"resume"`` (an unfinished
    cache whose arrays are all there) or ``"new"`` (nothing usable: no cache, an outdated or damaged one).

    Raises:
        DatasetError: ``out`` holds a cache of another request.
    """
    if not (out / "index.json").is_file():
        return "new"
    try:
        existing = read_index(out)
    except CacheDamagedError as exc:
        logger.warning("%s; rebuilding the cache", exc.damage)
        return "new"
    if not _same_request(existing, wanted):
        raise DatasetError(f"{out} already holds a cache of another data set, size or areas; choose another --out")
    if existing["version"] != CACHE_VERSION:
        return "new"
    if not existing["complete"]:
        return "resume" if all((out / f"{name}.npy").is_file() for name in shapes) else "new"
    try:
        verify_cache(out, existing)
        return "complete"
    except CacheDamagedError as exc:
        logger.warning("%s; rebuilding the cache", exc.damage)
        return "new"


def _fill(dataset: StanfordDataset, arrays: dict[str, np.memmap], size: int, progress: bool) -> None:
    """Decode, resize and write the items not done yet; ``done`` is marked only once their pixels are flushed."""
    todo = np.flatnonzero(~arrays["done"])
    pending = []
    for count, i in enumerate(progress_bar(todo, desc=f"caching {size}px", disable=not progress, unit="img"), 1):
        image, mask = resize_pair(*dataset.load_pair(int(i)), size)
        arrays["images"][i] = image
        arrays["masks"][i] = mask
        pending.append(i)
        if count % _FLUSH_EVERY == 0 or count == len(todo):
            arrays["images"].flush()
            arrays["masks"].flush()
            arrays["done"][pending] = True  # marked only once the pixels are on disk
            arrays["done"].flush()
            pending = []


class CachedDataset(SegmentationDataset):
    """A prepared cache read like :class:`labcode.data.StanfordDataset` (same items, at the cached size).

    Args:
        cache_dir: folder written by :func:`prepare_cache`.
        transforms: callable ``(image, mask) -> (image, mask)``; exclusive with the two below.
        transform: callable applied to the image alone.
        target_transform: callable applied to the mask alone.
        areas: keep only these areas (must have been cached).

    Raises:
        DatasetError: the folder holds no cache, an incomplete one (run ``prepare`` again to resume it), or a damaged
            one (an index that cannot be read, an array file missing, of another size than the index records or
            with a broken header; run ``prepare`` again to rebuild it); the message names the file. The checksums
            are checked by :meth:`verify`, not here.
    """

    def __init__(self, cache_dir: str | Path, transforms: Callable | None = None, transform: Callable | None = None,
                 target_transform: Callable | None = None, areas: Sequence[str] | None = None) -> None:
        self._set_transforms(transforms, transform, target_transform)
        self.root = Path(cache_dir)
        index = read_index(self.root)
        if not index["complete"] or index["version"] != CACHE_VERSION:
            raise DatasetError(f"the cache in {self.root} is incomplete or outdated; run `python -m labcode prepare` "
                               "again with the same options to finish or rebuild it")
        _check_sizes(self.root, index)
        self.size = index["size"]
        self.images = self._load(self.root / "images.npy", mmap_mode="r")
        self.masks = self._load(self.root / "masks.npy", mmap_mode="r")
        done = self._load(self.root / "done.npy")
        n = len(index["files"])
        if self.images.shape != (n, self.size, self.size, 3) or self.masks.shape != (n, self.size, self.size) \
                or not done.all():
            raise CacheDamagedError(f"the cache in {self.root} does not match its index")
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

    def verify(self) -> None:
        """Check the cache's files against the CRC-32 checksums written by ``prepare`` (see :func:`verify_cache`).

        Raises:
            CacheDamagedError: a file's bytes differ from those written (the message names it).
        """
        verify_cache(self.root)

    @staticmethod
    def _load(path: Path, mmap_mode: str | None = None) -> np.ndarray:
        try:
            return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CacheDamagedError(f"cache file {path} is damaged ({type(exc).__name__}: {exc})") from None

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
