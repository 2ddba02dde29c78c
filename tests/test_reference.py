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


@pytest.mark.slow
def test_reference_command_trains_scores_and_then_keeps_the_model(synth_root: Path, tmp_path: Path, capsys):
    from labcode.commands.cli import main

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
    assert summary["train_size"] + summary["valid_size"] == scores["train"]["images"]
    # The metadata the notebooks read, under the names of fit's result and of the training configuration.
    assert summary["img_size"] == summary["recipe"]["img_size"] == reference.CPU_RECIPE["img_size"]
    assert summary["areas_train"] == ["1", "2", "3", "4", "6"] and 0 <= summary["best_macro_f1"] <= 1
    assert set(reference.INFO_KEYS) <= set(summary)
    assert reference.reference_info(out) == reference.reference_info(out / "best.onnx") == summary
    assert f"macro F1 {scores['5a+5b']['macro_f1']:.3f}" in printed and "areas 5a + 5b" in printed

    # The kept model is the epoch with the best validation macro F1.
    from labcode.runtime.checkpoint import load_checkpoint

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
    from labcode.commands.cli import main

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
    from labcode.commands.cli import main

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


def test_reference_info_reads_the_metadata_back_and_refuses_what_it_cannot_trust(reference_model: Path,
                                                                                 tmp_path: Path, data_home):
    info = reference.reference_info(reference_model)
    written = json.loads(reference_model.with_name("reference.json").read_text())
    assert info == {**written, "model": str(reference_model)}
    assert info["img_size"] == written["recipe"]["img_size"] and info["areas_train"] == ["1", "2", "3", "4", "6"]
    assert info["train_size"] > 0 and info["valid_size"] > 0 and 0 <= info["best_epoch"] < 2
    assert sorted(info["scores"]) == ["5a", "5a+5b", "5b", "train"]
    assert set(info["scores"]["5a"]) == set(reference.SCORE_KEYS)
    assert reference.is_complete(reference_model.parent)

    # Nothing found: the message says where it looked and how to get the model.
    with pytest.raises(LabError, match=r"no reference model at .*/unet_reference\.onnx.*python -m labcode reference"):
        reference.reference_info()
    # A model without its reference.json, or one written by an older version (former key names): refused.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "best.onnx").write_bytes(reference_model.read_bytes())
    with pytest.raises(LabError, match=r"has no reference\.json beside it .*--force"):
        reference.reference_info(alone / "best.onnx")
    old = {key: value for key, value in written.items() if key not in ("train_size", "best_macro_f1", "img_size")}
    (alone / "reference.json").write_text(json.dumps({**old, "train_images": 9, "eval_img_size": 128}))
    with pytest.raises(LabError, match=r"reference\.json lacks img_size, train_size, best_macro_f1 .*--force"):
        reference.reference_info(alone)
    assert not reference.is_complete(alone)  # so `python -m labcode reference` makes it again


def _with_metadata(source: Path, dest: Path, entries: dict[str, str]) -> Path:
    import onnx

    proto = onnx.load(str(source))
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dest))
    return dest


def test_training_info_finds_the_size_and_areas_of_any_model(reference_model: Path, tmp_path: Path):
    from labcode.runtime.checkpoint import load_checkpoint

    recipe_size = json.loads(reference_model.with_name("reference.json").read_text())["img_size"]
    # The reference model: its reference.json, also under the name the distribution ships it as.
    found = reference.training_info(reference_model)
    assert (found["img_size"], found["areas_train"]) == (recipe_size, ["1", "2", "3", "4", "6"])
    shipped = tmp_path / "reference" / reference.SHIPPED_NAME
    shipped.parent.mkdir()
    shipped.write_bytes(reference_model.read_bytes())
    (shipped.parent / "reference.json").write_text(reference_model.with_name("reference.json").read_text())
    assert reference.training_info(shipped)["img_size"] == recipe_size
    # A model whose ONNX metadata says how it was trained.
    stamped = _with_metadata(reference_model, tmp_path / "stamped.onnx",
                             {"img_size": "96", "areas_train": json.dumps(["3", "4"])})
    assert reference.training_info(stamped) == {"model": str(stamped), "img_size": 96, "areas_train": ["3", "4"],
                                                "source": "the metadata of stamped.onnx"}
    # A training run's best.onnx: the checkpoint beside it.
    run = tmp_path / "runs" / "run_1"
    run.mkdir(parents=True)
    (run / "best.onnx").write_bytes(reference_model.read_bytes())
    (run / "best.pt").write_bytes(reference_model.with_name("best.pt").read_bytes())
    config = load_checkpoint(run / "best.pt")["config"]
    assert reference.training_info(run / "best.onnx")["img_size"] == config["img_size"]
    # Notebook 5's my_model.onnx, a copy of a run's best.onnx: that run's checkpoint.
    mine = tmp_path / "my_model.onnx"
    mine.write_bytes(reference_model.read_bytes())
    found = reference.training_info(mine)
    assert found["img_size"] == config["img_size"] and found["source"] == str(run / "best.pt")
    # Another model: nothing tells, so nothing is made up.
    (run / "best.onnx").write_bytes(b"changed")
    assert reference.training_info(mine) == {"model": str(mine), "img_size": None, "areas_train": None,
                                             "source": "nothing"}
    with pytest.raises(FileNotFoundError, match="model not found"):
        reference.training_info(tmp_path / "missing.onnx")


def _notebook_cell(stem: str, cell_id: str) -> str:
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "solutions" / "segmentation" / f"{stem}.ipynb",
                       as_version=4)
    return next(cell.source for cell in nb.cells if cell.get("id") == cell_id)


def test_notebook_6_studies_the_model_at_the_size_it_was_trained_at_and_never_trains(reference_model: Path,
                                                                                    tmp_path: Path, data_home,
                                                                                    monkeypatch, capsys):
    source = _notebook_cell("06_inference_onnx", "06-02")  # the cell that chooses MODEL, EVAL_SIZE, TRAIN_AREAS
    assert "fit(" not in source and "train_reference" not in source
    info = json.loads(reference_model.with_name("reference.json").read_text())
    folder = tmp_path / "segmentation"
    folder.mkdir()
    monkeypatch.chdir(folder)

    def run_cell() -> dict:
        namespace = {"Path": Path, "GRADING": False}
        exec(compile(source, "06_inference_onnx.ipynb:06-02", "exec"), namespace)
        return namespace

    # As shipped in the distribution: reference/unet_reference.onnx with its reference.json.
    shipped = tmp_path / "reference" / reference.SHIPPED_NAME
    shipped.parent.mkdir()
    shipped.write_bytes(reference_model.read_bytes())
    (shipped.parent / "reference.json").write_text(reference_model.with_name("reference.json").read_text())
    monkeypatch.setenv(reference.ENV_MODEL, str(shipped))
    ns = run_cell()
    assert ns["MODEL"] == shipped and ns["YOURS"] is None
    assert ns["EVAL_SIZE"] == info["img_size"] and ns["TRAIN_AREAS"] == info["areas_train"]
    assert f"model: {shipped} (the reference model" in capsys.readouterr().out

    # The student's my_model.onnx (a copy of a run of notebook 5) is "yours", with the size of its own run.
    run = folder / "runs" / "recipe"
    run.mkdir(parents=True)
    (run / "best.onnx").write_bytes(reference_model.read_bytes())
    (run / "best.pt").write_bytes(reference_model.with_name("best.pt").read_bytes())
    (folder / "my_model.onnx").write_bytes(reference_model.read_bytes())
    newer = folder / "runs" / "short"  # the newest run is not the chosen one
    newer.mkdir()
    (newer / "best.onnx").write_bytes(b"another model")
    assert run_cell()["YOURS"] == Path("my_model.onnx")
    monkeypatch.setenv(reference.ENV_MODEL, str(tmp_path / "nowhere.onnx"))
    ns = run_cell()
    assert ns["MODEL"] == Path("my_model.onnx") and ns["EVAL_SIZE"] == info["recipe"]["img_size"]
    assert "The questions study your model instead." in capsys.readouterr().out

    # No model at all: a message saying how to get the reference model, and no training.
    (folder / "my_model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"no reference model at .*nowhere\.onnx.*reference/unet_reference"):
        run_cell()
