"""scripts/gpu_check.py without a GPU: the dry run lists every step with its command and budget; a real run refuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def run_check(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABCODE_DATA_HOME": str(tmp_path / "data_home")}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu-check"), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_dry_run_lists_every_step_with_its_command_and_budget(tmp_path: Path) -> None:
    done = run_check(["--dry-run"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    total = int(re.search(r"(\d+) s of budgets in all \(limit 480 s\)", lines[0]).group(1))
    steps = [re.fullmatch(r"(\d+)\. (.+) \[budget (\d+) s\].*", line) for line in lines[1::2]]
    commands = [line.strip() for line in lines[2::2]]
    assert all(steps) and len(steps) == len(commands) == 7
    assert [int(m.group(1)) for m in steps] == list(range(1, 8))
    assert sum(int(m.group(3)) for m in steps) == total <= 480 - 20  # 20 s left for start-ups and the report
    expected = ["python -c", "ensure_default_dataset", "-m pytest -q -m gpu", "-m benchmarks.bench_train",
                "-m labcode pipeline", "-m benchmarks.bench_infer --providers cuda cpu",
                "-m torch.distributed.run --standalone --nproc_per_node=2 -m labcode train"]
    for command, fragment in zip(commands, expected, strict=True):
        assert fragment in command, (fragment, command)
    pipeline = commands[4]
    assert "--device cuda" in pipeline and "--no-amp" not in pipeline  # mixed precision, held-out 5a + 5b default
    assert str(tmp_path / "data_home") in pipeline and str(tmp_path / "gpu-check") in pipeline
    if torch.cuda.device_count() < 2:
        assert commands[6].startswith("CUDA_VISIBLE_DEVICES=''") and "gloo on the CPU" in lines[13]
    assert not (tmp_path / "gpu-check").exists()  # a dry run writes nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_exits_with_one_clear_line(tmp_path: Path) -> None:
    done = run_check([], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device is visible to PyTorch")
    assert "--dry-run" in lines[0]
    assert not (tmp_path / "gpu-check").exists()
