"""Augmentation presets keep image and mask aligned; preprocessing matches the training normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labcode.classes import CLASS_COLORS
from labcode.transforms import MEAN, STD, PairedTransform, denormalize, eval_transforms, preprocess, train_transforms


def coded_pair(h=96, w=128):
    """An image whose colour encodes the class of each pixel, so alignment can be checked after augmentation."""
    rng = np.random.default_rng(0)
    mask = np.zeros((h, w), dtype=np.uint8)
    for k in range(1, 14):  # random rectangles of each class
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        mask[y:y + 24, x:x + 24] = k
    image = CLASS_COLORS[mask].copy()
    return image, mask


@pytest.mark.parametrize("seed", range(5))
def test_train_preset_keeps_image_and_mask_aligned(seed):
    image, mask = coded_pair()
    pipeline = train_transforms(48)
    pipeline.set_random_seed(seed)
    x, y = PairedTransform(pipeline)(image, mask)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert y.shape == (48, 48) and y.dtype == torch.int64
    assert set(np.unique(y.numpy())) <= set(range(14))  # nearest neighbour: no invented labels
    # brightness/contrast act on the whole image, so each label region must stay one flat colour; a shifted mask
    # (misalignment) breaks that, which the last assertion checks so that this test can fail
    rgb = denormalize(x).astype(int)
    assert region_flatness(rgb, y.numpy()) > 0.8
    assert region_flatness(rgb, np.roll(y.numpy(), 6, axis=1)) < region_flatness(rgb, y.numpy()) - 0.1


def region_flatness(rgb: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of pixels whose colour is within 12 of the median colour of their label's region."""
    ok = np.zeros(labels.shape, dtype=bool)
    for k in np.unique(labels):
        region = labels == k
        median = np.median(rgb[region], axis=0)
        ok[region] = np.abs(rgb[region] - median).max(axis=-1) <= 12
    return float(ok.mean())


def test_eval_preset_resizes_with_nearest_and_normalises():
    image, mask = coded_pair()
    x, y = PairedTransform(eval_transforms(64))(image, mask)
    assert x.shape == (3, 64, 64) and y.shape == (64, 64)
    assert set(np.unique(y.numpy())) <= set(np.unique(mask))
    x_full, y_full = PairedTransform(eval_transforms(None))(image, mask)
    np.testing.assert_array_equal(y_full.numpy(), mask)
    np.testing.assert_allclose(x_full.numpy(), preprocess(image), atol=1e-5)


def test_preprocess_formula_and_inverse():
    image = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    x = preprocess(image)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    want = (image[2, 3, 1] / 255 - MEAN[1]) / STD[1]
    assert x[1, 2, 3] == pytest.approx(want, abs=1e-6)
    np.testing.assert_array_equal(denormalize(torch.from_numpy(x)), image)
