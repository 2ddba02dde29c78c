"""Grade many submissions at once: one worker process per submission, a fixed number at a time, one merger.

Each worker (:mod:`tools.grading.worker`) grades one submission in a scratch course of its own; this process starts
them, enforces the wall-time limit of each, and merges every result into the course gradebook as soon as it
arrives (:mod:`tools.grading.merge`), so the gradebook always has a single writer. Worker ``i`` of the pool uses
sandbox slot ``i``: at most one submission runs under each sandbox user at a time.

Workers are forked from a server process that imported the grading stack once (:data:`PRELOAD`: nbgrader, the
judge and torch, about 4 CPU-seconds per process): each submission still gets a process, a session and a memory of
its own, started from the same clean state, without paying for those imports again. The server runs only the
instructor's code, never a submission's (that runs in the sandboxed kernels the worker starts), and listens on a
socket in a private temporary folder of the grader's user (mode 0700), which no sandbox sees.

Nothing one submission does stops the others: a worker that crashes, runs out of time or leaves a result that cannot
be merged is recorded with its status and reason, its traceback goes to the grader's log (``grader.log``, set up by
the CLI), and the final table (:func:`attention_rows`) names its log files and the command that re-grades it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from tools.grading import sandbox
from tools.grading.course import Course
from tools.grading.merge import merge_submission, reset_submission
from tools.grading.models import ModelGrading, record_points
from tools.grading.worker import Job

REPO = Path(__file__).resolve().parents[2]
#: The logs a worker leaves in its folder that are read first, in this order; any other ``*.log`` there (or in its
#: ``logs/``, one per notebook) comes next, and the worker's own output, ``worker.log``, last.
FIRST_LOGS = ("worker-error.log", "nbgrader.log")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """How a class is graded.

    Attributes:
        python: the grading environment's interpreter.
        datadir: data set the notebooks read.
        reference: the course's reference model the notebooks study (``None``: none).
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
    reference: Path | None = None
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
               python=str(settings.python), datadir=str(settings.datadir),
               reference=str(settings.reference or ""), slot=slot, threads=settings.threads,
               cell_timeout=settings.cell_timeout, limits=asdict(settings.limits), isolated=settings.isolated,
               hidden=str(settings.hidden or ""), model=asdict(settings.model), notebooks=settings.notebooks)


#: What the workers' fork server imports before it forks any of them: everything a worker imports while grading.
PRELOAD = ["tools", "tools.grading.worker", "tools.grading.kernel", "tools.grading.verdicts", "tools.grading.feedback",
           "tools.grading.judge", "tools.grading.models", "nbgrader.apps", "nbgrader.api", "nbgrader.converters",
           "nbgrader.preprocessors", "labcode.classes"]


def worker_command(job_file: Path, slot: str | None = None) -> list[str]:
    """The command that runs one worker (``slot`` overrides the job's, e.g. ``$SLURM_ARRAY_TASK_ID``)."""
    return [sys.executable, "-m", "tools.grading", "worker", str(job_file), *(["--slot", slot] if slot else [])]


def collect_result(course: Course, student: str, scratch: Path, status: str | None = None,
                   model: ModelGrading | None = None, error: str | None = None) -> dict:
    """Merge a finished worker's result into the course (or record 0 when it produced none); return the result.

    With ``model`` settings, the points of the submitted model (scored by the worker) are recorded too. ``status``
    (``"timeout"``, ``"crashed"``) and ``error`` override what the worker wrote. A result that cannot be read is
    ``"crashed"``, one that cannot be merged an ``"error"``, with the traceback in the grader's log: neither stops
    the other students' grading.
    """
    path = scratch / "result.json"
    result = {"student": student, "status": status or "crashed", "notebooks": {}}
    if status is None:
        try:
            result = read_result(path, student)
        except (OSError, ValueError) as err:
            log.exception("%s: no usable result in %s", student, path)
            result["error"] = f"the worker left no usable result.json ({err})"
    if error:
        result["error"] = error
    try:
        if result["status"] == "graded":
            merge_submission(course, Course(scratch / "course", course.assignment), student)
            if model is not None and result.get("model"):
                result["model_points"] = record_points(course, student, result["model"], model)
        else:
            reset_submission(course, student)
    except Exception as err:  # one broken result never stops the class; the log keeps its traceback
        log.exception("%s: merging the result of %s into the gradebook failed", student, scratch)
        result = {**result, "status": "error",
                  "error": f"merging into the gradebook failed: {type(err).__name__}: {err} (traceback in grader.log)"}
        with contextlib.suppress(Exception):
            reset_submission(course, student)
    return result


def read_result(path: Path, student: str) -> dict:
    """A worker's ``result.json``; ``ValueError`` when it is missing a status or names another student."""
    if not path.is_file():
        raise ValueError("the worker ended without writing it")
    result = json.loads(path.read_text())
    if not isinstance(result, dict) or result.get("student") != student or not isinstance(result.get("status"), str):
        raise ValueError(f"{path} is not a result of {student!r}")
    result.setdefault("notebooks", {})
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
    running: dict[int, Running] = {}
    results = []
    try:
        while pending or running:
            for slot in range(settings.workers):
                if slot not in running and pending:
                    running[slot] = start_worker(course, pending.pop(0), settings, slot)
            time.sleep(0.2)
            for slot, worker in list(running.items()):
                status = error = None
                if worker.process.poll() is None:
                    if time.monotonic() - worker.started < settings.submission_timeout:
                        continue
                    kill(worker.process)
                    worker.process.wait()
                    status, error = "timeout", f"killed after {settings.submission_timeout} s (--submission-timeout)"
                elif worker.process.returncode < 0:
                    status = "crashed"
                    error = f"the worker was killed by signal {-worker.process.returncode}"
                worker.log.close()
                del running[slot]
                result = collect_result(course, worker.student, settings.scratch / worker.student, status,
                                        settings.model if settings.hidden else None, error)
                log.info("%s: %s in %.0f s%s", worker.student, result["status"],
                         time.monotonic() - worker.started, f" ({result['error']})" if result.get("error") else "")
                results.append(result)
                if on_result is not None:
                    on_result(result)
    finally:  # interrupted (Ctrl-C) or failed: no worker outlives the grader
        for worker in running.values():
            kill(worker.process)
            worker.process.wait()
            worker.log.close()
    return sorted(results, key=lambda r: r["student"])


def kill(process: ForkedWorker | subprocess.Popen) -> None:
    """Kill a worker and everything it started (its session: the sandboxes die with their parent)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # not yet in a session of its own, or already gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


@dataclass
class Running:
    """A worker process grading one student's submission."""

    student: str
    process: ForkedWorker | subprocess.Popen
    started: float
    log: IO


def start_worker(course: Course, student: str, settings: Settings, slot: int) -> Running:
    """Start the worker of ``student`` on sandbox slot ``slot``; its output goes to ``<its folder>/worker.log``."""
    job = make_job(course, student, settings, slot)
    scratch = Path(job.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "worker-error.log"):
        (scratch / stale).unlink(missing_ok=True)
    job.save(scratch / "job.json")
    output = (scratch / "worker.log").open("w")
    process = start_process(scratch / "job.json", output)
    log.info("%s: grading on slot %d (pid %d, folder %s)", student, slot, process.pid, scratch)
    return Running(student, process, time.monotonic(), output)


def start_process(job_file: Path, output: IO, target: Callable[[str, str], None] | None = None) -> ForkedWorker:
    """Fork a worker for ``job_file`` from the fork server (started with the first), in a session of its own, its
    output and errors going to ``output``; ``target(job_file, output's path)`` is the worker's body (a module-level
    function, by default :func:`_forked_worker`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    process = context.Process(target=target or _forked_worker, args=(str(job_file), output.name), daemon=False)
    process.start()
    return ForkedWorker(process)


def _forked_worker(job_file: str, output: str) -> None:
    """The forked worker's body: what ``python -m tools.grading worker JOB`` does, in a new session."""
    from tools.grading import worker

    os.setsid()  # the grader kills the worker with everything it started (os.killpg)
    log_fd = os.open(output, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(REPO)
    sys.exit(worker.main([job_file]))


class ForkedWorker:
    """A worker forked from the fork server, with the part of :class:`subprocess.Popen` that :func:`grade_all` uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode  # negative: killed by that signal, as Popen says it

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self) -> int | None:
        self._process.join()
        return self._process.exitcode


def summary_rows(results: Sequence[dict]) -> list[tuple[str, str]]:
    """The final table: submissions, statuses, mean automatic score per notebook, slowest submission."""
    graded = [r for r in results if r["status"] == "graded"]
    rows = [("submissions", str(len(results))), ("graded", str(len(graded)))]
    for status in ("timeout", "crashed", "error"):
        names = [r["student"] for r in results if r["status"] == status]
        if names:
            rows.append((status, ", ".join(names)))
    scored = [(name, nb) for r in graded for name, nb in r["notebooks"].items()
              if nb.get("status", "graded") == "graded" and "auto_max" in nb]
    for name in sorted({name for name, _ in scored}):
        got = [nb for each, nb in scored if each == name]
        maximum = max(n["auto_max"] for n in got)
        mean = sum(n["auto_score"] or 0 for n in got) / len(got)
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


# --------------------------------------------------------------------------------------------------------------------
# What to look at when a submission failed
# --------------------------------------------------------------------------------------------------------------------

def problems_of(result: dict) -> list[str]:
    """What went wrong with a submission: its status when not graded, each notebook not graded, the problems listed.

    Empty when the submission and every notebook of it were graded (a low score is not a problem).
    """
    found = []
    if result["status"] != "graded":
        found.append(result["status"] + (f": {result['error']}" if result.get("error") else ""))
    for name, notebook in sorted(result.get("notebooks", {}).items()):
        if notebook.get("status", "graded") != "graded":
            reason = notebook.get("reason")
            found.append(f"{name}: {notebook['status']}" + (f" ({reason})" if reason else ""))
    found += [str(problem) for problem in result.get("problems", [])]
    return list(dict.fromkeys(found))


def log_files(folder: Path) -> list[Path]:
    """The logs a worker left in ``folder``, the most telling first (:data:`FIRST_LOGS`, per notebook, its output)."""
    first = [folder / name for name in FIRST_LOGS]
    others = sorted({*folder.glob("*.log"), *folder.glob("logs/*.log")} - {*first, folder / "worker.log"})
    return [path for path in (*first, *others, folder / "worker.log") if path.is_file()]


def attention_rows(results: Sequence[dict], scratch: Path, regrade: Callable[[str], str]) -> list[tuple[str, str]]:
    """For each submission with a problem (:func:`problems_of`): what went wrong, its logs, the command to re-grade it.

    Args:
        results: the results of the run.
        scratch: the workers' folders (``<scratch>/<student>/``) and the grader's log (``<scratch>/grader.log``).
        regrade: the command that re-grades one student, given the student.
    """
    rows = []
    for result in results:
        problems = problems_of(result)
        if not problems:
            continue
        student = result["student"]
        logs = log_files(scratch / student) or [scratch / student / "worker.log"]
        rows.append((f"{student}", problems[0]))
        rows += [("", problem) for problem in problems[1:]]
        rows.append(("  logs", " ".join(str(path) for path in [*logs, scratch / "grader.log"])))
        rows.append(("  regrade", regrade(student)))
    return rows
