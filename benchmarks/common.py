"""Shared helpers of the benchmark scripts: the benchmark data set, timers and table printing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import labcode  # noqa: F401  (environment variables first)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> str:
    """One line describing where the numbers were measured: CPU, cores, AMX, GPU, library versions."""
    from labcode.engine import cpu_has_bf16_matmul

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    amx = "AMX" if cpu_has_bf16_matmul() else "no AMX" + (" (avx512_bf16)" if "avx512_bf16" in cpu_flags() else "")
    versions = f"torch {torch.__version__}"
    try:
        import onnxruntime

        versions += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    return f"{cpu_model()}, {cores} cores, {amx}, {torch.get_num_threads()} torch threads, {gpu}; {versions}"


def bench_dataset(size: int = 1080, images: int = 24) -> Path:
    """A generated area at the real resolution, made once under ``data/`` and reused."""
    from labcode.synth import data_home, generate_dataset

    root = data_home() / f"bench-{size}-{images}"
    if not (root / "assets" / "semantic_labels.json").is_file():
        generate_dataset(root, areas=("1",), images_per_area=images, size=size, seed=7, workers=2, progress=True)
    return root


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_rounds(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every ``fns[name]()`` (each returns one measurement) ``rounds`` times, interleaved so that a busy spell of
    a shared machine hits all of them alike; the measurements by name, in round order."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(fn())
    return results


def paired_ratio(values: list[float], baseline: list[float]) -> float:
    """Median over the rounds of ``values[i] / baseline[i]`` (a ratio taken within each round)."""
    return statistics.median(v / b for v, b in zip(values, baseline, strict=True))


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """Print a GitHub-markdown table."""
    cells = [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
