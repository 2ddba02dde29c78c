"""Grading throughput: the course's grader with one worker, then with ``--workers`` workers, on the same submissions.

Builds a scratch course from this repository (the release, its gradebook) with ``--submissions`` collected
submissions (solved by the instructor's answers, in students' own forms, and untouched releases, in turn), copies it
twice, then grades one copy with ``python -m tools.grading autograde --workers 1`` (one submission after another)
and the other with ``--workers N``, and prints submissions per hour for both and their ratio, beside the throughput
measured before the judge (plain sequential ``nbgrader autograde`` 493 s and the parallel grader 281 s for the same 8
submissions on the course's 2-core machine; a plain ``nbgrader autograde`` now refuses, see
:class:`tools.grading.verdicts.GraderOnly`). Both read the default generated data set.

Usage: ``python -m benchmarks.bench_grading [--submissions 8] [--workers 2]`` (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, print_table

REPO = Path(__file__).resolve().parents[1]
#: Seconds for 8 submissions before verdicts moved out of the kernel (course's 2-core machine, idle): plain
#: sequential nbgrader autograde, and the parallel grader with 2 workers.
BEFORE = (493, 281)


def build_course(root: Path, submissions: int) -> list[str]:
    from tests.course import make_course, new_submission

    make_course(root)
    students = []
    for index in range(submissions):
        student = f"student{index:02d}"
        kind = index % 3
        new_submission(root, student, own=kind == 1, **({"notebooks": "blank", "library": "blank"} if kind == 2
                                                          else {}))
        students.append(student)
    return students


def timed(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_grading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not os.environ.get("LABCODE_DATADIR"):
        from labcode.synth import ensure_default_dataset

        os.environ["LABCODE_DATADIR"] = str(ensure_default_dataset(progress=False))
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        base = Path(tmp) / "base"
        students = build_course(base, args.submissions)
        sequential, parallel = Path(tmp) / "sequential", Path(tmp) / "parallel"
        shutil.copytree(base, sequential)
        shutil.copytree(base, parallel)
        grader = [sys.executable, "-m", "tools.grading", "autograde", "--no-progress", "--course"]
        plain = timed([*grader, str(sequential), "--workers", "1"], cwd=REPO)
        ours = timed([*grader, str(parallel), "--workers", str(args.workers)], cwd=REPO)
    n = len(students)
    print(machine())
    print(f"{n} submissions (a third each: instructor's answers, students' own forms, untouched release), all 7 "
          f"notebooks, data: {os.environ['LABCODE_DATADIR']}")
    print_table(["grader", "wall time", "submissions per hour", "ratio"], [
        ["before the judge: nbgrader autograde (sequential)", f"{BEFORE[0]} s", f"{3600 * 8 / BEFORE[0]:.0f}",
         "1.00x"],
        ["before the judge: tools.grading autograde --workers 2", f"{BEFORE[1]} s", f"{3600 * 8 / BEFORE[1]:.0f}",
         f"{BEFORE[0] / BEFORE[1]:.2f}x"],
        ["python -m tools.grading autograde --workers 1", f"{plain:.0f} s", f"{3600 * n / plain:.0f}",
         f"{BEFORE[0] * n / 8 / plain:.2f}x"],
        [f"python -m tools.grading autograde --workers {args.workers}", f"{ours:.0f} s", f"{3600 * n / ours:.0f}",
         f"{BEFORE[0] * n / 8 / ours:.2f}x"],
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
