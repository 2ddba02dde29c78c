"""Grade a class on a SLURM cluster: one array task per chunk of submissions, then one merge.

Each array task runs the same worker as the local parallel grader (:mod:`tools.grading.worker`) on its chunk, one
submission after another, with the task's index as sandbox slot; the course folder, this repository and the grading
environment must be on storage the compute nodes share (as for the training jobs of ``python -m labcode slurm``).
Once the array is done (``sbatch --wait``, or later with ``python -m tools.grading merge``), the results are merged
into the course gradebook by one process.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tools.grading.course import Course
from tools.grading.parallel import REPO, Settings, make_job, worker_command


class SlurmError(RuntimeError):
    """sbatch is missing or refused the job (the message says which)."""


def chunks(items: Sequence[str], per_task: int) -> list[list[str]]:
    return [list(items[i:i + per_task]) for i in range(0, len(items), per_task)]


def write_array(course: Course, students: Sequence[str], settings: Settings, *, per_task: int = 1,
                partition: str | None = None, time_limit: str = "02:00:00", cpus: int = 2,
                mem: str | None = None) -> Path:
    """Write the job files and the array script grading ``students``; return the script's path."""
    tasks = chunks(list(students), per_task)
    settings.scratch.mkdir(parents=True, exist_ok=True)
    lists = settings.scratch / "tasks"
    lists.mkdir(exist_ok=True)
    for index, chunk in enumerate(tasks):
        files = []
        for student in chunk:
            job = make_job(course, student, settings, slot=index)
            Path(job.scratch).mkdir(parents=True, exist_ok=True)
            (Path(job.scratch) / "result.json").unlink(missing_ok=True)
            job.save(Path(job.scratch) / "job.json")
            files.append(str(Path(job.scratch) / "job.json"))
        (lists / f"{index}.txt").write_text("\n".join(files) + "\n")
    directives = ["--job-name=labcode-grade", f"--array=0-{len(tasks) - 1}", f"--time={time_limit}",
                  f"--cpus-per-task={cpus}", "--ntasks=1", f"--output={settings.scratch}/slurm-%A_%a.out"]
    if partition:
        directives.append(f"--partition={partition}")
    if mem:
        directives.append(f"--mem={mem}")
    worker = shlex.join(worker_command(Path("JOB"), "SLOT")).replace("JOB", '"$job"').replace("SLOT",
                                                                                            '"$SLURM_ARRAY_TASK_ID"')
    script = "\n".join([
        "#!/bin/bash",
        *[f"#SBATCH {d}" for d in directives],
        f"# Written by `python -m tools.grading autograde --slurm`: {len(students)} submissions of {course.root}",
        "set -uo pipefail",
        f"cd {shlex.quote(str(REPO))}",
        'while read -r job; do',
        f'    timeout --kill-after=30 {settings.submission_timeout} {worker} || echo "worker failed: $job"',
        f'done < {shlex.quote(str(lists))}/"$SLURM_ARRAY_TASK_ID".txt',
        "",
    ])
    path = settings.scratch / "grade.sbatch"
    path.write_text(script)
    return path


def submit(script: Path, *, wait: bool) -> str:
    """Submit ``script`` with sbatch (waiting for the whole array when ``wait``); return the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError(f"sbatch not found: is this a SLURM login node? The script is in {script}")
    done = subprocess.run([sbatch, "--parsable", *(["--wait"] if wait else []), str(script)],
                          capture_output=True, text=True)
    if done.returncode != 0 and not (wait and done.stdout.strip()):
        raise SlurmError(f"sbatch {script} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]
