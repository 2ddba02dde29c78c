# Your copy of the course library: labcode/commands/pipeline.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode pipeline``: the whole lab in one command, on the offline data set.

Trains a UNet with the CPU recipe (the one of ``python -m labcode reference``, about 3 minutes on two idle cores) on
areas 1, 2, 3, 4 and 6, exports the best model to ONNX, tests it on areas 5a and 5b, segments one of their images, and
writes everything under ``<logdir>/<name>/``: the training run (TensorBoard events, checkpoints, ``best.onnx``),
``test_metrics.json``, ``inference.png`` (with ``inference_mask.png``) and ``pipeline.json`` with the numbers and
paths printed at the end. On a GPU, raise ``--epochs`` and ``--img-size``.

With ``--reference`` (what ``make lab`` runs) the model is the course's reference model instead of a new run: it is
trained into the reference folder when missing (exactly as ``python -m labcode reference``; ``--retrain`` trains it
again), copied into ``<logdir>/<name>/`` (``best.onnx``, ``best.pt``) and tested there; the training options do not
apply.

Protocol: the validation images, which pick the best epoch, are about ``--valid-ratio`` of the training areas'
images taken whole rooms at a time, so no validation image shows a room seen in training; the test areas (5a and 5b)
only measure the chosen model and never choose anything.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from labcode.classes import TEST_AREAS
from labcode.commands.common import (
    add_data_options,
    add_device_options,
    add_loss_options,
    add_model_options,
    add_optimisation_options,
    given_options,
    set_threads,
)
from labcode.commands.options import ArgumentParser, non_negative_int
from labcode.errors import LabError
from labcode.reference import CPU_RECIPE

#: Options that describe a training, refused with --reference (the reference has its recipe).
_TRAINING_OPTIONS = ("datadir", "areas_train", "valid_ratio", "model", "epochs", "img_size", "base_chan", "num_blocks",
                     "batch_size", "lr", "loss", "class_weights", "seed", "channels_last")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode pipeline", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true",
                        help="test the course's reference model (trained first if missing) instead of a new run")
    parser.add_argument("--retrain", action="store_true", help="with --reference: train the reference model again")
    parser.add_argument("--name", default="pipeline", help="directory under --logdir (default: pipeline)")
    parser.add_argument("--logdir", default="runs", help="parent directory (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <logdir>/<name>")
    add_data_options(parser, areas_train=CPU_RECIPE["areas_train"], valid_ratio=CPU_RECIPE["valid_ratio"],
                     img_size=CPU_RECIPE["img_size"], batch_size=CPU_RECIPE["batch_size"],
                     num_workers=CPU_RECIPE["num_workers"])
    parser.add_argument("--areas-test", "--areas_test", nargs="+", default=list(TEST_AREAS))
    parser.add_argument("--test-img-size", type=non_negative_int, default=None,
                        help="resize the test images to this size (default: the training size, the scale the model "
                        "saw in training; 0 keeps the native resolution)")
    add_model_options(parser, model=CPU_RECIPE["model"], **CPU_RECIPE["model_options"])
    add_loss_options(parser, loss=CPU_RECIPE["loss"], class_weights=CPU_RECIPE["class_weights"])
    add_optimisation_options(parser, epochs=CPU_RECIPE["epochs"], lr=CPU_RECIPE["lr"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep the default memory format (channels_last is faster on CPU and GPU)")
    add_device_options(parser)
    return parser


def training_config(args: argparse.Namespace):
    """The :class:`labcode.train.TrainConfig` of a new run: the CPU recipe with the options given."""
    from labcode.train import TrainConfig

    return TrainConfig(
        datadir=args.datadir, areas_train=args.areas_train, valid_ratio=args.valid_ratio, model=args.model,
        model_options={"base_chan": args.base_chan, "num_blocks": args.num_blocks} if args.model == "unet" else {},
        loss=args.loss, class_weights=args.class_weights, img_size=args.img_size, batch_size=args.batch_size,
        num_workers=args.num_workers, epochs=args.epochs, lr=args.lr, weight_decay=CPU_RECIPE["weight_decay"],
        warmup_ratio=CPU_RECIPE["warmup_ratio"], seed=args.seed, device=args.device,
        channels_last=args.channels_last, amp=args.amp, small=args.small, figure_every=CPU_RECIPE["figure_every"],
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.runtime.pipeline import run_pipeline

    if args.retrain and not args.reference:
        raise LabError("--retrain applies to --reference only")
    if args.reference:
        refused = sorted(given_options(build_parser, argv) & set(_TRAINING_OPTIONS))
        if refused:
            raise LabError("--reference tests the reference model, trained with its own recipe on the generated "
                           f"data set; leave out {', '.join('--' + name.replace('_', '-') for name in refused)}")
    set_threads(args.threads)
    result = run_pipeline(
        Path(args.logdir) / args.name, None if args.reference else training_config(args), retrain=args.retrain,
        reference_overrides={"amp": args.amp, "small": args.small, "device": args.device},
        areas_test=args.areas_test, test_img_size=args.test_img_size, num_workers=args.num_workers,
        overwrite=args.overwrite, progress=args.progress, on_step=print,
        command=shlex.join(["python", "-m", "labcode", "pipeline", *argv]),
    )
    if result["interrupted"]:
        print("interrupted: run the command again to train the reference model from the start" if result["reference"]
              else f"interrupted by {result['signal']}; resume the training with "
              f"python -m labcode train --resume {result['last_checkpoint']}")
        return 0
    print()
    print(report(result, args.logdir))
    return 0


def report(result: dict, logdir: str) -> str:
    """The lines printed at the end of a pipeline."""
    epochs, epoch_time = result["epochs"], result["seconds_per_epoch"]
    model_kind = "reference model" if result["reference"] else "training"
    tensorboard = Path(result["reference_model"]).parent if result["reference"] else logdir
    return "\n".join([
        f"pipeline done in {result['total_seconds']:.0f} s on {result['device']}: {result['run_dir']}",
        f"  {model_kind:<12} {epochs} epochs x {epoch_time:.1f} s, {result['train_size']} train / "
        f"{result['valid_size']} valid images (whole rooms), best valid macro F1 {result['best_macro_f1']:.4f}",
        f"  ONNX         {result['onnx']}",
        f"  test {'+'.join(result['test_areas']):<7} macro F1 {result['test_macro_f1']:.4f}, mIoU "
        f"{result['test_mean_iou']:.4f} ({result['test_metrics']})",
        f"  inference    {result['inference_figure']}",
        f"  TensorBoard  tensorboard --logdir {tensorboard}",
    ])
