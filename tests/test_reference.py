"""The course's reference model: where it lives, the command that trains and scores it, the pipeline that tests it,
and the protocol (room-disjoint validation, test areas never choosing the model)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from labcode import reference
from labcode.data import StanfordDataset, room_of
from labcode.errors import LabError

QUICK = ["--epochs", "2", "--small", "--num-workers", "0", "--no-progress"]


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch) -> Path:
    """A data home of its own, so that nothing here reads or writes the checkout's reference model."""
    home = tmp_path / "data_home"
    monkeypatch.setenv("LABCODE_DATA_HOME", str(home))
    monkeypatch.delenv(reference.ENV_MODEL, raising=False)
    return home


def test_reference_model_lives_next_to_the_generated_data_set_unless_the_environment_says(data_home, monkeypatch,
                                                                                           tmp_path):
    from labcode.synth import SYNTH_VERSION

    assert reference.reference_dir() == data_home / f"reference-synth-{SYNTH_VERSION}"
    assert reference.reference_model_path() == reference.reference_dir() / "best.onnx"
    assert reference.find_reference_model() is None
    mine = tmp_path / "mine.onnx"
    monkeypatch.setenv(reference.ENV_MODEL, str(mine))
    assert reference.reference_model_path() == mine and reference.find_reference_model() is None
    mine.write_bytes(b"onnx")
    assert reference.find_reference_model() == mine


def test_the_recipe_follows_the_protocol():
    config = reference.recipe_config("somewhere", epochs=3)
    assert config.datadir == "somewhere" and config.epochs == 3
    assert config.areas_train == ["1", "2", "3", "4", "6"] and not config.areas_valid  # validation: training rooms
    assert not set(config.areas_train) & set(reference.TEST_AREAS)
    assert reference.CPU_RECIPE["areas_train"] == ["1", "2", "3", "4", "6"]  # the override did not leak
    config.model_options["base_chan"] = 99
    assert reference.CPU_RECIPE["model_options"]["base_chan"] != 99


def test_reference_command_trains_scores_and_then_keeps_the_model(synth_root: Path, tmp_path: Path, capsys):
    from labcode.cli import main

    out = tmp_path / "ref"
    assert main(["reference", "--datadir", str(synth_root), "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "reference.json").read_text())
    assert Path(summary["model"]) == out / "best.onnx" and (out / "best.onnx").is_file()
    assert (out / "best.pt").is_file() and (out / "history.json").is_file()
    assert summary["recipe"]["areas_train"] == ["1", "2", "3", "4", "6"] and summary["recipe"]["epochs"] == 2
    assert summary["protocol"] == reference.PROTOCOL
    scores = summary["scores"]
    assert sorted(scores) == ["5a", "5a+5b", "5b", "train"]
    assert scores["train"]["images"] == len(StanfordDataset(synth_root, areas=["1", "2", "3", "4", "6"]))
    assert scores["5a"]["images"] + scores["5b"]["images"] == scores["5a+5b"]["images"] == 8
    assert summary["train_images"] + summary["valid_images"] == scores["train"]["images"]
    assert f"macro F1 {scores['5a+5b']['macro_f1']:.3f}" in printed and "areas 5a + 5b" in printed

    # The kept model is the epoch with the best validation macro F1.
    from labcode.checkpoint import load_checkpoint

    history = json.loads((out / "history.json").read_text())
    best = load_checkpoint(out / "best.pt")
    assert best["best_epoch"] == summary["best_epoch"] == max(range(len(history)),
                                                              key=lambda e: history[e]["valid"]["macro_f1"])

    stamp = (out / "best.onnx").stat().st_mtime_ns
    assert main(["reference", "--datadir", str(synth_root), "--out", str(out), *QUICK]) == 0
    assert "already in" in capsys.readouterr().out and (out / "best.onnx").stat().st_mtime_ns == stamp
    assert main(["reference", "--datadir", str(synth_root), "--out", str(out), "--force", *QUICK]) == 0
    assert (out / "best.onnx").stat().st_mtime_ns != stamp


def test_reference_command_refuses_to_mix_data_sets_or_overwrite_other_folders(synth_root, tmp_path, data_home,
                                                                               capsys):
    from labcode.cli import main

    assert main(["reference", "--datadir", str(synth_root), *QUICK]) == 2
    assert "--datadir needs --out" in capsys.readouterr().err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(LabError, match="holds no reference run"):
        reference.train_reference(synth_root, other, progress=False, epochs=1, small=True, num_workers=0)
    assert (other / "mine.txt").read_text() == "keep me"


def test_pipeline_tests_the_reference_model_without_training_again(synth_root: Path, tmp_path: Path, data_home,
                                                                   capsys):
    from labcode.commands import pipeline

    made = reference.train_reference(synth_root, reference.reference_dir(), progress=False, epochs=1, small=True,
                                     num_workers=0)
    stamp = Path(made["model"]).stat().st_mtime_ns
    args = ["--reference", "--logdir", str(tmp_path / "runs"), "--num-workers", "0", "--no-progress"]
    assert pipeline.main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "pipeline" / "pipeline.json").read_text())
    assert summary["reference"] and summary["reference_model"] == made["model"] and "reference model found" in out
    run = tmp_path / "runs" / "pipeline"
    assert summary["onnx"] == str(run / "best.onnx") and (run / "best.pt").is_file()
    assert (run / "best.onnx").read_bytes() == Path(made["model"]).read_bytes()
    assert Path(made["model"]).stat().st_mtime_ns == stamp  # found, not trained again
    metrics = json.loads(Path(summary["test_metrics"]).read_text())
    assert metrics["areas"] == ["5a", "5b"] and metrics["images"] == 8
    assert metrics["macro_f1"] == pytest.approx(made["scores"]["5a+5b"]["macro_f1"])
    with pytest.raises(LabError, match="leave out --epochs, --img-size"):
        pipeline.main([*args, "--overwrite", "--epochs", "3", "--img-size", "64"])
    with pytest.raises(LabError, match="--retrain applies to --reference only"):
        pipeline.main(["--retrain"])


def test_validating_on_a_test_area_is_reported(synth_root: Path, tmp_path: Path, caplog):
    from labcode.train import TrainConfig, fit

    config = TrainConfig(datadir=str(synth_root), areas_train=["1"], areas_valid=["5a"], img_size=32,
                         model_options={"num_blocks": 2, "base_chan": 4}, batch_size=4, epochs=1, num_workers=0,
                         small=True, logdir=str(tmp_path / "runs"), progress=False, export_onnx=False)
    with caplog.at_level(logging.INFO, logger="labcode.train"):
        fit(config)
    assert any("validating on the test area(s) 5a" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labcode.train"):
        fit(TrainConfig(**{**config.to_dict(), "areas_valid": ["3"], "run_name": "fine"}))
    assert not any("test area" in record.getMessage() for record in caplog.records)


def test_training_help_states_the_protocol(capsys):
    from labcode.cli import main

    for command in ("train", "pipeline", "reference"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "whole rooms" in text and "no validation image shows a room seen in training" in text, command
        assert "5a" in text, command


def test_split_of_the_reference_validation_is_room_disjoint(synth_root: Path):
    from labcode.data import get_dataloaders

    config = reference.recipe_config(synth_root)
    train, valid = get_dataloaders(synth_root, config.areas_train, config.areas_valid, valid_ratio=config.valid_ratio,
                                   img_size=32, batch_size=2, num_workers=0)
    files = train.dataset.dataset.files
    train_rooms = {room_of(files[i]) for i in train.dataset.indices}
    valid_rooms = {room_of(files[i]) for i in valid.dataset.indices}
    assert valid_rooms and not train_rooms & valid_rooms
    assert not {area for area, _ in valid_rooms} & set(reference.TEST_AREAS)


def test_scores_written_with_the_former_metric_names_read_under_today_s(tmp_path: Path) -> None:
    from labcode.commands.reference import describe

    old = {"areas": ["5a"], "images": 4, "macro_f1": 0.5, "miou": 0.4, "accuracy": 0.8, "f1": {"wall": 0.5},
           "iou": {"wall": 0.4}}
    summary = {"model": "best.onnx", "training_seconds": 60, "device": "cpu", "precision": "fp32", "train_images": 9,
               "valid_images": 1, "best_epoch": 0, "best_valid_macro_f1": 0.5,
               "scores": {"train": {**old, "areas": ["1"]}, "5a": old}}
    (tmp_path / "reference.json").write_text(json.dumps(summary))
    scores = reference.read_scores(tmp_path)["scores"]["5a"]
    assert scores == {"areas": ["5a"], "images": 4, "macro_f1": 0.5, "mean_iou": 0.4, "pixel_accuracy": 0.8,
                      "f1_per_class": {"wall": 0.5}, "iou_per_class": {"wall": 0.4}}
    assert "area 5a                      macro F1 0.500, mIoU 0.400, accuracy 0.800 (4 images)" in describe(
        reference.read_scores(tmp_path))
