"""``python -m tools.grading <command>``: the instructors' grading of the course, sandboxed and parallel.

Commands:

- ``run``: the whole loop in one command: collect the submissions from the exchange, autograde them (sandboxed,
  in parallel), generate the feedback (without hidden tests), export ``grades.csv``; prints a final table.
- ``autograde``: grade the collected submissions (all, or ``--student``), locally in parallel or as a slurm array.
- ``merge``: merge the results of a slurm array submitted with ``--no-wait``.
- ``feedback``: generate the students' feedback (``--release`` also puts it in the exchange).
- ``check``: tell whether this machine can grade: grading environment, sandbox, cgroups, slurm.
- ``hidden-set``: generate the hidden test set the students' models are scored on (once per term, secret seed).
- ``worker``: grade one submission from a job file (what the parallel grader and the array tasks run).

Run from the repository root, with the instructor environment (``.venv/bin/python -m tools.grading ...``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools.grading import models, sandbox
from tools.grading.course import Course, tools_on_path
from tools.grading.parallel import REPO, Settings, collect_result, grade_all, summary_rows

DEFAULT_ENV = REPO / ".venv-grading" / "bin" / "python"


class GradingError(RuntimeError):
    """A grading run cannot start or continue; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# Preconditions
# --------------------------------------------------------------------------------------------------------------------

def check_environment(python: Path) -> None:
    """Refuse a grading environment that is missing or can import an instructor ``labcode``."""
    if not python.is_file():
        raise GradingError(f"no grading environment at {python}: create it with `bash scripts/setup.sh --grading` "
                           "(the third-party stack only, without the course library)")
    probe = ("import importlib.util, sys; spec = importlib.util.find_spec('labcode'); "
             "print(spec.origin if spec else '')")
    done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, cwd="/", timeout=120)
    if done.returncode != 0:
        raise GradingError(f"the grading environment {python} does not start: {done.stderr.strip()[-300:]}")
    if done.stdout.strip():
        raise GradingError(f"the grading environment {python} can import labcode from {done.stdout.strip()}: it "
                           "must hold the third-party stack only, so that submissions run their own copy")


def check_sandbox(python: Path, allow_unsandboxed: bool) -> bool:
    """Whether kernels run sandboxed; raise when the sandbox cannot start and the instructor did not opt out."""
    problem = sandbox.probe(python)
    if problem is None:
        return True
    if not allow_unsandboxed:
        raise GradingError(f"the sandbox cannot start ({problem}); submissions would run with your rights. Fix it "
                           "(apt-get install bubblewrap) or pass --no-sandbox to grade without isolation")
    print(f"warning: grading WITHOUT the sandbox ({problem}): submissions run with your rights", file=sys.stderr)
    return False


def default_datadir() -> Path:
    if os.environ.get("LABCODE_DATADIR"):
        return Path(os.environ["LABCODE_DATADIR"])
    from labcode.synth import ensure_default_dataset

    return Path(ensure_default_dataset(progress=False))


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------

def hidden_root(course: Course, given: Path | None) -> Path | None:
    """The hidden test set: ``--hidden``, else ``<course>/data/hidden/stanford`` when it exists, else none."""
    if given is not None:
        if not (given / "assets" / "semantic_labels.json").is_file():
            raise GradingError(f"--hidden {given} is not a data set in the 2D-3D-S layout "
                               "(no assets/semantic_labels.json)")
        return given
    default = course.root / "data" / "hidden" / "stanford"
    return default if default.is_dir() else None


def settings_from(args: argparse.Namespace, course: Course, isolated: bool) -> Settings:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = int(args.memory_gb * sandbox.GIB) if args.memory_gb else \
        min(6 * sandbox.GIB, int(0.8 * total / args.workers))
    scratch = args.scratch or course.root / "grading"
    model = models.ModelGrading.from_config(course.config())
    hidden = None if args.no_models else hidden_root(course, args.hidden)
    packed = None
    if hidden is not None:
        packed = scratch / f"hidden-{model.img_size}.npz"
        models.pack_hidden_set(hidden, model.img_size, model.shareable, packed)
    elif not args.no_models:
        print("note: no hidden test set (python -m tools.grading hidden-set): the submitted models are not scored",
              file=sys.stderr)
    return Settings(python=args.python, datadir=args.datadir or default_datadir(), scratch=scratch,
                    workers=args.workers, cell_timeout=args.cell_timeout, submission_timeout=args.submission_timeout,
                    limits=sandbox.Limits(memory_bytes=memory), notebooks=args.notebooks, isolated=isolated,
                    hidden=packed, model=model)


def finish_models(course: Course, results: list[dict], settings: Settings, hidden: Path | None) -> None:
    """The model reports in the autograded notebooks and the leaderboard, once every result is merged."""
    if settings.hidden is None or not any(r.get("model") for r in results):
        return
    manifest = (hidden.parent / "hidden.json") if hidden else None
    salt = manifest.read_text() if manifest and manifest.is_file() else course.course_id
    page = models.finish(course, results, settings.model, settings.hidden, salt, settings.scratch / "leaderboard.html")
    print(f"leaderboard: {page}")


def autograde(args: argparse.Namespace) -> list[dict]:
    from tqdm.auto import tqdm

    course = Course(args.course)
    students = args.student or course.submissions()
    if not students:
        raise GradingError(f"no collected submission in {course.root / 'submitted'}")
    missing = [s for s in students if not course.folder("submitted", s).is_dir()]
    if missing:
        raise GradingError(f"no submission of {', '.join(missing)} in {course.root / 'submitted'}")
    check_environment(args.python)
    isolated = check_sandbox(args.python, args.no_sandbox)
    settings = settings_from(args, course, isolated)
    if args.slurm:
        from tools.grading import slurm

        script = slurm.write_array(course, students, settings, per_task=args.per_task, partition=args.partition,
                                   time_limit=args.time, cpus=settings.threads, mem=args.mem)
        job = slurm.submit(script, wait=not args.no_wait)
        print(f"slurm array {job}: {script}")
        if args.no_wait:
            print(f"when it is done: python -m tools.grading merge --course {course.root} --scratch "
                  f"{settings.scratch}")
            return []
        results = merge(course, students, settings)
    else:
        with tqdm(total=len(students), desc="grading", unit="submission", disable=not args.progress) as bar:
            def advance(result: dict) -> None:
                bar.set_postfix_str(f"{result['student']}: {result['status']}")
                bar.update()

            results = grade_all(course, students, settings, on_result=advance)
    finish_models(course, results, settings, hidden_root(course, args.hidden) if not args.no_models else None)
    return results


def merge(course: Course, students: list[str], settings: Settings) -> list[dict]:
    model = settings.model if settings.hidden else None
    return [collect_result(course, student, settings.scratch / student, model=model) for student in students]


def feedback(course: Course, release: bool) -> None:
    api = course.api()
    with tools_on_path():
        done = api.generate_feedback(course.assignment, force=True)
        if not done["success"]:
            raise GradingError(f"nbgrader generate_feedback failed:\n{done.get('log', '')}{done.get('error', '')}")
        if release:
            done = api.release_feedback(course.assignment)
            if not done["success"]:
                raise GradingError(f"nbgrader release_feedback failed:\n{done.get('log', '')}")


def export(course: Course, path: Path) -> None:
    nbgrader = Path(sys.executable).parent / "nbgrader"
    with tools_on_path():
        done = subprocess.run([str(nbgrader), "export", f"--to={path}"], cwd=course.root, capture_output=True,
                              text=True)
    if done.returncode != 0:
        raise GradingError(f"nbgrader export failed:\n{done.stderr[-2000:]}")


def collect(course: Course) -> int:
    """Collect the submissions from the exchange (none when there is no exchange folder); return how many."""
    root = Path(str(course.config().Exchange.get("root", "") or "/srv/nbgrader/exchange"))
    if not (root / course.course_id / "inbound").is_dir():
        return 0
    with tools_on_path():
        done = course.api(**{"Exchange.root": str(root)}).collect(course.assignment)
    if not done["success"]:
        raise GradingError(f"nbgrader collect failed:\n{done.get('log', '')}")
    return len(course.submissions())


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


# --------------------------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_grading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course", type=Path, default=REPO, help="course folder (default: this repository)")
    parser.add_argument("--student", nargs="+", default=None, help="grade these students only (default: all)")
    parser.add_argument("--workers", type=positive_int, default=max(1, os.cpu_count() or 1),
                        help="submissions graded at once (default: one per core)")
    parser.add_argument("--python", type=Path, default=DEFAULT_ENV,
                        help="grading environment's interpreter (default: .venv-grading/bin/python)")
    parser.add_argument("--datadir", type=Path, default=None,
                        help="data set of the notebooks (default: $LABCODE_DATADIR, else the generated one)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="workers' folders and logs (default: <course>/grading)")
    parser.add_argument("--notebooks", default="*", help="glob of the notebooks to grade (default: all)")
    parser.add_argument("--cell-timeout", type=positive_int, default=300, help="seconds per cell (default: 300)")
    parser.add_argument("--submission-timeout", type=positive_int, default=1800,
                        help="seconds per submission before it is killed and scores 0 (default: 1800)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="memory per submission (default: min(6, 80 %% of the RAM / workers))")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="grade even if the sandbox cannot start (submissions then run with your rights)")
    parser.add_argument("--slurm", action="store_true", help="grade as a slurm job array instead of locally")
    parser.add_argument("--per-task", type=positive_int, default=1, help="slurm: submissions per array task")
    parser.add_argument("--partition", default=None, help="slurm: partition")
    parser.add_argument("--time", default="02:00:00", help="slurm: time limit of each task")
    parser.add_argument("--mem", default=None, help="slurm: memory of each task, e.g. 8G")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return (then run `merge`)")
    parser.add_argument("--hidden", type=Path, default=None,
                        help="hidden test set of the models (default: <course>/data/hidden/stanford when present)")
    parser.add_argument("--no-models", action="store_true", help="do not score the submitted models")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.grading", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="collect, autograde, feedback, export")
    add_grading_options(run)
    run.add_argument("--release-feedback", action="store_true", help="also put the feedback in the exchange")
    run.add_argument("--grades", type=Path, default=None, help="CSV export (default: <course>/grades.csv)")
    add_grading_options(commands.add_parser("autograde", help="grade the collected submissions"))
    add_grading_options(commands.add_parser("merge", help="merge the results of a slurm array (same options)"))
    hidden = commands.add_parser("hidden-set", help="generate the hidden test set of the models")
    hidden.add_argument("--course", type=Path, default=REPO)
    hidden.add_argument("--images", type=positive_int, default=120, help="images in areas 5a and 5b (default: 120)")
    hidden.add_argument("--size", type=positive_int, default=None, help="side in pixels (default: the data set's)")
    hidden.add_argument("--force", action="store_true", help="replace an existing hidden set")
    fed = commands.add_parser("feedback", help="generate (and release) the feedback")
    fed.add_argument("--course", type=Path, default=REPO)
    fed.add_argument("--release", action="store_true")
    checked = commands.add_parser("check", help="can this machine grade?")
    checked.add_argument("--python", type=Path, default=DEFAULT_ENV)
    worker = commands.add_parser("worker", help="grade one submission (internal)")
    worker.add_argument("job", type=Path)
    worker.add_argument("--slot", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from tools.grading import worker

        return worker.main([str(args.job), *(["--slot", str(args.slot)] if args.slot is not None else [])])
    try:
        if args.command == "check":
            check_environment(args.python)
            problem = sandbox.probe(args.python)
            cgroup = sandbox.Cgroup("probe", sandbox.Limits())
            cgroup.remove()
            print_table([("grading environment", f"{args.python} (no labcode)"),
                         ("sandbox", problem or "bubblewrap works"), ("resource limits", f"rlimits, {cgroup.kind}"),
                         ("slurm", "sbatch found" if shutil.which("sbatch") else "no sbatch")])
            return 0 if problem is None else 1
        course = Course(args.course)
        if args.command == "hidden-set":
            out = course.root / "data" / "hidden"
            if out.exists() and not args.force:
                raise GradingError(f"{out} exists: keep it (students' scores stay comparable) or pass --force")
            if out.exists():
                shutil.rmtree(out)
            root = models.make_hidden_set(out, images=args.images, size=args.size)
            print(f"hidden test set: {root} (seed and shareable images in {out / 'hidden.json'}; never publish it)")
            return 0
        if args.command == "merge":
            students = args.student or course.submissions()
            settings = settings_from(args, course, isolated=not args.no_sandbox)
            results = merge(course, students, settings)
            finish_models(course, results, settings, hidden_root(course, args.hidden) if not args.no_models else None)
        elif args.command == "feedback":
            feedback(course, args.release)
            print(f"feedback in {course.root / 'feedback'}")
            return 0
        else:
            collected = collect(course) if args.command == "run" else 0
            results = autograde(args)
            if args.command == "run" and results:
                feedback(course, args.release_feedback)
                export(course, args.grades or course.root / "grades.csv")
                print(f"collected {collected} submission(s) from the exchange; feedback in {course.root / 'feedback'}; "
                      f"grades in {args.grades or course.root / 'grades.csv'}")
        if results:
            print_table(summary_rows(results))
        return 0 if all(r["status"] == "graded" for r in results) else 1
    except (GradingError, sandbox.SandboxError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
