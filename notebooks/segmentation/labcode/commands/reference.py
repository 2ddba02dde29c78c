# Your copy of the course library: labcode/commands/reference.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode reference``: train the course's reference model (its "pretrained" UNet) and score it.

The handout provides a UNet trained on areas 1, 2, 3, 4 and 6 to evaluate on those areas and on 5a and 5b; this
command makes the course's own, on the generated data set, with the CPU recipe of ``labcode.reference`` (a UNet of
16 base channels and 3 blocks at 128 px, 12 epochs: about 3 minutes on two idle cores in float32). It writes the run
(``best.onnx``, ``best.pt``, TensorBoard events) and ``reference.json`` (scores on the training areas, on 5a, on 5b
and on both) into the reference folder, next to the generated data set, where notebooks 5 and 6 and the book's
figures look for it (``$LABCODE_REFERENCE_MODEL`` points them at another model). An existing reference is kept
unless ``--force``.

Protocol: training on areas 1, 2, 3, 4 and 6; a tenth of their images, whole rooms at a time, is the validation set
that picks the best epoch, so no validation image shows a room seen in training; areas 5a and 5b only test the chosen
model and never choose anything (the handout selects its model on 5a and then reports 5a, which flatters it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from labcode.commands.common import add_device_options, set_threads
from labcode.commands.options import ArgumentParser, non_negative_int, positive_int
from labcode.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode reference", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="train again even if the reference model exists")
    parser.add_argument("--datadir", default=None,
                        help="train on this data set instead of the generated one (needs --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: the reference folder next to the generated data set)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="change the recipe's number of epochs")
    parser.add_argument("--small", action="store_true", help="quick check: a few batches per epoch")
    parser.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=None,
                        help="loader worker processes (default: the recipe's, 2)")
    add_device_options(parser)
    return parser


def describe(summary: dict) -> str:
    """The lines printed about a reference run: where it is, how it was trained, its scores."""
    scores = summary["scores"]
    lines = [f"reference model: {summary['model']}",
             f"  trained in {summary['training_seconds']:.0f} s on {summary['device']} ({summary['precision']}), "
             f"{summary['train_size']} training / {summary['valid_size']} validation images, best epoch "
             f"{summary['best_epoch'] + 1} (validation macro F1 {summary['best_macro_f1']:.3f})"]
    for name, label in (("train", "training areas " + " ".join(scores["train"]["areas"])), ("5a", "area 5a"),
                        ("5b", "area 5b"), ("5a+5b", "areas 5a + 5b")):
        if name in scores:
            result = scores[name]
            lines.append(f"  {label:<28} macro F1 {result['macro_f1']:.3f}, mIoU {result['mean_iou']:.3f}, "
                         f"accuracy {result['pixel_accuracy']:.3f} ({result['images']} images)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from labcode.reference import is_complete, reference_dir, reference_info, train_reference

    if args.datadir is not None and args.out is None:
        raise LabError("--datadir needs --out: the default folder holds the reference model of the generated data set")
    out = args.out or reference_dir()
    if is_complete(out) and not args.force:
        print(f"the reference model is already in {out} (pass --force to train it again)")
        print(describe(reference_info(out)))
        return 0
    set_threads(args.threads)
    overrides = {key: value for key, value in (("epochs", args.epochs), ("num_workers", args.num_workers),
                                              ("device", args.device)) if value is not None}
    print(f"training the reference model into {out}")
    summary = train_reference(args.datadir, out, progress=args.progress, amp=args.amp, small=args.small,
                              command=shlex.join(["python", "-m", "labcode", "reference", *argv]), **overrides)
    if summary.get("interrupted"):
        print("interrupted: nothing was scored; run the command again to train the reference model from the start")
        return 1
    print(describe(summary))
    return 0
