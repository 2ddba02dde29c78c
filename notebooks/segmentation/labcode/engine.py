# Your copy of the course library: labcode/engine.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""One epoch of training and one pass of evaluation, plus the single mixed-precision setup they share.

Both loops are plain functions taking explicit arguments and returning a dict of numbers (see
:func:`labcode.train.fit` for the loop over epochs). Mixed precision has one code path: ``autocast_ctx()`` around
the forward pass and a ``GradScaler`` around the backward pass, built once by :func:`amp_setup`; where mixed precision
does not pay (a CPU without bfloat16 matrix units) both are built disabled, so the same lines run everywhere.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from itertools import islice
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labcode.classes import NUM_CLASSES
from labcode.errors import LabError
from labcode.metrics import ConfusionMatrix
from labcode.runtime.distributed import all_reduce_sums
from labcode.runtime.progress import progress_bar

AutocastFactory = Callable[[], AbstractContextManager]


class NonFiniteLossError(LabError):
    """The training loss became NaN or infinite."""


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX tiles).

    There, bfloat16 autocast about halves the time of a small UNet's training step (122 instead of 237 ms for a batch
    of 8 at 128 px on two cores with channels_last, see ``benchmarks/bench_train.py``). Elsewhere its speed depends on
    the CPU (emulated and slower than float32 without any bfloat16 instruction; faster on some CPUs with AVX-512 BF16
    dot products), so labcode keeps float32 there, and the course's CPU recipe is timed in float32.
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def amp_setup(device: torch.device, enabled: bool = True,
              cpu_bf16: bool | None = None) -> tuple[AutocastFactory, torch.amp.GradScaler, str]:
    """Choose the mixed-precision mode once for a device.

    On CUDA with ``enabled``: bfloat16 when the GPU supports it (no scaling needed), float16 with a gradient scaler
    otherwise. On the CPU with ``enabled``: bfloat16 (no scaler) when ``cpu_bf16``, which defaults to
    :func:`cpu_has_bf16_matmul`. Anywhere else: full precision, with the autocast context and the scaler both disabled.

    Returns:
        ``(autocast_ctx, scaler, name)``: a zero-argument factory of the autocast context, the ``GradScaler`` and
        the precision's name (``"bf16"``, ``"fp16"`` or ``"fp32"``).
    """
    if device.type == "cpu":
        use_bf16 = enabled and (cpu_has_bf16_matmul() if cpu_bf16 is None else cpu_bf16)
        autocast_ctx = partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16, enabled=use_bf16)
        return autocast_ctx, torch.amp.GradScaler("cpu", enabled=False), "bf16" if use_bf16 else "fp32"
    use_amp = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast_ctx = partial(torch.autocast, device_type=device.type, dtype=dtype, enabled=use_amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and dtype == torch.float16)
    name = ("bf16" if dtype == torch.bfloat16 else "fp16") if use_amp else "fp32"
    return autocast_ctx, scaler, name


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    autocast_ctx: AutocastFactory = nullcontext,
    max_batches: int | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    epoch: int = 0,
    channels_last: bool = False,
    num_classes: int = NUM_CLASSES,
) -> dict[str, Any]:
    """Train ``model`` for one pass over ``loader`` (or its first ``max_batches`` batches).

    Args:
        model, criterion, optimizer, loader, device: the usual suspects; ``criterion(logits, target)``.
        scheduler: learning-rate scheduler stepped after every optimizer step.
        scaler: gradient scaler from :func:`amp_setup` (a disabled one is created when ``None``).
        autocast_ctx: factory of the autocast context wrapping the forward pass and the loss.
        max_batches: stop after this many batches (quick checks).
        progress: show a tqdm bar with the running loss.
        should_stop: polled before each batch; ``True`` ends the epoch early, and the result says ``interrupted``.
        epoch: epoch number, used in messages.
        channels_last: move the images to the channels-last memory format.
        num_classes: number of classes of the confusion matrix.

    Shape:
        batches of ``(B, 3, H, W)`` float images and ``(B, H, W)`` int64 masks; logits ``(B, K, H, W)``.

    Returns:
        ``loss`` (mean over images), ``batches``, ``interrupted``, ``lr`` (after the last step) and the training
        metrics of :meth:`labcode.metrics.ConfusionMatrix.summary`.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (the message names the epoch and batch).
    """
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    confusion, running, interrupted = ConfusionMatrix(num_classes), _RunningLoss(), False
    model.train()
    bar = _progress_bar(loader, max_batches, f"epoch {epoch} train", progress)
    for batch_index, (images, targets) in enumerate(bar):
        if should_stop is not None and should_stop():
            interrupted = True
            break
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast_ctx():
            logits = model(images)  # (B, K, H, W)
            loss = criterion(logits, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"training loss is {loss_value} at epoch {epoch}, batch {batch_index}: "
                                     "lower the learning rate, check the loss options or the data")
        _optimizer_step(loss, optimizer, scaler, scheduler)
        confusion.update(logits.detach().float(), targets)
        bar.set_postfix(loss=f"{running.add(loss_value, images.shape[0]):.4f}")
    bar.close()
    return {**running.reduced(device), "interrupted": interrupted, "lr": optimizer.param_groups[0]["lr"],
            **confusion.all_reduce(device).summary()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    autocast_ctx: AutocastFactory = nullcontext,
    max_batches: int | None = None,
    progress: bool = True,
    epoch: int = 0,
    channels_last: bool = False,
    num_classes: int = NUM_CLASSES,
    keep_examples: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model`` over ``loader``: mean loss and metrics of the confusion matrix of the whole pass.

    Under ``torch.distributed`` the sums are added over the processes, so each one gets the metrics of the union of
    their shards.

    Args:
        model, criterion, loader, device, autocast_ctx, max_batches, progress, epoch, channels_last, num_classes:
            as in :func:`train_one_epoch`.
        keep_examples: keep this many images of the first batches, with targets and predictions, for figures.

    Returns:
        ``loss``, ``batches``, the metrics of :meth:`labcode.metrics.ConfusionMatrix.summary`, ``confusion``
        (``(K, K)`` int64 tensor, rows are targets) and, when ``keep_examples``, ``examples``: a dict of ``images``
        ``uint8`` (N, H, W, 3), ``targets`` and ``preds`` ``int64`` (N, H, W) numpy arrays.
    """
    confusion, running = ConfusionMatrix(num_classes), _RunningLoss()
    kept = _Examples(keep_examples)
    model.eval()
    bar = _progress_bar(loader, max_batches, f"epoch {epoch} valid", progress)
    for images, targets in bar:
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast_ctx():
            logits = model(images)
            loss = criterion(logits, targets)
        logits = logits.float()
        confusion.update(logits, targets)
        bar.set_postfix(loss=f"{running.add(loss.item(), images.shape[0]):.4f}")
        kept.add(images, targets, logits)
    bar.close()
    confusion.all_reduce(device)
    result = {**running.reduced(device), **confusion.summary(), "confusion": confusion.matrix.detach().cpu().clone()}
    if keep_examples:
        result["examples"] = kept.arrays()
    return result


def _optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """Backward pass through the (possibly disabled) gradient scaler, one optimizer step, one scheduler step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()


class _RunningLoss:
    """The loss summed over the images of a pass, and the batches seen."""

    def __init__(self) -> None:
        self.loss_sum, self.seen, self.batches = 0.0, 0, 0

    def add(self, loss_value: float, images: int) -> float:
        """Count a batch whose mean loss is ``loss_value``; return the running mean over images."""
        self.loss_sum += loss_value * images
        self.seen += images
        self.batches += 1
        return self.loss_sum / self.seen

    def reduced(self, device: torch.device) -> dict[str, Any]:
        """``loss`` (mean over the images of every process) and ``batches`` (of this process)."""
        loss_sum, seen = all_reduce_sums([self.loss_sum, float(self.seen)], device)
        return {"loss": loss_sum / max(seen, 1), "batches": self.batches}


class _Examples:
    """The first ``limit`` images of an evaluation pass with their targets and predictions, for figures."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: dict[str, list[np.ndarray]] = {"images": [], "targets": [], "preds": []}

    def add(self, images: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        from labcode.transforms import denormalize

        for i in range(min(images.shape[0], self.limit - len(self.kept["images"]))):
            self.kept["images"].append(denormalize(images[i]))
            self.kept["targets"].append(targets[i].cpu().numpy())
            self.kept["preds"].append(logits[i].argmax(0).cpu().numpy())

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: np.stack(values) if values else np.empty((0,)) for key, values in self.kept.items()}


def _progress_bar(loader: DataLoader, max_batches: int | None, desc: str, progress: bool) -> tqdm:
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    return progress_bar(islice(loader, total), total=total, desc=desc, disable=not progress, leave=False,
                        dynamic_ncols=True)


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, targets.to(device, non_blocking=True)
