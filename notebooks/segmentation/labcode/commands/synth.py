# Your copy of the course library: labcode/commands/synth.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode synth``: generate a synthetic data set in the exact Stanford 2D-3D-S layout.

``--default`` makes the course's default data set where the notebooks and commands look for it (nothing to do when
it is already there); otherwise ``--out`` says where to write a data set of the given options.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from labcode.classes import AREAS
from labcode.commands.options import ArgumentParser, positive_int, seed
from labcode.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode synth", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="root folder to create (must be absent or empty)")
    target.add_argument("--default", action="store_true",
                        help="the course's default data set, where the notebooks find it (the other options are "
                             "ignored)")
    parser.add_argument("--size", type=positive_int, default=1080,
                        help="side of the square images in pixels (default 1080)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--images-per-area", "--images_per_area", type=positive_int, default=None, metavar="N",
                       help="images in every area")
    count.add_argument("--total-images", type=positive_int, default=None, metavar="N",
                       help="images in all, split over the areas like the real data set (default: as many as the "
                            "default data set)")
    parser.add_argument("--areas", nargs="+", default=list(AREAS), metavar="AREA",
                        help=f"areas to generate (default: all of {' '.join(AREAS)})")
    parser.add_argument("--seed", type=seed, default=0, help="base seed (same options and seed: identical files)")
    parser.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1), help="rendering processes")
    parser.add_argument("--force", action="store_true", help="replace the output folder if it is not empty")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.synth import DEFAULT_SYNTH, area_image_counts, ensure_default_dataset, generate_dataset

    if args.default:
        print(f"default data set: {ensure_default_dataset(progress=not args.quiet)}")
        return 0
    areas = tuple(args.areas)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise LabError(f"--areas: unknown area(s) {', '.join(unknown)}; valid areas: {', '.join(AREAS)}")
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise LabError(f"--out {out} already exists and is not empty; choose another folder or add --force")
    if args.images_per_area is not None:
        counts = {a: args.images_per_area for a in areas}
    else:
        counts = area_image_counts(args.total_images or sum(DEFAULT_SYNTH.counts().values()), areas)
    root = generate_dataset(out, areas=areas, images_per_area=counts, size=args.size, seed=args.seed,
                            workers=args.workers, progress=not args.quiet, overwrite=args.force)
    print(f"wrote {sum(counts.values())} images of {args.size}x{args.size} pixels "
          f"({', '.join(f'area {a}: {n}' for a, n in counts.items())}) to {root}")
    return 0
