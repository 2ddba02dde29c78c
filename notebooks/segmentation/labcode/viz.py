# Your copy of the course library: labcode/viz.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Colour maps, overlays, legends and the figures of the course.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state): callers save them with ``fig.savefig`` or
log them to TensorBoard; Jupyter displays them when they are the value of a cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labcode.classes import CLASS_COLORS, CLASSES, REAL_CLASS_FREQUENCIES


def colorize(mask: np.ndarray) -> np.ndarray:
    """Map class indices to colours.

    Shape:
        (H, W) integers in, ``uint8`` (H, W, 3) out. Indices out of range are drawn black like ``<UNK>``.
    """
    mask = np.asarray(mask)
    index = np.where((mask >= 0) & (mask < len(CLASS_COLORS)), mask, 0)
    return CLASS_COLORS[index]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``mask`` over an RGB ``uint8`` image; ``<UNK>`` pixels keep the image."""
    image = np.asarray(image, dtype=np.float32)
    colour = colorize(mask).astype(np.float32)
    known = (np.asarray(mask) > 0)[..., None]
    blended = np.where(known, (1 - alpha) * image + alpha * colour, image)
    return (blended + 0.5).astype(np.uint8)


def legend_handles(classes: Sequence[str] = CLASSES) -> list[Patch]:
    """One coloured patch per class, for ``ax.legend(handles=...)``."""
    return [Patch(facecolor=CLASS_COLORS[i] / 255.0, edgecolor="black", label=name) for i, name in enumerate(classes)]


def _legend_axis(ax, ncol: int = 1) -> None:
    ax.axis("off")
    ax.legend(handles=legend_handles(), loc="center", ncol=ncol, frameon=False, fontsize=8)


def plot_sample(image: np.ndarray, mask: np.ndarray, augmented: tuple[np.ndarray, np.ndarray] | None = None,
                title: str | None = None) -> Figure:
    """The image, its colourised mask, optionally an augmented version of both, and the legend."""
    panels = [("image", image), ("mask", colorize(mask))]
    if augmented is not None:
        panels += [("augmented image", augmented[0]), ("augmented mask", colorize(augmented[1]))]
    fig = Figure(figsize=(3.2 * (len(panels) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (name, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    _legend_axis(axes[-1])
    if title:
        fig.suptitle(title)
    return fig


def plot_predictions(images: np.ndarray, targets: np.ndarray, preds: np.ndarray, max_items: int = 4) -> Figure:
    """One row per image: the image, ground truth overlay, prediction overlay.

    Shape:
        images ``uint8`` (B, H, W, 3); targets and preds (B, H, W).
    """
    n = min(max_items, len(images))
    fig = Figure(figsize=(9, 3 * n + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 3))
    for row in range(n):
        for col, (name, picture) in enumerate(
            [("image", images[row]), ("ground truth", overlay(images[row], targets[row])),
             ("prediction", overlay(images[row], preds[row]))]
        ):
            axes[row, col].imshow(picture, interpolation="nearest")
            axes[row, col].axis("off")
            if row == 0:
                axes[row, col].set_title(name)
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=7, fontsize=7, frameon=False)
    return fig


def plot_inference(image: np.ndarray, pred: np.ndarray, title: str | None = None) -> Figure:
    """A photo, its colourised prediction (same resolution) and the legend."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 0.45])
    axes[0].imshow(image)
    axes[0].set_title(f"input {image.shape[1]}x{image.shape[0]}")
    axes[1].imshow(colorize(pred), interpolation="nearest")
    axes[1].set_title("prediction")
    for ax in axes[:2]:
        ax.axis("off")
    _legend_axis(axes[2])
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(cm, labels: Sequence[str] = CLASSES, normalize: bool = True) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted class), row-normalised by default."""
    cm = np.asarray(cm.cpu() if hasattr(cm, "cpu") else cm, dtype=np.float64)
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if normalize:
        for (i, j), value in np.ndenumerate(cm):
            if value >= 0.01:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value > 0.5 else "black")
    fig.colorbar(shown, ax=ax, shrink=0.8)
    return fig


def plot_class_histogram(counts: np.ndarray, labels: Sequence[str] = CLASSES,
                         reference: np.ndarray | None = REAL_CLASS_FREQUENCIES) -> Figure:
    """Bar chart of the class frequencies of ``counts``, beside the real data set's when ``reference`` is given."""
    freq = np.asarray(counts, dtype=np.float64)
    freq = freq / freq.sum()
    x = np.arange(len(labels))
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.4 if reference is not None else 0.8
    ax.bar(x - (width / 2 if reference is not None else 0), 100 * freq, width, label="this data set",
           color=CLASS_COLORS[: len(labels)] / 255.0, edgecolor="black")
    if reference is not None:
        ax.bar(x + width / 2, 100 * np.asarray(reference), width, label="Stanford 2D-3D-S", color="white",
               edgecolor="black", hatch="//")
        ax.legend()
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylabel("pixels (%)")
    return fig


def plot_focal_term(gammas: Sequence[float] = (0, 0.5, 1, 2, 5)) -> Figure:
    """The focal loss against the probability of the true class, for several ``gamma`` (gamma 0 is cross-entropy).

    The labels write the symbols of the course's text: :math:`\\hat{p}_y` for the probability of the true class
    :math:`y`, :math:`\\gamma` for the focusing parameter.
    """
    p = np.linspace(1e-3, 1.0, 400)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for gamma in gammas:
        label = rf"$\gamma = {gamma:g}$" + (" (cross-entropy)" if gamma == 0 else "")
        left.plot(p, (1 - p) ** gamma, label=label)
        right.plot(p, -((1 - p) ** gamma) * np.log(p), label=label)
    left.set_title(r"modulating factor $(1 - \hat{p}_y)^{\gamma}$")
    right.set_title(r"focal loss $-(1 - \hat{p}_y)^{\gamma} \, \log \hat{p}_y$")
    right.set_ylim(0, 5)
    for ax in (left, right):
        ax.set_xlabel(r"probability of the true class, $\hat{p}_y$")
        ax.legend(fontsize=8)
    return fig
