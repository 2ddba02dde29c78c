"""Class histogram and class-weight strategies against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labcode.classes import NUM_CLASSES
from labcode.data import StanfordDataset
from labcode.errors import UnknownNameError
from labcode.stats import WEIGHT_STRATEGIES, class_histogram, class_weights

COUNTS = np.array([10, 0, 30, 60])  # class 1 absent


def normalised(raw):
    raw = np.array(raw, dtype=float)
    return raw * 3 / raw.sum()  # 3 classes present: mean weight 1 over them


def test_histogram_counts_pixels(tiny_root):
    ds = StanfordDataset(tiny_root["root"])
    want = np.zeros(NUM_CLASSES, dtype=np.int64)
    for _, mask in tiny_root["expected"].values():
        for value in mask.ravel():
            want[value] += 1
    got = class_histogram(ds, progress=False)
    np.testing.assert_array_equal(got, want)
    assert got.sum() == 3 * 15


def test_inverse_frequency_by_hand():
    w = class_weights(COUNTS, "inverse")
    np.testing.assert_allclose(w, [*normalised([100 / 10, 0, 100 / 30, 100 / 60])[:1], 0,
                                   *normalised([100 / 10, 0, 100 / 30, 100 / 60])[2:]], rtol=1e-6)
    assert w[1] == 0 and math.isclose(w[[0, 2, 3]].mean(), 1.0, rel_tol=1e-6)
    assert w[0] > w[2] > w[3]


def test_inverse_sqrt_by_hand():
    f = np.array([0.1, 0.0, 0.3, 0.6])
    raw = [1 / math.sqrt(0.1), 0, 1 / math.sqrt(0.3), 1 / math.sqrt(0.6)]
    np.testing.assert_allclose(class_weights(COUNTS, "inverse_sqrt"), normalised(raw), rtol=1e-6)
    assert f.sum() == pytest.approx(1.0)


def test_median_frequency_by_hand():
    median = 0.3  # median of the present frequencies 0.1, 0.3, 0.6
    raw = [median / 0.1, 0, median / 0.3, median / 0.6]
    w = class_weights(COUNTS, "median")
    np.testing.assert_allclose(w, normalised(raw), rtol=1e-6)


def test_effective_number_by_hand_and_beta_matters():
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**10), 0, (1 - beta) / (1 - beta**30), (1 - beta) / (1 - beta**60)]
    np.testing.assert_allclose(class_weights(COUNTS, "effective", beta=beta), normalised(raw), rtol=1e-5)
    # pixel counts in the millions: the usual beta gives uniform weights, a beta much closer to 1 does not
    pixels = np.array([2e6, 5e7, 9e8])
    flat = class_weights(pixels, "effective", beta=0.9999)
    np.testing.assert_allclose(flat, [1, 1, 1], rtol=1e-6)
    sharp = class_weights(pixels, "effective", beta=1 - 1e-7)
    assert sharp[0] > 2 * sharp[2]


def test_beta_reaches_the_effective_strategy_alone():
    for name, strategy in WEIGHT_STRATEGIES.items():
        if name != "effective":
            np.testing.assert_array_equal(class_weights(COUNTS, name, beta=0.5), strategy(COUNTS))
            with pytest.raises(TypeError):
                strategy(COUNTS, beta=0.5)
    assert not np.allclose(class_weights(COUNTS, "effective", beta=0.5), class_weights(COUNTS, "effective", beta=0.99))


def test_uniform_and_registry_errors():
    np.testing.assert_allclose(class_weights(COUNTS, "uniform"), [1, 0, 1, 1])
    with pytest.raises(UnknownNameError, match="valid names: effective, inverse, inverse_sqrt, median, uniform"):
        class_weights(COUNTS, "banana")
    with pytest.raises(ValueError):
        class_weights(np.array([0, 0]), "inverse")
    assert set(WEIGHT_STRATEGIES) == {"uniform", "inverse", "inverse_sqrt", "median", "effective"}
