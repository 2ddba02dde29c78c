"""The CPU recipe of notebook 5 and of the reference model, timed and scored: the whole training (``fit``: class
weights, epochs, validation, figures, ONNX export) on the default generated data set, then the held-out macro F1 on
areas 5a + 5b. Float32 by default, as on a CPU without bfloat16 matrix units, even where there are some (AMX).

    python -m benchmarks.bench_cpu_recipe [--repeats 3] [--amp] [--threads N] [--epochs E]

Each repeat is a fresh training (same seed); the table gives every run, then the medians. The load average of the
machine is printed before and after each run, and the fastest epoch beside the median one: on a shared machine other
jobs slow the training down, by several times when they keep the cores busy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks.common import machine, print_table
from labcode.engine import cpu_has_bf16_matmul


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def run_once(datadir, logdir: str, *, amp: bool, epochs: int | None, index: int) -> dict:
    """One training with the recipe, then its score on the test areas at the training size."""
    from labcode.classes import TEST_AREAS
    from labcode.infer import OnnxSegmenter
    from labcode.reference import recipe_config
    from labcode.scoring import evaluate_areas
    from labcode.train import fit

    overrides = {"epochs": epochs} if epochs else {}
    config = recipe_config(datadir, logdir=logdir, run_name=f"run{index}", amp=amp, progress=False, **overrides)
    started = time.perf_counter()
    trained = fit(config)
    seconds = time.perf_counter() - started
    tested = evaluate_areas(OnnxSegmenter(trained.onnx), datadir, list(TEST_AREAS), img_size=config.img_size,
                            progress=False)
    return {"seconds": seconds, "epochs": len(trained.epoch_times),
            "epoch_s": statistics.median(trained.epoch_times), "fastest_epoch_s": min(trained.epoch_times),
            "precision": trained.precision,
            "best_epoch": trained.best_epoch + 1, "valid_f1": trained.best_macro_f1,
            "test_macro_f1": tested["macro_f1"], "test_mean_iou": tested["mean_iou"], "images": tested["images"],
            "train_size": trained.train_size, "valid_size": trained.valid_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="trainings to run (default: 3)")
    parser.add_argument("--amp", action="store_true", help="allow bfloat16 autocast where the CPU has AMX")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's choice)")
    parser.add_argument("--epochs", type=int, default=None, help="change the recipe's epochs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from labcode.reference import CPU_RECIPE
    from labcode.synth import ensure_default_dataset

    datadir = ensure_default_dataset(progress=True)
    recipe = {**CPU_RECIPE, **({"epochs": args.epochs} if args.epochs else {})}
    print(f"CPU recipe: UNet base {recipe['model_options']['base_chan']}, {recipe['model_options']['num_blocks']} "
          f"blocks, {recipe['img_size']} px, batch {recipe['batch_size']}, {recipe['epochs']} epochs, "
          f"lr {recipe['lr']}, "
          f"{recipe['class_weights']} class weights; data {datadir}")
    print(f"machine: {machine()}; {os.cpu_count()} CPUs; AMX (bfloat16 matrix units): "
          f"{'yes' if cpu_has_bf16_matmul() else 'no'}; precision asked: {'amp' if args.amp else 'float32'}")
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as logdir:
        for index in range(args.repeats):
            before = load_average()
            result = run_once(datadir, logdir, amp=args.amp, epochs=args.epochs, index=index)
            runs.append(result)
            rows.append([index + 1, f"{result['seconds']:.0f}", result["precision"], result["epochs"],
                         f"{result['epoch_s']:.1f}", f"{result['fastest_epoch_s']:.1f}", result["best_epoch"],
                         f"{result['valid_f1']:.3f}",
                         f"{result['test_macro_f1']:.3f}", f"{result['test_mean_iou']:.3f}",
                         f"{before} -> {load_average()}"])
    first = runs[0]
    print(f"{first['train_size']} training / {first['valid_size']} validation images (whole rooms of areas "
          f"1, 2, 3, 4, 6); test: {first['images']} images of 5a + 5b at the training size")
    print_table(["run", "training s", "precision", "epochs", "median s/epoch", "fastest epoch s", "best epoch",
                 "valid macro F1",
                 "5a+5b macro F1", "5a+5b mIoU", "load average (1/5/15 min)"], rows)
    median = {key: statistics.median(r[key] for r in runs) for key in ("seconds", "test_macro_f1", "test_mean_iou")}
    print(f"median of {len(runs)}: training {median['seconds']:.0f} s, held-out macro F1 "
          f"{median['test_macro_f1']:.3f} (mIoU {median['test_mean_iou']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
