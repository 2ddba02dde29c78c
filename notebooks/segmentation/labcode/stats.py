# Your copy of the course library: labcode/stats.py, used by the lab's notebooks.
# The exercises in this file are yours: replace each `raise NotImplementedError` marked EXERCISE
# with your code, as the notebook named there asks, and leave the rest as it is.
"""Class statistics of a data set and the class-weight strategies built on them.

Weights are normalised so that their average over the classes that occur is 1; a class with no pixel gets weight 0
(nothing can be learnt about it, and an infinite weight would be meaningless).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labcode.classes import NUM_CLASSES
from labcode.errors import unknown_name


def class_histogram(dataset, *, progress: bool = True, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count the pixels of each class over a data set.

    Args:
        dataset: a :class:`labcode.data.StanfordDataset` (its ``load_mask`` is used, so transforms do not apply),
            or any sequence of ``(image, mask)`` pairs.
        progress: show a progress bar.
        num_classes: number of classes K.

    Returns:
        ``int64`` array (K,) of pixel counts.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    load = getattr(dataset, "load_mask", None) or (lambda i: np.asarray(dataset[i][1]))
    from labcode.runtime.progress import progress_bar  # the bar's machinery, loaded only when counting

    for i in progress_bar(range(len(dataset)), desc="class histogram", disable=not progress, unit="img"):
        counts += np.bincount(load(i).ravel(), minlength=num_classes)[:num_classes]
    return counts


def _frequencies(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be a 1-d array of non-negative numbers with a positive sum")
    return counts / counts.sum()


def _normalise(weights: np.ndarray, present: np.ndarray) -> np.ndarray:
    weights = np.where(present, weights, 0.0)
    return (weights * present.sum() / weights.sum()).astype(np.float32)


def uniform_weights(counts: np.ndarray) -> np.ndarray:
    """Every class that occurs weighs 1 (plain cross-entropy)."""
    present = _frequencies(counts) > 0
    return _normalise(np.ones(len(present)), present)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """``w_k`` proportional to ``1 / f_k``, where ``f_k`` is the fraction of pixels of class k."""
    # EXERCISE "Class weights" (see notebook 04_metrics_losses.ipynb): replace the next line with your code.
    raise NotImplementedError("Class weights: write it (see notebook 04_metrics_losses.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 04_metrics_losses first, then run this again.")


def inverse_sqrt_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """``w_k`` proportional to ``1 / sqrt(f_k)``: a softer re-balancing than the inverse frequency."""
    freq = _frequencies(counts)
    present = freq > 0
    raw = np.divide(1.0, np.sqrt(freq), out=np.zeros_like(freq), where=present)
    return _normalise(raw, present)


def median_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus, 2015): ``w_k = median(f) / f_k`` over the classes that occur."""
    freq = _frequencies(counts)
    present = freq > 0
    raw = np.divide(np.median(freq[present]), freq, out=np.zeros_like(freq), where=present)
    return _normalise(raw, present)


def effective_number_weights(counts: np.ndarray, beta: float = 0.9999) -> np.ndarray:
    """Class-balanced weights of Cui et al. (2019): ``w_k`` proportional to ``(1 - beta) / (1 - beta ** n_k)``.

    ``(1 - beta ** n) / (1 - beta)`` is the "effective number" of samples among ``n``. With pixel counts (millions
    per class) ``beta ** n_k`` vanishes for the usual ``beta = 0.9999`` and all weights become equal: ``beta`` must
    be much closer to 1 (e.g. ``1 - 1e-7``) for the weights to differ.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = _frequencies(counts) > 0
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    effective = -np.expm1(counts * np.log(beta)) / (1.0 - beta) if beta > 0 else np.ones_like(counts)
    raw = np.divide(1.0, effective, out=np.zeros_like(counts), where=present)
    return _normalise(raw, present)


WEIGHT_STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform_weights,
    "inverse": inverse_frequency_weights,
    "inverse_sqrt": inverse_sqrt_frequency_weights,
    "median": median_frequency_weights,
    "effective": effective_number_weights,
}


def class_weights(counts: np.ndarray, strategy: str, *, beta: float = 0.9999) -> np.ndarray:
    """Class weights for a weighted loss from pixel counts.

    Args:
        counts: pixel count (or frequency) per class, shape (K,).
        strategy: one of ``WEIGHT_STRATEGIES``: ``uniform``, ``inverse``, ``inverse_sqrt``, ``median``, ``effective``.
        beta: parameter of the ``effective`` strategy, the only one that takes it (the others ignore it).

    Returns:
        ``float32`` array (K,) with mean 1 over the classes present, 0 for absent ones.
    """
    if strategy not in WEIGHT_STRATEGIES:
        raise unknown_name("class-weight strategy", strategy, list(WEIGHT_STRATEGIES))
    if strategy == "effective":
        return effective_number_weights(counts, beta=beta)
    return WEIGHT_STRATEGIES[strategy](counts)
