"""Training-step throughput of the UNet at 256x256 (images/s): fp32, channels_last and bf16 autocast (on CUDA also
fp16 with a gradient scaler). On a CPU without bfloat16 matrix units (AMX) ``labcode`` trains in fp32
(:func:`labcode.engine.cpu_has_bf16_matmul`); the bf16 rows then show what autocast would give there: emulated and slow
without any bfloat16 instruction, sometimes faster than fp32 with AVX-512 BF16 (AMD Zen 4, for instance).

    python -m benchmarks.bench_train [--batch-size 8 --base-chan 32 --num-blocks 4 --steps 5]
    python -m benchmarks.bench_train --img-size 128 --base-chan 16 --num-blocks 3   # the pipeline's CPU model
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from benchmarks.common import machine, print_table
from labcode.engine import cpu_has_bf16_matmul
from labcode.losses import build_loss
from labcode.models import build_model, count_parameters


def images_per_second(model, criterion, batch, *, steps: int, device, dtype, channels_last: bool) -> float:
    images, targets = batch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = criterion(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()  # warm-up (allocations, cuDNN autotuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--base-chan", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = [("fp32", torch.float32, False), ("fp32 channels_last", torch.float32, True)]
    if device.type == "cuda":
        settings += [("bf16 autocast channels_last", torch.bfloat16, True),
                     ("fp16 autocast + GradScaler channels_last", torch.float16, True)]
    else:
        hardware = "AMX" if cpu_has_bf16_matmul() else "no AMX"
        settings += [(f"bf16 autocast ({hardware})", torch.bfloat16, False),
                     (f"bf16 autocast channels_last ({hardware})", torch.bfloat16, True)]
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=generator).to(device),
             torch.randint(0, 14, (args.batch_size, args.img_size, args.img_size), generator=generator).to(device))
    criterion = build_loss("ce")
    rows = []
    for name, dtype, channels_last in settings:
        torch.manual_seed(0)
        model = build_model("unet", 14, base_chan=args.base_chan, num_blocks=args.num_blocks).to(device).train()
        rate = images_per_second(model, criterion, batch, steps=args.steps, device=device, dtype=dtype,
                                 channels_last=channels_last)
        rows.append([name, rate, 1000 * args.batch_size / rate])
    print(f"training step, UNet base_chan={args.base_chan} num_blocks={args.num_blocks} "
          f"({count_parameters(model) / 1e6:.2f} M parameters), batch {args.batch_size} at {args.img_size}px; {machine()}")
    print_table(["setting", "images/s", "ms/batch"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
