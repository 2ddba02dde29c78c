"""Training-step throughput of the UNet at 256x256 (images/s): fp32, channels_last and bf16 autocast (on CUDA also
fp16 with a gradient scaler). ``labcode`` trains in bf16 on CPUs with bfloat16 matrix units (AMX) and in fp32
elsewhere (:func:`labcode.engine.cpu_has_bf16_matmul`). The bf16 rows say which hardware ran them: AMX, AVX512-BF16
dot products (e.g. AMD Zen 4: no AMX, yet bf16 runs natively), or neither (emulated, hence slow).

The last row is the seed lab's comparison: the handout's UNet (the same encoder and decoder, called in turn by its
wrapper, input sides multiples of ``2**num_blocks``) against labcode's, whose wrapper also pads any input size and crops
the logits back; both in fp32 with the default memory format, so ``x fp32`` is their ratio. Settings are timed in
interleaved rounds of ``--steps`` steps; each rate is the median over the rounds.

    python -m benchmarks.bench_train [--batch-size 8 --base-chan 32 --num-blocks 4 --steps 2 --rounds 3]
    python -m benchmarks.bench_train --img-size 128 --base-chan 16 --num-blocks 3   # the pipeline's CPU model
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from torch import nn

from benchmarks.common import cpu_flags, machine, paired_ratio, print_table
from labcode.engine import cpu_has_bf16_matmul
from labcode.losses import build_loss
from labcode.models import build_model, count_parameters


class HandoutUNet(nn.Module):
    """The lab handout's UNet: its wrapper calls the encoder then the decoder (no padding, no cropping)."""

    def __init__(self, num_classes: int, num_blocks: int, base_chan: int) -> None:
        super().__init__()
        unet = build_model("unet", num_classes, base_chan=base_chan, num_blocks=num_blocks)
        self.encoder, self.decoder = unet.encoder, unet.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(*self.encoder(x))  # (B, K, H, W) for H, W multiples of 2**num_blocks


def training_step(model, criterion, batch, *, device, dtype, channels_last: bool):
    """A function doing one optimisation step of ``model`` on ``batch`` with the given precision and layout."""
    images, targets = batch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext():
            loss = criterion(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def images_per_second(step, batch_size: int, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--base-chan", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per setting and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; rates are their medians")
    parser.add_argument("--no-handout", dest="handout", action="store_false",
                        help="leave out the comparison with the handout's UNet")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = [("fp32", torch.float32, False), ("fp32 channels_last", torch.float32, True)]
    if device.type == "cuda":
        settings += [("bf16 autocast channels_last", torch.bfloat16, True),
                     ("fp16 autocast + GradScaler channels_last", torch.float16, True)]
    else:
        hardware = "AMX" if cpu_has_bf16_matmul() else \
            "no AMX; avx512_bf16" if "avx512_bf16" in cpu_flags() else "no AMX: emulated"
        settings += [(f"bf16 autocast ({hardware})", torch.bfloat16, False),
                     (f"bf16 autocast channels_last ({hardware})", torch.bfloat16, True)]
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=generator).to(device),
             torch.randint(0, 14, (args.batch_size, args.img_size, args.img_size), generator=generator).to(device))
    criterion = build_loss("ce")
    models = {}
    for name, _, _ in settings:
        torch.manual_seed(0)
        models[name] = build_model("unet", 14, base_chan=args.base_chan, num_blocks=args.num_blocks)
    handout_name = "fp32, the handout's UNet (encoder then decoder, same layers)"
    if args.handout:
        torch.manual_seed(0)
        models[handout_name] = HandoutUNet(14, args.num_blocks, args.base_chan)
        settings.append((handout_name, torch.float32, False))
    steps = {}
    for name, dtype, channels_last in settings:
        steps[name] = training_step(models[name].to(device).train(), criterion, batch, device=device, dtype=dtype,
                                    channels_last=channels_last)
        steps[name]()  # warm-up (allocations, cuDNN autotuning)
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(images_per_second(step, args.batch_size, args.steps, device))
    fp32 = rates["fp32"]
    rows = [[name, statistics.median(r), 1000 * args.batch_size / statistics.median(r),
             paired_ratio(r, fp32)] for name, r in rates.items()]
    print(f"training step, UNet base_chan={args.base_chan} num_blocks={args.num_blocks} "
          f"({count_parameters(models['fp32']) / 1e6:.2f} M parameters), batch {args.batch_size} at {args.img_size}px, "
          f"median of {args.rounds} rounds of {args.steps} steps; {machine()}")
    print_table(["setting", "images/s", "ms/batch", "x fp32"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
