"""Multi-process helpers: torchrun's environment, the device choice, and sums over two real gloo processes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labcode.errors import LabError
from labcode.metrics import ConfusionMatrix
from labcode.runtime.distributed import (
    StopSignal,
    agreed_stop,
    all_reduce_sums,
    choose_device,
    distributed_env,
    world_size,
)

K = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shard(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets of one process: different sizes and contents on each."""
    rng = np.random.default_rng(rank)
    target = rng.integers(0, K, size=(rank + 1, 5, 6))
    pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(0, K, size=target.shape))
    return pred, target


def two_process_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        pred, target = shard(rank)
        confusion = ConfusionMatrix(K)
        confusion.update(torch.from_numpy(pred), torch.from_numpy(target))
        confusion.all_reduce()
        sums = all_reduce_sums([float(rank + 1), 0.5], "cpu")
        stop = StopSignal()
        if rank == 1:
            stop.signum = 15  # as if SIGTERM had reached this process only
        result = {"matrix": confusion.matrix.tolist(), "summary": confusion.summary(), "sums": sums,
                  "world_size": world_size(), "stop": agreed_stop(stop, torch.device("cpu"))()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_processes_agree_on_the_counts_of_their_union(tmp_path: Path) -> None:
    mp.spawn(two_process_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    preds, targets = zip(*(shard(rank) for rank in (0, 1)))
    pred, target = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in targets])
    expected = np.zeros((K, K), dtype=np.int64)
    np.add.at(expected, (target, pred), 1)
    tp = np.diag(expected)
    f1 = 2 * tp / (expected.sum(0) + expected.sum(1))
    for result in results:
        assert result["world_size"] == 2
        assert result["matrix"] == expected.tolist()
        assert result["summary"]["macro_f1"] == pytest.approx(f1.mean())
        assert result["summary"]["pixel_accuracy"] == pytest.approx(np.mean(pred == target))
        assert result["summary"]["support"] == np.bincount(target, minlength=K).tolist()
        assert result["sums"] == [3.0, 1.0]
        assert result["stop"] is True  # rank 1 was signalled: both leave


def test_a_one_process_group_changes_nothing(tmp_path: Path) -> None:
    pred, target = shard(0)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        confusion = ConfusionMatrix(K)
        confusion.update(torch.from_numpy(pred), torch.from_numpy(target))
        before = confusion.matrix.clone()
        assert world_size() == 1 and torch.equal(confusion.all_reduce().matrix, before)
        assert all_reduce_sums([2.5, 4.0], "cpu") == [2.5, 4.0]
    finally:
        dist.destroy_process_group()
    assert world_size() == 1


def test_torchrun_environment(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_env() == (False, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_env() == (True, 3, 1)


def test_device_choice() -> None:
    assert choose_device("cpu", distributed=False, local_rank=0) == torch.device("cpu")
    default = choose_device(None, distributed=False, local_rank=0)
    assert default.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(LabError, match="--device cuda: CUDA is not available"):
            choose_device("cuda", distributed=False, local_rank=0)
