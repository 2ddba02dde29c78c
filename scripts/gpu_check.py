"""The GPU check, one command for a GPU machine (written for one H200 and 16 cores; under 8 minutes):
``make gpu-check``.

Each step runs as a subprocess under its own time budget; a step past its budget is stopped and reported, and the
next step still runs. Steps:

1. environment: GPU, driver, torch / CUDA / cuDNN / onnxruntime versions and providers;
2. data: the generated default data set (made once, then reused);
3. GPU tests: ``pytest -m gpu`` (CUDA training loop with AMP, losses, metrics, models, the CLI end to end);
4. training step: fp32 against channels_last and bf16 / fp16 autocast (``benchmarks.bench_train``);
5. a short real training with mixed precision on the generated data, exported to ONNX and scored on the held-out
   areas 5a + 5b (``python -m labcode pipeline --device cuda``);
6. inference: ONNX Runtime's CUDA provider against its CPU provider and eager PyTorch (``benchmarks.bench_infer``);
7. ``torchrun`` with two processes (DistributedDataParallel): NCCL on two GPUs when two are visible, otherwise gloo
   on the CPU (one GPU cannot host two NCCL ranks).

Every table goes to one Markdown file, ``<out>/gpu_check.md`` (its path is printed; it is rewritten after each step,
so a stopped check keeps what it measured), the full output of each step to ``<out>/logs/``.

    python scripts/gpu_check.py [--out runs/gpu-check] [--dry-run]

``--dry-run`` lists every step with its command and time budget and runs nothing (no GPU needed). Without a CUDA
device and without ``--dry-run`` the check exits with status 2 and one line saying so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The whole check must fit in this many seconds on the target machine; the step budgets add up to less, leaving
#: time for the start of each step's interpreter and for the report.
TOTAL_LIMIT_S = 8 * 60


@dataclass
class Step:
    """One step: a command, its time budget, and how its output becomes Markdown."""

    name: str
    title: str
    command: list[str]
    budget_s: int
    report: Callable[[str], str] = field(default=lambda output: f"```\n{output.strip()}\n```")
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Outcome:
    """What a step did: ``status`` is ``passed``, ``failed (exit N)`` or ``stopped at its budget``."""

    status: str
    seconds: float
    markdown: str


def tables_only(output: str) -> str:
    """The benchmark's description lines and tables, without progress chatter."""
    keep = [line for line in output.splitlines()
            if line.startswith("|") or line.startswith(("training step", "inference", "onnxruntime session", "loader"))]
    return "\n".join(keep)


def pytest_summary(output: str) -> str:
    lines = output.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if "short test summary info" in line), len(lines) - 1)
    return "```\n" + "\n".join(lines[start:]) + "\n```"


def pipeline_report(run_dir: Path) -> Callable[[str], str]:
    def report(output: str) -> str:
        summary_path = run_dir / "pipeline.json"
        if not summary_path.is_file():
            return "no pipeline.json written; see the log\n\n```\n" + "\n".join(output.splitlines()[-15:]) + "\n```"
        summary = json.loads(summary_path.read_text())
        device = next((line.strip("- ").strip() for line in (run_dir / "summary.md").read_text().splitlines()
                       if line.startswith("- device:")), summary["device"])
        rows = [("device (precision), processes", device.removeprefix("device: ")),
                ("train / valid images", f"{summary['train_size']} / {summary['valid_size']}"),
                ("epochs x seconds", f"{summary['epochs']} x {summary['seconds_per_epoch']:.1f} s"),
                ("best validation macro F1",
                 f"{summary['best_macro_f1']:.4f} (epoch {summary['best_epoch'] + 1})"),
                (f"held-out {'+'.join(summary['test_areas'])} macro F1", f"{summary['test_macro_f1']:.4f}"),
                (f"held-out {'+'.join(summary['test_areas'])} mIoU", f"{summary['test_mean_iou']:.4f}"),
                ("ONNX parity (max abs diff)", ", ".join(f"{k} {v:.1e}" for k, v in summary["parity"].items())),
                ("total", f"{summary['total_seconds']:.0f} s")]
        return "| what | result |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return report


def ddp_report(run_dir: Path, backend: str) -> Callable[[str], str]:
    def report(output: str) -> str:
        history_path = run_dir / "history.json"
        if not history_path.is_file():
            return "no history.json written; see the log\n\n```\n" + "\n".join(output.splitlines()[-15:]) + "\n```"
        device = next((line.strip("- ").strip() for line in (run_dir / "summary.md").read_text().splitlines()
                       if line.startswith("- device:")), "?")
        rows = [f"| {e['epoch'] + 1} | {e['time_s']:.1f} | {e['train']['loss']:.4f} | {e['valid']['macro_f1']:.4f} |"
                for e in json.loads(history_path.read_text())]
        return (f"{backend}; rank 0 reports {device}\n\n| epoch | seconds | train loss | valid macro F1 |\n"
                "| --- | --- | --- | --- |\n" + "\n".join(rows))
    return report


ENVIRONMENT = """
import shutil, subprocess, torch, onnxruntime as ort
from benchmarks.common import machine
print(machine())
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
print("onnxruntime", ort.__version__, "providers", ort.get_available_providers())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip())
"""


def build_steps(out: Path, gpus: int) -> list[Step]:
    """The steps for a machine with ``gpus`` visible CUDA devices, writing under ``out``."""
    from labcode.synth import SYNTH_VERSION, data_home

    python = sys.executable
    datadir = data_home() / f"synth-{SYNTH_VERSION}"
    runs = out / "runs"
    pipeline_dir, ddp_dir = runs / "pipeline", runs / "ddp"
    two_gpus = gpus >= 2
    backend = "NCCL, one process on each of cuda:0 and cuda:1" if two_gpus else \
        "gloo on the CPU (fewer than two GPUs visible; CUDA hidden from the two processes)"
    return [
        Step("environment", "Environment", [python, "-c", ENVIRONMENT], 20, report=lambda o: f"```\n{o.strip()}\n```"),
        Step("data", "Generated data set", [python, "-c", "from labcode.synth import ensure_default_dataset; "
                                             "print(ensure_default_dataset(progress=False, workers=8))"], 40),
        Step("gpu-tests", "GPU-marked tests", [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                               str(REPO / "tests")], 70, report=pytest_summary),
        Step("train-step", "Training step: fp32, channels_last, bf16 and fp16 autocast",
             [python, "-m", "benchmarks.bench_train", "--batch-size", "32", "--steps", "10", "--rounds", "2",
              "--no-handout"], 50, report=tables_only),
        Step("training", "A short training with mixed precision, tested on the held-out areas 5a + 5b",
             [python, "-m", "labcode", "pipeline", "--datadir", str(datadir), "--logdir", str(runs), "--name",
              "pipeline", "--overwrite", "--device", "cuda", "--epochs", "25", "--img-size", "256", "--base-chan",
              "32", "--num-blocks", "4", "--batch-size", "16", "--num-workers", "8", "--no-progress"], 140,
             report=pipeline_report(pipeline_dir)),
        Step("inference", "Inference: ONNX Runtime CUDA provider vs CPU provider vs eager PyTorch on the GPU",
             [python, "-m", "benchmarks.bench_infer", "--providers", "cuda", "cpu", "--rounds", "3"], 75,
             report=tables_only),
        Step("torchrun", "torchrun, two processes (DistributedDataParallel)",
             [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "labcode", "train",
              "--datadir", str(datadir), "--areas-train", "1", "2", "--areas-valid", "3", "--img-size", "128",
              "--base-chan", "16", "--num-blocks", "3", "--epochs", "2", "--batch-size", "8", "--num-workers", "2",
              "--threads", "4", "--small", "--logdir", str(runs), "--run-name", "ddp", "--no-progress"], 60,
             report=ddp_report(ddp_dir, backend), env={} if two_gpus else {"CUDA_VISIBLE_DEVICES": ""},
             note=backend),
    ]


def run_step(step: Step, log_dir: Path) -> Outcome:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "NO_ALBUMENTATIONS_UPDATE": "1", "ORT_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg", **step.env}
    log = log_dir / f"{step.name}.log"
    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(step.command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=sink, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=step.budget_s)
            status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the step's own process group: torchrun's workers, loader workers
            output, _ = proc.communicate()
            status = "stopped at its budget"
        sink.write(output)
    seconds = time.perf_counter() - started
    try:
        markdown = step.report(output)
    except Exception as exc:  # a report that cannot read what a failed step left
        markdown = f"(no table: {type(exc).__name__}: {exc})"
    return Outcome(status, seconds, markdown + f"\n\nfull output: `{log}`")


def write_markdown(path: Path, header: str, steps: list[Step], outcomes: dict[str, Outcome]) -> None:
    lines = [header, "", "| step | budget | took | status |", "| --- | --- | --- | --- |"]
    for step in steps:
        done = outcomes.get(step.name)
        took, status = (f"{done.seconds:.0f} s", done.status) if done else ("-", "not run yet")
        lines.append(f"| {step.title} | {step.budget_s} s | {took} | {status} |")
    for step in steps:
        if step.name in outcomes:
            lines += ["", f"## {step.title}", "", f"`{shlex.join(step.command)}`" if step.name != "environment"
                      else "", step.note, "", outcomes[step.name].markdown]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu-check"), help="output folder")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the steps, their commands and budgets; run nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    out = Path(args.out).resolve()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    steps = build_steps(out, gpus)
    total = sum(step.budget_s for step in steps)
    if args.dry_run:
        print(f"gpu-check dry run: {len(steps)} steps, {total} s of budgets in all (limit {TOTAL_LIMIT_S} s); "
              f"tables would go to {out / 'gpu_check.md'}")
        for i, step in enumerate(steps, 1):
            extra = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items())
            print(f"{i}. {step.title} [budget {step.budget_s} s]{' - ' + step.note if step.note else ''}")
            command = shlex.join(step.command) if step.name != "environment" else "python -c <versions and devices>"
            print(f"   {extra + ' ' if extra else ''}{command}")
        return 0
    if not gpus:
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"gpu-check: no CUDA device is visible to PyTorch (torch {torch.__version__}, {build}); run it on a GPU "
              f"machine, or see what it would do with --dry-run", file=sys.stderr)
        return 2
    (out / "logs").mkdir(parents=True, exist_ok=True)
    report = out / "gpu_check.md"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    header = (f"# GPU check, {datetime.datetime.now():%Y-%m-%d %H:%M}, commit {commit}\n\n"
              f"{torch.cuda.get_device_name(0)} ({gpus} visible); budgets {total} s in all, limit {TOTAL_LIMIT_S} s")
    outcomes: dict[str, Outcome] = {}
    started = time.perf_counter()
    for step in steps:
        print(f"[{len(outcomes) + 1}/{len(steps)}] {step.title} (budget {step.budget_s} s)", flush=True)
        outcomes[step.name] = run_step(step, out / "logs")
        print(f"      {outcomes[step.name].status} in {outcomes[step.name].seconds:.0f} s", flush=True)
        write_markdown(report, header, steps, outcomes)
    failed = [name for name, outcome in outcomes.items() if outcome.status != "passed"]
    print(f"gpu-check {'passed' if not failed else 'FAILED (' + ', '.join(failed) + ')'} in "
          f"{time.perf_counter() - started:.0f} s; tables: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
