"""Grade one submission, alone, in a scratch course: the unit of work of the parallel and slurm graders.

The worker is trusted code (the instructor's nbgrader); only the notebook kernels it starts run the submission, in
the sandbox. It

1. copies the course's gradebook and the submission into a scratch course folder of its own, so that any number of
   workers run at once without sharing a SQLite file (the parent merges the results, one submission at a time);
2. drops what a submission must not bring: links (they could point at the instructor's files) and anything that is
   not a plain file or folder, then puts back the release's version of every library file that has no exercise,
   so that only the code the student had to write is the student's;
3. runs ``nbgrader autograde`` there, each notebook in a sandboxed kernel (:mod:`tools.grading.kernel`);
4. writes ``result.json``: per-notebook scores, duration, status.

Run as ``python -m tools.grading worker JOB.json`` (by the parallel grader or a slurm array task).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.grading import sandbox
from tools.grading.course import Course, copy_database, tools_on_path

#: Marks, in the release's library, the lines where students write code (see ``tools/release.py``).
EXERCISE_MARK = "# EXERCISE "


@dataclass
class Job:
    """Everything a worker needs, serialisable to JSON (slurm tasks read it from a file).

    Attributes:
        course: the course folder (gradebook, ``submitted/``, release).
        student: the student whose submission is graded.
        scratch: the worker's own folder (scratch course, log, result).
        python: the grading environment's interpreter (no instructor library in it).
        datadir: data set exposed read-only to the notebooks.
        slot: worker slot (the sandbox user).
        threads: CPU threads each kernel may use.
        cell_timeout: seconds a cell may run before it is interrupted (scores 0, the rest goes on).
        limits: the sandbox's resource limits.
        isolated: ``False`` when the instructor opted out of the sandbox.
        hidden: the packed hidden test set (``.npz``) the submitted model is scored on (no model grading when empty).
        model: the course's model grading settings (:class:`tools.grading.models.ModelGrading` as a dict).
        notebooks: a glob of notebook names to grade (all when ``"*"``).
    """

    course: str
    student: str
    scratch: str
    python: str
    datadir: str
    slot: int = 0
    threads: int = 1
    cell_timeout: int = 300
    limits: dict = field(default_factory=lambda: asdict(sandbox.Limits()))
    isolated: bool = True
    hidden: str = ""
    model: dict = field(default_factory=dict)
    notebooks: str = "*"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls(**json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------------------------------
# Preparing the submission
# --------------------------------------------------------------------------------------------------------------------

def copy_plain_files(source: Path, dest: Path) -> list[str]:
    """Copy the plain files and folders of ``source`` to ``dest``; return what was left out (links, devices...)."""
    skipped = []
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        mode = entry.lstat().st_mode
        if stat.S_ISDIR(mode):
            skipped += copy_plain_files(entry, dest / entry.name)
        elif stat.S_ISREG(mode):
            shutil.copyfile(entry, dest / entry.name)
        else:
            skipped.append(str(entry))
    return skipped


def exercise_files(release_library: Path) -> set[str]:
    """The library files (relative paths) in which students write code: those with an exercise stub."""
    return {p.relative_to(release_library).as_posix() for p in release_library.rglob("*.py")
            if EXERCISE_MARK in p.read_text(encoding="utf-8")}


def restore_library(submission: Path, release: Path) -> list[str]:
    """Overwrite the submission's library files that have no exercise with the release's; return those replaced.

    A student's changes outside the exercises (a metric, a data loader, the check) therefore never count, and the
    files they had to write stay theirs. Files the student added are kept (only their own code can import them).
    """
    library, student_library = release / "labcode", submission / "labcode"
    if not student_library.is_dir():
        return []
    own = exercise_files(library)
    replaced = []
    for path in sorted(p for p in library.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = path.relative_to(library).as_posix()
        if rel in own:
            continue
        target = student_library / rel
        if not target.is_file() or target.read_bytes() != path.read_bytes():
            replaced.append(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return replaced


# --------------------------------------------------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------------------------------------------------

def scores(db_path: Path, course_id: str, assignment: str, student: str) -> dict[str, dict]:
    """Per notebook: automatic score and maximum of its autograded tests, and the maximum of the written answers."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{db_path}", course_id) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        for notebook in submission.notebooks:
            auto = [g for g in notebook.grades if g.cell.cell_type == "code"]
            out[notebook.name] = {
                "auto_score": sum(g.auto_score or 0 for g in auto),
                "auto_max": sum(g.max_score for g in auto),
                "manual_max": sum(g.max_score for g in notebook.grades if g.cell.cell_type != "code"),
                "tests": {g.name: g.auto_score for g in auto},
            }
    return out


def grade(job: Job) -> dict:
    """Grade ``job``'s submission; return (and write to ``<scratch>/result.json``) what happened."""
    from tools.grading.kernel import SandboxKernelManager, autograde_preprocessors

    started = time.time()
    course = Course(Path(job.course))
    scratch = Path(job.scratch)
    work = Course(scratch / "course", course.assignment)
    result: dict = {"student": job.student, "status": "error", "notebooks": {}, "skipped": [], "restored": []}
    try:
        if (scratch / "course").exists():
            shutil.rmtree(scratch / "course")
        submitted = work.folder("submitted", job.student)
        result["skipped"] = copy_plain_files(course.folder("submitted", job.student), submitted)
        result["restored"] = restore_library(submitted, course.folder("release"))
        (work.root / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"load_subconfig({str(course.root / 'nbgrader_config.py')!r})\n"
            f"c.CourseDirectory.root = {str(work.root)!r}\n")
        db = work.root / "gradebook.db"
        copy_database(course.db_path, db)

        SandboxKernelManager.spec = sandbox.SandboxSpec(
            python=Path(job.python), datadir=Path(job.datadir), slot=job.slot,
            limits=sandbox.Limits(**job.limits), isolated=job.isolated,
            env={"OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads),
                 "LABCODE_NUM_THREADS": str(job.threads)})
        api = work.api(**{"CourseDirectory.db_url": f"sqlite:///{db}",
                          "CourseDirectory.notebook_id": job.notebooks,
                          "Autograde.autograde_preprocessors": autograde_preprocessors(),
                          "Execute.timeout": job.cell_timeout,
                          "Execute.interrupt_on_timeout": True,
                          "ExecutePreprocessor.timeout": job.cell_timeout})
        with tools_on_path():
            outcome = api.autograde(course.assignment, job.student, force=True, create=True)
        (scratch / "nbgrader.log").write_text(outcome.get("log", "") + "\n" + str(outcome.get("error", "")))
        if not outcome["success"]:
            raise RuntimeError(f"nbgrader autograde failed; see {scratch / 'nbgrader.log'}")
        result["notebooks"] = scores(db, work.course_id, course.assignment, job.student)
        if job.hidden:
            result["model"] = grade_model(job, submitted)
        result["status"] = "graded"
    except Exception as err:  # the parent reports it; one broken submission never stops the others
        result["error"] = f"{type(err).__name__}: {err}"
        (scratch / "worker-error.log").write_text(traceback.format_exc())
    result["seconds"] = round(time.time() - started, 1)
    (scratch / "result.json").write_text(json.dumps(result, indent=1))
    return result


def grade_model(job: Job, submitted: Path) -> dict:
    """Score the submitted model on the hidden set, in a sandbox of its own (no data set, no notebook)."""
    from labcode.classes import NUM_CLASSES
    from tools.grading.models import ModelGrading, score_model

    settings = ModelGrading(**job.model)
    limits = sandbox.Limits(**{**job.limits, "memory_bytes": int(settings.memory_gb * sandbox.GIB)})
    spec = sandbox.SandboxSpec(python=Path(job.python), slot=job.slot, limits=limits, isolated=job.isolated,
                               env={"OMP_NUM_THREADS": str(job.threads)})
    return asdict(score_model(submitted / settings.model_file, Path(job.hidden), settings, spec, NUM_CLASSES))


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--slot"):
        print("usage: python -m tools.grading worker JOB.json [--slot N]", file=sys.stderr)
        return 2
    job = Job.load(Path(argv[0]))
    if len(argv) == 3:
        job.slot = int(argv[2])
    os.environ["NBGRADER_EXECUTION"] = "autograde"
    result = grade(job)
    return 0 if result["status"] == "graded" else 1
