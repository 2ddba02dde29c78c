# Your copy of the course library: labcode/commands/prepare.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode prepare``: decode, resize and cache a data set once, for fast training epochs.

Run again with the same options, it resumes an interrupted cache, or checks a complete one against the checksums
written with it (and rebuilds it if it is damaged).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from labcode.commands.options import ArgumentParser, image_side


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode prepare", description=__doc__)
    parser.add_argument("--datadir", type=Path, default=None,
                        help="data set root (default: $LABCODE_DATADIR or the generated data set)")
    parser.add_argument("--out", type=Path, required=True, help="cache folder (an interrupted run resumes there)")
    parser.add_argument("--size", type=image_side, default=256, help="side of the cached square images (default 256)")
    parser.add_argument("--areas", nargs="+", default=None, help="areas to cache (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.data import default_datadir
    from labcode.storage.cache import CachedDataset, prepare_cache

    start = time.perf_counter()
    out = prepare_cache(args.datadir or default_datadir(), args.out, size=args.size, areas=args.areas)
    cached = CachedDataset(out)
    print(f"cache ready: {out} ({len(cached)} images of {cached.size}x{cached.size}, areas {', '.join(cached.areas)}, "
          f"{time.perf_counter() - start:.1f} s); train with --cache-dir {out}")
    return 0
