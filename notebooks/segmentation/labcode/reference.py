# Your copy of the course library: labcode/reference.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The course's reference model: its own "pretrained" UNet, and the CPU recipe that trains it.

The handout hands students a UNet trained on areas 1, 2, 3, 4 and 6 and asks them to evaluate it on those areas and
on 5a and 5b. There is nothing to download here: ``python -m labcode reference`` (the course's ``make reference``)
trains that model on the generated data set with :data:`CPU_RECIPE` and writes the run into
:func:`reference_dir`, next to the generated data set and outside git::

    best.onnx, best.pt, last.pt           the chosen weights (ONNX and checkpoint) and the last training state
    events.*, history.json, summary.md    the training run, for TensorBoard
    reference.json                        recipe, protocol, size and areas of training, training time, scores on
                                          the training areas, 5a and 5b (:data:`INFO_KEYS`)

The lab's distribution always ships the model, as ``reference/unet_reference.onnx`` with its ``reference.json``
beside it. Notebooks 5 and 6 and the figures of the course's book find
the model through :func:`reference_model_path` (``$LABCODE_REFERENCE_MODEL`` overrides it) and read what it was
trained on through :func:`reference_info` (the whole ``reference.json``) or :func:`training_info` (the size to score
any model at and its training areas).

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


#: The file beside the reference model that says how it was trained and how it scores (:func:`reference_info`).
INFO_NAME = "reference.json"
#: What every ``reference.json`` holds and its readers rely on, named as in :func:`labcode.train.fit`'s result and
#: :class:`labcode.config.TrainConfig`: ``img_size`` is the size of the training crops, which is also the size the
#: model is scored at.
INFO_KEYS = ("img_size", "areas_train", "train_size", "valid_size", "best_epoch", "best_macro_f1", "scores")
#: What ``reference.json`` keeps of each evaluation (metric names of :meth:`labcode.metrics.ConfusionMatrix.summary`).
SCORE_KEYS = ("areas", "images", "macro_f1", "mean_iou", "pixel_accuracy", "f1_per_class", "iou_per_class")
#: The ONNX metadata entries (``metadata_props``) that say how a model was trained, read by :func:`training_info`.
TRAINING_METADATA = ("img_size", "areas_train")


def missing_model_message() -> str:
    """What to do when there is no reference model: where it was looked for and how to get it."""
    return (f"no reference model at {reference_model_path()}. The lab's distribution ships it as "
            f"reference/{SHIPPED_NAME}, beside the segmentation/ folder: take a fresh copy of the distribution, or "
            "ask your instructors for that file. `python -m labcode reference` can also train it (about 3 minutes "
            f"on two cores), and ${ENV_MODEL} may point at another ONNX model.")


def _info_file(path: Path) -> Path:
    """The ``reference.json`` of a reference model given as its ONNX file or its folder."""
    return (path if path.is_dir() else path.parent) / INFO_NAME


def _model_file(folder: Path) -> Path | None:
    return next((folder / name for name in ("best.onnx", SHIPPED_NAME) if (folder / name).is_file()), None)


def reference_info(path: str | Path | None = None) -> dict[str, Any]:
    """How the reference model was trained and how it scores: the ``reference.json`` beside it.

    Args:
        path: the model's ONNX file, or the folder holding it and its ``reference.json`` (a run of
            ``python -m labcode reference``, or ``reference/`` of the students' distribution); default: the model
            :func:`find_reference_model` finds.

    Returns:
        The contents of ``reference.json`` (see :func:`train_reference`; at least :data:`INFO_KEYS`), with ``model``
        set to the ONNX file it describes on this machine.

    Raises:
        LabError: no model, no ``reference.json`` beside it, or one without :data:`INFO_KEYS` (written by an older
            version of the library); the message names the file and the command that makes it again.
    """
    if path is None:
        path = find_reference_model()
        if path is None:
            raise LabError(missing_model_message())
    path = Path(path)
    model = _model_file(path) if path.is_dir() else path if path.is_file() else None
    if model is None:
        raise LabError(f"no reference model in {path}: make it with `python -m labcode reference`")
    info_file = _info_file(path)
    if not info_file.is_file():
        raise LabError(f"{model} has no {INFO_NAME} beside it ({info_file}): make the reference run again with "
                       "`python -m labcode reference --force`")
    try:
        info = json.loads(info_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabError(f"cannot read {info_file}: {exc}") from exc
    missing = [key for key in INFO_KEYS if key not in info] if isinstance(info, dict) else list(INFO_KEYS)
    if missing:
        raise LabError(f"{info_file} lacks {', '.join(missing)} (written by an older version of the library?): make "
                       "the reference run again with `python -m labcode reference --force`")
    return {**info, "model": str(model)}


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished reference run: its model and a ``reference.json`` that
    :func:`reference_info` reads (a run of an older version of the library is not complete)."""
    try:
        reference_info(Path(run_dir))
    except LabError:
        return False
    return (Path(run_dir) / "best.onnx").is_file()


def _onnx_training_metadata(model: Path) -> dict[str, Any]:
    """The :data:`TRAINING_METADATA` entries of an ONNX model's ``metadata_props``, decoded ({} if none)."""
    import onnx

    try:
        props = {prop.key: prop.value for prop in onnx.load(str(model), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001  (not an ONNX file: no metadata; opening the model says why)
        return {}
    found: dict[str, Any] = {}
    try:
        if props.get("img_size"):
            found["img_size"] = int(props["img_size"])
        if props.get("areas_train"):
            areas = json.loads(props["areas_train"])
            found["areas_train"] = [str(area) for area in (areas if isinstance(areas, list) else [areas])]
    except (ValueError, TypeError):  # malformed entries: as if absent
        return {}
    return found


def _checkpoint_config(model: Path) -> dict[str, Any]:
    """The training configuration in the ``best.pt`` beside ``model`` ({} if there is none)."""
    from labcode.runtime.checkpoint import load_checkpoint

    checkpoint = model.with_name("best.pt")
    return dict(load_checkpoint(checkpoint).get("config", {})) if checkpoint.is_file() else {}


def _run_exported_as(model: Path, runs: Path) -> Path | None:
    """The ``best.onnx`` of ``runs/*/`` that ``model`` is a byte-for-byte copy of (newest first), or ``None``."""
    size = model.stat().st_size
    candidates = sorted((p for p in runs.glob("*/best.onnx") if p.stat().st_size == size),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    data = model.read_bytes() if candidates else b""
    return next((p for p in candidates if p.read_bytes() == data), None)


def training_info(model: str | Path) -> dict[str, Any]:
    """How an ONNX model was trained, as far as its files tell: the size to score it at and its training areas.

    Looked up in this order: the ``reference.json`` beside a reference model (:func:`reference_info`); the model's
    ONNX metadata (:data:`TRAINING_METADATA`); the checkpoint ``best.pt`` beside it (a training run's folder); for a
    copy such as notebook 5's ``my_model.onnx``, the ``best.pt`` of the run in ``runs/`` (beside the copy) whose
    ``best.onnx`` has the same bytes.

    Args:
        model: the ONNX file.

    Returns:
        ``{"model": path, "img_size": int | None, "areas_train": list | None, "source": str}``: ``None`` where
        nothing tells (score such a model at its images' own size); ``source`` names where the values were read.

    Raises:
        FileNotFoundError: ``model`` does not exist.
    """
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model not found: {model}")
    info: dict[str, Any] = {"model": str(model), "img_size": None, "areas_train": None, "source": "nothing"}
    if model.name in ("best.onnx", SHIPPED_NAME) and _info_file(model).is_file():
        found = reference_info(model)
        return {**info, "img_size": found["img_size"], "areas_train": list(found["areas_train"]),
                "source": str(_info_file(model))}
    found = _onnx_training_metadata(model)
    if found:
        return {**info, **found, "source": f"the metadata of {model.name}"}
    config, source = _checkpoint_config(model), model.with_name("best.pt")
    if not config:
        run = _run_exported_as(model, model.parent / "runs")
        if run is not None:
            config, source = _checkpoint_config(run), run.with_name("best.pt")
    if config:
        areas = config.get("areas_train")
        return {**info, "img_size": config.get("img_size"), "areas_train": None if areas is None else list(areas),
                "source": str(source)}
    return info


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
        ``recipe``, ``img_size`` (the training crops' size, also the size it is scored at), ``areas_train``,
        ``precision``, ``device``, ``train_size``, ``valid_size``, ``best_epoch``, ``best_macro_f1`` (on the
        validation rooms), ``training_seconds``, ``epoch_times``, ``parity`` (ONNX against PyTorch) and ``scores``
        (``train``, ``5a``, ``5b``, ``5a+5b``: the :data:`SCORE_KEYS` of :func:`labcode.scoring.evaluate_areas`),
        named as in :func:`labcode.train.fit`'s result and :class:`labcode.config.TrainConfig` (see
        :func:`reference_info`); or ``{"interrupted": True, ...}`` if the training was interrupted.
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
    if trained.interrupted or not trained.onnx:
        return {"interrupted": True, "run_dir": trained.run_dir, "last_checkpoint": trained.last_checkpoint}
    segmenter = OnnxSegmenter(trained.onnx)
    size = config.img_size  # the scale the model saw in training
    scores = {"train": _scores(segmenter, datadir, list(config.areas_train), size, progress)}
    for areas in ([area] for area in TEST_AREAS):
        scores[areas[0]] = _scores(segmenter, datadir, areas, size, progress)
    scores["+".join(TEST_AREAS)] = _scores(segmenter, datadir, list(TEST_AREAS), size, progress)
    summary = {
        "model": trained.onnx, "checkpoint": trained.best_checkpoint, "run_dir": trained.run_dir,
        "datadir": str(datadir), "protocol": PROTOCOL, "recipe": config.to_dict(),
        "img_size": trained.img_size, "areas_train": trained.areas_train,
        "precision": trained.precision, "device": trained.device,
        "train_size": trained.train_size, "valid_size": trained.valid_size,
        "best_epoch": trained.best_epoch, "best_macro_f1": trained.best_macro_f1,
        "training_seconds": seconds, "epoch_times": trained.epoch_times, "parity": trained.parity,
        "scores": scores,
    }
    (out / "reference.json").write_text(json.dumps(summary, indent=1))
    logger.info("reference model written to %s", trained.onnx)
    return summary
