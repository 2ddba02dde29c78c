"""Scoring a model on whole areas: one confusion matrix over every pixel, checked against an independent count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.data import StanfordDataset
from labcode.export import export_onnx
from labcode.infer import ModelFileError, OnnxSegmenter, Segmenter
from labcode.scoring import evaluate_areas, format_metrics_table
from labcode.transforms import preprocess
from tests.test_infer import sharpened_unet


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A tiny UNet with a sharpened classifier (so that it predicts several classes), and its ONNX export."""
    model = sharpened_unet()
    return model, export_onnx(model, tmp_path_factory.mktemp("models") / "best.onnx", example_size=(32, 32))


def torch_labels(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(preprocess(image))[None]).argmax(1)[0].numpy()


def test_evaluate_areas_matches_an_independent_count(model_files, synth_root: Path) -> None:
    model, onnx_path = model_files
    result = evaluate_areas(OnnxSegmenter(onnx_path), synth_root, ["5a"], progress=False)
    dataset = StanfordDataset(synth_root, areas=["5a"])
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for i in range(len(dataset)):
        image, mask = dataset[i]
        np.add.at(cm, (mask.ravel(), torch_labels(model, image).ravel()), 1)
    tp, fp, fn = np.diag(cm), cm.sum(0) - np.diag(cm), cm.sum(1) - np.diag(cm)
    present = tp + fp + fn > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    assert result["images"] == len(dataset) and result["areas"] == ["5a"]
    assert result["macro_f1"] == pytest.approx(f1.mean(), abs=2e-3)
    assert result["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=2e-3)
    assert list(result["f1_per_class"]) == list(result["iou_per_class"]) == list(CLASSES)
    assert list(result["support"].values()) == cm.sum(axis=1).tolist()  # target pixels of each class
    json.loads(json.dumps(result, allow_nan=False))  # strict JSON: absent classes are null, not NaN
    table = format_metrics_table(result)
    assert "macro F1" in table and "window" in table and f"{result['macro_f1']:6.3f}" in table


def test_evaluation_checks_the_classes_of_any_segmenter(synth_root: Path) -> None:
    class FiveClasses(Segmenter):
        path = Path("five-classes")

        def logits(self, batch: np.ndarray) -> np.ndarray:
            return np.zeros((batch.shape[0], 5, *batch.shape[2:]), dtype=np.float32)

    with pytest.raises(ModelFileError, match="model five-classes outputs 5 classes"):
        evaluate_areas(FiveClasses(), synth_root, ["5a"], num_workers=0, progress=False)
    with pytest.raises(ModelFileError, match="model five-classes outputs 5 classes"):
        FiveClasses().predict(np.zeros((8, 8, 3), dtype=np.uint8))
