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
import dataclasses
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
    """The options of ``python -m labcode train``; their defaults are those of :class:`labcode.config.TrainConfig`."""
    from labcode.config import TrainConfig

    default = TrainConfig()
    parser = ArgumentParser(prog="python -m labcode train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    add_data_options(data, areas_train=None, valid_ratio=default.valid_ratio, img_size=default.img_size,
                     batch_size=default.batch_size, num_workers=default.num_workers)
    data.add_argument("--areas-valid", "--areas_valid", nargs="*", default=None,
                      help="validation areas, never the test areas (default: hold out --valid-ratio of the training "
                      "images, whole rooms at a time)")
    data.add_argument("--no-augment", dest="augment", action="store_false", help="no data augmentation")
    data.add_argument("--cache-dir", "--cache_dir", default=None,
                      help="read the images from a cache made by `python -m labcode prepare`")

    model = parser.add_argument_group("model and loss")
    add_model_options(model, model=default.model)
    add_loss_options(model, loss=default.loss, class_weights=default.class_weights)
    model.add_argument("--focal-gamma", "--focal_gamma", type=non_negative_float, default=None,
                       help="focal loss: gamma")
    model.add_argument("--tversky-alpha", "--tversky_alpha", type=non_negative_float, default=None,
                       help="Tversky: alpha (FP)")
    model.add_argument("--tversky-beta", "--tversky_beta", type=non_negative_float, default=None,
                       help="Tversky: beta (FN)")

    optim = parser.add_argument_group("optimisation")
    add_optimisation_options(optim, epochs=default.epochs, lr=default.lr)
    optim.add_argument("--weight-decay", "--weight_decay", type=non_negative_float, default=default.weight_decay)
    optim.add_argument("--warmup-ratio", "--warmup_ratio", type=float_in(0.0, 1.0), default=default.warmup_ratio,
                       help="fraction of the steps of linear warm-up before the cosine decay")

    run = parser.add_argument_group("run")
    add_device_options(run)
    run.add_argument("--logdir", default=default.logdir,
                     help=f"parent directory of the runs (default: {default.logdir})")
    run.add_argument("--run-name", "--run_name", default=None, help="run directory name (default: model-time)")
    run.add_argument("--figure-every", type=positive_int, default=default.figure_every,
                     help=f"draw the TensorBoard figures every N epochs and at the last one (default: "
                     f"{default.figure_every})")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                     help="continue a run: a checkpoint, a run directory, or nothing for <logdir>/<run-name>")
    run.add_argument("--retrain", action="store_true",
                     help="train again even if --run-name holds the finished run of these options, replacing it "
                     "(without it, such a run is reported and nothing is trained)")
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


#: Options whose value goes into a field holding several options (the other options' destinations are fields).
_FIELD_OF_OPTION = {"num_blocks": "model_options", "base_chan": "model_options", "focal_gamma": "loss_options",
                    "tversky_alpha": "loss_options", "tversky_beta": "loss_options"}


def given_fields(argv: list[str]) -> set[str]:
    """The :class:`labcode.config.TrainConfig` fields that the options written in ``argv`` set."""
    given = given_options(build_parser, argv)
    return {_FIELD_OF_OPTION.get(dest, dest) for dest in given} | ({"loss_options"} if "loss" in given else set())


def resumed_config(config, checkpoint: dict, given: set[str]):
    """On ``--resume``: the configuration saved in the checkpoint, with the fields of the options given now.

    The architecture stays the checkpoint's: model options given now are laid over the checkpoint's, and
    :func:`labcode.train.fit` refuses any that differ.
    """
    from labcode.config import TrainConfig

    saved = checkpoint.get("config", {})
    merged = config.to_dict()
    merged.update({key: value for key, value in saved.items()
                   if key in merged and key not in given and key not in ("resume", "command")})
    if "model_options" in given and isinstance(saved.get("model_options"), dict):
        merged["model_options"] = {**saved["model_options"], **config.model_options}
    return TrainConfig(**merged)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.train import fit

    set_threads(args.threads)
    config = config_from_args(args, argv)
    checkpoint = None
    if config.resume:  # read once: for its configuration here, for its state in fit
        from labcode.runtime.checkpoint import find_resume_checkpoint, load_checkpoint

        path = find_resume_checkpoint(config.resume)
        checkpoint = load_checkpoint(path, map_location="cpu")
        config = resumed_config(dataclasses.replace(config, resume=str(path)), checkpoint, given_fields(argv))
    result = fit(config, retrain=args.retrain, checkpoint=checkpoint)
    if result.rank != 0:  # under torchrun, rank 0 reports
        return 0
    if result.reused:
        print(f"{result.run_dir} holds the finished run of these options: nothing to train (--retrain trains it "
              "again)")
    if result.interrupted:
        print(f"interrupted by {result.signal} after {result.epochs_completed} completed epoch(s); state saved "
              f"to {result.last_checkpoint}")
        print(f"continue with: python -m labcode train --resume {result.last_checkpoint}")
    if result.best_epoch is not None:
        print(f"best validation macro F1 {result.best_macro_f1:.4f} at epoch {result.best_epoch + 1} "
              f"(run {result.run_dir})")
        print(f"best checkpoint: {result.best_checkpoint}")
    if result.onnx:
        diffs = ", ".join(f"{size}: {diff:.2e}" for size, diff in result.parity.items())
        print(f"ONNX model: {result.onnx} (max |ONNX - PyTorch| {diffs})")
    return 0
