# Your copy of the course library: labcode/scoring.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""A model scored on whole areas of the data set: one confusion matrix over every pixel, and its table.

:func:`evaluate_areas` feeds every image of some areas through a segmenter (:mod:`labcode.infer`) and returns the
metrics of :meth:`labcode.metrics.ConfusionMatrix.summary` (the same names as in training) with the class names,
ready for JSON; :func:`format_metrics_table` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.infer import Segmenter, check_logits
from labcode.metrics import ConfusionMatrix, nan_to_none


def evaluate_areas(
    segmenter: Segmenter,
    datadir: str | Path,
    areas: Sequence[str],
    *,
    img_size: int | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment every image of ``areas`` and score the predictions with one confusion matrix over all pixels.

    Args:
        segmenter: the model.
        datadir: data set root.
        areas: areas to test on, e.g. ``["5a", "5b"]``.
        img_size: resize images (and masks, nearest) to this square size; native resolution when ``None``.
        batch_size, num_workers: loading (``batch_size > 1`` needs equal sizes, e.g. with ``img_size``).
        progress: show a progress bar.

    Returns:
        JSON-ready dict (``None`` for an absent class): ``model``, ``datadir``, ``areas``, ``images``, ``macro_f1``,
        ``mean_iou``, ``pixel_accuracy``, ``f1_per_class``, ``iou_per_class`` and ``support`` (class name -> value),
        ``confusion`` (K x K counts, rows are targets).
    """
    import torch

    from labcode.data import get_test_dataloader
    from labcode.runtime.progress import progress_bar

    loader = get_test_dataloader(datadir, list(areas), img_size=img_size, batch_size=batch_size,
                                 num_workers=num_workers)
    confusion = ConfusionMatrix(NUM_CLASSES)
    images = 0
    for batch, targets in progress_bar(loader, desc=f"test {' '.join(areas)}", disable=not progress, unit="batch"):
        preds = check_logits(segmenter.logits(batch.numpy()), segmenter.path).argmax(axis=1)
        confusion.update(torch.from_numpy(preds.astype(np.int64)), targets)
        images += batch.shape[0]
    return nan_to_none({
        "model": str(segmenter.path),
        "datadir": str(datadir),
        "areas": list(areas),
        "images": images,
        **confusion.summary(CLASSES),
        "confusion": confusion.matrix.cpu().tolist(),
    })


def _cell(value: float | None) -> str:
    return "     -" if value is None or value != value else f"{value:6.3f}"


def format_metrics_table(result: dict[str, Any]) -> str:
    """A plain-text table of per-class F1 and IoU followed by the macro F1, mIoU and pixel accuracy."""
    f1, iou = result["f1_per_class"], result["iou_per_class"]
    width = max(len(name) for name in f1)
    lines = [f"{'class':<{width}}  {'F1':>6}  {'IoU':>6}", "-" * (width + 16)]
    lines += [f"{name:<{width}}  {_cell(f1[name])}  {_cell(iou[name])}" for name in f1]
    lines += ["-" * (width + 16), f"{'macro F1':<{width}}  {_cell(result['macro_f1'])}",
              f"{'mIoU':<{width}}  {_cell(result['mean_iou'])}",
              f"{'accuracy':<{width}}  {_cell(result['pixel_accuracy'])}"]
    return "\n".join(lines)
