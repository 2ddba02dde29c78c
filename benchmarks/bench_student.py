"""The student's path timed: the seven notebooks of the students' distribution run top to bottom on the default
generated data set, as a student's JupyterLab runs them (Restart & Run All, no grading setting).

    python -m benchmarks.bench_student [--keep DIR] [--notebooks 05 06] [--again 05] [--no-train]

It builds the distribution from the sources (a release made now, and the reference model of ``make reference``,
trained first when it is missing), gives it a ``.venv`` that borrows the grading environment's packages (what
``make setup`` installs, without downloading them again), runs its ``make data`` (the default data set; this
checkout's copy is reused when it is complete), writes a student's own exercises and answers (``tests/course.py``),
then runs the notebooks one after the other. The table gives each notebook's wall time (kernel start included), the
CPU time of its kernel and worker processes, and the machine's load average before and after: on a shared machine
other jobs stretch the wall time while the CPU time stays put. The goal: all seven in 8 minutes, notebook 05 in 4.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, print_table

#: Wall-time goals in seconds (issue 22): notebook 05 alone, and the seven together.
GOAL_05, GOAL_TOTAL = 240, 480


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def reference_model(train: bool) -> Path:
    """The reference model ``make reference`` makes (trained now with ``python -m labcode reference`` if missing)."""
    from labcode.reference import is_complete
    from tools.distribution import reference_model as made_by_make_reference

    model = made_by_make_reference()
    if not is_complete(model.parent):
        if not train:
            raise SystemExit(f"no reference model at {model}: run `make reference` first, or drop --no-train")
        print(f"no reference model at {model}: training it now (python -m labcode reference)", flush=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "labcode", "reference"], check=True)
        print(f"reference model trained in {time.perf_counter() - started:.0f} s", flush=True)
    return model


def run(work: Path, stems: list[str], train: bool, again: list[str]) -> tuple[list[list[object]], float]:
    """Build and set up the distribution in ``work``, run ``stems`` then ``again`` (a second Restart & Run All of
    those); the table's rows and the total wall time of ``stems``."""
    from tests.course import (
        ASSIGNMENT,
        build_student_distribution,
        do_the_work,
        error_outputs,
        link_default_dataset,
        run_student_notebooks,
        student_env,
        student_venv,
    )

    model = reference_model(train)
    started = time.perf_counter()
    dist = build_student_distribution(work / "build", model)
    student_venv(dist)
    home = work / "cache" / "labcode"
    link_default_dataset(home)
    env = student_env(None, home)
    data = subprocess.run(["make", "data"], cwd=dist, env=env, capture_output=True, text=True)
    if data.returncode != 0:
        raise SystemExit(f"make data failed:\n{data.stdout}{data.stderr}")
    do_the_work(dist / ASSIGNMENT)
    print(f"distribution set up in {time.perf_counter() - started:.0f} s: {dist}; {data.stdout.strip()}", flush=True)
    rows, total = [], 0.0
    for index, stem in enumerate(stems + again):
        before = load_average()
        timed = run_student_notebooks(dist, [stem], env)[stem]
        errors = error_outputs(dist / ASSIGNMENT / f"{stem}.ipynb")
        name = stem if index < len(stems) else f"{stem} again (not in the total)"
        total += timed["seconds"] if index < len(stems) else 0.0
        goal = f"<= {GOAL_05}" if stem.startswith("05") and index < len(stems) else ""
        rows.append([name, f"{timed['seconds']:.0f}", f"{timed['cpu_seconds']:.0f}", goal,
                     "; ".join(errors)[:80] or "none", f"{before} -> {load_average()}"])
        print(f"{name}: {timed['seconds']:.0f} s", flush=True)
    return rows, total


def main(argv: list[str] | None = None) -> int:
    from tests.course import STEMS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="STEM",
                        help="only these notebooks, by name or number (default: all seven, in order)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temporary folder, removed)")
    parser.add_argument("--again", nargs="+", default=[], metavar="STEM",
                        help="run these notebooks a second time at the end, as Restart & Run All does (e.g. 05: "
                             "its finished runs are found again, not retrained)")
    parser.add_argument("--no-train", action="store_true",
                        help="stop when the reference model is missing instead of training it")
    args = parser.parse_args(argv)
    stems = [s for s in STEMS if args.notebooks is None or any(s.startswith(n) for n in args.notebooks)]
    again = [s for s in STEMS if any(s.startswith(n) for n in args.again)]
    print(f"machine: {machine()}; {os.cpu_count()} CPUs; load average {load_average()}")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows, total = run(args.keep.resolve(), stems, not args.no_train, again)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-student-") as tmp:
            rows, total = run(Path(tmp), stems, not args.no_train, again)
    cpu_total = sum(float(row[2]) for row in rows[:len(stems)])
    rows.append(["total", f"{total:.0f}", f"{cpu_total:.0f}", f"<= {GOAL_TOTAL}" if len(stems) == len(STEMS) else "",
                 "", ""])
    print_table(["notebook", "wall s", "CPU s", "goal (wall s)", "errors", "load average (1/5/15 min)"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
