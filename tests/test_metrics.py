"""Confusion-matrix metrics against an independent numpy computation (loops over classes)."""

import math

import numpy as np
import pytest
import torch

from labcode.classes import NUM_CLASSES, REAL_CLASS_FREQUENCIES
from labcode.metrics import (
    ConfusionMatrix,
    constant_predictor_scores,
    f1_per_class,
    iou_per_class,
    macro_f1,
    mean_iou,
    nan_to_none,
    pixel_accuracy,
)

K = 5


def reference_scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Counts and scores class by class, straight from the definitions."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    f1, iou = [], []
    for t in range(num_classes):
        for p in range(num_classes):
            cm[t, p] = np.sum((target == t) & (pred == p))
    for k in range(num_classes):
        tp = np.sum((pred == k) & (target == k))
        fp = np.sum((pred == k) & (target != k))
        fn = np.sum((pred != k) & (target == k))
        f1.append(tp / (tp + 0.5 * (fp + fn)) if tp + fp + fn else math.nan)
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    defined_f1 = [v for v in f1 if not math.isnan(v)]
    defined_iou = [v for v in iou if not math.isnan(v)]
    return {
        "matrix": cm,
        "f1_per_class": np.array(f1),
        "iou_per_class": np.array(iou),
        "macro_f1": sum(defined_f1) / len(defined_f1),
        "mean_iou": sum(defined_iou) / len(defined_iou),
        "pixel_accuracy": np.mean(pred == target),
        "support": np.array([np.sum(target == k) for k in range(num_classes)]),
    }


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    target = rng.integers(0, K - 1, size=(3, 6, 7))  # class K-1 never in the target ...
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, K - 1, size=target.shape))
    pred[0, 0, 0] = K - 1  # ... but predicted once: F1 = IoU = 0, still averaged
    return pred, target


def assert_scores_equal(scores: dict, expected: dict) -> None:
    for key in ("f1_per_class", "iou_per_class", "support"):
        np.testing.assert_allclose(scores[key], expected[key], err_msg=key)
    for key in ("macro_f1", "mean_iou", "pixel_accuracy"):
        assert scores[key] == pytest.approx(expected[key]), key


def test_matrix_and_scores_against_reference(batch):
    pred, target = batch
    cm = ConfusionMatrix(K)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    expected = reference_scores(pred, target, K)
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), expected["matrix"])
    assert_scores_equal(cm.compute(), expected)
    assert expected["f1_per_class"][K - 1] == 0.0  # predicted but absent: counted as 0


def test_summary_is_plain_numbers_under_the_same_names(batch):
    pred, target = batch
    cm = ConfusionMatrix(K)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    expected = reference_scores(pred, target, K)
    summary = cm.summary()
    assert sorted(summary) == sorted(cm.compute())
    assert_scores_equal(summary, expected)
    assert all(type(summary[key]) is float for key in ("macro_f1", "mean_iou", "pixel_accuracy"))
    assert all(type(v) is float for v in summary["f1_per_class"] + summary["iou_per_class"])
    assert summary["support"] == expected["support"].tolist() and all(type(v) is int for v in summary["support"])
    named = cm.summary(["a", "b", "c", "d", "e"])
    assert named["f1_per_class"] == dict(zip("abcde", summary["f1_per_class"]))
    assert named["support"] == dict(zip("abcde", summary["support"])) and named["macro_f1"] == summary["macro_f1"]
    with pytest.raises(ValueError):
        cm.summary(["too", "few"])


def test_summary_of_absent_classes_becomes_strict_json():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))  # class 2 in neither
    summary = cm.summary()
    assert math.isnan(summary["f1_per_class"][2]) and math.isnan(summary["iou_per_class"][2])
    strict = nan_to_none(summary)
    assert strict["f1_per_class"] == [1.0, 1.0, None] and strict["iou_per_class"] == [1.0, 1.0, None]
    assert nan_to_none({"a": (1.0, float("nan")), "b": "text", "c": 3}) == {"a": [1.0, None], "b": "text", "c": 3}


def test_all_reduce_without_a_process_group_keeps_the_counts(batch):
    pred, target = batch
    cm = ConfusionMatrix(K)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    before = cm.matrix.clone()
    assert cm.all_reduce() is cm and torch.equal(cm.matrix, before)


def test_pure_functions_accept_tensors_and_arrays(batch):
    pred, target = batch
    expected = reference_scores(pred, target, K)
    for cm in (expected["matrix"], torch.from_numpy(expected["matrix"])):
        np.testing.assert_allclose(f1_per_class(cm), expected["f1_per_class"])
        np.testing.assert_allclose(iou_per_class(cm), expected["iou_per_class"])
        assert macro_f1(cm) == pytest.approx(expected["macro_f1"])
        assert mean_iou(cm) == pytest.approx(expected["mean_iou"])
        assert pixel_accuracy(cm) == pytest.approx(expected["pixel_accuracy"])
    with pytest.raises(ValueError, match="square"):
        macro_f1(np.zeros((3, 4)))


def test_logits_give_the_same_matrix_as_their_argmax(batch):
    pred, target = batch
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), K).movedim(-1, 1).float()
    logits += 0.1 * torch.rand_like(logits)  # argmax unchanged
    from_logits, from_labels = ConfusionMatrix(K), ConfusionMatrix(K)
    from_logits.update(logits, torch.from_numpy(target).to(torch.uint8))
    from_labels.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert torch.equal(from_logits.matrix, from_labels.matrix)


def test_accumulating_batches_equals_one_big_batch(batch):
    pred, target = batch
    whole, pieces = ConfusionMatrix(K), ConfusionMatrix(K)
    whole.update(torch.from_numpy(pred), torch.from_numpy(target))
    for i in range(len(pred)):
        pieces.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    assert torch.equal(whole.matrix, pieces.matrix)
    assert pieces.compute()["macro_f1"] == pytest.approx(whole.compute()["macro_f1"])
    # averaging per-batch macro F1s would not give the data-set value
    per_batch = [reference_scores(pred[i], target[i], K)["macro_f1"] for i in range(len(pred))]
    assert np.mean(per_batch) != pytest.approx(whole.compute()["macro_f1"])
    pieces.reset()
    assert pieces.matrix.sum() == 0 and math.isnan(pieces.compute()["macro_f1"])


def test_ignore_index_drops_pixels(batch):
    pred, target = batch
    target = target.astype(np.uint8)
    target[1] = 255
    cm = ConfusionMatrix(K, ignore_index=255)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    keep = target != 255
    assert_scores_equal(cm.compute(), reference_scores(pred[keep], target[keep], K))
    with pytest.raises(ValueError, match="labels must lie in"):
        ConfusionMatrix(K).update(torch.from_numpy(pred), torch.from_numpy(target))


def test_absent_class_is_nan_and_left_out_of_the_averages():
    target = torch.tensor([[0, 0, 1, 1, 3, 3]])
    pred = torch.tensor([[0, 1, 1, 1, 3, 0]])  # class 2 in neither, class 4 in neither
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    scores = cm.compute()
    assert np.isnan(scores["f1_per_class"][[2, 4]]).all() and np.isnan(scores["iou_per_class"][[2, 4]]).all()
    f1 = {0: 1 / (1 + 0.5 * 2), 1: 2 / (2 + 0.5 * 1), 3: 1 / (1 + 0.5 * 1)}
    iou = {0: 1 / 3, 1: 2 / 3, 3: 1 / 2}
    assert scores["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert scores["mean_iou"] == pytest.approx(sum(iou.values()) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)
    assert scores["support"].tolist() == [2, 2, 0, 2, 0]


def test_bad_inputs():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected 3"):
        cm.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie in"):
        cm.update(torch.tensor([[-1, 0]]), torch.tensor([[0, 0]]))
    assert cm.matrix.sum() == 0  # nothing was added by the failed updates


def test_constant_wall_predictor():
    wall = 12
    scores = constant_predictor_scores(REAL_CLASS_FREQUENCIES, wall)
    f = REAL_CLASS_FREQUENCIES[wall] / REAL_CLASS_FREQUENCIES.sum()
    assert round(scores["pixel_accuracy"], 4) == 0.3367
    # wall: TP = f, FP = 1 - f, FN = 0; every other class occurs, is never predicted: F1 = 0
    wall_f1 = f / (f + 0.5 * (1 - f))
    assert scores["macro_f1"] == pytest.approx(wall_f1 / NUM_CLASSES)
    assert round(scores["macro_f1"], 4) == 0.036


def test_constant_predictor_agrees_with_a_simulated_data_set():
    counts = np.array([5, 0, 30, 15])  # class 1 never occurs: absent from target and prediction, left out
    target = torch.from_numpy(np.repeat(np.arange(4), counts)).reshape(1, -1)
    cm = ConfusionMatrix(4)
    cm.update(torch.full_like(target, 2), target)
    scores = cm.compute()
    assert constant_predictor_scores(counts, 2) == pytest.approx(
        {"pixel_accuracy": scores["pixel_accuracy"], "macro_f1": scores["macro_f1"]}
    )
    assert scores["macro_f1"] == pytest.approx((30 / (30 + 0.5 * 20)) / 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_confusion_matrix_counts_on_the_gpu(batch):  # CPU twin: test_matrix_and_scores_against_reference
    pred, target = batch
    cm = ConfusionMatrix(K)
    cm.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())
    assert cm.matrix.device.type == "cuda"
    expected = reference_scores(pred, target, K)
    np.testing.assert_array_equal(cm.matrix.cpu().numpy(), expected["matrix"])
    assert_scores_equal(cm.compute(), expected)
