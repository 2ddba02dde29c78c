"""Inference latency and throughput: PyTorch eager vs ONNX Runtime, at 256x256 and 1080x1080, batch 1 and 8.

    python -m benchmarks.bench_infer [--model unet --base-chan 32 --num-blocks 4] [--sizes 256 1080] [--batches 1 8]

Both run the same weights (random: speed does not depend on them); ONNX Runtime uses the CUDA provider when a GPU is
there, PyTorch the same device.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import best_time, machine, print_table
from labcode.export import export_onnx
from labcode.infer import OnnxSegmenter
from labcode.models import build_model, count_parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--base-chan", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1080])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    options = {"base_chan": args.base_chan, "num_blocks": args.num_blocks} if args.model == "unet" else {}
    model = build_model(args.model, 14, **options).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx")
        session = OnnxSegmenter(onnx_path)
        model.to(device)
        for size in args.sizes:
            for batch in args.batches:
                x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
                xt = torch.from_numpy(x).to(device)

                def eager():
                    with torch.inference_mode():
                        out = model(xt)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    return out

                repeats = args.repeats if size * size * batch <= 4 * 1080 * 1080 else 1
                t_torch = best_time(eager, repeats=repeats)
                t_ort = best_time(lambda: session.logits(x), repeats=repeats)
                rows.append([f"{size}x{size}", batch, 1000 * t_torch, 1000 * t_ort, batch / t_torch, batch / t_ort,
                             t_ort / t_torch])
    print(f"inference, {args.model} ({count_parameters(model) / 1e6:.2f} M parameters, options {options}); "
          f"onnxruntime providers {session.providers}; {machine()}")
    print_table(["input", "batch", "eager ms", "onnxruntime ms", "eager img/s", "onnxruntime img/s",
                 "ort/eager latency"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
