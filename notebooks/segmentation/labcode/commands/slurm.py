# Your copy of the course library: labcode/commands/slurm.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode slurm``: write (and submit) a SLURM batch script for a training run.

The job runs the code of one git commit (the current one by default): on the compute node it extracts that commit
into local scratch (``$SLURM_TMPDIR`` or ``$TMPDIR``), creates a virtual environment there and installs the
requirements (or uses the existing environment given with ``--venv``), then runs ``python -m labcode train`` with
the options given after ``--`` from the folder holding ``labcode/`` (the repository root in the instructors'
repository, ``segmentation/`` in the students' distribution: students train their own UNet). Runs are written to the
shared ``--logdir`` so they survive the job. SLURM sends SIGTERM two minutes before the time limit, and training
saves its state on SIGTERM: resubmit with ``-- --resume`` to continue. The job sees the environment of the
submission, so ``LABCODE_DATADIR`` (or ``-- --datadir PATH``) points it to the real data set.

Example::

    python -m labcode slurm --partition gpu --time 4:00:00 --gpus 1 --run-name unet-all -- --epochs 50
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labcode.commands.options import ArgumentParser, non_negative_int, positive_int
from labcode.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [options] [-- TRAIN OPTIONS]")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--time", default="04:00:00", help="time limit, HH:MM:SS or D-HH:MM:SS (default: 04:00:00)")
    parser.add_argument("--gpus", type=non_negative_int, default=1,
                        help="GPUs; more than one trains with torchrun (default: 1)")
    parser.add_argument("--cpus", type=positive_int, default=8, help="CPU cores for the job (default: 8)")
    parser.add_argument("--mem", default=None, help="memory, e.g. 32G (default: the partition's)")
    parser.add_argument("--job-name", default="labcode-train")
    parser.add_argument("--run-name", default=None, help="training run name (default: job name and time)")
    parser.add_argument("--logdir", type=Path, default=Path("runs"), help="shared directory of the runs")
    parser.add_argument("--repo", type=Path, default=None, help="git repository of the code (default: this one)")
    parser.add_argument("--commit", default="HEAD", help="commit to run (default: HEAD)")
    parser.add_argument("--python", default="python3", help="interpreter creating the venv on the node")
    parser.add_argument("--venv", type=Path, default=None,
                        help="an existing virtual environment (on storage the nodes see) instead of a new one per job")
    parser.add_argument("--wait", action="store_true", help="wait for the job to end (sbatch --wait)")
    parser.add_argument("--out", type=Path, default=None, help="script path (default: <logdir>/<run-name>.sbatch)")
    parser.add_argument("--dry-run", action="store_true", help="print the script, write and submit nothing")
    return parser


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"cannot run git in {repo}: {exc}") from exc
    if done.returncode != 0:
        raise LabError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def pin_commit(repo: Path, commit: str) -> tuple[Path, str, bool]:
    """Resolve ``commit`` in ``repo``: ``(repository root, full hash, has uncommitted changes)``."""
    root = Path(_git(repo, "rev-parse", "--show-toplevel"))
    sha = _git(root, "rev-parse", "--verify", f"{commit}^{{commit}}")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return root, sha, dirty


def render_sbatch(
    train_args: list[str],
    *,
    repo: Path,
    commit: str,
    logdir: Path,
    run_name: str,
    job_name: str = "labcode-train",
    partition: str | None = None,
    time_limit: str = "04:00:00",
    gpus: int = 1,
    cpus: int = 8,
    mem: str | None = None,
    python: str = "python3",
    venv: Path | None = None,
    package_dir: str = "",
) -> str:
    """The text of the batch script (see the module docstring for what the job does)."""
    q = shlex.quote
    logdir = logdir.resolve()
    directives = [f"--job-name={job_name}", f"--time={time_limit}", f"--cpus-per-task={cpus}", "--ntasks=1",
                  f"--output={logdir}/{run_name}.slurm-%j.out", "--signal=TERM@120"]
    if partition:
        directives.append(f"--partition={partition}")
    if gpus > 0:
        directives.append(f"--gres=gpu:{gpus}")
    if mem:
        directives.append(f"--mem={mem}")
    launcher = f"torchrun --standalone --nproc_per_node={gpus} -m labcode" if gpus > 1 else "python -m labcode"
    train = shlex.join(["train", "--logdir", str(logdir), "--run-name", run_name,
                        "--num-workers", str(max(1, cpus // max(gpus, 1) - 1)), *train_args])
    lines = [
        "#!/bin/bash",
        *[f"#SBATCH {d}" for d in directives],
        "# Written by `python -m labcode slurm`: runs commit " + commit + " of " + str(repo),
        "set -euo pipefail",
        "",
        f"REPO={q(str(repo))}",
        f"COMMIT={commit}",
        'SCRATCH="${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/labcode-${SLURM_JOB_ID:-$$}"',
        'mkdir -p "$SCRATCH/code"',
        'trap \'rm -rf "$SCRATCH"\' EXIT',
        "",
        "# the code of the pinned commit only (no uncommitted change), on the node's local disk",
        'git -C "$REPO" archive --format=tar "$COMMIT" | tar -x -C "$SCRATCH/code"',
        *([f"source {q(str(venv.resolve()))}/bin/activate"] if venv else [
            f'{q(python)} -m venv "$SCRATCH/venv"',
            'source "$SCRATCH/venv/bin/activate"',
            'python -m pip install --quiet --upgrade pip',
            'python -m pip install --quiet -r "$SCRATCH/code/requirements.txt"']),
        f"mkdir -p {q(str(logdir))}",
        f'cd "$SCRATCH/code/{package_dir}"  # the folder holding labcode/: python -m labcode imports that copy',
        'echo "job ${SLURM_JOB_ID:-?} on $(hostname): commit $COMMIT"',
        "",
        f"srun {launcher} {train}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    repo = args.repo or Path(__file__).resolve().parent
    root, sha, dirty = pin_commit(repo, args.commit)
    if dirty:
        print(f"warning: {root} has uncommitted changes; the job runs commit {sha[:12]} without them",
              file=sys.stderr)
    run_name = args.run_name or f"{args.job_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    package = Path(__file__).resolve().parents[2]  # the folder holding this labcode/
    package_dir = package.relative_to(root).as_posix() if package.is_relative_to(root) else ""
    script = render_sbatch(train_args, repo=root, commit=sha, logdir=args.logdir, run_name=run_name,
                           job_name=args.job_name, partition=args.partition, time_limit=args.time, gpus=args.gpus,
                           cpus=args.cpus, mem=args.mem, python=args.python, venv=args.venv,
                           package_dir="" if package_dir == "." else package_dir)
    if args.dry_run:
        print(script, end="")
        return 0
    out = args.out or args.logdir / f"{run_name}.sbatch"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    print(f"wrote {out}")
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise LabError(f"sbatch not found: is this a SLURM login node? The script is in {out}")
    done = subprocess.run([sbatch, *(["--wait"] if args.wait else []), str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"sbatch {out} failed: {done.stderr.strip()}")
    print(done.stdout.strip())
    return 0
