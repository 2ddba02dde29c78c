# Your copy of the course library: labcode/config.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""A training run's configuration: :class:`TrainConfig` holds every choice of a run as plain values (the CLI builds
it from its arguments, a notebook builds it directly; :func:`labcode.train.fit` runs it), and is the one source of the
defaults of the ``train`` command and of the recipes. The parts a run trains with are built from it by
:func:`labcode.runtime.parts.build_parts`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from labcode.classes import TRAIN_AREAS


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
        cache_dir: read the images from a cache made by ``python -m labcode prepare`` (:mod:`labcode.storage.cache`).
        epochs, lr, weight_decay: AdamW for ``epochs``; the learning rate warms up linearly over the first
            ``warmup_ratio`` of the steps then follows a cosine down to ``lr * final_lr_ratio``.
        small, small_batches: quick check, only ``small_batches`` batches per epoch (training and validation).
        seed: seed of the generators, the validation split and the shuffling.
        logdir, run_name: the run directory is ``logdir/run_name`` (``run_name`` defaults to model and time).
        resume: checkpoint (or run directory holding ``last.pt``) to continue; ``model`` and ``model_options`` must
            describe the checkpoint's architecture (see :func:`labcode.runtime.checkpoint.check_same_architecture`).
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
