# Your copy of the course library: labcode/commands/export.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode export``: export a training checkpoint to a single-file ONNX model and check it.

The graph takes images of any batch size, height and width. It is the network as written, or with ``--fold`` a
faster graph for serving (each nearest x2 upsampling + 3x3 convolution computed at the low resolution, see
:class:`labcode.export.NearestUpsampleConv`). After the export, onnxruntime and PyTorch are run on the same random
batches at two sizes and the largest difference of the logits is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labcode.commands.options import ArgumentParser, positive_float, positive_int
from labcode.errors import LabError


def parse_size(text: str) -> tuple[int, int]:
    """``"64x96"`` (height x width) or ``"64"`` (square) -> ``(64, 96)``."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 64x96, got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (best.pt or last.pt)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="ONNX file (default: checkpoint with .onnx)")
    parser.add_argument("--example-size", type=parse_size, default=(64, 64),
                        help="HEIGHTxWIDTH of the traced example input (default: 64x64)")
    parser.add_argument("--check-sizes", type=parse_size, nargs="+", default=[(64, 64), (45, 77)],
                        help="HEIGHTxWIDTH sizes of the parity check (default: 64x64 45x77)")
    parser.add_argument("--atol", type=positive_float, default=1e-3,
                        help="largest accepted |ONNX - PyTorch| (default: 1e-3)")
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--fold", action="store_true",
                        help="fold each nearest x2 upsampling + 3x3 conv into 2x2 convs + DepthToSpace (faster to "
                             "serve, same values)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.export import check_onnx_parity, export_onnx
    from labcode.runtime.checkpoint import load_model

    model, state = load_model(args.checkpoint)
    out = args.out or args.checkpoint.with_suffix(".onnx")
    if out.resolve() == args.checkpoint.resolve():
        raise LabError(f"--out {out} would overwrite the checkpoint")
    export_onnx(model, out, example_size=args.example_size, opset=args.opset, fold=args.fold,
                metadata={"model": state["model_name"], "checkpoint": str(args.checkpoint)})
    graph = "folded graph" if args.fold else "graph"
    print(f"exported {state['model_name']} from {args.checkpoint} to {out} ({graph}, "
          f"{out.stat().st_size / 1e6:.2f} MB)")
    diffs = check_onnx_parity(model, out, sizes=args.check_sizes, atol=args.atol)
    for size, diff in diffs.items():
        print(f"parity at {size}: max |ONNX - PyTorch| = {diff:.2e}")
    return 0
