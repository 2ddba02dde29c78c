"""Checkpoints: atomic writes, weights_only loading of a whole training state, generator states, model rebuilding."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from labcode.errors import LabError
from labcode.models import build_model
from labcode.runtime import checkpoint
from labcode.runtime.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from labcode.runtime.parts import warmup_cosine


def _training_state(steps: int = 3) -> tuple[dict, torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("unet", 14, num_blocks=2, base_chan=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = lambda step: warmup_cosine(step, total_steps=10, warmup_steps=2, final_ratio=0.1)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(steps):
        loss = model(torch.randn(2, 3, 16, 16)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    state = {
        "epoch": 4, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
        "best_score": 0.5, "best_epoch": 2,
        "history": [{"epoch": 0, "train": {"loss": 1.0, "f1": [0.1, float("nan")]}}],
        "model_name": "unet", "model_options": {"num_blocks": 2, "base_chan": 4}, "num_classes": 14,
        "config": {"lr": 0.01, "areas_train": ["1", "2"], "resume": None},
    }
    return state, model, optimizer


def test_whole_training_state_round_trips_with_weights_only(tmp_path: Path) -> None:
    state, model, optimizer = _training_state(steps=3)
    path = save_checkpoint(state, tmp_path / "sub" / "last.pt")
    assert path.is_file()
    # independent reader: torch.load with weights_only=True accepts the file
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == state["config"] and raw["epoch"] == 4
    loaded = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    assert int(loaded["optimizer"]["state"][0]["step"]) == 3
    assert loaded["scheduler"]["last_epoch"] == 3
    # the optimizer and scheduler states load back into fresh objects
    fresh_opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fresh_opt.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_save_replaces_atomically_through_a_temp_file_in_the_same_directory(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, target)
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).is_file() and torch.load(src, weights_only=True)["epoch"] == 2  # complete before rename
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", spy)
    save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, target)
    (src, dst), = calls
    assert src.parent == target.parent and src != target and dst == target
    assert load_checkpoint(target)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_save_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, target)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    torch.manual_seed(3)
    save_checkpoint({"model": {}, "rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), np.random.standard_normal(3), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt") as info:
        load_checkpoint(garbage)
    assert isinstance(info.value, LabError)
    # a pickle that would build an arbitrary object is refused by weights_only loading
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "payload": _Arbitrary()}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(unsafe)
    not_ours = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, not_ours)
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_checkpoint(not_ours)


class _Arbitrary:
    def __reduce__(self):
        return (pickle.loads, (pickle.dumps(42),))


def test_load_model_rebuilds_the_same_network(tmp_path: Path) -> None:
    state, model, _ = _training_state(steps=1)
    save_checkpoint(state, tmp_path / "best.pt")
    rebuilt, loaded = load_model(tmp_path / "best.pt")
    assert loaded["model_name"] == "unet" and not rebuilt.training
    x = torch.randn(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x))
    del state["model_name"]
    save_checkpoint(state, tmp_path / "anonymous.pt")
    with pytest.raises(CheckpointError, match="model_name"):
        load_model(tmp_path / "anonymous.pt")


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_refused_checkpoints_are_one_line_naming_the_file_and_the_reason(tmp_path: Path, capsys) -> None:
    from labcode.commands.cli import main

    files = {"system.pt": "GLOBAL posix.system", "arbitrary.pt": "GLOBAL pickle.loads", "garbage.pt": "zip archive",
             "protocol4.pt": "Unsupported operand"}
    torch.save({"model": {}, "payload": _RunsACommand()}, tmp_path / "system.pt")
    torch.save({"model": {}, "payload": _Arbitrary()}, tmp_path / "arbitrary.pt")
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 and then nothing of a zip archive")
    (tmp_path / "protocol4.pt").write_bytes(pickle.dumps({"model": {}}, protocol=4))
    for name, reason in files.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"cannot read checkpoint {tmp_path / name}: ")
        assert reason in message and len(message) < 400, message
        assert main(["export", str(tmp_path / name), "--out", str(tmp_path / "x.onnx")]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"error: {message}\n" and "must never run" not in captured.out


def test_weights_that_do_not_fit_the_model_are_one_clear_error(tmp_path: Path) -> None:
    state, _, _ = _training_state(steps=1)
    state["model_options"] = {**state["model_options"], "base_chan": state["model_options"].get("base_chan", 4) * 2}
    save_checkpoint(state, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "mixed.pt")
    message = str(info.value)
    assert message.startswith(f"the weights in {tmp_path / 'mixed.pt'} do not fit the unet model it describes")
    assert "size mismatch" in message and "\n" not in message
