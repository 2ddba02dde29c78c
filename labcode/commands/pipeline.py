"""``python -m labcode pipeline``: the whole lab in one command, on the offline data set.

Trains a small UNet on areas 1, 2, 3, 4 and 6 (a fifth of their images held out for validation), exports the best
model to ONNX, tests it on the held-out areas 5a and 5b, segments one held-out image, and writes everything under
``<logdir>/<name>/``: the training run (TensorBoard events, checkpoints, ``best.onnx``), ``test_metrics.json``,
``inference.png`` (with ``inference_mask.png``) and ``pipeline.json`` with the numbers and paths printed at the end.
The defaults take a few minutes on two CPU cores; on a GPU, raise ``--epochs`` and ``--img-size``.
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

#: Defaults tuned for two CPU cores (see the module docstring).
CPU_DEFAULTS = {"img_size": 128, "base_chan": 16, "num_blocks": 3, "epochs": 50, "batch_size": 8, "lr": 3e-3,
                "class_weights": "inverse_sqrt", "valid_ratio": 0.1, "figure_every": 5}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode pipeline", description=__doc__)
    parser.add_argument("--datadir", default=None, help="data set root (default: $LABCODE_DATADIR or the "
                        "generated data set)")
    parser.add_argument("--name", default="pipeline", help="directory under --logdir (default: pipeline)")
    parser.add_argument("--logdir", default="runs", help="parent directory (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <logdir>/<name>")
    parser.add_argument("--areas-train", "--areas_train", nargs="+", default=["1", "2", "3", "4", "6"])
    parser.add_argument("--areas-test", "--areas_test", nargs="+", default=["5a", "5b"])
    parser.add_argument("--valid-ratio", "--valid_ratio", type=open_ratio, default=CPU_DEFAULTS["valid_ratio"],
                        help="share of the training areas' images held out for validation (default: 0.1)")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--epochs", type=positive_int, default=CPU_DEFAULTS["epochs"])
    parser.add_argument("--img-size", "--img_size", type=image_side, default=CPU_DEFAULTS["img_size"])
    parser.add_argument("--base-chan", "--base_chan", type=positive_int, default=CPU_DEFAULTS["base_chan"])
    parser.add_argument("--num-blocks", "--num_blocks", type=positive_int, default=CPU_DEFAULTS["num_blocks"])
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=CPU_DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=positive_float, default=CPU_DEFAULTS["lr"])
    parser.add_argument("--loss", default="ce")
    parser.add_argument("--class-weights", "--class_weights", default=CPU_DEFAULTS["class_weights"],
                        help="class weights of the loss (default: inverse_sqrt; none to disable)")
    parser.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=2)
    parser.add_argument("--test-img-size", type=non_negative_int, default=None,
                        help="resize the test images to this size (default: --img-size, the scale the model saw "
                        "in training; 0 keeps the native resolution)")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.data import StanfordDataset, default_datadir
    from labcode.infer import OnnxSegmenter, evaluate_areas, format_metrics_table, segment_image_file
    from labcode.train import TrainConfig, fit

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = Path(args.logdir) / args.name
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise LabError(f"{out} already exists; choose another --name or pass --overwrite")
        shutil.rmtree(out)
    datadir = Path(args.datadir) if args.datadir else default_datadir()
    test_images = StanfordDataset(datadir, areas=args.areas_test)  # fails early on a missing test area

    print(f"[1/4] training {args.model} on areas {' '.join(args.areas_train)} of {datadir}")
    config = TrainConfig(
        datadir=str(datadir), areas_train=args.areas_train, valid_ratio=args.valid_ratio, model=args.model,
        model_options={"base_chan": args.base_chan, "num_blocks": args.num_blocks} if args.model == "unet" else {},
        loss=args.loss, class_weights=args.class_weights, img_size=args.img_size, batch_size=args.batch_size,
        num_workers=args.num_workers,
        epochs=args.epochs, lr=args.lr, seed=args.seed, logdir=args.logdir, run_name=args.name,
        device=args.device, channels_last=args.channels_last, amp=args.amp, small=args.small, progress=args.progress,
        figure_every=CPU_DEFAULTS["figure_every"],
        command=shlex.join(["python", "-m", "labcode", "pipeline", *argv]),
    )
    trained = fit(config)
    if trained["interrupted"]:
        print(f"interrupted by {trained['signal']}; resume the training with "
              f"python -m labcode train --resume {trained['last_checkpoint']}")
        return 0
    if not trained["onnx"]:
        raise LabError(f"the training in {out} produced no ONNX model")
    epoch_time = sum(trained["epoch_times"]) / max(1, len(trained["epoch_times"]))
    print(f"      best validation macro F1 {trained['best_macro_f1']:.4f} at epoch {trained['best_epoch'] + 1}, "
          f"{epoch_time:.1f} s per epoch")

    print(f"[2/4] exported {trained['onnx']}; max |ONNX - PyTorch|: "
          + ", ".join(f"{size} {diff:.1e}" for size, diff in trained["parity"].items()))
    segmenter = OnnxSegmenter(trained["onnx"])

    print(f"[3/4] testing on areas {' '.join(args.areas_test)} ({len(test_images)} images)")
    test_size = args.img_size if args.test_img_size is None else (args.test_img_size or None)
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
    print(f"  training     {summary['epochs']} epochs x {epoch_time:.1f} s, {trained['train_size']} train / "
          f"{trained['valid_size']} valid images, best valid macro F1 {trained['best_macro_f1']:.4f}")
    print(f"  ONNX         {trained['onnx']}")
    print(f"  test {'+'.join(args.areas_test):<7} macro F1 {tested['macro_f1']:.4f}, mIoU {tested['miou']:.4f} "
          f"({metrics_path})")
    print(f"  inference    {segmented['figure']}")
    print(f"  TensorBoard  tensorboard --logdir {args.logdir}")
    return 0
