"""Loader throughput (samples/s): naive baseline vs the raw PNG path vs the prepared cache, in one run.

All three produce the same thing: a 256x256 augmented, normalised image tensor and its int64 mask, from 1080x1080
PNGs in the 2D-3D-S format. The naive baseline is what a straightforward implementation does: PIL decoding, the
label index computed with int64 arithmetic, and a per-sample numpy lookup through the JSON list.

    python -m benchmarks.bench_loader [--images 24] [--size 1080] [--out-size 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import bench_dataset, best_time, machine, print_table
from labcode.cache import CachedDataset, prepare_cache, read_index, verify_cache
from labcode.classes import CLASSES
from labcode.data import StanfordDataset
from labcode.transforms import PairedTransform, train_transforms


class NaiveDataset:
    """The baseline: PIL decode, int64 index arithmetic, a numpy lookup of the classes per sample."""

    def __init__(self, root: Path, transforms) -> None:
        self.files = StanfordDataset(root).files
        names = json.loads((root / "assets" / "semantic_labels.json").read_text())
        self.classes = np.array([CLASSES.index(n.split("_")[0]) for n in names] + [0])  # built once, to be fair
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = np.array(Image.open(self.files[i].rgb).convert("RGB"))
        sem = np.array(Image.open(self.files[i].semantic).convert("RGB")).astype(np.int64)
        index = sem[..., 0] * 256 * 256 + sem[..., 1] * 256 + sem[..., 2]
        index[index >= len(self.classes) - 1] = len(self.classes) - 1
        mask = self.classes[index]
        return self.transforms(image, mask.astype(np.uint8))


def samples_per_second(dataset, n: int) -> float:
    dataset[0]  # warm-up (file cache, first allocation)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images in the benchmark area")
    parser.add_argument("--size", type=int, default=1080, help="side of the stored PNGs")
    parser.add_argument("--out-size", type=int, default=256, help="side of the training samples")
    parser.add_argument("--samples", type=int, default=48, help="samples drawn per path")
    args = parser.parse_args(argv)

    root = bench_dataset(args.size, args.images)
    transforms = PairedTransform(train_transforms(args.out_size))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache_dir = prepare_cache(root, Path(tmp) / "cache", size=args.out_size, progress=False)
        prepare_s = time.perf_counter() - start
        open_s = best_time(lambda: CachedDataset(cache_dir), repeats=5)
        index = read_index(cache_dir)
        verify_s = best_time(lambda: verify_cache(cache_dir, index), repeats=5)
        cache_mb = sum(entry["bytes"] for entry in index["checksums"].values()) / 1e6
        paths = {
            "naive (PIL + int64 + per-sample lookup)": NaiveDataset(root, transforms),
            "raw PNG (cv2 + packed lookup table)": StanfordDataset(root, transforms=transforms),
            f"prepared cache ({args.out_size}px memmap)": CachedDataset(cache_dir, transforms=transforms),
        }
        rates = {name: samples_per_second(ds, args.samples) for name, ds in paths.items()}
    base = next(iter(rates.values()))
    print(f"loader throughput, one process, {args.size}px PNGs -> {args.out_size}px samples; {machine()}")
    print_table(["path", "samples/s", "ms/sample", "x naive"],
                [[name, rate, 1000 / rate, rate / base] for name, rate in rates.items()])
    print(f"\nprepare: {args.images} images cached in {prepare_s:.1f} s ({args.images / prepare_s:.1f} images/s)")
    print(f"opening the cache: {1000 * open_s:.1f} ms, of which {1000 * verify_s:.1f} ms check the CRC-32 of its "
          f"{cache_mb:.1f} MB ({cache_mb / 1000 / verify_s:.1f} GB/s from the page cache)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
