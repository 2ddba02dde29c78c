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
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labcode.classes import NUM_CLASSES
from labcode.errors import LabError

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

    The scheduler, when given, is stepped after every optimizer step. ``should_stop`` is polled before each batch;
    when it returns ``True`` the epoch ends early and the result says ``interrupted``.

    Args:
        model, criterion, optimizer, loader, device: the usual suspects; ``criterion(logits, target)``.
        scheduler: learning-rate scheduler stepped once per batch.
        scaler: gradient scaler from :func:`amp_setup` (a disabled one is created when ``None``).
        autocast_ctx: factory of the autocast context wrapping the forward pass and the loss.
        max_batches: stop after this many batches (quick checks).
        progress: show a tqdm bar with the running loss.
        should_stop: polled before each batch; ``True`` interrupts the epoch.
        epoch: epoch number, used in messages.
        channels_last: move the images to the channels-last memory format.
        num_classes: number of classes of the confusion matrix.

    Shape:
        batches of ``(B, 3, H, W)`` float images and ``(B, H, W)`` int64 masks; logits ``(B, K, H, W)``.

    Returns:
        ``loss`` (mean over images), ``batches``, ``steps`` (optimizer steps taken), ``interrupted``, ``lr`` (after
        the last step) and the training metrics of :func:`metrics_summary`.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (the message names the epoch and batch).
    """
    from labcode.metrics import ConfusionMatrix

    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    confusion = ConfusionMatrix(num_classes)
    model.train()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    loss_sum, seen, batches, interrupted = 0.0, 0, 0, False
    bar = tqdm(islice(loader, total), total=total, desc=f"epoch {epoch} train", disable=not progress, leave=False,
               dynamic_ncols=True)
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
            raise NonFiniteLossError(
                f"training loss is {loss_value} at epoch {epoch}, batch {batch_index}: "
                "lower the learning rate, check the loss options or the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        confusion.update(logits.detach().float(), targets)
        loss_sum += loss_value * images.shape[0]
        seen += images.shape[0]
        batches += 1
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    bar.close()
    loss_sum, seen = _reduce_sums(confusion, loss_sum, seen, device)
    return {
        "loss": loss_sum / max(seen, 1),
        "batches": batches,
        "interrupted": interrupted,
        "lr": optimizer.param_groups[0]["lr"],
        **metrics_summary(confusion),
    }


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
        ``loss``, ``batches``, the metrics of :func:`metrics_summary`, ``confusion`` (``(K, K)`` int64 tensor, rows
        are targets) and, when ``keep_examples``, ``examples``: a dict of ``images`` ``uint8`` (N, H, W, 3),
        ``targets`` and ``preds`` ``int64`` (N, H, W) numpy arrays.
    """
    from labcode.metrics import ConfusionMatrix
    from labcode.transforms import denormalize

    confusion = ConfusionMatrix(num_classes)
    model.eval()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    loss_sum, seen, batches = 0.0, 0, 0
    kept: dict[str, list[np.ndarray]] = {"images": [], "targets": [], "preds": []}
    bar = tqdm(islice(loader, total), total=total, desc=f"epoch {epoch} valid", disable=not progress, leave=False,
               dynamic_ncols=True)
    for images, targets in bar:
        images, targets = _to_device(images, targets, device, channels_last)
        with autocast_ctx():
            logits = model(images)
            loss = criterion(logits, targets)
        logits = logits.float()
        confusion.update(logits, targets)
        loss_sum += loss.item() * images.shape[0]
        seen += images.shape[0]
        batches += 1
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        for i in range(images.shape[0]):
            if len(kept["images"]) >= keep_examples:
                break
            kept["images"].append(denormalize(images[i]))
            kept["targets"].append(targets[i].cpu().numpy())
            kept["preds"].append(logits[i].argmax(0).cpu().numpy())
    bar.close()
    loss_sum, seen = _reduce_sums(confusion, loss_sum, seen, device)
    result: dict[str, Any] = {
        "loss": loss_sum / max(seen, 1),
        "batches": batches,
        **metrics_summary(confusion),
        "confusion": confusion.matrix.detach().cpu().clone(),
    }
    if keep_examples:
        result["examples"] = {key: np.stack(values) if values else np.empty((0,)) for key, values in kept.items()}
    return result


def metrics_summary(confusion) -> dict[str, Any]:
    """Plain-number view of a :class:`labcode.metrics.ConfusionMatrix` (NaN marks a class absent on both sides).

    Returns:
        ``macro_f1``, ``miou``, ``accuracy`` (floats) and ``f1``, ``iou`` (lists of floats, one per class).
    """
    from labcode.metrics import f1_per_class, iou_per_class, macro_f1, mean_iou, pixel_accuracy

    matrix = confusion.matrix.detach().cpu()
    return {
        "macro_f1": float(macro_f1(matrix)),
        "miou": float(mean_iou(matrix)),
        "accuracy": float(pixel_accuracy(matrix)),
        "f1": [float(v) for v in f1_per_class(matrix)],
        "iou": [float(v) for v in iou_per_class(matrix)],
    }


def nan_to_none(value: Any) -> Any:
    """Replace NaN floats by ``None`` in nested dicts and lists, for strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, targets.to(device, non_blocking=True)


def _reduce_sums(confusion, loss_sum: float, seen: int, device: torch.device) -> tuple[float, int]:
    """Add the confusion matrix and the loss sums over the processes of ``torch.distributed`` (no-op otherwise)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return loss_sum, seen
    matrix = confusion.matrix.to(device)
    dist.all_reduce(matrix)
    confusion.matrix.copy_(matrix.to(confusion.matrix.device))
    sums = torch.tensor([loss_sum, float(seen)], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return float(sums[0]), int(sums[1])
