"""Inference latency and throughput: PyTorch eager vs ONNX Runtime, at 256x256 and 1080x1080, batch 1 and 8.

    python -m benchmarks.bench_infer [--model unet --base-chan 32 --num-blocks 4] [--sizes 256 1080] [--batches 1 8]
                                     [--rounds 3] [--providers cpu cuda] [--threads N]

Both run the same weights (random: speed does not depend on them). Eager PyTorch runs on the GPU when there is one,
otherwise on the CPU; ONNX Runtime runs once per execution provider given (default: CUDA and CPU when a GPU is
there, CPU otherwise), with the session settings of :func:`labcode.infer.session_settings`, printed above the table.
Each input is timed in rounds, eager and every provider in turn within a round so that a busy spell of a shared
machine hits them alike; each latency is the median over the rounds, and each ratio the median of the per-round
ratios. Inputs above four 1080x1080 images get ``--big-rounds`` rounds (one by default: minutes on a CPU), eager's
first and then ONNX Runtime's (eager's buffers next to a full ONNX Runtime arena can exhaust a 24 GB machine). Each
input gets fresh sessions, whose arenas are released after it.
``--threads 1`` runs both on one thread: the comparison then hardly depends on what else the machine runs (with
more threads than free cores, eager PyTorch's OpenMP threads wait on each other far longer than ONNX Runtime's).
The exported graph is the plain one (``export_onnx``'s default) and, in rows marked ``folded``, the folded one
(``fold=True``, :class:`labcode.export.NearestUpsampleConv`).

Measured once, for scale (what the session settings of :func:`labcode.infer.session_settings` were chosen on): the
memory arena kept 4.2 GB after a batch of two 1080x1080 images for the 8.6 M-parameter UNet, 1.5 GB without it,
which cost 6-9 % more time at 256x256; on a shared two-core machine a 256x256 image took 152 ms with thread spinning
and 184 ms without in its quiet moments (alike under load); the folded graph was about 5-10 % faster than the plain
one at 256x256.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, paired_ratio, print_table
from labcode.export import export_onnx
from labcode.infer import OnnxSegmenter
from labcode.models import build_model, count_parameters

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--base-chan", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1080])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per input (after one warm-up)")
    parser.add_argument("--big-rounds", type=int, default=1, help="rounds for inputs above 4 x 1080 x 1080 pixels")
    parser.add_argument("--providers", nargs="+", choices=sorted(PROVIDERS), default=None,
                        help="ONNX Runtime providers to time (default: cuda and cpu with a GPU, else cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of both PyTorch and ONNX Runtime (default: PyTorch's and the physical cores)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    options = {"base_chan": args.base_chan, "num_blocks": args.num_blocks} if args.model == "unet" else {}
    model = build_model(args.model, 14, **options).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    providers = args.providers or (["cuda", "cpu"] if device.type == "cuda" else ["cpu"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"": export_onnx(model, Path(tmp) / "plain.onnx"),
                  " folded": export_onnx(model, Path(tmp) / "folded.onnx", fold=True)}
        columns = [f"{name}{graph}" for name in providers for graph in graphs]

        def open_sessions() -> dict[str, OnnxSegmenter]:
            opened = {f"{name}{graph}": OnnxSegmenter(path, providers=PROVIDERS[name], threads=args.threads)
                      for name in providers for graph, path in graphs.items()}
            for column, session in opened.items():
                wanted = PROVIDERS[column.split()[0]][0]
                if session.providers[0] != wanted:
                    raise SystemExit(f"onnxruntime could not start {wanted} (got {session.providers})")
            return opened

        settings = next(iter(open_sessions().values())).settings
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

                # Fresh sessions for each input: an ONNX Runtime arena keeps the memory of the largest input it saw.
                sessions = open_sessions()
                runs = {"eager": eager, **{name: (lambda s=s: s.logits(x)) for name, s in sessions.items()}}
                big = size * size * batch > 4 * 1080 * 1080
                rounds = args.big_rounds if big else args.rounds
                times = {name: [] for name in runs}
                if big:  # one after the other: eager's buffers and a full arena at once can exhaust the memory
                    for name, fn in runs.items():
                        fn()  # warm-up
                        times[name] = [seconds(fn) for _ in range(rounds)]
                else:
                    for fn in runs.values():  # warm-up: allocations, ONNX Runtime's memory plan for this shape
                        fn()
                    for _ in range(rounds):
                        for name, fn in runs.items():
                            times[name].append(seconds(fn))
                del sessions, runs
                eager_s = statistics.median(times["eager"])
                row = [f"{size}x{size}", batch, rounds, 1000 * eager_s, batch / eager_s]
                for name in columns:
                    ratio = paired_ratio(times[name], times["eager"])
                    row += [1000 * statistics.median(times[name]), batch / statistics.median(times[name]), ratio]
                rows.append(row)
    print(f"inference, {args.model} ({count_parameters(model) / 1e6:.2f} M parameters, options {options}), eager on "
          f"{device.type}; {machine()}")
    print("onnxruntime session settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    headers = ["input", "batch", "rounds", "eager ms", "eager img/s"]
    for name in columns:
        headers += [f"ort-{name} ms", f"ort-{name} img/s", f"ort-{name}/eager latency"]
    print_table(headers, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
