# Your copy of the course library: labcode/runtime/parts.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The parts a training run trains with, built from its :class:`labcode.config.TrainConfig`: the model, the data
loaders, the loss (with class weights computed on the training areas when asked), AdamW with a linear warm-up then a
cosine decay (:func:`warmup_cosine`), the mixed-precision setup of :func:`labcode.engine.amp_setup`, and the
DistributedDataParallel wrapper under torchrun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labcode.classes import NUM_CLASSES
from labcode.config import TrainConfig
from labcode.engine import amp_setup
from labcode.runtime.distributed import shard_validation


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine to ``final_ratio``, constant after the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _build_loss(config: TrainConfig, datadir: Path, device: torch.device) -> nn.Module:
    """The loss of ``config``, with class weights computed on the training areas when asked."""
    from labcode.losses import build_loss

    options = dict(config.loss_options)
    if config.class_weights != "none":
        from labcode.data import StanfordDataset
        from labcode.stats import class_histogram, class_weights

        counts = class_histogram(StanfordDataset(datadir, areas=config.areas_train), progress=config.progress)
        options["weight"] = torch.as_tensor(class_weights(counts, config.class_weights), dtype=torch.float32)
    return build_loss(config.loss, **options).to(device)


@dataclass
class RunParts:
    """What a run trains with, built once by :func:`build_parts`."""

    model: nn.Module
    net: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    model_name: str
    model_options: dict[str, Any]
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast_ctx: Any
    precision: str
    train_loader: Any
    valid_loader: Any
    max_batches: int | None


def build_parts(config: TrainConfig, device: torch.device, distributed: bool, resumed: dict | None) -> RunParts:
    """The model (the checkpoint's architecture when resuming), the loaders (validation sharded under torchrun), the
    loss, AdamW, its warm-up + cosine schedule and the mixed-precision setup of ``config`` on ``device``."""
    from labcode.data import default_datadir, get_dataloaders
    from labcode.models import build_model

    model_name = resumed["model_name"] if resumed else config.model
    model_options = dict(resumed.get("model_options", {})) if resumed else dict(config.model_options)
    model = build_model(model_name, NUM_CLASSES, **model_options).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    datadir = Path(config.datadir) if config.datadir else default_datadir()
    train_loader, valid_loader = get_dataloaders(
        datadir, config.areas_train, config.areas_valid, valid_ratio=config.valid_ratio, img_size=config.img_size,
        batch_size=config.batch_size, num_workers=config.num_workers, seed=config.seed, augment=config.augment,
        cache_dir=config.cache_dir, distributed=distributed,
    )
    if distributed:
        valid_loader = shard_validation(valid_loader)
    max_batches = config.small_batches if config.small else None
    steps_per_epoch = len(train_loader) if max_batches is None else min(len(train_loader), max_batches)
    total_steps = max(1, steps_per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = partial(warmup_cosine, total_steps=total_steps, final_ratio=config.final_lr_ratio,
                       warmup_steps=max(1, round(config.warmup_ratio * total_steps)))
    autocast_ctx, scaler, precision = amp_setup(device, config.amp)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    return RunParts(model=model, net=net, model_name=model_name, model_options=model_options,
                    criterion=_build_loss(config, datadir, device), optimizer=optimizer,
                    scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), scaler=scaler,
                    autocast_ctx=autocast_ctx, precision=precision, train_loader=train_loader,
                    valid_loader=valid_loader, max_batches=max_batches)
