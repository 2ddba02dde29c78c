"""The sandbox of the grader, on its own: what a sandboxed command can see, reach and use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.course import GRADING_PYTHON, REPO, require_sandbox
from tools.grading import sandbox
from tools.grading.worker import copy_plain_files, exercise_files, restore_library


@pytest.fixture
def spec(tmp_path) -> sandbox.SandboxSpec:
    require_sandbox()
    data = tmp_path / "data"
    data.mkdir()
    (data / "sample.txt").write_text("data set")
    return sandbox.SandboxSpec(python=GRADING_PYTHON, datadir=data, slot=3,
                               limits=sandbox.Limits(memory_bytes=2 * sandbox.GIB, processes=64))


def run_python(spec: sandbox.SandboxSpec, code: str, **kwargs) -> subprocess.CompletedProcess:
    return sandbox.run(spec, [spec.python_inside, "-c", code], timeout=120, **kwargs)


def test_the_grading_environment_has_no_instructor_library_and_the_repository_is_invisible(spec, tmp_path):
    done = run_python(spec, f"""
import importlib.util, os
print(importlib.util.find_spec("labcode"))
print(os.path.exists({str(REPO)!r}), os.path.exists({str(tmp_path)!r}), sorted(os.listdir("/home")))
print(open(os.environ["LABCODE_DATADIR"] + "/sample.txt").read(), os.getuid())
import torch, albumentations, onnxruntime  # the third-party stack is there
""")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "None"
    assert lines[1] == "False False ['student']"
    if os.geteuid() == 0:
        assert lines[2] == f"data set {sandbox.BASE_UID + 3}"  # an unprivileged user of its own


def test_nothing_is_writable_but_the_scratch_home_and_the_data_is_read_only(spec):
    paths = ["/home/student/x", "/tmp/x", "/data/stanford/x", "/usr/x", "/opt/grading-env/x", "/x"]
    done = run_python(spec, f"""
for path in {paths!r}:
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError:
        print("refused", path)
""")
    assert done.stdout.splitlines() == [f"wrote {paths[0]}", f"wrote {paths[1]}",
                                        *(f"refused {path}" for path in paths[2:])], done.stdout + done.stderr


def test_no_network_not_even_the_hosts_loopback(spec):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    done = run_python(spec, f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
    print("connected")
except OSError as err:
    print(type(err).__name__)
""")
    server.close()
    assert done.stdout.strip() == "ConnectionRefusedError", done.stdout + done.stderr


def test_memory_and_processes_are_bounded(spec):
    done = run_python(spec, """
import subprocess
try:
    hog = bytearray(50 * 2**30)
except MemoryError:
    print("MemoryError")
procs = []
try:
    for _ in range(200):
        procs.append(subprocess.Popen(["sleep", "30"]))
except OSError as err:
    print("refused after", len(procs), type(err).__name__)
""")
    lines = done.stdout.splitlines()
    assert lines[0] == "MemoryError", done.stdout + done.stderr
    refused_after = int(lines[1].split()[2])
    assert 0 < refused_after < 64, lines  # the rlimit (and the cgroup where available) stop it


def test_the_grader_environment_and_open_files_do_not_leak_in(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_SECRET", "s3cret")
    secret = (tmp_path / "secret.txt").open("w")  # an open file of the grader
    done = run_python(spec, """
import os
print(sorted(k for k in os.environ if "SECRET" in k), len(os.listdir("/proc/self/fd")))
""")
    secret.close()
    names, fds = done.stdout.split("]")
    assert names == "[" and int(fds) <= 4, done.stdout  # stdin/out/err and the listing itself


def test_a_wall_time_limit_kills_the_command_and_everything_it_started(spec):
    done = sandbox.run(spec, ["sh", "-c", "sleep 300 & sleep 300"], timeout=2)
    assert done.returncode == -9 and "wall-time limit" in done.stderr
    leftovers = subprocess.run(["pgrep", "-u", str(sandbox.BASE_UID + 3)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_probe_explains_a_missing_bubblewrap(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "bubblewrap is not installed" in sandbox.probe(Path(sys.executable))


# --------------------------------------------------------------------------------------------------------------------
# What a submission may bring into grading
# --------------------------------------------------------------------------------------------------------------------

def test_links_and_special_files_are_left_out_of_a_submission(tmp_path):
    source = tmp_path / "submission"
    (source / "labcode").mkdir(parents=True)
    (source / "labcode" / "unet.py").write_text("mine")
    (source / "labcode" / "stats.py").symlink_to(REPO / "labcode" / "stats.py")  # the instructor's solution
    (source / "link-dir").symlink_to(REPO)
    os.mkfifo(source / "fifo")
    skipped = copy_plain_files(source, tmp_path / "copy")
    assert sorted(Path(p).name for p in skipped) == ["fifo", "link-dir", "stats.py"]
    assert (tmp_path / "copy" / "labcode" / "unet.py").read_text() == "mine"
    assert not (tmp_path / "copy" / "labcode" / "stats.py").exists()


def test_library_files_without_exercises_are_the_releases(tmp_path):
    release = REPO / "notebooks" / "segmentation"
    assert exercise_files(release / "labcode") == {"unet.py", "transforms.py", "stats.py"}
    submission = tmp_path / "sub"
    (submission / "labcode").mkdir(parents=True)
    (submission / "labcode" / "metrics.py").write_text("def macro_f1(*a):\n    return 1.0\n")
    (submission / "labcode" / "unet.py").write_text("# mine\n")
    (submission / "labcode" / "helpers.py").write_text("# my own module\n")
    replaced = restore_library(submission, release)
    assert "metrics.py" in replaced and "unet.py" not in replaced
    assert (submission / "labcode" / "metrics.py").read_bytes() == (release / "labcode" / "metrics.py").read_bytes()
    assert (submission / "labcode" / "unet.py").read_text() == "# mine\n"
    assert (submission / "labcode" / "helpers.py").read_text() == "# my own module\n"


def test_grading_kernels_know_they_are_graded(spec, monkeypatch):
    # nbgrader sets NBGRADER_EXECUTION while it grades; the notebooks choose their small settings by it, so the
    # sandbox's otherwise empty environment must carry it, and only it, of the grader's environment.
    from tools.grading.kernel import SandboxKernelManager

    monkeypatch.setattr(SandboxKernelManager, "spec", spec)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("INSTRUCTOR_SECRET", "s3cret")
    manager = SandboxKernelManager(kernel_name="python3")
    manager._launch_args = {"cwd": "/tmp"}
    command = manager.format_kernel_cmd()
    pairs = {(command[i + 1], command[i + 2]) for i, arg in enumerate(command) if arg == "--setenv"}
    assert ("NBGRADER_EXECUTION", "autograde") in pairs
    assert not [name for name, _ in pairs if "SECRET" in name]
    manager._limits_context.__exit__(None, None, None)
