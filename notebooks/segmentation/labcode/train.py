# Your copy of the course library: labcode/train.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""A whole training run: data, model, loss, optimiser, schedule, logging, checkpoints, best model and its ONNX export.

:class:`TrainConfig` (:mod:`labcode.config`) holds every choice of a run (the CLI builds it from its arguments, a
notebook builds it directly); :func:`fit` runs it and returns a :class:`FitResult`: the best validation metrics, the
history and the paths of what it wrote, as typed attributes. :func:`fit` reads top-down: start (process, device, run
directory) → build (model, data, loss, optimiser, schedule: :func:`labcode.runtime.parts.build_parts`) → restore (when
resuming) → the loop over epochs (:func:`_epoch`: train, validate, keep the best, save, log) → export. A run writes
into ``<logdir>/<run_name>/``:

- ``summary.md``, ``events.out.tfevents.*`` and ``history.json``: the run's log (:mod:`labcode.runtime.runlog`);
- ``last.pt``: the full training state after each epoch (what ``resume`` reads);
- ``best.pt`` and ``best.onnx``: the weights with the best validation macro F1, and their ONNX export;
- ``result.json``: written last, when the run has finished: the :class:`FitResult` and the run's fingerprint.

A finished run is found again: when ``<logdir>/<run_name>/`` holds the finished run of the same configuration on the
same data (:func:`find_finished_run`), :func:`fit` returns its result without training, unless ``retrain=True``.
:func:`named_by_fingerprint` names a run after its configuration and data, so that the same run always lands in the
same folder (a notebook's Restart & Run All then finds it instead of training it again).

A new run that fails (an error, not a preemption) before its first checkpoint removes what it wrote, so that a
run directory always holds a checkpoint to resume or to use.

Preemption: SIGTERM and SIGINT (a cluster preempting the job, or Ctrl-C) stop the run at the next batch
(:class:`labcode.runtime.distributed.StopSignal`); the current weights, optimiser, schedule and generator states are
saved to ``last.pt`` and :func:`fit` returns with ``interrupted=True``. Resuming restarts the interrupted epoch from its
first batch, starting from the weights saved at the interruption; the schedule keeps counting its steps, so it
reaches its end that many steps earlier. Multi-GPU training goes through ``torchrun`` (``WORLD_SIZE > 1`` selects
DistributedDataParallel, see :mod:`labcode.runtime.distributed`); only rank 0 logs, saves and exports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from labcode.classes import NUM_CLASSES, TEST_AREAS
from labcode.config import TrainConfig, check_names
from labcode.engine import evaluate, train_one_epoch
from labcode.errors import LabError
from labcode.metrics import nan_to_none
from labcode.runtime import distributed
from labcode.runtime.checkpoint import (
    check_same_architecture,
    find_resume_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from labcode.runtime.distributed import StopSignal
from labcode.runtime.parts import RunParts, build_parts
from labcode.runtime.runlog import (
    RunLog,
    cache_identity,
    dataset_identity,
    git_commit,
    plain,
    run_fingerprint,
    summary_text,
)

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


@dataclass
class FitResult:
    """What a training run produced: where it wrote, how it scored and how it ran (what :func:`fit` returns).

    Paths are strings (``None`` when not written), so that :meth:`to_dict` is plain JSON.

    Attributes:
        run_dir, best_checkpoint, last_checkpoint, onnx: the run folder, its ``best.pt``, ``last.pt`` and
            ``best.onnx``.
        best_macro_f1, best_epoch, best_metrics: the best validation macro F1, its epoch (counted from 0) and all its
            validation metrics (``None``, ``None`` and ``{}`` before the first epoch ends).
        history: one entry per completed epoch: ``epoch``, ``time_s``, and the ``train`` and ``valid`` metrics.
        epoch_times: the durations of the epochs the last call trained.
        epochs_completed: the epochs completed, resumed calls included.
        interrupted, signal: whether a signal (SIGTERM, SIGINT) stopped the run, and its name.
        parity: the largest difference between ONNX Runtime and PyTorch, per input size.
        device, precision, rank: where it ran (``rank``: this process under torchrun, else 0).
        img_size, areas_train, train_size, valid_size: the training crops' side, the training areas, and the
            numbers of training and validation images.
        fingerprint: the configuration and data's :func:`fingerprint`.
        reused: ``True`` when :func:`fit` found this finished run instead of training it.
    """

    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    onnx: str | None
    best_macro_f1: float | None
    best_epoch: int | None
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    epoch_times: list[float]
    epochs_completed: int
    interrupted: bool
    signal: str | None
    parity: dict[str, float]
    device: str
    precision: str
    rank: int
    img_size: int
    areas_train: list[str]
    train_size: int
    valid_size: int
    fingerprint: str
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values (NaN becomes ``None``)."""
        return nan_to_none(json.loads(json.dumps(dataclasses.asdict(self))))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitResult:
        """The result :meth:`to_dict` wrote.

        Raises:
            KeyError: a field is missing (a result written by another version of the library).
        """
        return cls(**{item.name: values[item.name] for item in dataclasses.fields(cls) if item.name != "reused"})


#: The file a finished run writes last (see :func:`find_finished_run`).
RESULT_NAME = "result.json"


def fingerprint(config: TrainConfig) -> str:
    """A short hash of what makes the result of ``config``: its result fields (:meth:`TrainConfig.result_fields`)
    and the identity of its data (:func:`labcode.runtime.runlog.dataset_identity`, whatever ``datadir`` spelling names
    it, or :func:`labcode.runtime.runlog.cache_identity` when it reads a prepared cache).

    Raises:
        DatasetError: the data set or one of its areas is missing.
    """
    from labcode.data import default_datadir

    fields = {key: value for key, value in config.result_fields().items() if key not in ("datadir", "cache_dir")}
    if config.cache_dir:  # the images come from the cache, which may have been made on another machine
        return run_fingerprint(fields, cache_identity(config.cache_dir))
    datadir = Path(config.datadir) if config.datadir else default_datadir()
    return run_fingerprint(fields, dataset_identity(datadir, [*config.areas_train, *(config.areas_valid or ())]))


def named_by_fingerprint(config: TrainConfig, prefix: str) -> TrainConfig:
    """``config`` with the run name ``<prefix>-<fingerprint>``: the same configuration on the same data always
    writes into the same folder, where :func:`fit` finds it finished instead of training it again."""
    return dataclasses.replace(config, run_name=f"{prefix}-{fingerprint(config)}")


def find_finished_run(config: TrainConfig) -> FitResult | None:
    """The result of the finished run of ``config`` in ``<logdir>/<run_name>/``, or ``None``.

    A run counts as finished when its folder holds the ``result.json`` a completed, uninterrupted run writes last,
    with the fingerprint of ``config``, and the files it names (``best.pt``, and ``best.onnx`` when ``config``
    exports). A run without ``run_name``, an unfinished or interrupted run, and a run of another configuration or
    other data are never found.
    """
    if not config.run_name or config.resume:
        return None
    run_dir = Path(config.logdir) / config.run_name
    try:
        found = FitResult.from_dict(json.loads((run_dir / RESULT_NAME).read_text()))
    except (OSError, ValueError, TypeError, KeyError):  # none, unreadable, or written by another version
        return None
    outputs = [run_dir / "best.pt", *([run_dir / "best.onnx"] if config.export_onnx else [])]
    if found.interrupted or found.fingerprint != fingerprint(config) or not all(p.is_file() for p in outputs):
        return None
    return dataclasses.replace(found, run_dir=str(run_dir), best_checkpoint=str(outputs[0]),
                               last_checkpoint=_existing(run_dir / "last.pt"), onnx=_existing(run_dir / "best.onnx"),
                               rank=distributed.distributed_env()[1], reused=True)


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _run_dir(config: TrainConfig, is_main: bool, retrain: bool) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from (``None`` for a new run); with ``retrain``, what a run
    wrote in that directory before is removed."""
    if config.resume:
        if retrain:
            raise LabError("retrain and resume exclude each other: retrain starts the run again from scratch")
        resume = find_resume_checkpoint(config.resume)
        return resume.parent, resume
    name = config.run_name or f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.logdir) / name
    if is_main and retrain:
        _remove_run_files(run_dir)
    elif is_main and (run_dir / "last.pt").exists():
        raise LabError(f"{run_dir} already holds a training run (unfinished, or of another configuration): resume "
                       "it with --resume, train it again with --retrain, or choose another --run-name")
    return run_dir, None


def _remove_run_files(run_dir: Path) -> None:
    """Remove what a training run writes in ``run_dir`` (and nothing else)."""
    names = {"summary.md", "history.json", "last.pt", "best.pt", "best.onnx", RESULT_NAME}
    for path in run_dir.iterdir() if run_dir.is_dir() else ():
        if path.is_file() and (path.name in names or path.name.startswith("events.out.tfevents.")):
            path.unlink()


# --------------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class _Progress:
    """What changes along a run: what goes into checkpoints, then how this call went (its epochs' durations and
    whether a signal stopped it)."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    interrupted: bool = False
    signal: str | None = None

    def record(self, epoch: int, seconds: float, train: dict[str, Any], valid: dict[str, Any]) -> bool:
        """Add a completed epoch to the history, keep its validation metrics if they are the best so far, and move
        on to the next epoch; return whether it improved on the best validation macro F1."""
        self.history.append({"epoch": epoch, "time_s": seconds, "train": plain(train), "valid": plain(valid)})
        improved = valid["macro_f1"] > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.best_metrics = valid["macro_f1"], epoch, plain(valid)
        self.epoch = epoch + 1
        return improved


def _restore(parts: RunParts, resumed: dict, run: _Run) -> _Progress:
    """Load a checkpoint's training state into ``parts``; return where the run stood."""
    parts.model.load_state_dict(resumed["model"])
    parts.optimizer.load_state_dict(resumed["optimizer"])
    parts.scheduler.load_state_dict(resumed["scheduler"])
    if resumed.get("scaler"):
        parts.scaler.load_state_dict(resumed["scaler"])
    set_rng_state(resumed["rng"])
    progress = _Progress(epoch=int(resumed["epoch"]), best_score=float(resumed["best_score"]),
                         best_epoch=int(resumed["best_epoch"]), best_metrics=dict(resumed.get("best_metrics", {})),
                         history=list(resumed.get("history", [])))
    run.say("resuming %s at epoch %d (best macro F1 %.4f at epoch %d)", run.resume_path, progress.epoch + 1,
            progress.best_score, progress.best_epoch + 1)
    return progress


def _state(parts: RunParts, progress: _Progress, config: TrainConfig, *, interrupted: bool,
           full: bool = True) -> dict[str, Any]:
    """Checkpoint contents (see :mod:`labcode.runtime.checkpoint`); ``full=False`` leaves out the optimisation state."""
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
    fingerprint: str

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


def fit(config: TrainConfig, *, retrain: bool = False, checkpoint: dict[str, Any] | None = None) -> FitResult:
    """Train a model as described by ``config``; keep, save and export the best one by validation macro F1.

    When ``<logdir>/<run_name>/`` already holds the finished run of this configuration on the same data
    (:func:`find_finished_run`), its result comes back at once, with ``reused=True``, and nothing is trained.

    Args:
        config: every choice of the run.
        retrain: train even if the run has finished before, replacing what its folder holds.
        checkpoint: the contents of ``config.resume`` when the caller has read it already (then it is not read
            again); the model is rebuilt from it, and ``config`` must ask for the same architecture.

    Returns:
        The run's :class:`FitResult`.

    Raises:
        LabError: bad configuration or data (the message names the argument or file), or a run folder holding
            an unfinished run or a run of another configuration (resume it, retrain, or choose another name);
        engine.NonFiniteLossError: the loss diverged (the message names the epoch and batch).
    """
    finished = None if retrain else find_finished_run(config)
    if finished is not None:
        return finished
    if checkpoint is not None and not config.resume:
        raise LabError("a checkpoint was given without the configuration's resume naming it")
    run = _start(config, retrain)
    resumed = checkpoint or (load_checkpoint(run.resume_path, map_location="cpu") if run.resume_path else None)
    if resumed:
        check_same_architecture(config, resumed, run.resume_path)
    parts = build_parts(config, run.device, run.distributed, resumed)
    progress = _restore(parts, resumed, run) if resumed else _Progress()
    _train(run, parts, progress)
    exported = _export_best(run) if run.is_main and config.export_onnx and run.best_path.exists() else (None, {})
    distributed.leave_process_group(run.distributed)
    result = _result(run, parts, progress, exported)
    if run.is_main and not result.interrupted and result.best_checkpoint:
        (run.run_dir / RESULT_NAME).write_text(json.dumps(result.to_dict(), indent=1))
    return result


def _start(config: TrainConfig, retrain: bool) -> _Run:
    """Join the process group, choose the device and the run directory, check the names, seed the generators."""
    is_distributed, rank, local_rank = distributed.distributed_env()
    distributed.init_process_group(is_distributed)
    device = distributed.choose_device(config.device, is_distributed, local_rank)
    run_dir, resume_path = _run_dir(config, rank == 0, retrain)
    check_names(config)
    run = _Run(config, device, is_distributed, rank, run_dir, resume_path, fingerprint(config))
    chosen_on_test = sorted(set(config.areas_valid or ()) & set(TEST_AREAS))
    if chosen_on_test:
        run.say("warning: validating on the test area(s) %s: the best epoch is chosen on them, so their scores will "
                "be optimistic; the course validates on rooms of the training areas (leave --areas-valid out)",
                ", ".join(chosen_on_test))
    seed_everything(config.seed + rank)
    return run


def _train(run: _Run, parts: RunParts, progress: _Progress) -> None:
    """The loop over epochs under the stop signal, logged by rank 0; ``progress`` records how it went."""
    config = run.config
    log = RunLog(run.run_dir) if run.is_main else None
    finished = False
    try:
        if log is not None:
            (run.run_dir / RESULT_NAME).unlink(missing_ok=True)  # a resumed run is unfinished until it ends
            log.open(_summary(run, parts), progress.epoch)
        with StopSignal() as stop:
            should_stop = distributed.agreed_stop(stop, run.device) if run.distributed else stop.requested
            while progress.epoch < config.epochs:
                seconds = _epoch(run, parts, progress, log, should_stop)
                if seconds is None:
                    progress.interrupted, progress.signal = True, stop.name
                    break
                progress.epoch_times.append(seconds)
            if progress.interrupted and run.is_main:
                save_checkpoint(_state(parts, progress, config, interrupted=True), run.last_path)
                run.say("%s received during epoch %d: state saved to %s", stop.name, progress.epoch + 1,
                        run.last_path)
        finished = True
    finally:
        if log is not None:
            log.close()
            if not finished and run.resume_path is None and not (run.last_path.exists() or run.best_path.exists()):
                log.discard()


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


def _result(run: _Run, parts: RunParts, progress: _Progress,
            exported: tuple[Path | None, dict[str, float]]) -> FitResult:
    """What :func:`fit` returns; ``exported``: the ONNX file and its parity (see :func:`_export_best`)."""
    found = progress.best_epoch >= 0
    onnx_path, parity = exported
    return FitResult(
        run_dir=str(run.run_dir), best_checkpoint=_existing(run.best_path), last_checkpoint=_existing(run.last_path),
        onnx=str(onnx_path) if onnx_path else None, best_macro_f1=progress.best_score if found else None,
        best_epoch=progress.best_epoch if found else None, best_metrics=progress.best_metrics,
        history=progress.history, epoch_times=progress.epoch_times, epochs_completed=progress.epoch,
        interrupted=progress.interrupted, signal=progress.signal, parity=parity, device=str(run.device),
        precision=parts.precision, rank=run.rank, img_size=run.config.img_size,
        areas_train=list(run.config.areas_train), train_size=len(parts.train_loader.dataset),
        valid_size=len(parts.valid_loader.dataset), fingerprint=run.fingerprint,
    )


def _export_best(run: _Run) -> tuple[Path, dict[str, float]]:
    """Export the best checkpoint to ``best.onnx`` and compare onnxruntime with PyTorch at two sizes."""
    from labcode.export import check_onnx_parity, export_onnx
    from labcode.runtime.checkpoint import load_model

    img_size, onnx_path = run.config.img_size, run.run_dir / "best.onnx"
    model, _ = load_model(run.best_path)
    export_onnx(model, onnx_path, example_size=(img_size, img_size))
    parity = check_onnx_parity(model, onnx_path, sizes=((img_size, img_size), (img_size // 2 + 3, img_size + 5)))
    return onnx_path, parity
