"""A finished run is found again instead of trained again: same configuration and data, same folder, same result;
``retrain`` trains again; another configuration gets another folder; an unfinished run is never taken as finished.
And what :func:`labcode.train.fit` returns: one typed :class:`labcode.train.FitResult`."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest

from labcode.errors import LabError
from labcode.train import RESULT_NAME, FitResult, TrainConfig, find_finished_run, fingerprint, fit, named_by_fingerprint


def tiny_config(synth_root: Path, logdir: Path, **changes) -> TrainConfig:
    fields = dict(datadir=str(synth_root), areas_train=["1"], areas_valid=["3"], img_size=32, batch_size=4,
                  model_options={"num_blocks": 2, "base_chan": 4}, epochs=1, num_workers=0, small=True,
                  logdir=str(logdir), progress=False, figure_items=1, export_onnx=False)
    return TrainConfig(**{**fields, **changes})


def epochs_logged(caplog) -> int:
    return sum(record.getMessage().startswith("epoch ") for record in caplog.records)


def test_the_same_run_is_found_again_and_retrain_trains_again(synth_root: Path, tmp_path: Path, caplog) -> None:
    config = named_by_fingerprint(tiny_config(synth_root, tmp_path / "runs"), "recipe")
    assert config.run_name == f"recipe-{fingerprint(config)}"
    with caplog.at_level(logging.INFO, logger="labcode.train"):
        first = fit(config)
    assert isinstance(first, FitResult) and not first.reused and epochs_logged(caplog) == 1
    run = Path(first.run_dir)
    stamps = {path.name: path.stat().st_mtime_ns for path in run.iterdir()}
    assert RESULT_NAME in stamps and "best.pt" in stamps

    # a Restart & Run All: the same configuration (spelled anew), the same data, the same folder, no training
    again = named_by_fingerprint(tiny_config(synth_root, tmp_path / "runs"), "recipe")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labcode.train"):
        found = fit(again)
    assert epochs_logged(caplog) == 0
    assert found.reused and found.run_dir == first.run_dir
    assert found.best_macro_f1 == pytest.approx(first.best_macro_f1) and found.history == json.loads(
        json.dumps(first.to_dict()["history"]))
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir()} == stamps  # nothing rewritten

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labcode.train"):
        retrained = fit(again, retrain=True)
    assert not retrained.reused and epochs_logged(caplog) == 1
    assert (run / "best.pt").stat().st_mtime_ns != stamps["best.pt"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the old run's log was replaced, not added to


def test_another_configuration_or_other_data_gets_another_folder(synth_root: Path, tmp_path: Path) -> None:
    base = tiny_config(synth_root, tmp_path / "runs")
    name = named_by_fingerprint(base, "r").run_name
    assert named_by_fingerprint(dataclasses.replace(base, lr=3e-3), "r").run_name != name
    assert named_by_fingerprint(dataclasses.replace(base, areas_train=["2"]), "r").run_name != name
    # bookkeeping does not change the run: where it reports, how it shows progress
    assert named_by_fingerprint(dataclasses.replace(base, progress=True, figure_every=3), "r").run_name == name

    other_data = tmp_path / "copy"
    shutil.copytree(synth_root, other_data)
    copied = dataclasses.replace(base, datadir=str(other_data))
    before = fingerprint(copied)
    assert before != fingerprint(base)  # another data set folder
    assert fingerprint(dataclasses.replace(base, datadir=str(other_data / ".." / "copy"))) == before  # same folder
    next(other_data.glob("area_1/**/*.png")).unlink()
    assert fingerprint(copied) != before  # one training image fewer


def test_an_unfinished_run_or_another_configuration_is_not_taken_as_finished(synth_root: Path,
                                                                              tmp_path: Path) -> None:
    config = tiny_config(synth_root, tmp_path / "runs", run_name="r")
    first = fit(config)
    run = Path(first.run_dir)
    assert find_finished_run(config) is not None

    # the same folder asked for with another configuration: refused, nothing trained or removed
    with pytest.raises(LabError, match="already holds a training run"):
        fit(dataclasses.replace(config, lr=5e-4))
    assert find_finished_run(config) is not None

    # a run stopped before its end (no result.json), or one whose result says it was interrupted
    (run / RESULT_NAME).rename(run / "kept.json")
    assert find_finished_run(config) is None
    with pytest.raises(LabError, match="resume it with --resume, train it again with --retrain"):
        fit(config)
    stored = json.loads((run / "kept.json").read_text())
    (run / RESULT_NAME).write_text(json.dumps({**stored, "interrupted": True}))
    assert find_finished_run(config) is None
    (run / RESULT_NAME).write_text(json.dumps({key: stored[key] for key in list(stored)[:5]}))  # another version
    assert find_finished_run(config) is None
    (run / RESULT_NAME).write_text(json.dumps(stored))
    (run / "best.pt").unlink()
    assert find_finished_run(config) is None

    # without a run name, nothing is ever found: each run gets a new folder
    assert find_finished_run(dataclasses.replace(config, run_name=None)) is None


def test_resuming_a_finished_run_makes_it_unfinished_until_it_ends(synth_root: Path, tmp_path: Path) -> None:
    config = tiny_config(synth_root, tmp_path / "runs", run_name="r")
    first = fit(config)
    resumed = fit(dataclasses.replace(config, resume=first.run_dir, epochs=2))
    assert not resumed.reused and resumed.epochs_completed == 2 and len(resumed.epoch_times) == 1
    stored = json.loads((Path(first.run_dir) / RESULT_NAME).read_text())
    assert stored["epochs_completed"] == 2 and FitResult.from_dict(stored).history == resumed.to_dict()["history"]
    with pytest.raises(LabError, match="exclude each other"):
        fit(dataclasses.replace(config, resume=first.run_dir), retrain=True)


def test_fit_result_round_trips_through_json(synth_root: Path, tmp_path: Path) -> None:
    result = fit(tiny_config(synth_root, tmp_path / "runs", run_name="r", export_onnx=True))
    assert result.onnx == str(tmp_path / "runs" / "r" / "best.onnx") and Path(result.onnx).is_file()
    assert result.img_size == 32 and result.areas_train == ["1"] and result.train_size == 4 and result.valid_size == 4
    assert result.best_epoch == 0 and result.epochs_completed == 1 and not result.interrupted
    written = json.loads(json.dumps(result.to_dict()))  # plain JSON
    assert FitResult.from_dict(written) == dataclasses.replace(result, **{
        key: written[key] for key in ("history", "best_metrics", "parity")})


def test_a_run_from_a_prepared_cache_is_identified_by_its_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text('{"complete": true, "checksums": {"a.png": 1}}')
    config = TrainConfig(datadir=str(tmp_path / "not on this machine"), cache_dir=str(cache))
    first = fingerprint(config)  # the data set itself is not needed
    assert fingerprint(dataclasses.replace(config, datadir=None)) == first
    (cache / "index.json").write_text('{"complete": true, "checksums": {"a.png": 2}}')
    assert fingerprint(config) != first
