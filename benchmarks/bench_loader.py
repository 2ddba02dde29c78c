"""Loader throughput (samples/s): naive baseline vs the raw PNG path vs the prepared cache, in one run; and the
decode floor: the time to decode a pair of PNGs alone, for each installed decoder.

Every loader path produces the same thing: a 256x256 augmented, normalised image tensor and its int64 mask, from
1080x1080 PNGs in the 2D-3D-S format. The naive baseline is what a straightforward implementation does: PIL decoding,
the label index computed with int64 arithmetic, and a per-sample numpy lookup through the JSON list. The raw path is
``StanfordDataset`` with the fastest installed decoder (:mod:`labcode.storage.images`); it is also run with each slower
decoder. The floor (photo decoded to RGB plus label image decoded to packed codes, nothing else) bounds what a raw
path with that decoder can reach: ``x naive at the floor`` is the ratio if label lookup and augmentation were free.
Like a DataLoader worker, the benchmark runs PyTorch on one thread (with two, the small tensor operations of every
sample waited on a busy machine's other core: 8 ms instead of 0.4 ms per sample). The paths are timed in interleaved
rounds: each rate is the median over the rounds, and each ratio the median
of the ratios taken within each round.

Measured once, for scale: one 1080x1080 photo PNG of the data set decoded on one core of an AMD EPYC took 15 ms with
Wuffs (checksums verified), 18 ms with libspng and 25 ms with OpenCV. Checking a cache's CRC-32 (zlib, several GB/s)
costs about one read of its arrays, which is why it is done when asked (``verify``) and not at every open.

    python -m benchmarks.bench_loader [--images 24] [--size 1080] [--out-size 256] [--samples 48] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import bench_dataset, best_time, interleaved_rounds, machine, paired_ratio, print_table
from labcode.classes import CLASSES
from labcode.data import StanfordDataset
from labcode.storage import images, loaders
from labcode.storage.cache import CachedDataset, prepare_cache, read_index, verify_cache
from labcode.storage.dataformat import classes_of_codes
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


class DecoderDataset(StanfordDataset):
    """``StanfordDataset`` reading with a named decoder instead of the default one."""

    def __init__(self, root: Path, transforms, decoder: str) -> None:
        super().__init__(root, transforms=transforms)
        self.decoder = decoder

    def load_image(self, index: int) -> np.ndarray:
        return images.read_with(self.files[index].rgb, self.decoder)

    def load_mask(self, index: int) -> np.ndarray:
        return classes_of_codes(images.read_with(self.files[index].semantic, self.decoder, codes=True), self.lut)


def samples_per_second(dataset, n: int) -> float:
    dataset[0]  # warm-up (file cache, first allocation)
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def decode_ms_per_pair(files, decoder: str, n: int) -> float:
    """Milliseconds to decode one (rgb, semantic) pair to an RGB array and packed label codes, nothing else."""
    images.read_with(files[0].rgb, decoder)  # warm-up
    start = time.perf_counter()
    for i in range(n):
        images.read_with(files[i % len(files)].rgb, decoder)
        images.read_with(files[i % len(files)].semantic, decoder, codes=True)
    return 1000 * (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images in the benchmark area")
    parser.add_argument("--size", type=int, default=1080, help="side of the stored PNGs")
    parser.add_argument("--out-size", type=int, default=256, help="side of the training samples")
    parser.add_argument("--samples", type=int, default=48, help="samples drawn per path and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; figures are their medians")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # what DataLoader workers do
    loaders.init_worker(0)  # and OpenCV on one thread, as in the loaders' workers
    root = bench_dataset(args.size, args.images)
    transforms = PairedTransform(train_transforms(args.out_size))
    decoders = images.available_decoders()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache_dir = prepare_cache(root, Path(tmp) / "cache", size=args.out_size, progress=False)
        prepare_s = time.perf_counter() - start
        open_s = best_time(lambda: CachedDataset(cache_dir), repeats=5)
        index = read_index(cache_dir)
        verify_s = best_time(lambda: verify_cache(cache_dir, index), repeats=5)
        cache_mb = sum(entry["bytes"] for entry in index["checksums"].values()) / 1e6
        paths = {"naive (PIL + int64 + per-sample lookup)": NaiveDataset(root, transforms),
                 f"raw PNG ({decoders[0]}, the default)": StanfordDataset(root, transforms=transforms)}
        for name in decoders[1:]:
            paths[f"raw PNG ({name})"] = DecoderDataset(root, transforms, name)
        paths[f"prepared cache ({args.out_size}px memmap)"] = CachedDataset(cache_dir, transforms=transforms)
        files = paths[f"raw PNG ({decoders[0]}, the default)"].files
        timers = {name: (lambda ds=ds: samples_per_second(ds, args.samples)) for name, ds in paths.items()}
        timers.update({f"floor {name}": (lambda name=name: decode_ms_per_pair(files, name, args.samples))
                       for name in decoders})
        measured = interleaved_rounds(timers, args.rounds)
    naive = next(iter(paths))
    print(f"loader throughput, one process, {args.size}px PNGs -> {args.out_size}px samples, median of {args.rounds} "
          f"rounds of {args.samples} samples; {machine()}")
    print_table(["path", "samples/s", "ms/sample", "x naive"],
                [[name, statistics.median(measured[name]), 1000 / statistics.median(measured[name]),
                  paired_ratio(measured[name], measured[naive])] for name in paths])
    naive_ms = [1000 / rate for rate in measured[naive]]
    print("\ndecode floor: one rgb + semantic PNG pair decoded to arrays, nothing else")
    print_table(["decoder", "ms/pair", "x naive at the floor"],
                [[images.decoder_version(name), statistics.median(measured[f"floor {name}"]),
                  paired_ratio(naive_ms, measured[f"floor {name}"])] for name in decoders])
    print(f"\nprepare: {args.images} images cached in {prepare_s:.1f} s ({args.images / prepare_s:.1f} images/s)")
    print(f"opening the cache: {1000 * open_s:.1f} ms; verifying it (CRC-32 of its {cache_mb:.1f} MB, on demand): "
          f"{1000 * verify_s:.1f} ms ({cache_mb / 1000 / verify_s:.1f} GB/s from the page cache)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
