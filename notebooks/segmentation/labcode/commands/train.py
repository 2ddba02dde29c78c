# Your copy of the course library: labcode/commands/train.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode train``: train a segmentation model and keep the best one by validation macro F1.

Validation protocol: the validation images choose the best epoch (and whatever you tune), so they must be images the
model could not have memorised. Without ``--areas-valid``, about ``--valid-ratio`` of the training areas' images are
held out whole rooms at a time (the room is read from the file name, e.g. ``..._office_12_frame_3_...``): no
validation image shows a room seen in training. Keep the test areas (5a and 5b in the course) out of training and
validation alike; they measure the final model once, and a score measured on the data that chose the model is
optimistic.

The seed's underscore spellings (``--areas_train``, ``--img_size`` ...) are accepted as aliases. Multi-GPU:
``torchrun --nproc_per_node N -m labcode train ...``. SIGTERM or Ctrl-C saves the state and exits cleanly;
``--resume`` continues (the interrupted epoch restarts from its first batch).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from labcode.commands.common import (
    add_data_options,
    add_device_options,
    add_loss_options,
    add_model_options,
    add_optimisation_options,
    given_options,
    set_threads,
    unet_options,
)
from labcode.commands.options import ArgumentParser, float_in, non_negative_float, positive_int
from labcode.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    add_data_options(data, areas_train=None, valid_ratio=0.2, img_size=256, batch_size=8, num_workers=2)
    data.add_argument("--areas-valid", "--areas_valid", nargs="*", default=None,
                      help="validation areas, never the test areas (default: hold out --valid-ratio of the training "
                      "images, whole rooms at a time)")
    data.add_argument("--no-augment", dest="augment", action="store_false", help="no data augmentation")
    data.add_argument("--cache-dir", "--cache_dir", default=None,
                      help="read the images from a cache made by `python -m labcode prepare`")

    model = parser.add_argument_group("model and loss")
    add_model_options(model)
    add_loss_options(model, loss="ce", class_weights="none")
    model.add_argument("--focal-gamma", "--focal_gamma", type=non_negative_float, default=None,
                       help="focal loss: gamma")
    model.add_argument("--tversky-alpha", "--tversky_alpha", type=non_negative_float, default=None,
                       help="Tversky: alpha (FP)")
    model.add_argument("--tversky-beta", "--tversky_beta", type=non_negative_float, default=None,
                       help="Tversky: beta (FN)")

    optim = parser.add_argument_group("optimisation")
    add_optimisation_options(optim, epochs=10, lr=1e-3)
    optim.add_argument("--weight-decay", "--weight_decay", type=non_negative_float, default=1e-4)
    optim.add_argument("--warmup-ratio", "--warmup_ratio", type=float_in(0.0, 1.0), default=0.05,
                       help="fraction of the steps of linear warm-up before the cosine decay")

    run = parser.add_argument_group("run")
    add_device_options(run)
    run.add_argument("--logdir", default="runs", help="parent directory of the runs (default: runs)")
    run.add_argument("--run-name", "--run_name", default=None, help="run directory name (default: model-time)")
    run.add_argument("--figure-every", type=positive_int, default=1,
                     help="draw the TensorBoard figures every N epochs and at the last one (default: 1)")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                     help="continue a run: a checkpoint, a run directory, or nothing for <logdir>/<run-name>")
    run.add_argument("--channels-last", "--channels_last", action="store_true")
    run.add_argument("--no-export", dest="export_onnx", action="store_false", help="do not export best.onnx")
    return parser


def loss_options(args: argparse.Namespace) -> dict[str, float]:
    """Loss options given on the command line, checked against the chosen loss."""
    given = {"--focal-gamma": ("focal", "gamma", args.focal_gamma),
             "--tversky-alpha": ("tversky", "alpha", args.tversky_alpha),
             "--tversky-beta": ("tversky", "beta", args.tversky_beta)}
    options = {}
    for flag, (loss, key, value) in given.items():
        if value is None:
            continue
        if args.loss != loss:
            raise LabError(f"{flag} applies to --loss {loss}, not to --loss {args.loss}")
        options[key] = value
    return options


def config_from_args(args: argparse.Namespace, argv: list[str]):
    from labcode.classes import TRAIN_AREAS
    from labcode.config import TrainConfig

    resume = args.resume
    if resume == "":
        if not args.run_name:
            raise LabError("--resume without a checkpoint needs --run-name (the run to continue)")
        resume = str(Path(args.logdir) / args.run_name)
    return TrainConfig(
        datadir=args.datadir, areas_train=args.areas_train or list(TRAIN_AREAS),
        areas_valid=args.areas_valid or None, valid_ratio=args.valid_ratio, model=args.model,
        model_options=unet_options(args), loss=args.loss, loss_options=loss_options(args),
        class_weights=args.class_weights, img_size=args.img_size, batch_size=args.batch_size,
        num_workers=args.num_workers, augment=args.augment, cache_dir=args.cache_dir, epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, small=args.small, seed=args.seed,
        logdir=args.logdir, run_name=args.run_name, resume=resume, channels_last=args.channels_last, amp=args.amp,
        device=args.device, export_onnx=args.export_onnx, progress=args.progress, figure_every=args.figure_every,
        command=shlex.join(["python", "-m", "labcode", "train", *argv]),
    )


#: configuration fields set from several command-line options
_SOURCES = {"model_options": ("num_blocks", "base_chan"), "loss_options": ("loss", "focal_gamma", "tversky_alpha",
                                                                           "tversky_beta")}


def merge_resumed(config, argv: list[str]):
    """On ``--resume``, start from the configuration saved in the checkpoint and apply only the options given now.

    Model options given now are applied over the checkpoint's, so that :func:`labcode.train.fit` compares the
    architecture asked for with the checkpoint's and refuses a change.
    """
    from labcode.checkpoint import find_resume_checkpoint, load_checkpoint
    from labcode.config import TrainConfig

    saved = load_checkpoint(find_resume_checkpoint(config.resume)).get("config", {})
    given = given_options(build_parser, argv)
    merged = config.to_dict()
    for key, value in saved.items():
        if key in merged and key not in ("resume", "command") and not given & set(_SOURCES.get(key, (key,))):
            merged[key] = value
    if given & set(_SOURCES["model_options"]) and isinstance(saved.get("model_options"), dict):
        merged["model_options"] = {**saved["model_options"], **config.model_options}
    return TrainConfig(**merged)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.train import fit

    set_threads(args.threads)
    config = config_from_args(args, argv)
    if config.resume:
        config = merge_resumed(config, argv)
    result = fit(config)
    if result["rank"] != 0:  # under torchrun, rank 0 reports
        return 0
    if result["interrupted"]:
        print(f"interrupted by {result['signal']} after {result['epochs_completed']} completed epoch(s); state saved "
              f"to {result['last_checkpoint']}")
        print(f"continue with: python -m labcode train --resume {result['last_checkpoint']}")
    if result["best_epoch"] is not None:
        print(f"best validation macro F1 {result['best_macro_f1']:.4f} at epoch {result['best_epoch'] + 1} "
              f"(run {result['run_dir']})")
        print(f"best checkpoint: {result['best_checkpoint']}")
    if result["onnx"]:
        diffs = ", ".join(f"{size}: {diff:.2e}" for size, diff in result["parity"].items())
        print(f"ONNX model: {result['onnx']} (max |ONNX - PyTorch| {diffs})")
    return 0
