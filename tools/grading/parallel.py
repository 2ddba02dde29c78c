"""Grade many submissions at once: one worker process per submission, a fixed number at a time, one merger.

Each worker (:mod:`tools.grading.worker`) grades one submission in a scratch course of its own; this process starts
them, enforces the wall-time limit of each, and merges every result into the course gradebook as soon as it
arrives (:mod:`tools.grading.merge`), so the gradebook always has a single writer. Worker ``i`` of the pool uses
sandbox slot ``i``: at most one submission runs under each sandbox user at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.grading import sandbox
from tools.grading.course import Course
from tools.grading.merge import merge_submission, reset_submission
from tools.grading.models import ModelGrading, record_points
from tools.grading.worker import Job

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """How a class is graded.

    Attributes:
        python: the grading environment's interpreter.
        datadir: data set the notebooks read.
        scratch: folder of the workers' scratch courses and logs.
        workers: submissions graded at once.
        cell_timeout: seconds per cell before it is interrupted.
        submission_timeout: seconds per submission before everything it runs is killed (it then scores 0).
        limits: sandbox limits per submission.
        notebooks: glob of the notebooks to grade.
        isolated: ``False`` only with the instructor's explicit ``--no-sandbox``.
        hidden: the packed hidden test set the submitted models are scored on (``None``: models are not graded).
        model: the course's model grading settings.
    """

    python: Path
    datadir: Path
    scratch: Path
    workers: int = 1
    cell_timeout: int = 300
    submission_timeout: int = 1800
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    notebooks: str = "*"
    isolated: bool = True
    hidden: Path | None = None
    model: ModelGrading = field(default_factory=ModelGrading)

    @property
    def threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.workers)


def make_job(course: Course, student: str, settings: Settings, slot: int) -> Job:
    return Job(course=str(course.root), student=student, scratch=str(settings.scratch / student),
               python=str(settings.python), datadir=str(settings.datadir), slot=slot, threads=settings.threads,
               cell_timeout=settings.cell_timeout, limits=asdict(settings.limits), isolated=settings.isolated,
               hidden=str(settings.hidden or ""), model=asdict(settings.model), notebooks=settings.notebooks)


def worker_command(job_file: Path, slot: str | None = None) -> list[str]:
    """The command that runs one worker (``slot`` overrides the job's, e.g. ``$SLURM_ARRAY_TASK_ID``)."""
    return [sys.executable, "-m", "tools.grading", "worker", str(job_file), *(["--slot", slot] if slot else [])]


def collect_result(course: Course, student: str, scratch: Path, status: str | None = None,
                   model: ModelGrading | None = None) -> dict:
    """Merge a finished worker's result into the course (or record 0 when it produced none); return the result.

    With ``model`` settings, the points of the submitted model (scored by the worker) are recorded too.
    """
    path = scratch / "result.json"
    result = json.loads(path.read_text()) if path.is_file() and status is None else \
        {"student": student, "status": status or "crashed", "notebooks": {}}
    if result["status"] == "graded":
        merge_submission(course, Course(scratch / "course", course.assignment), student)
        if model is not None and result.get("model"):
            result["model_points"] = record_points(course, student, result["model"], model)
    else:
        reset_submission(course, student)
    return result


def grade_all(course: Course, students: Sequence[str], settings: Settings,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Grade ``students``' submissions, ``settings.workers`` at a time; return one result per student.

    Args:
        course: the course (its gradebook receives the scores).
        students: whose collected submissions to grade.
        settings: environment, limits and parallelism.
        on_result: called with each result as it is merged (a progress bar).
    """
    settings.scratch.mkdir(parents=True, exist_ok=True)
    pending = list(students)
    running: dict[int, tuple[str, subprocess.Popen, float, object]] = {}
    results = []
    while pending or running:
        for slot in range(settings.workers):
            if slot in running or not pending:
                continue
            student = pending.pop(0)
            job = make_job(course, student, settings, slot)
            scratch = Path(job.scratch)
            scratch.mkdir(parents=True, exist_ok=True)
            (scratch / "result.json").unlink(missing_ok=True)
            job.save(scratch / "job.json")
            log = (scratch / "worker.log").open("w")
            process = subprocess.Popen(worker_command(scratch / "job.json"), cwd=REPO, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            running[slot] = (student, process, time.monotonic(), log)
        time.sleep(0.2)
        for slot, (student, process, started, log) in list(running.items()):
            status = None
            if process.poll() is None:
                if time.monotonic() - started < settings.submission_timeout:
                    continue
                os.killpg(process.pid, signal.SIGKILL)  # the sandboxes die with their parent
                process.wait()
                status = "timeout"
            log.close()
            del running[slot]
            result = collect_result(course, student, settings.scratch / student, status,
                                    settings.model if settings.hidden else None)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return sorted(results, key=lambda r: r["student"])


def summary_rows(results: Sequence[dict]) -> list[tuple[str, str]]:
    """The final table: submissions, statuses, mean automatic score per notebook, slowest submission."""
    graded = [r for r in results if r["status"] == "graded"]
    rows = [("submissions", str(len(results))), ("graded", str(len(graded)))]
    for status in ("timeout", "crashed", "error"):
        names = [r["student"] for r in results if r["status"] == status]
        if names:
            rows.append((status, ", ".join(names)))
    notebooks = sorted({name for r in graded for name in r["notebooks"]})
    for name in notebooks:
        got = [r["notebooks"][name] for r in graded if name in r["notebooks"]]
        maximum = max(n["auto_max"] for n in got)
        mean = sum(n["auto_score"] for n in got) / len(got)
        rows.append((f"mean {name}", f"{mean:.1f} / {maximum:.0f}"))
    models = [r["model"] for r in graded if r.get("model")]
    if models:
        refused = [r["student"] for r in graded if r.get("model", {}).get("status") == "refused"]
        points = [r["model_points"]["points"] for r in graded
                  if (r.get("model_points") or {}).get("points") is not None]
        rows.append(("models scored", f"{len(models) - len(refused)} of {len(models)}"
                     + (f" (no score: {', '.join(refused)})" if refused else "")))
        if points:
            rows.append(("mean model points", f"{sum(points) / len(points):.1f}"))
    if graded:
        slowest = max(graded, key=lambda r: r.get("seconds", 0))
        rows.append(("slowest", f"{slowest['student']} ({slowest.get('seconds', 0):.0f} s)"))
    return rows
