"""``python -m tools.grading <command>``: the instructors' grading of the course, sandboxed and parallel.

Commands:

- ``run``: the whole loop in one command: collect the submissions from the exchange, autograde them (sandboxed,
  in parallel), generate the feedback (without hidden tests), export ``grades.csv``; prints a final table.
  ``run --student NAME`` re-grades one student alone (and refreshes the feedback and ``grades.csv``).
- ``collect``: only take the submissions from the exchange into ``submitted/`` (what ``run`` does first): the
  files a submission may hold, and the time it reached the exchange (:mod:`tools.grading.intake`).
- ``autograde``: grade the collected submissions (all, or ``--student``), locally in parallel or as a slurm array.
- ``merge``: merge the results of a slurm array submitted with ``--no-wait``.
- ``feedback``: generate the students' feedback (``--release`` also puts it in the exchange).
- ``check``: tell whether this machine can grade: grading environment, sandbox, cgroups, slurm.
- ``hidden-set``: generate the hidden test set the students' models are scored on (once per term, secret seed).
- ``worker``: grade one submission from a job file (what the parallel grader and the array tasks run).

Run from the repository root, with the instructor environment (``.venv/bin/python -m tools.grading ...``).
Every command that works on a course logs to ``<scratch>/grader.log`` (default ``<course>/grading/grader.log``):
each submission's start and end, what the intake left out, and the full traceback of any unexpected error. The
final table names, for each submission with a problem, its log files and the command that re-grades it alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tools.grading import intake, models, sandbox
from tools.grading.course import Course, tools_on_path
from tools.grading.parallel import REPO, Settings, attention_rows, collect_result, grade_all, summary_rows

DEFAULT_ENV = REPO / ".venv-grading" / "bin" / "python"
#: The grader's log, in the scratch folder (``--scratch``, default ``<course>/grading``).
LOG_NAME = "grader.log"

log = logging.getLogger(__name__)


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


def default_reference() -> Path | None:
    """The reference model students receive (``make reference``; ``$LABCODE_REFERENCE_MODEL`` when set), or ``None``."""
    from labcode.reference import find_reference_model

    return find_reference_model()


def stage_reference(model: Path, scratch: Path) -> Path:
    """The reference model as the distribution ships it, staged in ``<scratch>/.reference/`` for the sandboxes.

    The ``reference.json`` written beside the copy is the distribution's (:func:`tools.distribution.shipped_info`):
    the run's description without the instructor's paths, which the original beside ``model`` holds.

    Raises:
        GradingError: the model or its ``reference.json`` is missing or incomplete (the message names the file).
    """
    from tools.distribution import DistributionError, shipped_info, write_reference

    try:
        info = shipped_info(model)
    except DistributionError as err:
        raise GradingError(f"--reference: {err}") from err
    staged = scratch / ".reference"  # (a dot: no student id)
    partial = scratch / ".reference.partial"
    shutil.rmtree(partial, ignore_errors=True)
    name = write_reference(partial, model, info).name
    shutil.rmtree(staged, ignore_errors=True)
    partial.rename(staged)
    return staged / name


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
    reference = args.reference or default_reference()
    return Settings(python=args.python, datadir=args.datadir or default_datadir(), scratch=scratch,
                    reference=None if reference is None else stage_reference(reference, scratch),
                    workers=args.workers, cell_timeout=args.cell_timeout, submission_timeout=args.submission_timeout,
                    limits=sandbox.Limits(memory_bytes=memory), notebooks=args.notebooks, isolated=isolated,
                    hidden=packed, model=model)


def finish_models(course: Course, results: list[dict], settings: Settings, hidden: Path | None) -> None:
    """The model reports in the autograded notebooks and the leaderboard, once every result is merged.

    The class medians and the leaderboard cover the whole class: the students not graded in this run (a re-grade of
    one student) count with the model of their last grading.
    """
    if settings.hidden is None or not any(r.get("model") for r in results):
        return
    manifest = (hidden.parent / "hidden.json") if hidden else None
    salt = manifest.read_text() if manifest and manifest.is_file() else course.course_id
    everyone = results + earlier_results(course, results, settings)
    page = models.finish(course, everyone, settings.model, settings.hidden, salt,
                         settings.scratch / "leaderboard.html")
    print(f"leaderboard: {page}")


def earlier_results(course: Course, fresh: list[dict], settings: Settings) -> list[dict]:
    """The graded results with a model of the course's students not in ``fresh``, from their last grading."""
    from tools.grading.merge import cell_points
    from tools.grading.parallel import read_result

    maximum = cell_points(course, settings.model.notebook, settings.model.grade_id)
    graded = {r["student"] for r in fresh}
    out = []
    for student in [s for s in course.submissions() if s not in graded] if maximum is not None else []:
        try:
            result = read_result(settings.scratch / student / "result.json", student)
        except (OSError, ValueError):
            continue
        if result["status"] != "graded" or not result.get("model"):
            continue
        score = models.ModelScore(**result["model"])
        points = models.points_for(score.metrics().get("macro_f1"), settings.model.bands, maximum) \
            if score.status == "scored" else 0.0
        out.append({**result, "model_points": {"points": points, "max": maximum}})
    return out


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


def feedback(course: Course, release: bool):
    """Generate (and release) the class's feedback; a notebook that cannot be rendered is reported, not fatal.

    Returns:
        The :class:`tools.grading.feedback.FeedbackReport` (print its ``lines()``).

    Raises:
        GradingError: when there is no autograded notebook, or not one page could be written.
    """
    from tools.grading.feedback import generate

    report = generate(course, release)
    if not report.written:
        detail = "\n".join(report.lines()[1:]) or f"no autograded notebook in {course.root / 'autograded'}"
        raise GradingError(f"no feedback could be written:\n{detail}")
    return report


def export(course: Course, path: Path) -> Path:
    """Export the gradebook to the CSV ``path`` (``nbgrader export``: it reads the gradebook only, never a notebook,
    so no submission's content can stop it); return the path."""
    path = Path(path).resolve()  # nbgrader runs in the course folder
    nbgrader = Path(sys.executable).parent / "nbgrader"
    with tools_on_path():
        done = subprocess.run([str(nbgrader), "export", f"--to={path}"], cwd=course.root, capture_output=True,
                              text=True)
    if done.returncode != 0 or not path.is_file():
        raise GradingError(f"nbgrader export failed:\n{done.stderr[-2000:]}")
    return path


def collect(course: Course, students: list[str] | None = None) -> list[intake.Collected]:
    """Take the newest submission of each student (all, or ``students``) from the exchange into ``submitted/``.

    Nothing is collected when the course has no exchange folder (submissions put in ``submitted/`` by hand).
    """
    root = Path(str(course.config().Exchange.get("root", "") or "/srv/nbgrader/exchange"))
    taken = [item for item in intake.collect(course, root, students) if item.report is not None]
    trimmed = [item.student for item in taken if item.report.skipped]
    if trimmed:
        print(f"note: files left out of {len(trimmed)} submission(s), listed in the grader's log: "
              f"{', '.join(trimmed[:10])}{' ...' if len(trimmed) > 10 else ''}", file=sys.stderr)
    return taken


def regrade_command(args: argparse.Namespace, student: str) -> str:
    """The command that re-grades ``student`` alone with the options of this run (``run`` or ``autograde``)."""
    command = "run" if args.command == "run" else "autograde"
    words = ["python", "-m", "tools.grading", command, f"--student={student}"]  # "=": a name may start with "-"
    if Path(args.course).resolve() != REPO:
        words += ["--course", str(args.course)]
    for option, value, default in (("--scratch", args.scratch, None), ("--python", args.python, DEFAULT_ENV),
                                   ("--datadir", args.datadir, None), ("--notebooks", args.notebooks, "*"),
                                   ("--hidden", args.hidden, None)):
        if value != default:
            words += [option, str(value)]
    words += [flag for flag, on in (("--no-sandbox", args.no_sandbox), ("--no-models", args.no_models)) if on]
    return shlex.join(words)


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def log_path(args: argparse.Namespace) -> Path:
    """Where this command logs: ``<scratch>/grader.log`` (default ``<course>/grading/grader.log``)."""
    scratch = getattr(args, "scratch", None) or Path(getattr(args, "course", REPO)) / "grading"
    return Path(scratch) / LOG_NAME


def start_logging(path: Path) -> list[logging.Handler]:
    """Log the grader's records (INFO and up) to ``path``, and its warnings to stderr; return the handlers added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(logging.WARNING)
    to_console.addFilter(lambda record: getattr(record, "console", True))
    to_console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (to_file, to_console):
        root.addHandler(handler)
    return [to_file, to_console]


def stop_logging(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()


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
    parser.add_argument("--reference", type=Path, default=None,
                        help="the reference model the notebooks study, as the students' distribution ships it "
                             "(default: the one `make reference` trains, or $LABCODE_REFERENCE_MODEL)")
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
    taken = commands.add_parser("collect", help="take the submissions from the exchange into submitted/")
    taken.add_argument("--course", type=Path, default=REPO, help="course folder (default: this repository)")
    taken.add_argument("--student", nargs="+", default=None, help="these students only (default: all)")
    fed = commands.add_parser("feedback", help="generate (and release) the feedback")
    fed.add_argument("--course", type=Path, default=REPO)
    fed.add_argument("--release", action="store_true")
    checked = commands.add_parser("check", help="can this machine grade?")
    checked.add_argument("--python", type=Path, default=DEFAULT_ENV)
    worker = commands.add_parser("worker", help="grade one submission from a job file (internal: to re-grade a "
                                 "student, use `run --student NAME` or `autograde --student NAME`)")
    worker.add_argument("job", type=Path)
    worker.add_argument("--slot", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error prints one line and the path of the log holding its traceback."""
    args = build_parser().parse_args(argv)
    if args.command == "worker":  # its output is the worker's log (<scratch>/<student>/worker.log)
        from tools.grading import worker

        return worker.main([str(args.job), *(["--slot", str(args.slot)] if args.slot is not None else [])])
    course_root = Path(getattr(args, "course", REPO))
    if args.command != "check" and not (course_root / "nbgrader_config.py").is_file():
        print(f"error: {course_root} is not a course folder (no nbgrader_config.py)", file=sys.stderr)
        return 2
    path = log_path(args)
    handlers = start_logging(path)
    log.info("python -m tools.grading %s", shlex.join(argv if argv is not None else sys.argv[1:]))
    try:
        return run_command(args)
    except (GradingError, sandbox.SandboxError) as err:  # expected: the message says what to do
        log.error("%s", err, exc_info=True, extra={"console": False})
        print(f"error: {err}\n(log: {path})", file=sys.stderr)
        return 2
    except Exception as err:
        log.exception("unexpected error in `%s`", args.command, extra={"console": False})
        print(f"error: {type(err).__name__}: {err} (traceback in {path})", file=sys.stderr)
        return 2
    finally:
        stop_logging(handlers)


def run_command(args: argparse.Namespace) -> int:
    """The command ``args`` names; returns the exit status (1 when a submission was not graded)."""
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
    if args.command == "feedback":
        print("\n".join(feedback(course, args.release).lines()))
        print(f"feedback in {course.root / 'feedback'}")
        return 0
    if args.command == "collect":
        collected = collect(course, args.student)
        print(f"collected {len(collected)} submission(s) from the exchange into {course.root / 'submitted'}")
        return 0
    if args.command == "merge":
        students = args.student or course.submissions()
        settings = settings_from(args, course, isolated=not args.no_sandbox)
        results = merge(course, students, settings)
        finish_models(course, results, settings, hidden_root(course, args.hidden) if not args.no_models else None)
    else:
        collected = collect(course, args.student) if args.command == "run" else []
        results = autograde(args)
        if args.command == "run" and results:
            print("\n".join(feedback(course, args.release_feedback).lines()))
            export(course, args.grades or course.root / "grades.csv")
            print(f"collected {len(collected)} submission(s) from the exchange; feedback in "
                  f"{course.root / 'feedback'}; grades in {args.grades or course.root / 'grades.csv'}")
    if results:
        scratch = args.scratch or course.root / "grading"
        print_table(summary_rows(results) + attention_rows(results, scratch, lambda s: regrade_command(args, s)))
    return 0 if all(r["status"] == "graded" for r in results) else 1
