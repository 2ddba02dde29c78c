"""A run's log: summary.md, TensorBoard events, strict-JSON history, the git commit, and cleaning up a failed start."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.runtime.runlog import RunLog, git_commit, plain, summary_text


def epoch_result(value: float, *, with_figures: bool = False) -> dict:
    per_class = [value] * (NUM_CLASSES - 1) + [float("nan")]  # the last class absent
    result = {"loss": 1.0 - value, "batches": 2, "macro_f1": value, "mean_iou": value / 2, "pixel_accuracy": value,
              "f1_per_class": per_class, "iou_per_class": per_class, "support": [1] * NUM_CLASSES, "lr": 1e-3}
    if with_figures:
        result["confusion"] = torch.eye(NUM_CLASSES, dtype=torch.int64)
        result["examples"] = {"images": np.zeros((1, 8, 8, 3), np.uint8), "targets": np.zeros((1, 8, 8), np.int64),
                              "preds": np.zeros((1, 8, 8), np.int64)}
    return result


def test_summary_epochs_and_history_are_written(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "runs" / "r"
    log = RunLog(run)
    text = summary_text("r", {"epochs": 2}, command="python -m labcode train", commit="abc", device="cpu",
                        precision="fp32", model_text="UNet table", sizes={"train": 3, "valid": 1}, world_size=1)
    log.open(text, 0)
    for epoch, value in enumerate((0.25, 0.5)):
        log.epoch(epoch, epoch_result(value), epoch_result(value, with_figures=True), 1.5, figure_items=1,
                  figures=epoch == 1)
    history = [{"epoch": 0, "valid": plain(epoch_result(0.25, with_figures=True))}]
    log.history(history)
    log.close()

    summary = (run / "summary.md").read_text()
    assert summary == text and "- command: `python -m labcode train`" in summary and "- git commit: abc" in summary
    assert '"epochs": 2' in summary and "training images: 3, validation images: 1" in summary
    written = json.loads((run / "history.json").read_text())  # strict JSON: the absent class is null
    assert written[0]["valid"]["f1_per_class"][-1] is None and "confusion" not in written[0]["valid"]
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("mean_iou/valid")] == pytest.approx([0.125, 0.25])
    assert [e.step for e in events.Scalars(f"f1_train/{CLASSES[1]}")] == [0, 1]
    images = events.Tags()["images"]
    assert {"valid/predictions", "valid/confusion_matrix"} <= set(images)
    assert [e.step for e in events.Images("valid/confusion_matrix")] == [1]  # figures of the chosen epochs only


def test_discard_removes_what_a_failed_start_wrote_and_nothing_else(tmp_path: Path) -> None:
    run = tmp_path / "new" / "deeper" / "r"
    log = RunLog(run)
    log.open("# summary\n", 0)
    log.close()
    assert (run / "summary.md").is_file()
    log.discard()
    assert not (tmp_path / "new").exists()

    kept = tmp_path / "existing"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    log = RunLog(kept)
    log.open("# summary\n", 0)
    log.close()
    log.discard()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_git_commit_names_the_commit_and_says_dirty(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "first"], check=True)
    sha = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == sha
    (repo / "a.txt").write_text("2")
    assert git_commit(repo) == sha + "+dirty"
