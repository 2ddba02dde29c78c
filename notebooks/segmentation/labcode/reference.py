# Your copy of the course library: labcode/reference.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The course's reference model: its own "pretrained" UNet, and the CPU recipe that trains it.

The handout hands students a UNet trained on areas 1, 2, 3, 4 and 6 and asks them to evaluate it on those areas and
on 5a and 5b. There is nothing to download here: ``python -m labcode reference`` (the course's ``make reference``)
trains that model on the generated data set with :data:`CPU_RECIPE` and writes the run into
:func:`reference_dir`, next to the generated data set and outside git::

    best.onnx, best.pt, last.pt           the chosen weights (ONNX and checkpoint) and the last training state
    events.*, history.json, summary.md    the training run, for TensorBoard
    reference.json                        recipe, protocol, training time, scores on the training areas, 5a and 5b

Notebooks 5 and 6 and the figures of the course's book find the model through :func:`reference_model_path`
(``$LABCODE_REFERENCE_MODEL`` overrides it).

**The protocol** (:data:`PROTOCOL`): the model trains on areas 1, 2, 3, 4 and 6. A tenth of their images, whole rooms
at a time (:func:`labcode.data.split_by_room`), is held out for validation and picks the best epoch. Areas 5a and 5b
only measure the chosen model: they never choose anything, neither an epoch nor a setting. The handout picks its
model on 5a and then reports its score on 5a; a score measured on the images that made the choice is optimistic, so
here the test areas stay out of every choice.

**The CPU recipe** (:data:`CPU_RECIPE`) is sized for a laptop: on two cores in float32 (no bfloat16 units) the whole
training takes under five minutes and reaches a held-out macro F1 well above 0.5 on 5a + 5b; ``python -m
benchmarks.bench_cpu_recipe`` measures it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from labcode.classes import TEST_AREAS, TRAIN_AREAS
from labcode.errors import LabError

logger = logging.getLogger(__name__)

#: The protocol in one sentence, for summaries and help texts.
PROTOCOL = ("training on areas 1, 2, 3, 4 and 6; validation (the choice of the best epoch) on a tenth of their "
            "images, whole rooms that training never sees; areas 5a and 5b only for the final test, never for a "
            "choice")

#: :class:`labcode.train.TrainConfig` fields of the CPU recipe: a small UNet at 128 px for 12 epochs, with the
#: class-weighted cross-entropy (``python -m benchmarks.bench_cpu_recipe`` times and scores it).
CPU_RECIPE: dict[str, Any] = {
    "areas_train": list(TRAIN_AREAS),
    "areas_valid": None,
    "valid_ratio": 0.1,
    "model": "unet",
    "model_options": {"base_chan": 16, "num_blocks": 3},
    "loss": "ce",
    "class_weights": "inverse_sqrt",
    "img_size": 128,
    "batch_size": 8,
    "num_workers": 2,
    "epochs": 12,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "warmup_ratio": 0.05,
    "channels_last": True,
    "figure_every": 4,
}

ENV_MODEL = "LABCODE_REFERENCE_MODEL"


def recipe_config(datadir: str | Path | None = None, **overrides: Any):
    """A :class:`labcode.train.TrainConfig` of the CPU recipe on ``datadir`` (default: the course's data set).

    ``overrides`` replace fields of the recipe (``epochs``, ``amp``, ``logdir``, ``run_name``, ``progress``...).
    """
    from labcode.config import TrainConfig

    fields = {**CPU_RECIPE, "model_options": dict(CPU_RECIPE["model_options"]),
              "areas_train": list(CPU_RECIPE["areas_train"]), **overrides}
    return TrainConfig(datadir=None if datadir is None else str(datadir), **fields)


def reference_dir() -> Path:
    """Where ``python -m labcode reference`` writes the reference run: next to the generated data set it learnt
    from (``<data home>/reference-synth-<version>``, see :func:`labcode.synth.data_home`)."""
    from labcode.synth import SYNTH_VERSION, data_home

    return data_home() / f"reference-synth-{SYNTH_VERSION}"


#: The file name of the reference model shipped in the students' distribution (``reference/`` beside the notebooks'
#: folder), for students who do not train it themselves.
SHIPPED_NAME = "unet_reference.onnx"


def shipped_model_path() -> Path:
    """Where the students' distribution ships the reference model: ``reference/`` next to the assignment folder
    that holds this copy of ``labcode``."""
    import labcode

    return Path(labcode.__file__).resolve().parents[2] / "reference" / SHIPPED_NAME


def reference_model_path() -> Path:
    """The reference model's ONNX file: ``$LABCODE_REFERENCE_MODEL`` when set, else ``best.onnx`` of
    :func:`reference_dir` when it was trained here, else the copy the students' distribution ships when there is
    one (the path may not exist yet: see :func:`find_reference_model`)."""
    if os.environ.get(ENV_MODEL):
        return Path(os.environ[ENV_MODEL])
    trained, shipped = reference_dir() / "best.onnx", shipped_model_path()
    return shipped if not trained.is_file() and shipped.is_file() else trained


def find_reference_model() -> Path | None:
    """:func:`reference_model_path` if the file exists, else ``None``."""
    path = reference_model_path()
    return path if path.is_file() else None


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished reference run (its model and its scores)."""
    run_dir = Path(run_dir)
    return (run_dir / "best.onnx").is_file() and (run_dir / "reference.json").is_file()


#: What ``reference.json`` keeps of each evaluation (metric names of :meth:`labcode.metrics.ConfusionMatrix.summary`).
SCORE_KEYS = ("areas", "images", "macro_f1", "mean_iou", "pixel_accuracy", "f1_per_class", "iou_per_class")
#: The metric names of the reference runs written before the library had one vocabulary, and today's.
_OLD_SCORE_KEYS = {"miou": "mean_iou", "accuracy": "pixel_accuracy", "f1": "f1_per_class", "iou": "iou_per_class"}


def read_scores(run_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``reference.json`` of a reference run (default: :func:`reference_dir`); the scores of a run written with
    the former metric names (``miou``, ``accuracy``, ``f1``, ``iou``) come back under today's."""
    path = Path(run_dir or reference_dir()) / "reference.json"
    if not path.is_file():
        raise LabError(f"no reference run in {path.parent}: make it with `python -m labcode reference`")
    summary = json.loads(path.read_text())
    for name, scores in summary.get("scores", {}).items():
        summary["scores"][name] = {_OLD_SCORE_KEYS.get(key, key): value for key, value in scores.items()}
    return summary


def _scores(segmenter, datadir: Path, areas: list[str], img_size: int, progress: bool) -> dict[str, Any]:
    from labcode.scoring import evaluate_areas

    result = evaluate_areas(segmenter, datadir, areas, img_size=img_size, progress=progress)
    return {key: result[key] for key in SCORE_KEYS}


def train_reference(datadir: str | Path | None = None, out: str | Path | None = None, *, progress: bool = True,
                    command: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the reference model with the CPU recipe, then score it; replaces what ``out`` held.

    Args:
        datadir: data set root (default: the course's generated data set, whatever ``$LABCODE_DATADIR`` says).
        out: run directory (default: :func:`reference_dir`).
        progress: tqdm bars.
        command: the command line, for the run's summary.
        overrides: fields of the recipe to change (``epochs``, ``amp``, ``small``...).

    Returns:
        The contents of ``reference.json``: ``model``, ``checkpoint``, ``run_dir``, ``datadir``, ``protocol``,
        ``recipe``, ``precision``, ``device``, ``train_images``, ``valid_images``, ``best_epoch``,
        ``best_valid_macro_f1``, ``training_seconds``, ``epoch_times``, ``parity`` (ONNX against PyTorch),
        ``eval_img_size`` and ``scores`` (``train``, ``5a``, ``5b``, ``5a+5b``: the :data:`SCORE_KEYS` of
        :func:`labcode.scoring.evaluate_areas`), or ``{"interrupted": True, ...}`` if the training was interrupted.
    """
    from labcode.infer import OnnxSegmenter
    from labcode.synth import ensure_default_dataset
    from labcode.train import fit

    datadir = Path(datadir) if datadir is not None else ensure_default_dataset(progress=progress)
    out = Path(out) if out is not None else reference_dir()
    if out.is_dir() and any(out.iterdir()):
        if not any((out / name).exists() for name in ("reference.json", "summary.md", "last.pt")):
            raise LabError(f"{out} is not empty and holds no reference run: choose another folder")
        shutil.rmtree(out)
    config = recipe_config(datadir, logdir=str(out.parent), run_name=out.name, progress=progress,
                           command=command or "python -m labcode reference", **overrides)
    started = time.perf_counter()
    trained = fit(config)
    seconds = time.perf_counter() - started
    if trained["interrupted"] or not trained["onnx"]:
        return {"interrupted": True, "run_dir": trained["run_dir"], "last_checkpoint": trained["last_checkpoint"]}
    segmenter = OnnxSegmenter(trained["onnx"])
    size = config.img_size  # the scale the model saw in training
    scores = {"train": _scores(segmenter, datadir, list(config.areas_train), size, progress)}
    for areas in ([area] for area in TEST_AREAS):
        scores[areas[0]] = _scores(segmenter, datadir, areas, size, progress)
    scores["+".join(TEST_AREAS)] = _scores(segmenter, datadir, list(TEST_AREAS), size, progress)
    summary = {
        "model": trained["onnx"], "checkpoint": trained["best_checkpoint"], "run_dir": trained["run_dir"],
        "datadir": str(datadir), "protocol": PROTOCOL, "recipe": config.to_dict(), "precision": trained["precision"],
        "device": trained["device"], "train_images": trained["train_size"], "valid_images": trained["valid_size"],
        "best_epoch": trained["best_epoch"], "best_valid_macro_f1": trained["best_macro_f1"],
        "training_seconds": seconds, "epoch_times": trained["epoch_times"], "parity": trained["parity"],
        "eval_img_size": size, "scores": scores,
    }
    (out / "reference.json").write_text(json.dumps(summary, indent=1))
    logger.info("reference model written to %s", trained["onnx"])
    return summary
