"""Grading throughput: plain sequential ``nbgrader autograde`` versus the parallel grader, on the same submissions.

Builds a scratch course from this repository (the release, its gradebook) with ``--submissions`` collected
submissions (solved by the instructor's answers, in students' own forms, and untouched releases, in turn), copies it
twice, then grades one copy with ``nbgrader autograde segmentation`` (one submission after another; with the course
configuration its kernels run sandboxed in the grading environment too) and the other with
``python -m tools.grading autograde --workers N``, and prints submissions per hour for both and their ratio. Both
read the default generated data set.

Usage: ``python -m benchmarks.bench_grading [--submissions 8] [--workers 2]`` (about 10 minutes on 2 cores).
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
        nbgrader = str(Path(sys.executable).parent / "nbgrader")
        plain = timed([nbgrader, "autograde", "segmentation", "--force"], cwd=sequential)
        ours = timed([sys.executable, "-m", "tools.grading", "autograde", "--course", str(parallel), "--workers",
                      str(args.workers), "--no-progress"], cwd=REPO)
    n = len(students)
    print(machine())
    print(f"{n} submissions (a third each: instructor's answers, students' own forms, untouched release), all 7 "
          f"notebooks, data: {os.environ['LABCODE_DATADIR']}")
    print_table(["grader", "wall time", "submissions per hour", "ratio"], [
        ["nbgrader autograde (sequential, sandboxed kernels)", f"{plain:.0f} s", f"{3600 * n / plain:.0f}", "1.00x"],
        [f"python -m tools.grading autograde --workers {args.workers}", f"{ours:.0f} s", f"{3600 * n / ours:.0f}",
         f"{plain / ours:.2f}x"],
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
