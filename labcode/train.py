"""A whole training run: data, model, loss, optimiser, schedule, logging, checkpoints, best model and its ONNX export.

:class:`TrainConfig` holds every choice of a run (the CLI builds it from its arguments, a notebook builds it
directly); :func:`fit` runs it and returns the best validation metrics with the paths of what it wrote. A run writes
into ``<logdir>/<run_name>/``:

- ``events.out.tfevents.*``: TensorBoard scalars (losses, macro F1, per-class F1 and IoU, learning rate, epoch
  time), figures (validation predictions, confusion matrix) and the summary text;
- ``summary.md``: command, configuration, git commit, device, data set sizes and model summary;
- ``history.json``: one entry of metrics per completed epoch;
- ``last.pt``: the full training state after each epoch (what ``resume`` reads);
- ``best.pt`` and ``best.onnx``: the weights with the best validation macro F1, and their ONNX export.

A new run that fails (an error, not a preemption) before its first checkpoint removes what it wrote, so that a
run directory always holds a checkpoint to resume or to use.

Preemption: SIGTERM and SIGINT (a cluster preempting the job, or Ctrl-C) stop the run at the next batch; the current
weights, optimiser, schedule and generator states are saved to ``last.pt`` and :func:`fit` returns with
``interrupted=True``. Resuming restarts the interrupted epoch from its first batch, starting from the weights saved
at the interruption; the schedule keeps counting its steps, so it reaches its end that many steps earlier.
Multi-GPU training goes through ``torchrun`` (``WORLD_SIZE > 1`` selects DistributedDataParallel); only rank 0
logs, saves and exports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from labcode.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from labcode.classes import CLASSES, NUM_CLASSES
from labcode.engine import amp_setup, evaluate, nan_to_none, train_one_epoch
from labcode.errors import LabError
from labcode.reference import TEST_AREAS, TRAIN_AREAS

logger = logging.getLogger(__name__)

#: Areas the course trains on by default; 5a and 5b (``TEST_AREAS``) are kept for testing, as for the course's
#: reference model: they measure a final model and must not choose it.
DEFAULT_TRAIN_AREAS: tuple[str, ...] = TRAIN_AREAS


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
            describe the checkpoint's architecture (see :func:`check_same_architecture`).
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
    areas_train: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_AREAS))
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


# --------------------------------------------------------------------------------------------------------------------
# Building blocks of a run
# --------------------------------------------------------------------------------------------------------------------

def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Learning-rate factor at ``step``: linear warm-up to 1, then cosine to ``final_ratio``, constant after the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the code (``+dirty`` when it has uncommitted changes), or ``"unknown"``."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


class StopSignal:
    """Turns SIGTERM and SIGINT into a flag polled between batches (installed only in the main thread).

    A second signal of the same run restores the default behaviour and raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def requested(self) -> bool:
        return self.signum is not None


def _distributed_env() -> tuple[bool, int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return world_size > 1, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _choose_device(config: TrainConfig, distributed: bool, local_rank: int) -> torch.device:
    if config.device is not None:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LabError(f"--device {config.device}: CUDA is not available on this machine")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _check_names(config: TrainConfig) -> None:
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


def _reseed_shuffling(loader, seed: int, epoch: int) -> None:
    """Make each epoch's order a function of (seed, epoch) only, so that a resumed run sees the same order."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif isinstance(getattr(sampler, "generator", None), torch.Generator):
        sampler.generator.manual_seed(seed * 100_003 + epoch)


def _shard_validation(loader):
    """Validation loader over this process's share of the validation set (DistributedSampler, no shuffling)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=DistributedSampler(loader.dataset,
                      shuffle=False), num_workers=loader.num_workers, pin_memory=loader.pin_memory)


def find_resume_checkpoint(resume: str | Path) -> Path:
    """The checkpoint named by ``resume``: the file itself, or ``last.pt`` of a run directory."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def _run_dir(config: TrainConfig, is_main: bool) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from (``None`` for a new run)."""
    if config.resume:
        resume = find_resume_checkpoint(config.resume)
        return resume.parent, resume
    name = config.run_name or f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.logdir) / name
    if is_main and (run_dir / "last.pt").exists():
        raise LabError(f"{run_dir} already holds a training run; resume it with --resume or choose another "
                       "--run-name")
    return run_dir, None


def check_same_architecture(config: TrainConfig, resumed: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume a checkpoint with another model or other model options than ``config`` asks for.

    The network is rebuilt from the checkpoint, so an architecture given now would be silently ignored while the
    run's summary and saved configuration recorded it. Options that do not change the network (epochs, learning
    rate, ...) may change.

    Raises:
        LabError: the model name or model options differ; the message lists every difference.
    """
    from labcode.models import model_options_with_defaults

    saved_name = resumed.get("model_name")
    if config.model != saved_name:
        raise LabError(f"--resume {path}: the checkpoint holds a {saved_name} model but this run asks for "
                       f"{config.model}; the architecture cannot change on resume (leave --model out to continue "
                       "the checkpoint's, or start a new run)")
    saved = model_options_with_defaults(saved_name, resumed.get("model_options", {}))
    wanted = model_options_with_defaults(config.model, config.model_options)
    differences = [f"{key} {wanted[key]} (checkpoint: {saved[key]})" for key in wanted if wanted[key] != saved[key]]
    if differences:
        raise LabError(f"--resume {path}: the architecture cannot change on resume, but this run asks for "
                       f"{'; '.join(differences)}; leave these options out to continue the checkpoint's, or start "
                       "a new run")


def _write_summary(path: Path, config: TrainConfig, *, commit: str, device: str, precision: str, model_text: str,
                   sizes: dict[str, int], world_size: int) -> str:
    lines = [
        f"# Training run {path.parent.name}",
        "",
        f"- command: `{config.command or ' '.join(sys.argv)}`",
        f"- git commit: {commit}",
        f"- device: {device} ({precision}), processes: {world_size}",
        f"- training images: {sizes['train']}, validation images: {sizes['valid']}",
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2),
        "```",
        "",
        "## Model",
        "",
        "```",
        model_text,
        "```",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def _log_epoch(writer, epoch: int, train: dict[str, Any], valid: dict[str, Any], epoch_time: float,
               figure_items: int, figures: bool) -> None:
    from labcode.viz import plot_confusion_matrix, plot_predictions

    for split, result in (("train", train), ("valid", valid)):
        writer.add_scalar(f"loss/{split}", result["loss"], epoch)
        writer.add_scalar(f"macro_f1/{split}", result["macro_f1"], epoch)
        writer.add_scalar(f"miou/{split}", result["miou"], epoch)
        for name, f1, iou in zip(CLASSES, result["f1"], result["iou"]):
            writer.add_scalar(f"f1_{split}/{name}", f1, epoch)
            writer.add_scalar(f"iou_{split}/{name}", iou, epoch)
    writer.add_scalar("lr", train["lr"], epoch)
    writer.add_scalar("epoch_time_s", epoch_time, epoch)
    examples = valid.get("examples")
    if figures:
        if examples is not None and len(examples["images"]):
            writer.add_figure("valid/predictions", plot_predictions(examples["images"], examples["targets"],
                                                                    examples["preds"], max_items=figure_items), epoch)
        writer.add_figure("valid/confusion_matrix", plot_confusion_matrix(valid["confusion"]), epoch)
    writer.flush()


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key not in ("confusion", "examples")}


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class _Parts:
    """What a run trains with, built once by :func:`_build`."""

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


@dataclass
class _Progress:
    """What changes along a run and goes into checkpoints."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _build(config: TrainConfig, device: torch.device, distributed: bool, resumed: dict | None) -> _Parts:
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
        valid_loader = _shard_validation(valid_loader)
    max_batches = config.small_batches if config.small else None
    steps_per_epoch = len(train_loader) if max_batches is None else min(len(train_loader), max_batches)
    total_steps = max(1, steps_per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = partial(warmup_cosine, total_steps=total_steps, final_ratio=config.final_lr_ratio,
                       warmup_steps=max(1, round(config.warmup_ratio * total_steps)))
    autocast_ctx, scaler, precision = amp_setup(device, config.amp)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    return _Parts(model=model, net=net, model_name=model_name, model_options=model_options,
                  criterion=_build_loss(config, datadir, device), optimizer=optimizer,
                  scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), scaler=scaler,
                  autocast_ctx=autocast_ctx, precision=precision, train_loader=train_loader,
                  valid_loader=valid_loader, max_batches=max_batches)


def _restore(parts: _Parts, resumed: dict) -> _Progress:
    """Load a checkpoint's training state into ``parts``; return where the run stood."""
    parts.model.load_state_dict(resumed["model"])
    parts.optimizer.load_state_dict(resumed["optimizer"])
    parts.scheduler.load_state_dict(resumed["scheduler"])
    if resumed.get("scaler"):
        parts.scaler.load_state_dict(resumed["scaler"])
    set_rng_state(resumed["rng"])
    return _Progress(epoch=int(resumed["epoch"]), best_score=float(resumed["best_score"]),
                     best_epoch=int(resumed["best_epoch"]), best_metrics=dict(resumed.get("best_metrics", {})),
                     history=list(resumed.get("history", [])))


def _state(parts: _Parts, progress: _Progress, config: TrainConfig, *, interrupted: bool,
           full: bool = True) -> dict[str, Any]:
    """Checkpoint contents (see :mod:`labcode.checkpoint`); ``full=False`` leaves out the optimisation state."""
    state = {
        "epoch": progress.epoch, "model": parts.model.state_dict(), "best_score": progress.best_score,
        "best_epoch": progress.best_epoch, "best_metrics": progress.best_metrics, "history": progress.history,
        "interrupted": interrupted, "model_name": parts.model_name, "model_options": parts.model_options,
        "num_classes": NUM_CLASSES, "config": config.to_dict(),
    }
    if full:
        state.update(optimizer=parts.optimizer.state_dict(), scheduler=parts.scheduler.state_dict(),
                     scaler=parts.scaler.state_dict(), rng=rng_state())
    return state


def _open_log(config: TrainConfig, parts: _Parts, run_dir: Path, device: torch.device, world_size: int,
              start_epoch: int):
    """TensorBoard writer of the run, after writing the summary file (also logged as text)."""
    from torch.utils.tensorboard import SummaryWriter

    from labcode.models import model_summary

    run_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(run_dir))
    summary = _write_summary(
        run_dir / "summary.md", config, commit=git_commit(), device=str(device), precision=parts.precision,
        model_text=model_summary(parts.model, (1, 3, config.img_size, config.img_size)), world_size=world_size,
        sizes={"train": len(parts.train_loader.dataset), "valid": len(parts.valid_loader.dataset)},
    )
    writer.add_text("summary", summary.replace("\n", "  \n"), start_epoch)
    return writer


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train a model as described by ``config``; keep, save and export the best one by validation macro F1.

    Returns:
        ``rank`` (of this process under torchrun, else 0); ``run_dir``, ``best_checkpoint``, ``last_checkpoint``,
        ``onnx`` (paths as strings, ``None`` when not written); ``best_macro_f1``, ``best_epoch``, ``best_metrics`` (validation metrics of the best epoch),
        ``parity`` (ONNX vs PyTorch max abs difference per size), ``history`` (metrics per epoch),
        ``epoch_times`` (of this call), ``epochs_completed``, ``interrupted`` and ``signal``, ``device``,
        ``precision``, ``train_size``, ``valid_size``.

    Raises:
        LabError: bad configuration or data (the message names the argument or file);
        engine.NonFiniteLossError: the loss diverged (the message names the epoch and batch).
    """
    distributed, rank, local_rank = _distributed_env()
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    is_main = rank == 0
    log = logger.info if is_main else logger.debug  # one process reports
    device = _choose_device(config, distributed, local_rank)
    run_dir, resume_path = _run_dir(config, is_main)
    _check_names(config)
    chosen_on_test = sorted(set(config.areas_valid or ()) & set(TEST_AREAS))
    if chosen_on_test:
        log("warning: validating on the test area(s) %s: the best epoch is chosen on them, so their scores will be "
            "optimistic; the course validates on rooms of the training areas (leave --areas-valid out)",
            ", ".join(chosen_on_test))
    seed_everything(config.seed + rank)
    resumed = load_checkpoint(resume_path, map_location="cpu") if resume_path else None
    if resumed:
        check_same_architecture(config, resumed, resume_path)
    parts = _build(config, device, distributed, resumed)
    progress = _Progress()
    if resumed:
        progress = _restore(parts, resumed)
        log("resuming %s at epoch %d (best macro F1 %.4f at epoch %d)", resume_path, progress.epoch + 1,
                    progress.best_score, progress.best_epoch + 1)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    new_dirs = [path for path in (run_dir, *run_dir.parents) if not path.exists()]  # deepest first
    old_files = {path.name for path in run_dir.iterdir()} if run_dir.is_dir() else set()
    writer = None
    epoch_times: list[float] = []
    interrupted = finished = False
    try:
        if is_main:
            writer = _open_log(config, parts, run_dir, device, dist.get_world_size() if distributed else 1,
                               progress.epoch)
        with StopSignal() as stop:
            should_stop = _agreed_stop(stop, device) if distributed else stop.requested
            common = dict(autocast_ctx=parts.autocast_ctx, max_batches=parts.max_batches,
                          channels_last=config.channels_last, progress=config.progress and is_main)
            while progress.epoch < config.epochs:
                epoch = progress.epoch
                _reseed_shuffling(parts.train_loader, config.seed, epoch)
                started = time.perf_counter()
                train = train_one_epoch(parts.net, parts.criterion, parts.optimizer, parts.train_loader, device,
                                        scheduler=parts.scheduler, scaler=parts.scaler, should_stop=should_stop,
                                        epoch=epoch, **common)
                if train["interrupted"] or should_stop():
                    interrupted = True
                    break
                valid = evaluate(parts.net, parts.criterion, parts.valid_loader, device, epoch=epoch,
                                 keep_examples=config.figure_items if is_main else 0, **common)
                epoch_times.append(time.perf_counter() - started)
                progress.history.append({"epoch": epoch, "time_s": epoch_times[-1], "train": _plain(train),
                                         "valid": _plain(valid)})
                improved = valid["macro_f1"] > progress.best_score
                if improved:
                    progress.best_score, progress.best_epoch, progress.best_metrics = valid["macro_f1"], epoch, \
                        _plain(valid)
                progress.epoch = epoch + 1
                if is_main:
                    figures = (epoch + 1) % max(1, config.figure_every) == 0 or epoch + 1 == config.epochs
                    _log_epoch(writer, epoch, train, valid, epoch_times[-1], config.figure_items, figures)
                    if improved:
                        save_checkpoint(_state(parts, progress, config, interrupted=False, full=False), best_path)
                    save_checkpoint(_state(parts, progress, config, interrupted=False), last_path)
                    (run_dir / "history.json").write_text(json.dumps(nan_to_none(progress.history), indent=1))
                log("epoch %d/%d: train loss %.4f, valid loss %.4f, valid macro F1 %.4f (best %.4f at %d), "
                            "lr %.2e, %.1f s", epoch + 1, config.epochs, train["loss"], valid["loss"],
                            valid["macro_f1"], progress.best_score, progress.best_epoch + 1, train["lr"],
                            epoch_times[-1])
            if interrupted and is_main:
                save_checkpoint(_state(parts, progress, config, interrupted=True), last_path)
                log("%s received during epoch %d: state saved to %s", stop.name, progress.epoch + 1,
                            last_path)
        finished = True
    finally:
        if writer is not None:
            writer.close()
        if not finished and is_main and resume_path is None and not (last_path.exists() or best_path.exists()):
            _discard_run(run_dir, old_files, new_dirs)

    onnx_path, parity = None, {}
    if is_main and config.export_onnx and best_path.exists():
        onnx_path, parity = _export_best(best_path, run_dir / "best.onnx", config.img_size)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    found = progress.best_epoch >= 0
    return {
        "rank": rank,
        "run_dir": str(run_dir),
        "best_checkpoint": str(best_path) if best_path.exists() else None,
        "last_checkpoint": str(last_path) if last_path.exists() else None,
        "onnx": str(onnx_path) if onnx_path else None,
        "parity": parity,
        "best_macro_f1": progress.best_score if found else None,
        "best_epoch": progress.best_epoch if found else None,
        "best_metrics": progress.best_metrics,
        "history": progress.history,
        "epoch_times": epoch_times,
        "epochs_completed": progress.epoch,
        "interrupted": interrupted,
        "signal": stop.name,
        "device": str(device),
        "precision": parts.precision,
        "train_size": len(parts.train_loader.dataset),
        "valid_size": len(parts.valid_loader.dataset),
    }


def _discard_run(run_dir: Path, old_files: set[str], new_dirs: list[Path]) -> None:
    """Remove what a new run that failed before its first checkpoint wrote: its summary, its TensorBoard events and
    the directories it created, so that no run without a checkpoint is left behind."""
    for path in run_dir.iterdir() if run_dir.is_dir() else ():
        if path.is_file() and (path.name not in old_files or path.name == "summary.md"):
            path.unlink()
    for directory in new_dirs:
        try:
            directory.rmdir()
        except OSError:  # not empty: something else lives there
            break


def _agreed_stop(stop: StopSignal, device: torch.device):
    """Under torch.distributed, stop when any process was signalled (all processes leave at the same batch)."""
    def should_stop() -> bool:
        flag = torch.tensor([1.0 if stop.requested() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
    return should_stop


def _export_best(best_path: Path, onnx_path: Path, img_size: int) -> tuple[Path, dict[str, float]]:
    """Export the best checkpoint to ONNX and compare onnxruntime with PyTorch at two sizes."""
    from labcode.checkpoint import load_model
    from labcode.export import check_onnx_parity, export_onnx

    model, _ = load_model(best_path)
    export_onnx(model, onnx_path, example_size=(img_size, img_size))
    parity = check_onnx_parity(model, onnx_path, sizes=((img_size, img_size), (img_size // 2 + 3, img_size + 5)))
    return onnx_path, parity
