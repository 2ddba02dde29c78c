"""Grade one submission, alone, in a scratch course: the unit of work of the parallel and slurm graders.

The worker is trusted code (the instructor's nbgrader); only the notebook kernels it starts run the submission, in
the sandbox. It

1. copies the course's gradebook into a scratch course folder of its own, so that any number of workers run at once
   without sharing a SQLite file (the parent merges the results, one submission at a time);
2. takes from the submission only what it may hold (:mod:`tools.grading.intake`: the notebooks, the exercise files
   of ``labcode/``, the model and the photos; every other library file is the release's) and repairs notebooks whose
   graded cells were copied;
3. runs ``nbgrader autograde`` on each notebook on its own, each in a fresh kernel forked in the submission's one
   sandbox (:mod:`tools.grading.kernel`, :mod:`tools.grading.kernel_server`), where the verdicts are decided outside
   the kernel by the judge (:mod:`tools.grading.verdicts`); a notebook that cannot be graded costs only itself;
4. writes ``result.json``: per-notebook statuses and scores, problems, duration.

Run as ``python -m tools.grading worker JOB.json`` (by the parallel grader or a slurm array task).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.grading import sandbox
from tools.grading.course import Course, copy_database, tools_on_path
from tools.grading.intake import read_timestamp, take_submission

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything a worker needs, serialisable to JSON (slurm tasks read it from a file).

    Attributes:
        course: the course folder (gradebook, ``submitted/``, release).
        student: the student whose submission is graded.
        scratch: the worker's own folder (scratch course, log, result).
        python: the grading environment's interpreter (no instructor library in it).
        datadir: data set exposed read-only to the notebooks.
        reference: the course's reference model (ONNX, ``reference.json`` beside it) the notebooks study, or ``""``.
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
    reference: str = ""
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
                "status": "graded",
                "auto_score": sum(g.auto_score or 0 for g in auto),
                "auto_max": sum(g.max_score for g in auto),
                "manual_max": sum(g.max_score for g in notebook.grades if g.cell.cell_type != "code"),
                "tests": {g.name: g.auto_score for g in auto},
            }
    return out


def zero_notebook(db_path: Path, course_id: str, assignment: str, student: str, notebook: str) -> None:
    """Record 0 on every autograded test of one notebook (it could not be graded)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db_path}", course_id) as gradebook:
        gradebook.update_or_create_submission(assignment, student)
        for grade in gradebook.find_submission_notebook(notebook, assignment, student).grades:
            if grade.cell.cell_type == "code":
                grade.auto_score = 0
                grade.needs_manual_grade = grade.manual_score is not None
        gradebook.db.commit()


def prepare_notebook(path: Path) -> tuple[str, list[str]]:
    """Read a submitted notebook once: why it cannot be graded ("" when it can), and what was repaired.

    Copying a cell in Jupyter copies its nbgrader metadata (nbgrader's issue 1083), and nbgrader then fails on the
    whole notebook. The last copy of each graded or answer cell keeps the metadata (the one nbgrader would keep);
    the earlier copies become ordinary cells: they still run and are shown, and nothing is lost.
    """
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - any parse failure is the submission's
        return (f"unreadable notebook ({type(err).__name__}: {str(err)[:200]}): open it in Jupyter, fix or re-fetch "
                "it, and submit again"), []
    seen, notes = set(), []
    for cell in reversed(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is None:
            continue
        if grade_id in seen:
            del cell.metadata["nbgrader"]
            notes.append(f"{path.stem}: the cell {grade_id} appears more than once; the last copy was graded")
        seen.add(grade_id)
    if notes:
        nbformat.write(nb, path)
    return "", notes


def grade_notebook(work: Course, job: Job, stem: str, db: Path, log: Path) -> str:
    """Autograde one notebook of the submission in ``work``; return the problem ("" when it was graded)."""
    from tools.grading.kernel import autograde_preprocessors

    api = work.api(**{"CourseDirectory.db_url": f"sqlite:///{db}",
                      "SandboxKernelManager.sandbox": sandbox.spec_to_json(sandbox_spec(job)),
                      "CourseDirectory.notebook_id": stem,
                      "Autograde.autograde_preprocessors": autograde_preprocessors(),
                      "JudgeVerdicts.datadir": job.datadir,
                      "GraderOnly.worker": True,
                      "Execute.timeout": job.cell_timeout,
                      "Execute.interrupt_on_timeout": True,
                      "ExecutePreprocessor.timeout": job.cell_timeout})
    with tools_on_path():
        outcome = api.autograde(work.assignment, job.student, force=True, create=True)
    with log.open("a") as handle:
        handle.write(f"===== {stem}\n{outcome.get('log', '')}\n{outcome.get('error', '') or ''}\n")
    if outcome["success"]:
        return ""
    error = str(outcome.get("error") or "").strip().splitlines()
    return f"nbgrader could not grade it ({error[-1][:200] if error else 'see nbgrader.log'})"


def sandbox_spec(job: Job) -> sandbox.SandboxSpec:
    """The sandbox of the job's kernels."""
    return sandbox.SandboxSpec(
        python=Path(job.python), datadir=Path(job.datadir), reference=Path(job.reference) if job.reference else None,
        slot=job.slot, limits=sandbox.Limits(**job.limits),
        isolated=job.isolated, env={"OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads),
                                    "LABCODE_NUM_THREADS": str(job.threads)})


def grade(job: Job) -> dict:
    """Grade ``job``'s submission, each notebook on its own; return (and write to ``<scratch>/result.json``) the result.

    A notebook that cannot be graded (unreadable, or nbgrader fails on it) scores 0 and is listed in
    ``result["problems"]`` with what to fix; the other notebooks are graded as usual.
    """
    import fnmatch

    from tools.grading.kernel import shared_kernel_servers

    started = time.time()
    course = Course(Path(job.course))
    scratch = Path(job.scratch)
    work = Course(scratch / "course", course.assignment)
    result: dict = {"student": job.student, "status": "error", "notebooks": {}, "problems": [], "notes": [],
                    "skipped": [], "restored": []}
    logger.info("grading %s (notebooks %s) in %s", job.student, job.notebooks, scratch)
    try:
        if (scratch / "course").exists():
            shutil.rmtree(scratch / "course")
        stems = sorted(p.stem for p in course.folder("release").glob("*.ipynb")
                       if fnmatch.fnmatch(p.stem, job.notebooks) or fnmatch.fnmatch(p.name, job.notebooks))
        submitted = work.folder("submitted", job.student)
        source = course.folder("submitted", job.student)
        report = take_submission(source, submitted, course.folder("release"), timestamp=read_timestamp(source))
        result["skipped"], result["restored"] = report.skipped, report.restored
        (work.root / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"load_subconfig({str(course.root / 'nbgrader_config.py')!r})\n"
            f"c.CourseDirectory.root = {str(work.root)!r}\n")
        db = work.root / "gradebook.db"
        copy_database(course.db_path, db)
        log = scratch / "nbgrader.log"
        log.write_text("")
        problems, seconds = {}, {}
        with shared_kernel_servers():  # one sandbox for the submission: each notebook's kernel forked there, fresh
            for stem in stems:
                logger.info("%s: %s started", job.student, stem)  # the last one named is the one a time limit cut
                begun = time.time()
                path = submitted / f"{stem}.ipynb"
                problem, notes = prepare_notebook(path) if path.is_file() else ("missing from the submission", [])
                result["notes"] += notes
                if problem and path.is_file():
                    path.unlink()  # nbgrader then records the notebook as missing: 0 on its tests
                if not problem:
                    problem = grade_notebook(work, job, stem, db, log)
                if problem:
                    problems[stem] = problem
                seconds[stem] = round(time.time() - begun, 1)
        for stem in problems:
            zero_notebook(db, work.course_id, course.assignment, job.student, stem)
        graded = scores(db, work.course_id, course.assignment, job.student)
        for stem, problem in problems.items():
            graded[stem].update(status="missing" if problem.startswith("missing") else "error", reason=problem)
            result["problems"].append(f"{stem}: {problem}")
        result["notebooks"] = {stem: {**graded[stem], "seconds": seconds[stem]} for stem in stems if stem in graded}
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
    # What the worker logs goes to its output, the worker's log (forked by the parallel grader, or a slurm task).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    job = Job.load(Path(argv[0]))
    if len(argv) == 3:
        job.slot = int(argv[2])
    os.environ["NBGRADER_EXECUTION"] = "autograde"
    result = grade(job)
    return 0 if result["status"] == "graded" else 1
