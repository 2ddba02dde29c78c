# Your copy of the course library: labcode/train.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""A whole training run: data, model, loss, optimiser, schedule, logging, checkpoints, best model and its ONNX export.

:class:`TrainConfig` (:mod:`labcode.config`) holds every choice of a run (the CLI builds it from its arguments, a
notebook builds it directly); :func:`fit` runs it and returns the best validation metrics with the paths of what it
wrote. :func:`fit` reads top-down: start (process, device, run directory) → build (model, data, loss, optimiser,
schedule: :func:`labcode.config.build_parts`) → restore (when resuming) → the loop over epochs (:func:`_epoch`:
train, validate, keep the best, save, log) → export. A run writes into ``<logdir>/<run_name>/``:

- ``summary.md``, ``events.out.tfevents.*`` and ``history.json``: the run's log (:mod:`labcode.runlog`);
- ``last.pt``: the full training state after each epoch (what ``resume`` reads);
- ``best.pt`` and ``best.onnx``: the weights with the best validation macro F1, and their ONNX export.

A new run that fails (an error, not a preemption) before its first checkpoint removes what it wrote, so that a
run directory always holds a checkpoint to resume or to use.

Preemption: SIGTERM and SIGINT (a cluster preempting the job, or Ctrl-C) stop the run at the next batch
(:class:`labcode.distributed.StopSignal`); the current weights, optimiser, schedule and generator states are saved
to ``last.pt`` and :func:`fit` returns with ``interrupted=True``. Resuming restarts the interrupted epoch from its
first batch, starting from the weights saved at the interruption; the schedule keeps counting its steps, so it
reaches its end that many steps earlier. Multi-GPU training goes through ``torchrun`` (``WORLD_SIZE > 1`` selects
DistributedDataParallel, see :mod:`labcode.distributed`); only rank 0 logs, saves and exports.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from labcode import distributed
from labcode.checkpoint import (
    check_same_architecture,
    find_resume_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from labcode.classes import NUM_CLASSES, TEST_AREAS
from labcode.config import RunParts, TrainConfig, build_parts, check_names
from labcode.distributed import StopSignal
from labcode.engine import evaluate, train_one_epoch
from labcode.errors import LabError
from labcode.runlog import RunLog, git_commit, plain, summary_text

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reseed_shuffling(loader, seed: int, epoch: int) -> None:
    """Make each epoch's order a function of (seed, epoch) only, so that a resumed run sees the same order."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif isinstance(getattr(sampler, "generator", None), torch.Generator):
        sampler.generator.manual_seed(seed * 100_003 + epoch)


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


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class _Progress:
    """What changes along a run and goes into checkpoints."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, epoch: int, seconds: float, train: dict[str, Any], valid: dict[str, Any]) -> bool:
        """Add a completed epoch to the history, keep its validation metrics if they are the best so far, and move
        on to the next epoch; return whether it improved on the best validation macro F1."""
        self.history.append({"epoch": epoch, "time_s": seconds, "train": plain(train), "valid": plain(valid)})
        improved = valid["macro_f1"] > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.best_metrics = valid["macro_f1"], epoch, plain(valid)
        self.epoch = epoch + 1
        return improved


def _restore(parts: RunParts, resumed: dict) -> _Progress:
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


def _state(parts: RunParts, progress: _Progress, config: TrainConfig, *, interrupted: bool,
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


@dataclass
class _Run:
    """This process's part of a run: where it runs and what it writes."""

    config: TrainConfig
    device: torch.device
    distributed: bool
    rank: int
    run_dir: Path
    resume_path: Path | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def say(self, message: str, *args: Any) -> None:
        """Log a progress message; one process reports."""
        (logger.info if self.is_main else logger.debug)(message, *args)


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train a model as described by ``config``; keep, save and export the best one by validation macro F1.

    Returns:
        ``rank`` (of this process under torchrun, else 0); ``run_dir``, ``best_checkpoint``, ``last_checkpoint``,
        ``onnx`` (paths as strings, ``None`` when not written); ``best_macro_f1``, ``best_epoch``, ``best_metrics``
        (validation metrics of the best epoch), ``parity`` (ONNX vs PyTorch max abs difference per size),
        ``history`` (metrics per epoch), ``epoch_times`` (of this call), ``epochs_completed``, ``interrupted`` and
        ``signal``, ``device``, ``precision``, ``train_size``, ``valid_size``.

    Raises:
        LabError: bad configuration or data (the message names the argument or file);
        engine.NonFiniteLossError: the loss diverged (the message names the epoch and batch).
    """
    run = _start(config)
    resumed = load_checkpoint(run.resume_path, map_location="cpu") if run.resume_path else None
    if resumed:
        check_same_architecture(config, resumed, run.resume_path)
    parts = build_parts(config, run.device, run.distributed, resumed)
    progress = _Progress()
    if resumed:
        progress = _restore(parts, resumed)
        run.say("resuming %s at epoch %d (best macro F1 %.4f at epoch %d)", run.resume_path, progress.epoch + 1,
                progress.best_score, progress.best_epoch + 1)
    epoch_times, interrupted, signal_name = _train(run, parts, progress)
    onnx_path, parity = None, {}
    if run.is_main and config.export_onnx and run.best_path.exists():
        onnx_path, parity = _export_best(run.best_path, run.run_dir / "best.onnx", config.img_size)
    distributed.leave_process_group(run.distributed)
    return _result(run, parts, progress, epoch_times, (interrupted, signal_name), onnx_path, parity)


def _start(config: TrainConfig) -> _Run:
    """Join the process group, choose the device and the run directory, check the names, seed the generators."""
    is_distributed, rank, local_rank = distributed.distributed_env()
    distributed.init_process_group(is_distributed)
    device = distributed.choose_device(config.device, is_distributed, local_rank)
    run_dir, resume_path = _run_dir(config, rank == 0)
    check_names(config)
    run = _Run(config, device, is_distributed, rank, run_dir, resume_path)
    chosen_on_test = sorted(set(config.areas_valid or ()) & set(TEST_AREAS))
    if chosen_on_test:
        run.say("warning: validating on the test area(s) %s: the best epoch is chosen on them, so their scores will "
                "be optimistic; the course validates on rooms of the training areas (leave --areas-valid out)",
                ", ".join(chosen_on_test))
    seed_everything(config.seed + rank)
    return run


def _train(run: _Run, parts: RunParts, progress: _Progress) -> tuple[list[float], bool, str | None]:
    """The loop over epochs under the stop signal, logged by rank 0.

    Returns:
        the epoch times, whether a signal interrupted the run, and the signal's name.
    """
    config = run.config
    log = RunLog(run.run_dir) if run.is_main else None
    epoch_times: list[float] = []
    interrupted = finished = False
    try:
        if log is not None:
            log.open(_summary(run, parts), progress.epoch)
        with StopSignal() as stop:
            should_stop = distributed.agreed_stop(stop, run.device) if run.distributed else stop.requested
            while progress.epoch < config.epochs:
                seconds = _epoch(run, parts, progress, log, should_stop)
                if seconds is None:
                    interrupted = True
                    break
                epoch_times.append(seconds)
            if interrupted and run.is_main:
                save_checkpoint(_state(parts, progress, config, interrupted=True), run.last_path)
                run.say("%s received during epoch %d: state saved to %s", stop.name, progress.epoch + 1,
                        run.last_path)
        finished = True
    finally:
        if log is not None:
            log.close()
            if not finished and run.resume_path is None and not (run.last_path.exists() or run.best_path.exists()):
                log.discard()
    return epoch_times, interrupted, stop.name


def _epoch(run: _Run, parts: RunParts, progress: _Progress, log: RunLog | None,
           should_stop: Callable[[], bool]) -> float | None:
    """One epoch: train, validate, keep the best, save and log (rank 0). Its duration, or ``None`` if interrupted."""
    config, epoch = run.config, progress.epoch
    _reseed_shuffling(parts.train_loader, config.seed, epoch)
    common = dict(autocast_ctx=parts.autocast_ctx, max_batches=parts.max_batches, epoch=epoch,
                  channels_last=config.channels_last, progress=config.progress and run.is_main)
    started = time.perf_counter()
    train = train_one_epoch(parts.net, parts.criterion, parts.optimizer, parts.train_loader, run.device,
                            scheduler=parts.scheduler, scaler=parts.scaler, should_stop=should_stop, **common)
    if train["interrupted"] or should_stop():
        return None
    valid = evaluate(parts.net, parts.criterion, parts.valid_loader, run.device,
                     keep_examples=config.figure_items if run.is_main else 0, **common)
    seconds = time.perf_counter() - started
    improved = progress.record(epoch, seconds, train, valid)
    if log is not None:
        figures = (epoch + 1) % max(1, config.figure_every) == 0 or epoch + 1 == config.epochs
        log.epoch(epoch, train, valid, seconds, figure_items=config.figure_items, figures=figures)
        if improved:
            save_checkpoint(_state(parts, progress, config, interrupted=False, full=False), run.best_path)
        save_checkpoint(_state(parts, progress, config, interrupted=False), run.last_path)
        log.history(progress.history)
    run.say("epoch %d/%d: train loss %.4f, valid loss %.4f, valid macro F1 %.4f (best %.4f at %d), lr %.2e, %.1f s",
            epoch + 1, config.epochs, train["loss"], valid["loss"], valid["macro_f1"], progress.best_score,
            progress.best_epoch + 1, train["lr"], seconds)
    return seconds


def _summary(run: _Run, parts: RunParts) -> str:
    """The text of the run's ``summary.md``."""
    from labcode.models import model_summary

    config = run.config
    size = config.img_size
    return summary_text(run.run_dir.name, config.to_dict(), command=config.command, commit=git_commit(),
                        device=str(run.device), precision=parts.precision,
                        model_text=model_summary(parts.model, (1, 3, size, size)), world_size=distributed.world_size(),
                        sizes={"train": len(parts.train_loader.dataset), "valid": len(parts.valid_loader.dataset)})


def _result(run: _Run, parts: RunParts, progress: _Progress, epoch_times: list[float],
            interruption: tuple[bool, str | None], onnx_path: Path | None, parity: dict[str, float]) -> dict[str, Any]:
    """What :func:`fit` returns."""
    found = progress.best_epoch >= 0
    return {
        "rank": run.rank,
        "run_dir": str(run.run_dir),
        "best_checkpoint": str(run.best_path) if run.best_path.exists() else None,
        "last_checkpoint": str(run.last_path) if run.last_path.exists() else None,
        "onnx": str(onnx_path) if onnx_path else None,
        "parity": parity,
        "best_macro_f1": progress.best_score if found else None,
        "best_epoch": progress.best_epoch if found else None,
        "best_metrics": progress.best_metrics,
        "history": progress.history,
        "epoch_times": epoch_times,
        "epochs_completed": progress.epoch,
        "interrupted": interruption[0],
        "signal": interruption[1],
        "device": str(run.device),
        "precision": parts.precision,
        "train_size": len(parts.train_loader.dataset),
        "valid_size": len(parts.valid_loader.dataset),
    }


def _export_best(best_path: Path, onnx_path: Path, img_size: int) -> tuple[Path, dict[str, float]]:
    """Export the best checkpoint to ONNX and compare onnxruntime with PyTorch at two sizes."""
    from labcode.checkpoint import load_model
    from labcode.export import check_onnx_parity, export_onnx

    model, _ = load_model(best_path)
    export_onnx(model, onnx_path, example_size=(img_size, img_size))
    parity = check_onnx_parity(model, onnx_path, sizes=((img_size, img_size), (img_size // 2 + 3, img_size + 5)))
    return onnx_path, parity
