# Your copy of the course library: labcode/runtime/pipeline.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The whole lab in one call: a model (trained now, or the course's reference model), its ONNX export, its test on
the held-out areas and one segmented image, all under one folder.

:func:`run_pipeline` writes into ``out``: the training run (TensorBoard events, checkpoints, ``best.onnx``) or a copy
of the reference model (``best.onnx``, ``best.pt``), ``test_metrics.json`` (:func:`labcode.scoring.evaluate_areas`),
``inference.png`` with ``inference_mask.png``, and ``pipeline.json`` with the numbers and paths it returns.

Protocol: the validation images, which pick the best epoch, are whole rooms of the training areas, never seen in
training; the test areas (5a and 5b) only measure the chosen model and never choose anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labcode.classes import TEST_AREAS
from labcode.data import StanfordDataset, default_datadir
from labcode.errors import LabError
from labcode.infer import OnnxSegmenter, segment_image_file
from labcode.reference import is_complete, reference_dir, reference_info, train_reference
from labcode.scoring import evaluate_areas, format_metrics_table
from labcode.train import FitResult, fit

logger = logging.getLogger(__name__)


def run_pipeline(
    out: str | Path,
    config=None,
    *,
    retrain: bool = False,
    reference_overrides: dict[str, Any] | None = None,
    areas_test: Sequence[str] = TEST_AREAS,
    test_img_size: int | None = None,
    num_workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or find) a model, export it, test it on ``areas_test`` and segment one of their images.

    Args:
        out: the folder of everything the pipeline writes.
        config: a :class:`labcode.train.TrainConfig` to train a new model with (its ``logdir`` and ``run_name`` are
            set to ``out``), or ``None`` for the course's reference model, trained first when missing
            (:func:`labcode.reference.train_reference`) and copied into ``out``.
        retrain, reference_overrides: train the reference model again even if it exists; recipe fields changed when
            it is trained (``amp``, ``small``, ``device``).
        areas_test, test_img_size: the held-out areas; the side of their images (``None``: the training size, the
            scale the model saw; 0: native).
        num_workers, overwrite, progress: loader processes of the test; replace a non-empty ``out``; tqdm bars.
        command, on_step: the command line, for the run's summary; called with each progress message (default: logged).

    Returns:
        The contents of ``pipeline.json`` (``run_dir``, ``datadir``, ``reference``, ``reference_model``, ``device``,
        ``train_size``, ``valid_size``, ``epochs``, ``seconds_per_epoch``, ``best_macro_f1`` (named as in
        :class:`labcode.train.FitResult`),
        ``best_epoch``, ``onnx``, ``parity``, ``test_areas``, ``test_macro_f1``, ``test_mean_iou``, ``test_metrics``,
        ``inference_figure``, ``inference_mask``, ``total_seconds``), ``interrupted`` False and ``test_scores``; or,
        when a signal stopped the training, ``interrupted`` True, ``reference``, ``signal``, ``last_checkpoint``.

    Raises:
        LabError: ``out`` is not empty (without ``overwrite``), a test area is missing, no model was exported.
    """
    say = on_step or logger.info
    started = time.perf_counter()
    out = Path(out)
    _empty_folder(out, overwrite)
    reference_model = None
    if config is None:
        info = _reference_info(retrain, reference_overrides or {}, progress, command, say)
        if info.get("interrupted"):
            return {"interrupted": True, "reference": True, "signal": None, "last_checkpoint": info["last_checkpoint"]}
        model, datadir, reference_model = _copy_reference(info, out), Path(info["datadir"]), info["model"]
    else:
        model, datadir = _train_new(out, config, areas_test, progress, command, say)
        if model.interrupted:
            return {"interrupted": True, "reference": False, "signal": model.signal,
                    "last_checkpoint": model.last_checkpoint}
        if not model.onnx:
            raise LabError(f"the training in {model.run_dir} produced no ONNX model")
    test_images = StanfordDataset(datadir, areas=list(areas_test))
    epoch_time = _announce(model, areas_test, len(test_images), say)
    test_size = model.img_size if test_img_size is None else (test_img_size or None)
    tested, segmented = _test(model.onnx, datadir, areas_test, test_images.files[0].rgb, out, test_size,
                              num_workers, progress, say)
    summary = {
        "run_dir": str(out), "datadir": str(datadir), "reference": config is None, "reference_model": reference_model,
        **_model_summary(model, epoch_time), "test_areas": list(areas_test), "test_macro_f1": tested["macro_f1"],
        "test_mean_iou": tested["mean_iou"], "test_metrics": str(out / "test_metrics.json"),
        "inference_figure": segmented["figure"], "inference_mask": segmented["mask"],
        "total_seconds": time.perf_counter() - started,
    }
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "interrupted": False, "test_scores": tested}


def _announce(model: FitResult, areas_test: Sequence[str], test_images: int, say: Callable[[str], None]) -> float:
    """Say how the model trained, how it exported, what it is tested on; return its mean epoch time."""
    epoch_time = sum(model.epoch_times) / max(1, len(model.epoch_times))
    say(f"      best validation macro F1 {model.best_macro_f1:.4f} at epoch {model.best_epoch + 1}, "
        f"{epoch_time:.1f} s per epoch")
    say(f"[2/4] exported {model.onnx}; max |ONNX - PyTorch|: "
        + ", ".join(f"{size} {diff:.1e}" for size, diff in model.parity.items()))
    say(f"[3/4] testing on areas {' '.join(areas_test)} ({test_images} images)")
    return epoch_time


def _model_summary(model: FitResult, epoch_time: float) -> dict[str, Any]:
    """The entries of ``pipeline.json`` about the model and its training."""
    return {"device": model.device, "train_size": model.train_size, "valid_size": model.valid_size,
            "epochs": len(model.epoch_times), "seconds_per_epoch": epoch_time,
            "best_macro_f1": model.best_macro_f1, "best_epoch": model.best_epoch, "onnx": model.onnx,
            "parity": model.parity}


def _empty_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise LabError(f"{out} already exists; choose another --name or pass --overwrite")
        shutil.rmtree(out)


def _train_new(out: Path, config, areas_test: Sequence[str], progress: bool, command: str | None,
               say: Callable[[str], None]) -> tuple[FitResult, Path]:
    """Train a new run into ``out``; its result and its data set."""
    datadir = Path(config.datadir) if config.datadir else default_datadir()
    StanfordDataset(datadir, areas=list(areas_test))  # fails early on a missing test area
    config = dataclasses.replace(config, datadir=str(datadir), logdir=str(out.parent), run_name=out.name,
                                 progress=progress, command=command or config.command)
    say(f"[1/4] training {config.model} on areas {' '.join(config.areas_train)} of {datadir}")
    return fit(config), datadir


def _reference_info(retrain: bool, overrides: dict[str, Any], progress: bool, command: str | None,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """The ``reference.json`` of the course's reference model, trained first when missing (or the interruption)."""
    folder = reference_dir()
    if is_complete(folder) and not retrain:
        say(f"[1/4] reference model found in {folder} (--retrain trains it again)")
        return reference_info(folder)
    say(f"[1/4] training the reference model into {folder}")
    return train_reference(None, folder, progress=progress, command=command, **overrides)


def _copy_reference(info: dict[str, Any], out: Path) -> FitResult:
    """Copy the reference model into ``out``; its training's result, read back from its ``reference.json`` (whose
    entries carry :class:`labcode.train.FitResult`'s names)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("best.onnx", "best.pt"):  # a copy beside the results, where a training run leaves its model
        shutil.copy2(Path(info["model"]).with_name(name), out / name)
    epoch_times = list(info.get("epoch_times", []))
    return FitResult(
        run_dir=str(info.get("run_dir", Path(info["model"]).parent)), best_checkpoint=str(out / "best.pt"),
        last_checkpoint=None, onnx=str(out / "best.onnx"), best_macro_f1=info["best_macro_f1"],
        best_epoch=info["best_epoch"], best_metrics={}, history=[], epoch_times=epoch_times,
        epochs_completed=len(epoch_times), interrupted=False, signal=None, parity=dict(info.get("parity", {})),
        device=str(info.get("device", "unknown")), precision=str(info.get("precision", "unknown")), rank=0,
        img_size=info["img_size"], areas_train=list(info["areas_train"]), train_size=info["train_size"],
        valid_size=info["valid_size"], fingerprint="", reused=True)


def _test(onnx: str, datadir: Path, areas_test: Sequence[str], image: Path, out: Path, test_size: int | None,
          num_workers: int, progress: bool, say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the exported model on the test areas (``test_metrics.json``) and segment ``image``."""
    segmenter = OnnxSegmenter(onnx)
    tested = evaluate_areas(segmenter, datadir, list(areas_test), img_size=test_size, num_workers=num_workers,
                            progress=progress)
    (out / "test_metrics.json").write_text(json.dumps(tested, indent=2))
    say(format_metrics_table(tested))
    say(f"[4/4] segmenting {image.name}")
    return tested, segment_image_file(segmenter, image, out / "inference.png", max_size=test_size)
