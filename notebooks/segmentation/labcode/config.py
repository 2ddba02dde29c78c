# Your copy of the course library: labcode/config.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""A training run's configuration, and the parts it trains with, built from it.

:class:`TrainConfig` holds every choice of a run as plain values (the CLI builds it from its arguments, a notebook
builds it directly; :func:`labcode.train.fit` runs it). :func:`build_parts` turns it into a :class:`RunParts`: the
model, the data loaders, the loss (with class weights computed on the training areas when asked), AdamW with a linear
warm-up then a cosine decay (:func:`warmup_cosine`), and the mixed-precision setup of :func:`labcode.engine.amp_setup`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labcode.classes import NUM_CLASSES, TRAIN_AREAS
from labcode.distributed import shard_validation
from labcode.engine import amp_setup


@dataclass
class TrainConfig:
    """Every choice of a training run; plain values only, so that it can be saved inside checkpoints.

    Args:
        datadir: data set root; ``None`` uses :func:`labcode.data.default_datadir` (the generated data set).
        areas_train: training areas.
        areas_valid: validation areas; empty or ``None`` holds out about ``valid_ratio`` of the training images,
            whole rooms at a time (:func:`labcode.data.split_by_room`), so that no validation image shows a room
            seen in training. The validation images choose the best epoch: never give the test areas here.
        model, model_options: a name of :data:`labcode.models.MODELS` and its keyword options.
        loss, loss_options: a name of :data:`labcode.losses.LOSSES` and its keyword options.
        class_weights: ``"none"`` or a :data:`labcode.stats.WEIGHT_STRATEGIES` name, computed on the training
            areas and given to the loss as its ``weight``.
        img_size, batch_size, num_workers, augment: data loading.
        cache_dir: read the images from a cache made by ``python -m labcode prepare`` (:mod:`labcode.cache`).
        epochs, lr, weight_decay: AdamW for ``epochs``; the learning rate warms up linearly over the first
            ``warmup_ratio`` of the steps then follows a cosine down to ``lr * final_lr_ratio``.
        small, small_batches: quick check, only ``small_batches`` batches per epoch (training and validation).
        seed: seed of the generators, the validation split and the shuffling.
        logdir, run_name: the run directory is ``logdir/run_name`` (``run_name`` defaults to model and time).
        resume: checkpoint (or run directory holding ``last.pt``) to continue; ``model`` and ``model_options`` must
            describe the checkpoint's architecture (see :func:`labcode.checkpoint.check_same_architecture`).
        channels_last, amp, device: performance; ``device=None`` picks CUDA when present; ``amp`` uses mixed precision
            on CUDA and on CPUs with bfloat16 matrix units (see :func:`labcode.engine.amp_setup`).
        export_onnx: export the best model to ONNX at the end of the run (with a parity check).
        progress: tqdm bars.
        figure_items: validation images drawn in the prediction figure.
        figure_every: draw the prediction and confusion figures every this many epochs (and at the last one); they
            take about 0.6 s, a tenth of an epoch of the CPU pipeline.
        command: the command line that started the run, for the summary.
    """

    datadir: str | None = None
    areas_train: list[str] = field(default_factory=lambda: list(TRAIN_AREAS))
    areas_valid: list[str] | None = None
    valid_ratio: float = 0.2
    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "ce"
    loss_options: dict[str, Any] = field(default_factory=dict)
    class_weights: str = "none"
    img_size: int = 256
    batch_size: int = 8
    num_workers: int = 2
    augment: bool = True
    cache_dir: str | None = None
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    final_lr_ratio: float = 0.01
    small: bool = False
    small_batches: int = 4
    seed: int = 0
    logdir: str = "runs"
    run_name: str | None = None
    resume: str | None = None
    channels_last: bool = False
    amp: bool = True
    device: str | None = None
    export_onnx: bool = True
    progress: bool = True
    figure_items: int = 4
    figure_every: int = 1
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a dict of primitive values (JSON and ``weights_only`` friendly)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def result_fields(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields that only say where the run is written, how it reports or where it
        resumes (:data:`BOOKKEEPING_FIELDS`): two configurations with the same result fields train the same model
        from the same data."""
        return {key: value for key, value in self.to_dict().items() if key not in BOOKKEEPING_FIELDS}


#: :class:`TrainConfig` fields that change where a run is written and how it reports, never the model it trains.
BOOKKEEPING_FIELDS = ("logdir", "run_name", "resume", "progress", "figure_items", "figure_every", "command")


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine to ``final_ratio``, constant after the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_names(config: TrainConfig) -> None:
    """Fail fast on unknown registry names, before any data is read or generated."""
    from labcode.errors import unknown_name
    from labcode.losses import LOSSES
    from labcode.models import MODELS
    from labcode.stats import WEIGHT_STRATEGIES

    if config.model not in MODELS:
        raise unknown_name("model", config.model, list(MODELS))
    if config.loss not in LOSSES:
        raise unknown_name("loss", config.loss, list(LOSSES))
    if config.class_weights != "none" and config.class_weights not in WEIGHT_STRATEGIES:
        raise unknown_name("class-weight strategy", config.class_weights, ["none", *WEIGHT_STRATEGIES])


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
