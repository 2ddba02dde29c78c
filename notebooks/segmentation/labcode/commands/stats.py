# Your copy of the course library: labcode/commands/stats.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode stats``: class pixel histogram of some areas, its figure, and the class weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from labcode.commands.options import ArgumentParser, open_ratio


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode stats", description=__doc__)
    parser.add_argument("--datadir", type=Path, default=None,
                        help="data set root (default: $LABCODE_DATADIR or the generated data set)")
    parser.add_argument("--areas", nargs="+", default=None, help="areas to count (default: all)")
    parser.add_argument("--beta", type=open_ratio, default=1 - 1e-7, help="beta of the 'effective' weights")
    parser.add_argument("--out", type=Path, default=None, help="write the histogram figure to this PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.classes import CLASSES, REAL_CLASS_FREQUENCIES
    from labcode.data import StanfordDataset, default_datadir
    from labcode.stats import WEIGHT_STRATEGIES, class_histogram, class_weights
    from labcode.viz import plot_class_histogram

    dataset = StanfordDataset(args.datadir or default_datadir(), areas=args.areas)
    counts = class_histogram(dataset)
    freq = counts / counts.sum()
    weights = {name: class_weights(counts, name, beta=args.beta) for name in WEIGHT_STRATEGIES}
    header = f"{'class':<10} {'pixels %':>9} {'real %':>7} " + " ".join(f"{n:>12}" for n in weights)
    print(f"{len(dataset)} images, {counts.sum()} pixels, areas {', '.join(dataset.areas)}")
    print(header)
    for k, name in enumerate(CLASSES):
        row = " ".join(f"{w[k]:>12.3f}" for w in weights.values())
        print(f"{name:<10} {100 * freq[k]:>9.2f} {100 * REAL_CLASS_FREQUENCIES[k]:>7.2f} {row}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        plot_class_histogram(counts).savefig(args.out, dpi=100)
        print(f"wrote {args.out}")
    return 0
