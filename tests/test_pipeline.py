"""The pipeline in the library: train, export, test and segment under one folder; numbers returned, nothing printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labcode.classes import NUM_CLASSES
from labcode.data import StanfordDataset
from labcode.errors import LabError
from labcode.runtime.pipeline import run_pipeline
from labcode.train import TrainConfig


def tiny_config(datadir: Path) -> TrainConfig:
    return TrainConfig(datadir=str(datadir), areas_train=["1", "2"], model_options={"num_blocks": 2, "base_chan": 4},
                       img_size=32, batch_size=4, num_workers=0, epochs=1, small=True, small_batches=2,
                       logdir="ignored", run_name="ignored")


def test_run_pipeline_trains_tests_and_segments_into_one_folder(synth_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs" / "demo"
    steps: list[str] = []
    result = run_pipeline(out, tiny_config(synth_root), areas_test=["5a"], num_workers=0, progress=False,
                          command="my command", on_step=steps.append)
    assert capsys.readouterr().out == ""  # the library prints nothing
    assert not result["interrupted"] and result["reference"] is False and result["run_dir"] == str(out)
    written = json.loads((out / "pipeline.json").read_text())
    assert written == {key: value for key, value in result.items() if key not in ("interrupted", "test_scores")}
    assert result["onnx"] == str(out / "best.onnx") and (out / "best.pt").is_file()
    assert "- command: `my command`" in (out / "summary.md").read_text()  # the run's config: logdir/run_name = out

    # the test: the numbers of test_metrics.json, from the confusion matrix of every pixel of 5a
    tested = json.loads((out / "test_metrics.json").read_text())
    assert tested == result["test_scores"] and tested["areas"] == ["5a"]
    assert tested["images"] == len(StanfordDataset(synth_root, areas=["5a"]))
    cm = np.array(tested["confusion"])
    assert cm.sum() == tested["images"] * 32 * 32  # tested at the training size
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1)
    assert result["test_macro_f1"] == pytest.approx(np.mean(2 * tp[union > 0] / union[union > 0]))
    assert result["test_mean_iou"] == pytest.approx(np.mean(tp[union > 0] / (union - tp)[union > 0]))
    assert result["test_areas"] == ["5a"] and result["epochs"] == 1 and result["seconds_per_epoch"] > 0

    with Image.open(result["inference_mask"]) as mask:
        assert mask.size == (64, 64)  # back at the photo's resolution
    assert Path(result["inference_figure"]).is_file()
    assert steps[0].startswith("[1/4] training unet on areas 1 2 of") and steps[-1].startswith("[4/4] segmenting")
    assert any(step.startswith("class ") and "macro F1" in step for step in steps)  # the metrics table

    with pytest.raises(LabError, match="already exists"):
        run_pipeline(out, tiny_config(synth_root), areas_test=["5a"], num_workers=0, progress=False)
    again = run_pipeline(out, tiny_config(synth_root), areas_test=["5a"], test_img_size=0, num_workers=0,
                         progress=False, overwrite=True)
    assert np.array(again["test_scores"]["confusion"]).sum() == tested["images"] * 64 * 64  # 0: native size
    assert len(again["test_scores"]["support"]) == NUM_CLASSES


def test_a_missing_test_area_fails_before_training(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="area '9' not found"):
        run_pipeline(tmp_path / "p", tiny_config(synth_root), areas_test=["9"], num_workers=0, progress=False)
    assert not (tmp_path / "p").exists()
