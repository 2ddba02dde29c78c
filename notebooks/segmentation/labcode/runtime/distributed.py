# Your copy of the course library: labcode/runtime/distributed.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Preemption and multi-process training: the stop signal, ``torchrun``'s environment, sums over processes.

Preemption: :class:`StopSignal` turns SIGTERM and SIGINT (a cluster preempting the job, or Ctrl-C) into a flag that
the training loop polls between batches. Under ``torchrun`` (``WORLD_SIZE > 1``) every process must leave at the
same batch, so :func:`agreed_stop` asks all of them; the sums of a pass (losses, confusion counts) are added over the
processes (:func:`all_reduce_sums`, :meth:`labcode.metrics.ConfusionMatrix.all_reduce`). Without ``torch.distributed``
everything here is a no-op.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from labcode.errors import LabError


class StopSignal:
    """Turns SIGTERM and SIGINT into a flag polled between batches (installed only in the main thread).

    A second signal of the same run restores the default behaviour and raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def requested(self) -> bool:
        return self.signum is not None


def distributed_env() -> tuple[bool, int, int]:
    """``(distributed, rank, local_rank)`` from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return world_size > 1, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Processes of the initialised ``torch.distributed`` group, 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_process_group(distributed: bool) -> None:
    """Join ``torchrun``'s process group (NCCL with CUDA, else gloo) unless not distributed or already joined."""
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def leave_process_group(distributed: bool) -> None:
    """Wait for every process, then leave the group (the end of a distributed run)."""
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def choose_device(requested: str | None, distributed: bool, local_rank: int) -> torch.device:
    """The device of this process: ``requested``, else CUDA when present; under ``torchrun`` the local rank's GPU.

    Raises:
        LabError: CUDA is asked for but not available.
    """
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LabError(f"--device {requested}: CUDA is not available on this machine")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def shard_validation(loader):
    """Validation loader over this process's share of the validation set (DistributedSampler, no shuffling)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=DistributedSampler(loader.dataset,
                      shuffle=False), num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn)


def agreed_stop(stop: StopSignal, device: torch.device) -> Callable[[], bool]:
    """Under torch.distributed, stop when any process was signalled (all processes leave at the same batch)."""
    def should_stop() -> bool:
        flag = torch.tensor([1.0 if stop.requested() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
    return should_stop


def all_reduce_sums(values: Sequence[float], device: torch.device | str) -> list[float]:
    """``values`` added over the processes of ``torch.distributed`` (in float64 on ``device``); as given without."""
    if world_size() <= 1:
        return list(values)
    sums = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return sums.tolist()
