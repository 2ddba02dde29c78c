"""``python -m labcode pipeline``: the whole lab in one command, on the offline data set.

Trains a UNet with the CPU recipe (the one of ``python -m labcode reference``, about 3 minutes on two idle cores) on areas
1, 2, 3, 4 and 6, exports the best model to ONNX, tests it on areas 5a and 5b, segments one of their images, and
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
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from labcode.commands.options import (ArgumentParser, image_side, non_negative_int, open_ratio, positive_float,
                                      positive_int, seed)
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
    parser.add_argument("--datadir", default=None, help="data set root (default: $LABCODE_DATADIR or the "
                        "generated data set)")
    parser.add_argument("--name", default="pipeline", help="directory under --logdir (default: pipeline)")
    parser.add_argument("--logdir", default="runs", help="parent directory (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <logdir>/<name>")
    parser.add_argument("--areas-train", "--areas_train", nargs="+", default=list(CPU_RECIPE["areas_train"]))
    parser.add_argument("--areas-test", "--areas_test", nargs="+", default=["5a", "5b"])
    parser.add_argument("--valid-ratio", "--valid_ratio", type=open_ratio, default=CPU_RECIPE["valid_ratio"],
                        help="share of the training areas' images held out for validation, whole rooms at a time "
                        f"(default: {CPU_RECIPE['valid_ratio']})")
    parser.add_argument("--model", default=CPU_RECIPE["model"])
    parser.add_argument("--epochs", type=positive_int, default=CPU_RECIPE["epochs"])
    parser.add_argument("--img-size", "--img_size", type=image_side, default=CPU_RECIPE["img_size"])
    parser.add_argument("--base-chan", "--base_chan", type=positive_int,
                        default=CPU_RECIPE["model_options"]["base_chan"])
    parser.add_argument("--num-blocks", "--num_blocks", type=positive_int,
                        default=CPU_RECIPE["model_options"]["num_blocks"])
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=CPU_RECIPE["batch_size"])
    parser.add_argument("--lr", type=positive_float, default=CPU_RECIPE["lr"])
    parser.add_argument("--loss", default=CPU_RECIPE["loss"])
    parser.add_argument("--class-weights", "--class_weights", default=CPU_RECIPE["class_weights"],
                        help=f"class weights of the loss (default: {CPU_RECIPE['class_weights']}; none to disable)")
    parser.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=CPU_RECIPE["num_workers"])
    parser.add_argument("--test-img-size", type=non_negative_int, default=None,
                        help="resize the test images to this size (default: the training size, the scale the model "
                        "saw in training; 0 keeps the native resolution)")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep the default memory format (channels_last is faster on CPU and GPU)")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="full precision, also on CUDA and on CPUs with bfloat16 matrix units (AMX)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="PyTorch CPU threads (default: PyTorch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--small", action="store_true", help="quick check: a few batches per epoch")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def _given(argv: list[str]) -> set[str]:
    """Destinations of the options written on the command line."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _train_new(args: argparse.Namespace, datadir: Path, argv: list[str]) -> dict | None:
    """Train a new run into <logdir>/<name>; what the rest of the pipeline needs, or None if interrupted."""
    from labcode.train import TrainConfig, fit

    print(f"[1/4] training {args.model} on areas {' '.join(args.areas_train)} of {datadir}")
    config = TrainConfig(
        datadir=str(datadir), areas_train=args.areas_train, valid_ratio=args.valid_ratio, model=args.model,
        model_options={"base_chan": args.base_chan, "num_blocks": args.num_blocks} if args.model == "unet" else {},
        loss=args.loss, class_weights=args.class_weights, img_size=args.img_size, batch_size=args.batch_size,
        num_workers=args.num_workers, epochs=args.epochs, lr=args.lr, weight_decay=CPU_RECIPE["weight_decay"],
        warmup_ratio=CPU_RECIPE["warmup_ratio"], seed=args.seed, logdir=args.logdir, run_name=args.name,
        device=args.device, channels_last=args.channels_last, amp=args.amp, small=args.small, progress=args.progress,
        figure_every=CPU_RECIPE["figure_every"], command=shlex.join(["python", "-m", "labcode", "pipeline", *argv]),
    )
    trained = fit(config)
    if trained["interrupted"]:
        print(f"interrupted by {trained['signal']}; resume the training with "
              f"python -m labcode train --resume {trained['last_checkpoint']}")
        return None
    if not trained["onnx"]:
        raise LabError(f"the training in {trained['run_dir']} produced no ONNX model")
    return {key: trained[key] for key in ("onnx", "device", "train_size", "valid_size", "epoch_times",
                                          "best_macro_f1", "best_epoch", "parity")} | {"img_size": args.img_size}


def _reference(args: argparse.Namespace, argv: list[str]) -> dict | None:
    """The course's reference model, trained first when missing; what the rest of the pipeline needs."""
    from labcode.reference import is_complete, read_scores, reference_dir, train_reference

    refused = sorted(_given(argv) & set(_TRAINING_OPTIONS))
    if refused:
        raise LabError("--reference tests the reference model, trained with its own recipe on the generated data "
                       f"set; leave out {', '.join('--' + name.replace('_', '-') for name in refused)}")
    folder = reference_dir()
    if is_complete(folder) and not args.retrain:
        print(f"[1/4] reference model found in {folder} (--retrain trains it again)")
        summary = read_scores(folder)
    else:
        print(f"[1/4] training the reference model into {folder}")
        summary = train_reference(None, folder, progress=args.progress, amp=args.amp, small=args.small,
                                  device=args.device, command=shlex.join(["python", "-m", "labcode", "pipeline", *argv]))
        if summary.get("interrupted"):
            print("interrupted: run the command again to train the reference model from the start")
            return None
    return {"onnx": summary["model"], "device": summary["device"], "train_size": summary["train_images"],
            "valid_size": summary["valid_images"], "epoch_times": summary["epoch_times"],
            "best_macro_f1": summary["best_valid_macro_f1"], "best_epoch": summary["best_epoch"],
            "parity": summary["parity"], "img_size": summary["eval_img_size"], "datadir": summary["datadir"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.data import StanfordDataset, default_datadir
    from labcode.infer import OnnxSegmenter, evaluate_areas, format_metrics_table, segment_image_file

    if args.retrain and not args.reference:
        raise LabError("--retrain applies to --reference only")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = Path(args.logdir) / args.name
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise LabError(f"{out} already exists; choose another --name or pass --overwrite")
        shutil.rmtree(out)
    if args.reference:
        trained = _reference(args, argv)
        datadir = Path(trained["datadir"]) if trained else None
    else:
        datadir = Path(args.datadir) if args.datadir else default_datadir()
        StanfordDataset(datadir, areas=args.areas_test)  # fails early on a missing test area
        trained = _train_new(args, datadir, argv)
    if trained is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    reference_model = None
    if args.reference:  # a copy beside the results, where a training run of the pipeline leaves its model
        reference_model = trained["onnx"]
        for name in ("best.onnx", "best.pt"):
            shutil.copy2(Path(reference_model).with_name(name), out / name)
        trained["onnx"] = str(out / "best.onnx")
    test_images = StanfordDataset(datadir, areas=args.areas_test)
    epoch_time = sum(trained["epoch_times"]) / max(1, len(trained["epoch_times"]))
    print(f"      best validation macro F1 {trained['best_macro_f1']:.4f} at epoch {trained['best_epoch'] + 1}, "
          f"{epoch_time:.1f} s per epoch")

    print(f"[2/4] exported {trained['onnx']}; max |ONNX - PyTorch|: "
          + ", ".join(f"{size} {diff:.1e}" for size, diff in trained["parity"].items()))
    segmenter = OnnxSegmenter(trained["onnx"])

    print(f"[3/4] testing on areas {' '.join(args.areas_test)} ({len(test_images)} images)")
    test_size = trained["img_size"] if args.test_img_size is None else (args.test_img_size or None)
    tested = evaluate_areas(segmenter, datadir, args.areas_test, img_size=test_size,
                            num_workers=args.num_workers, progress=args.progress)
    metrics_path = out / "test_metrics.json"
    metrics_path.write_text(json.dumps(tested, indent=2))
    print(format_metrics_table(tested))

    image_path = test_images.files[0].rgb
    print(f"[4/4] segmenting {image_path.name}")
    segmented = segment_image_file(segmenter, image_path, out / "inference.png", max_size=test_size)

    summary = {
        "run_dir": str(out),
        "datadir": str(datadir),
        "reference": args.reference,
        "reference_model": reference_model,
        "device": trained["device"],
        "train_images": trained["train_size"],
        "valid_images": trained["valid_size"],
        "epochs": len(trained["epoch_times"]),
        "seconds_per_epoch": epoch_time,
        "best_valid_macro_f1": trained["best_macro_f1"],
        "best_epoch": trained["best_epoch"],
        "onnx": trained["onnx"],
        "parity": trained["parity"],
        "test_areas": args.areas_test,
        "test_macro_f1": tested["macro_f1"],
        "test_miou": tested["miou"],
        "test_metrics": str(metrics_path),
        "inference_figure": segmented["figure"],
        "inference_mask": segmented["mask"],
        "total_seconds": time.perf_counter() - started,
    }
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print()
    print(f"pipeline done in {summary['total_seconds']:.0f} s on {trained['device']}: {out}")
    model_kind = "reference model" if args.reference else "training"
    print(f"  {model_kind:<12} {summary['epochs']} epochs x {epoch_time:.1f} s, {trained['train_size']} train / "
          f"{trained['valid_size']} valid images (whole rooms), best valid macro F1 {trained['best_macro_f1']:.4f}")
    print(f"  ONNX         {trained['onnx']}")
    print(f"  test {'+'.join(args.areas_test):<7} macro F1 {tested['macro_f1']:.4f}, mIoU {tested['miou']:.4f} "
          f"({metrics_path})")
    print(f"  inference    {segmented['figure']}")
    print(f"  TensorBoard  tensorboard --logdir {Path(reference_model).parent if args.reference else args.logdir}")
    return 0
