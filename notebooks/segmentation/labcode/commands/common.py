# Your copy of the course library: labcode/commands/common.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Options that several commands take (``train``, ``pipeline``): data, model, loss, optimisation, device.

Each ``add_*`` function adds a family of options to a parser (or an argument group), with the defaults of the command
that calls it: ``train`` has the library's defaults, ``pipeline`` those of the CPU recipe
(:data:`labcode.reference.CPU_RECIPE`). The spellings of the seed (``--areas_train``, ``--img_size`` ...) are
accepted as aliases.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from labcode.classes import TRAIN_AREAS
from labcode.commands.options import image_side, non_negative_int, open_ratio, positive_float, positive_int, seed


def add_data_options(parser, *, areas_train: Sequence[str] | None, valid_ratio: float, img_size: int,
                     batch_size: int, num_workers: int) -> None:
    """``--datadir``, ``--areas-train``, ``--valid-ratio``, ``--img-size``, ``--batch-size``, ``--num-workers``."""
    parser.add_argument("--datadir", default=None, help="data set root (default: $LABCODE_DATADIR or the generated "
                        "data set, created on first use)")
    parser.add_argument("--areas-train", "--areas_train", nargs="+",
                        default=None if areas_train is None else list(areas_train),
                        help=f"training areas (default: {' '.join(areas_train or TRAIN_AREAS)})")
    parser.add_argument("--valid-ratio", "--valid_ratio", type=open_ratio, default=valid_ratio,
                        help="share of the training areas' images held out for validation, whole rooms at a time "
                        f"(default: {valid_ratio})")
    parser.add_argument("--img-size", "--img_size", type=image_side, default=img_size,
                        help=f"side of the training crops (default: {img_size})")
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=batch_size)
    parser.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=num_workers)


def add_model_options(parser, *, model: str = "unet", num_blocks: int | None = None,
                      base_chan: int | None = None) -> None:
    """``--model``, ``--num-blocks``, ``--base-chan`` (UNet options; ``None``: the model's default)."""
    parser.add_argument("--model", default=model, help=f"model name: unet or deeplabv3plus (default: {model})")
    parser.add_argument("--num-blocks", "--num_blocks", type=positive_int, default=num_blocks,
                        help="UNet: encoder blocks")
    parser.add_argument("--base-chan", "--base_chan", type=positive_int, default=base_chan,
                        help="UNet: channels of the first block")


def add_loss_options(parser, *, loss: str, class_weights: str) -> None:
    """``--loss`` and ``--class-weights``."""
    parser.add_argument("--loss", default=loss, help=f"ce, focal, dice, tversky, lovasz or mcc (default: {loss})")
    parser.add_argument("--class-weights", "--class_weights", default=class_weights,
                        help="class weights of the loss: none, uniform, inverse, inverse_sqrt, median or effective "
                        f"(default: {class_weights})")


def add_optimisation_options(parser, *, epochs: int, lr: float) -> None:
    """``--epochs``, ``--lr``, ``--seed`` and ``--small``."""
    parser.add_argument("--epochs", type=positive_int, default=epochs)
    parser.add_argument("--lr", type=positive_float, default=lr, help=f"peak learning rate of AdamW (default: {lr})")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--small", action="store_true", help="quick check: a few batches per epoch")


def add_device_options(parser) -> None:
    """``--device``, ``--threads``, ``--no-amp`` and ``--no-progress``."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="PyTorch CPU threads (default: PyTorch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="full precision, also on CUDA and on CPUs with bfloat16 matrix units (AMX)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when the option was given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def given_options(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> set[str]:
    """Destinations of the options written on the command line (not left to their defaults): the command line is
    parsed into a namespace whose every entry is a marker, which argparse leaves alone for the options not written."""
    parser = build_parser()
    unset = object()
    namespace = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    return {dest for dest, value in vars(parser.parse_args(list(argv), namespace)).items() if value is not unset}


def unet_options(args: argparse.Namespace) -> dict[str, Any]:
    """The UNet options given on the command line (only those given)."""
    options = {"num_blocks": args.num_blocks, "base_chan": args.base_chan}
    return {key: value for key, value in options.items() if value is not None}
