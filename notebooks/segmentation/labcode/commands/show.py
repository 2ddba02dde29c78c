# Your copy of the course library: labcode/commands/show.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode show``: draw one image of the data set with its mask, optionally augmented."""

from __future__ import annotations

import argparse
from pathlib import Path

from labcode.commands.options import ArgumentParser, image_side, non_negative_int, seed
from labcode.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode show", description=__doc__)
    parser.add_argument("--datadir", type=Path, default=None,
                        help="data set root (default: $LABCODE_DATADIR or the generated data set)")
    parser.add_argument("--areas", "--area", nargs="+", default=None, help="areas to pick from, e.g. 5a")
    parser.add_argument("--index", type=non_negative_int, default=0, help="index of the image within the chosen areas")
    parser.add_argument("--augmented", action="store_true", help="also draw an augmented version")
    parser.add_argument("--img-size", "--img_size", type=image_side, default=256, help="size of the augmented version")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the augmentation")
    parser.add_argument("--out", type=Path, default=Path("sample.png"), help="output PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.data import StanfordDataset, default_datadir
    from labcode.viz import plot_sample

    datadir = args.datadir or default_datadir()
    dataset = StanfordDataset(datadir, areas=args.areas)
    if not 0 <= args.index < len(dataset):
        raise LabError(f"--index {args.index} out of range: the selection has {len(dataset)} images")
    image, mask = dataset[args.index]
    augmented = None
    if args.augmented:
        from labcode.transforms import PairedTransform, denormalize, train_transforms

        pipeline = train_transforms(args.img_size)
        pipeline.set_random_seed(args.seed)
        aug_image, aug_mask = PairedTransform(pipeline)(image, mask.astype("uint8"))
        augmented = (denormalize(aug_image), aug_mask.numpy())
    shown = dataset.files[args.index]
    fig = plot_sample(image, mask, augmented, title=f"{shown.rgb.name} (area {shown.area})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0
