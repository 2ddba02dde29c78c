"""Colour maps, overlays and the figures of the course."""

from __future__ import annotations

import numpy as np

from labcode.classes import CLASS_COLORS
from labcode.viz import (
    colorize,
    overlay,
    plot_class_histogram,
    plot_confusion_matrix,
    plot_focal_term,
    plot_inference,
    plot_predictions,
    plot_sample,
)
from tests.test_transforms import coded_pair


def test_colorize_and_overlay():
    mask = np.array([[0, 12], [5, 99]])
    colours = colorize(mask)
    assert colours.dtype == np.uint8 and colours.shape == (2, 2, 3)
    np.testing.assert_array_equal(colours[0, 1], CLASS_COLORS[12])
    np.testing.assert_array_equal(colours[1, 1], CLASS_COLORS[0])  # out of range drawn as <UNK>
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay(image, mask, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], image[0, 0])  # <UNK> keeps the image
    np.testing.assert_array_equal(blended[1, 0], ((100 + CLASS_COLORS[5].astype(float)) / 2 + 0.5).astype(np.uint8))


def test_figures_render_to_png(tmp_path):
    image, mask = coded_pair(32, 32)
    figures = {
        "sample": plot_sample(image, mask, augmented=(image[::-1], mask[::-1]), title="x"),
        "predictions": plot_predictions(np.stack([image, image]), np.stack([mask, mask]), np.stack([mask, mask])),
        "inference": plot_inference(image, mask),
        "confusion": plot_confusion_matrix(np.eye(14) * 5 + 1),
        "histogram": plot_class_histogram(np.arange(1, 15)),
        "focal": plot_focal_term(),
    }
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=50)
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
