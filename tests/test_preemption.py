"""Preemption: SIGTERM in the middle of an epoch saves the state and exits cleanly; --resume continues from it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from labcode.runtime.checkpoint import load_checkpoint
from labcode.runtime.distributed import StopSignal

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 24  # areas 1 2 4 5a 5b 6 of the session's generated data set, 4 images each
PROGRESS = re.compile(r"epoch 1 train:\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "0",
            "LABCODE_DATA_HOME": str(tmp_path / "data_home"),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _read_all(stream, sink: list[str], seen_batch: threading.Event, min_batch: int) -> None:
    """Collect a stream; set ``seen_batch`` once the progress bar shows ``min_batch`` batches done in epoch 1."""
    text = ""
    while chunk := os.read(stream.fileno(), 4096):
        text += chunk.decode(errors="replace")
        if not seen_batch.is_set() and any(int(m.group(1)) >= min_batch for m in PROGRESS.finditer(text[-4000:])):
            seen_batch.set()
    sink.append(text)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resume_continues(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "preempted"
    args = [sys.executable, "-m", "labcode", "train", "--datadir", str(synth_root), "--areas-train", "1", "2", "4",
            "5a", "5b", "6", "--areas-valid", "3", "--img-size", "96", "--base-chan", "8", "--num-blocks", "2",
            "--batch-size", "1", "--epochs", "2", "--num-workers", "0", "--logdir", str(tmp_path / "runs"),
            "--run-name", "preempted", "--no-export"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=_env(tmp_path))
    stderr: list[str] = []
    seen_batch = threading.Event()
    reader = threading.Thread(target=_read_all, args=(proc.stderr, stderr, seen_batch, 2), daemon=True)
    reader.start()
    try:
        assert seen_batch.wait(timeout=180), "training never reached the second epoch"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    stdout = stdout.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr[0]
    assert "interrupted by SIGTERM after 1 completed epoch(s)" in stdout and "--resume" in stdout

    # the checkpoint: complete (atomic rename, no temp file left), epoch counter at the interrupted epoch
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    saved = load_checkpoint(run / "last.pt")
    steps = int(saved["optimizer"]["state"][0]["step"])
    assert saved["interrupted"] and saved["epoch"] == 1 and len(saved["history"]) == 1
    assert TRAIN_IMAGES + 2 <= steps < 2 * TRAIN_IMAGES  # stopped inside epoch 1, after a few of its batches
    assert saved["scheduler"]["last_epoch"] == steps

    resumed = subprocess.run([sys.executable, "-m", "labcode", "train", "--resume", str(run / "last.pt"),
                              "--no-progress", "--no-export"], capture_output=True, text=True, cwd=tmp_path,
                             env=_env(tmp_path), timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "Traceback" not in resumed.stderr
    final = load_checkpoint(run / "last.pt")
    # the interrupted epoch ran again from its first batch, continuing the optimizer and the schedule
    assert final["epoch"] == 2 and not final["interrupted"]
    assert int(final["optimizer"]["state"][0]["step"]) == steps + TRAIN_IMAGES
    assert final["scheduler"]["last_epoch"] == steps + TRAIN_IMAGES
    assert [h["epoch"] for h in final["history"]] == [0, 1]
    assert final["config"]["img_size"] == 96 and final["config"]["batch_size"] == 1  # options came back too


def test_stop_signal_turns_sigint_into_a_flag_then_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested() and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_non_finite_loss_stops_fit_with_a_clear_error(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    from labcode import losses
    from labcode.engine import NonFiniteLossError
    from labcode.train import TrainConfig, fit

    class NaNLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.mean() * float("nan")

    monkeypatch.setattr(losses, "build_loss", lambda name, **options: NaNLoss())
    config = TrainConfig(datadir=str(synth_root), areas_train=["1", "2"], areas_valid=["3"], img_size=32,
                         model_options={"num_blocks": 2, "base_chan": 4}, batch_size=4, epochs=1, num_workers=0,
                         logdir=str(tmp_path / "runs"), run_name="nan", progress=False, export_onnx=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 0, batch 0"):
            fit(config)
    finally:
        torch.set_num_threads(threads)
