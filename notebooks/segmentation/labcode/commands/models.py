# Your copy of the course library: labcode/commands/models.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode models``: print a model's summary for a dummy batch.

Example::

    python -m labcode models --model unet --img-size 256 --num-blocks 4 --base-chan 64
    python -m labcode models --model deeplabv3plus --img-size 97 65 --base-chan 16
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from labcode.classes import NUM_CLASSES
from labcode.commands.options import positive_int


def build_parser() -> argparse.ArgumentParser:
    from labcode.models import MODELS

    # a plain argparse parser: errors print the usage and exit with status 2
    parser = argparse.ArgumentParser(prog="python -m labcode models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="unet", help="model name (default: unet)")
    parser.add_argument("--num-classes", type=positive_int, default=NUM_CLASSES,
                        help=f"number of classes (default: {NUM_CLASSES})")
    parser.add_argument("--img-size", type=positive_int, nargs="+", default=[256], metavar="N",
                        help="image size: N for N×N or H W (default: 256)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="dummy batch size (default: 1)")
    parser.add_argument("--num-blocks", type=positive_int, help="UNet: number of encoder/decoder blocks")
    parser.add_argument("--base-chan", type=positive_int, help="channels of the first block/stage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from labcode.errors import UnknownNameError
    from labcode.models import build_model, model_summary

    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.img_size) not in (1, 2):
        parser.error("--img-size takes one (N) or two (H W) integers")
    height, width = args.img_size * 2 if len(args.img_size) == 1 else args.img_size
    options = {"num_blocks": args.num_blocks, "base_chan": args.base_chan}
    try:
        model = build_model(args.model, args.num_classes, **{k: v for k, v in options.items() if v is not None})
    except UnknownNameError as err:
        parser.error(str(err))
    print(model_summary(model, (args.batch_size, 3, height, width)))
    return 0
