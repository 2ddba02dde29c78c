# Your copy of the course library: labcode/metrics.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Segmentation metrics over a whole data set, from one confusion matrix accumulated batch after batch.

The confusion matrix ``cm`` is (K, K): ``cm[t, p]`` counts the pixels of target class ``t`` predicted as ``p``
(rows = target, columns = prediction). For class k, ``TP = cm[k, k]``, ``FP`` is the rest of column k and ``FN``
the rest of row k. Then

- per-class F1 (the seed's formula): ``TP / (TP + (FP + FN) / 2)``; macro F1: its mean over the classes;
- per-class IoU: ``TP / (TP + FP + FN)``; mIoU: its mean over the classes;
- pixel accuracy: ``trace(cm) / sum(cm)``.

**Absent classes.** A class with ``TP = FP = FN = 0`` (absent from both the targets and the predictions) has no
defined F1 or IoU: its per-class value is NaN and it is left out of the macro F1 and of the mIoU, which average over
the other classes. A class present in the targets but never predicted (or predicted but absent) counts, with F1 and
IoU 0. When every class is undefined (empty matrix), the averages are NaN.

Accumulating counts and reducing once at the end gives the data-set score; averaging per-batch scores would not
(a batch without some class would distort the mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

ArrayLike = torch.Tensor | np.ndarray


def _as_numpy(cm: ArrayLike) -> np.ndarray:
    cm = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    return cm.astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_defined(values: np.ndarray) -> float:
    defined = ~np.isnan(values)
    return float(values[defined].mean()) if defined.any() else float("nan")


def f1_per_class(cm: ArrayLike) -> np.ndarray:
    """Per-class F1 ``TP / (TP + (FP + FN) / 2)`` from a (K, K) confusion matrix; NaN for absent classes."""
    cm = _as_numpy(cm)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    return _ratio(tp, tp + 0.5 * (fp + fn))


def iou_per_class(cm: ArrayLike) -> np.ndarray:
    """Per-class intersection over union ``TP / (TP + FP + FN)``; NaN for absent classes."""
    cm = _as_numpy(cm)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=0) + cm.sum(axis=1) - tp)


def macro_f1(cm: ArrayLike) -> float:
    """Mean of the per-class F1 over the classes where it is defined."""
    return _mean_defined(f1_per_class(cm))


def mean_iou(cm: ArrayLike) -> float:
    """Mean of the per-class IoU over the classes where it is defined (mIoU)."""
    return _mean_defined(iou_per_class(cm))


def pixel_accuracy(cm: ArrayLike) -> float:
    """Fraction of pixels whose prediction is right; NaN for an empty matrix."""
    cm = _as_numpy(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


class ConfusionMatrix:
    """Confusion matrix accumulated over batches, reduced to the metrics at the end.

    The counts live on the device of the last batch (one ``torch.bincount`` per update, no copy to the host).

    Args:
        num_classes: number of classes K.
        ignore_index: target label of the pixels to leave out, or None.

    Example::

        cm = ConfusionMatrix(14)
        for images, masks in loader:
            cm.update(model(images), masks)
        scores = cm.compute()  # scores["macro_f1"], scores["iou_per_class"], ...

    Under ``torch.distributed``, :meth:`all_reduce` adds the counts of every process before the metrics are taken;
    :meth:`summary` gives the same metrics as plain Python numbers, under the same keys.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def reset(self) -> None:
        """Set all counts back to 0."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: predicted labels, or logits / scores whose argmax over dim 1 is taken.
            target: target labels, any integer dtype.

        Shape:
            - pred: ``(B, H, W)`` labels or ``(B, K, H, W)`` logits
            - target: ``(B, H, W)``

        Raises:
            ValueError: mismatching shapes, or a label outside ``0 .. K-1`` (other than ``ignore_index``).
        """
        k = self.num_classes
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != k:
                raise ValueError(f"pred has {pred.shape[1]} class scores in dim 1, expected {k}")
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} and {tuple(target.shape)}")
        target, pred = target.reshape(-1).long(), pred.reshape(-1).to(target.device).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, pred = target[keep], pred[keep]
        if ((target < 0) | (target >= k) | (pred < 0) | (pred >= k)).any():
            raise ValueError(f"labels must lie in 0..{k - 1} (or be ignore_index={self.ignore_index})")
        counts = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)
        self.matrix = self.matrix.to(counts.device) + counts

    def compute(self) -> dict:
        """The metrics of everything accumulated so far.

        Returns:
            dict with ``f1_per_class``, ``iou_per_class`` (float64 arrays (K,), NaN for absent classes),
            ``macro_f1``, ``mean_iou``, ``pixel_accuracy`` (floats) and ``support`` (int64 array (K,), the number
            of target pixels of each class).
        """
        cm = self.matrix.cpu()
        return {
            "f1_per_class": f1_per_class(cm),
            "iou_per_class": iou_per_class(cm),
            "macro_f1": macro_f1(cm),
            "mean_iou": mean_iou(cm),
            "pixel_accuracy": pixel_accuracy(cm),
            "support": cm.sum(dim=1).numpy(),
        }

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """:meth:`compute` as plain Python numbers, under the same keys (for logs, JSON and TensorBoard).

        Args:
            class_names: when given, the per-class values are dicts ``{class name: value}`` in this order, else lists.

        Returns:
            ``macro_f1``, ``mean_iou``, ``pixel_accuracy`` (floats), ``f1_per_class``, ``iou_per_class`` (floats,
            NaN for absent classes: :func:`nan_to_none` makes them strict JSON) and ``support`` (ints).
        """
        scores = self.compute()

        def per_class(values, kind):
            values = [kind(value) for value in values]
            return dict(zip(class_names, values, strict=True)) if class_names is not None else values

        return {
            "macro_f1": float(scores["macro_f1"]),
            "mean_iou": float(scores["mean_iou"]),
            "pixel_accuracy": float(scores["pixel_accuracy"]),
            "f1_per_class": per_class(scores["f1_per_class"], float),
            "iou_per_class": per_class(scores["iou_per_class"], float),
            "support": per_class(scores["support"], int),
        }

    def all_reduce(self, device: torch.device | str | None = None) -> "ConfusionMatrix":
        """Add the counts of every process of ``torch.distributed`` into this matrix (nothing to do without it).

        Args:
            device: where the reduction happens (a CUDA device for NCCL); default: where the counts are.

        Returns:
            ``self``, holding the counts of the union of the processes' batches.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return self
        matrix = self.matrix.to(device if device is not None else self.matrix.device)
        dist.all_reduce(matrix)
        self.matrix = matrix.to(self.matrix.device)
        return self


def constant_predictor_scores(frequencies: ArrayLike, predicted_class: int) -> dict:
    """Accuracy and macro F1 of a model that predicts ``predicted_class`` for every pixel.

    The scores come from the confusion matrix such a model produces, every pixel in column ``predicted_class``, and
    the same functions as for a trained model (questions 4.1 and 4.2 of the lab ask for them by hand).

    Args:
        frequencies: share (or count) of the pixels of each class, shape (K,); normalised here to sum to 1.
        predicted_class: the class always predicted.

    Returns:
        ``{"pixel_accuracy": float, "macro_f1": float}``
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    if freq.ndim != 1 or (freq < 0).any() or freq.sum() <= 0:
        raise ValueError("frequencies must be a 1-d array of non-negative numbers with a positive sum")
    if not 0 <= predicted_class < len(freq):
        raise ValueError(f"predicted_class must be in 0..{len(freq) - 1}, got {predicted_class}")
    cm = np.zeros((len(freq), len(freq)))
    cm[:, predicted_class] = freq / freq.sum()
    return {"pixel_accuracy": pixel_accuracy(cm), "macro_f1": macro_f1(cm)}


def nan_to_none(value: Any) -> Any:
    """Replace NaN floats (absent classes) by ``None`` in nested dicts and lists, for strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value
