"""The sandbox of the grader, on its own: what a sandboxed command can see, reach and use."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.course import GRADING_PYTHON, REPO, require_sandbox
from tools.grading import sandbox


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


def test_the_reference_model_is_there_read_only_with_its_description_and_nothing_else_of_its_folder(spec,
                                                                                                     tmp_path):
    run = tmp_path / "reference-run"
    run.mkdir()
    (run / "best.onnx").write_bytes(b"onnx bytes")
    (run / "reference.json").write_text('{"img_size": 64}')
    (run / "best.pt").write_bytes(b"the instructor's checkpoint")
    done = run_python(dataclasses.replace(spec, reference=run / "best.onnx"), """
import os
model = os.environ["LABCODE_REFERENCE_MODEL"]
print(model, open(model, "rb").read().decode(), sorted(os.listdir(os.path.dirname(model))))
print(open(os.path.join(os.path.dirname(model), "reference.json")).read())
try:
    open(model, "ab")
except OSError as err:
    print("read-only", err.errno)
""")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "/data/reference/best.onnx onnx bytes ['best.onnx', 'reference.json']"
    assert lines[1] == '{"img_size": 64}' and lines[2].startswith("read-only")
    assert str(run) not in done.stdout
    without = run_python(spec, "import os; print(os.environ.get('LABCODE_REFERENCE_MODEL'))")
    assert without.stdout.strip() == "None"


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

def test_grading_kernels_know_they_are_graded(spec, monkeypatch):
    # nbgrader sets NBGRADER_EXECUTION while it grades; the notebooks choose their small settings by it, so the
    # sandbox's otherwise empty environment must carry it, and only it, of the grader's environment.
    from tools.grading.kernel import KernelServer, SandboxKernelManager

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("INSTRUCTOR_SECRET", "s3cret")
    manager = SandboxKernelManager(kernel_name="python3", sandbox=sandbox.spec_to_json(spec))
    command = KernelServer(manager.kernel_sandbox()).command()
    pairs = {(command[i + 1], command[i + 2]) for i, arg in enumerate(command) if arg == "--setenv"}
    assert ("NBGRADER_EXECUTION", "autograde") in pairs
    assert not [name for name, _ in pairs if "SECRET" in name]
    monkeypatch.delenv("NBGRADER_EXECUTION")
    assert manager.kernel_sandbox() == spec


# --------------------------------------------------------------------------------------------------------------------
# Settings passed explicitly, slots, the kernel's own sandbox
# --------------------------------------------------------------------------------------------------------------------

def test_sandbox_settings_travel_as_json_and_a_wrong_setting_is_named(tmp_path):
    spec = sandbox.SandboxSpec(python=tmp_path / "bin" / "python", datadir=tmp_path / "data", slot=4,
                               reference=tmp_path / "ref" / "best.onnx",
                               limits=sandbox.Limits(memory_bytes=3 * sandbox.GIB, processes=99),
                               env={"OMP_NUM_THREADS": "2"}, isolated=False)
    assert sandbox.spec_from_json(sandbox.spec_to_json(spec)) == spec
    assert sandbox.spec_from_json('{"python": "/x/python"}') == sandbox.SandboxSpec(python=Path("/x/python"))
    with pytest.raises(sandbox.SandboxError, match="unknown sandbox settings: limits.memory, sloth"):
        sandbox.spec_from_json('{"python": "/x/python", "sloth": 1, "limits": {"memory": 5}}')
    with pytest.raises(sandbox.SandboxError, match="not JSON"):
        sandbox.spec_from_json("python=/x")


def test_the_kernel_manager_takes_its_sandbox_from_the_notebook_clients_configuration(spec):
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    from tools.grading.kernel import SandboxKernelManager

    config = Config({"SandboxKernelManager": {"sandbox": sandbox.spec_to_json(spec)}})
    client = NotebookClient(nbformat.v4.new_notebook(), kernel_manager_class=SandboxKernelManager, config=config)
    manager = client.create_kernel_manager()
    assert manager.spec == spec and SandboxKernelManager.spec is None  # nothing process-wide
    assert manager.server is None  # its sandbox is made when a kernel starts


def user_processes(uid: int) -> int:
    return len(sandbox._user_processes(uid))


def test_slots_are_exclusive_across_processes_and_a_fork_bomb_starves_only_its_own(spec):
    if os.geteuid() != 0:
        pytest.skip("sandbox users (and their slots) exist only when the grader runs as root")
    first = sandbox.acquire_slot(spec)
    second = sandbox.acquire_slot(spec)  # a second grading preferring the same slot
    assert first.spec.slot == spec.slot and second.spec.slot != spec.slot and second.spec.uid != first.spec.uid
    second.release()
    first.release()
    bomb_uid = sandbox.BASE_UID + spec.slot
    bomb_code = ("import subprocess, time\nprocs = []\ntry:\n    while True:\n"
                 "        procs.append(subprocess.Popen(['sleep', '60']))\nexcept OSError:\n    time.sleep(60)")
    grader = f"""
from tools.grading import sandbox
spec = sandbox.spec_from_json({sandbox.spec_to_json(spec)!r})
sandbox.run(spec, [spec.python_inside, "-c", {bomb_code!r}], timeout=40)
"""
    bomb = subprocess.Popen([sys.executable, "-c", grader], cwd=REPO)  # another grading, in a process of its own
    try:
        for _ in range(200):  # until the bomb has used up its user's processes
            if user_processes(bomb_uid) >= spec.limits.processes - 8:
                break
            subprocess.run(["sleep", "0.1"])
        assert user_processes(bomb_uid) >= spec.limits.processes - 8
        done = run_python(spec, "import os, subprocess; subprocess.run(['true'], check=True); print(os.getuid())")
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) != bomb_uid
    finally:
        bomb.kill()
        bomb.wait()
    lease = sandbox.acquire_slot(spec)  # the bomb's grader is gone: its slot is free again, and emptied
    try:
        assert lease.spec.slot == spec.slot and user_processes(bomb_uid) == 0
    finally:
        lease.release()


def test_a_sandboxed_kernel_sees_no_host_path_of_the_course_and_cannot_fill_its_socket_folder(spec, tmp_path,
                                                                                             capfd):
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    from tools.grading.kernel import SandboxKernelManager

    course = tmp_path / "course" / "submitted" / "alice"
    course.mkdir(parents=True)
    (course / "notes.txt").write_text("mine")
    (course / "link").symlink_to(REPO)
    cells = [
        "import os, glob; print(sorted(os.listdir('.')), open('notes.txt').read(), os.getuid())",
        "sockets = glob.glob('/tmp/lg-*')[0]\ntry:\n    open(sockets + '/fill', 'wb').write(b'x' * 100_000_000)\n"
        "    print('wrote')\nexcept OSError as err:\n    print('refused', err.errno)",
        "print(open('/proc/self/mountinfo').read())",
        "print(open('/proc/1/cmdline').read().replace(chr(0), ' '))",
        "print(os.path.exists('/root'), sorted(os.listdir('/home')), sorted(os.listdir('/opt/grading-env')))",
        "for fd in (1, 2):\n    os.write(fd, b'flood' * 200_000)  # 1 MB each on the kernel's own descriptors",
        "print(6 * 7)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    config = Config({"SandboxKernelManager": {"sandbox": sandbox.spec_to_json(spec)}})
    client = NotebookClient(nb, kernel_manager_class=SandboxKernelManager, config=config, timeout=120,
                            resources={"metadata": {"path": str(course)}})
    during: list[subprocess.CompletedProcess] = []

    runtime: list[Path] = []

    def alongside(cell, cell_index, execute_reply) -> None:
        if cell_index == 0:  # while the kernel runs: another sandbox preferring the same slot
            during.append(run_python(spec, "import os; print(os.getuid())"))
            runtime.append(client.km.server.runtime)

    client.on_cell_executed = alongside
    stale = Path(f"/tmp/lg-stale-{os.getpid()}")  # the socket folder of a grader killed before its cleanup
    if os.geteuid() == 0:
        from tools.grading.kernel import _mount_tmpfs

        stale.mkdir()
        _mount_tmpfs(stale, 1 << 20, sandbox.BASE_UID + spec.slot)
    client.execute()
    out = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]
    listing, notes, uid = out[0].rsplit(" ", 2)
    assert listing == "['notes.txt']" and notes == "mine"  # the plain files only, copied in
    assert out[1].strip() == "refused 28"  # ENOSPC: the socket folder is a small tmpfs
    if os.geteuid() == 0:
        assert int(during[0].stdout) != int(uid)
        if int(uid) == sandbox.BASE_UID + spec.slot:  # the kernel had the slot: its stale folder is gone
            assert not stale.exists() and str(stale) not in Path("/proc/self/mountinfo").read_text()
    for text in out[2:4]:
        assert str(tmp_path / "course") not in text and "/srv" not in text
    assert str(REPO) not in out[3] and "/root" not in out[3]  # bubblewrap's own command line names no host path
    sources = {line.split()[3] for line in out[2].splitlines() if " - ext" in line or " - xfs" in line}
    # what the mount table still names of the host: the system folders and files, the grading environment's
    # packages, its Python installation, the pyvenv.cfg written for it, the data set
    named = {s for s in sources if not s.startswith(("/usr", "/etc", "/sys"))}
    assert named <= {str(GRADING_PYTHON.parent.parent / "lib"), str(Path(os.path.realpath(GRADING_PYTHON)).parents[1]),
                     str(spec.datadir.resolve()), *(str(p) for p in (sandbox.state_dir() / "staged").iterdir())}, named
    assert out[4].strip() == "False ['student'] ['bin', 'lib', 'lib64', 'pyvenv.cfg']"
    assert out[6].strip() == "42"  # grading goes on
    relayed = capfd.readouterr().err  # the kernel's own stdout and stderr reach the grader's stderr, cut
    assert relayed.count("flood") * 5 <= SandboxKernelManager.MAX_KERNEL_OUTPUT
    assert f"[kernel output cut at {SandboxKernelManager.MAX_KERNEL_OUTPUT} bytes]" in relayed
    assert not runtime[0].exists() and str(runtime[0]) not in Path("/proc/self/mountinfo").read_text()


def test_kernels_forked_by_one_server_each_start_clean_and_a_killed_server_is_replaced(spec, tmp_path):
    # The worker's kernels come from one server per submission (shared_kernel_servers): whatever a notebook leaves
    # behind (files in the home folder and /tmp, a process, a changed module of the preloaded stack, its working copy)
    # is gone for the next one; a notebook that wipes every folder it can write to, or kills the server, costs only
    # itself. (A server is told by its start time: each is process 2 of its own sandbox.)
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    from tools.grading.kernel import SandboxKernelManager, shared_kernel_servers

    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    server_start = "open(f'/proc/{os.getppid()}/stat').read().split()[21]"  # the server: this kernel's parent
    mess = ("import os, subprocess, numpy\nnumpy.LEFT = 1\nopen(os.path.expanduser('~/left.txt'), 'w').write('x')\n"
            "open('/tmp/left.txt', 'w').write('x')\nopen('notes.txt', 'w').write('changed')\nos.mkdir('made')\n"
            f"os.chmod('made', 0)\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nprint({server_start})")
    look = ("import os, numpy\nothers = sorted(int(p) for p in os.listdir('/proc') if p.isdigit()\n"
            "                if int(p) not in (1, os.getpid(), os.getppid()))\n"
            f"print({server_start}, hasattr(numpy, 'LEFT'), os.path.exists(os.path.expanduser('~/left.txt')),\n"
            "      os.path.exists('/tmp/left.txt'), open('notes.txt').read(), sorted(os.listdir('.')), others)")
    wipe = "import os\nos.system('rm -rf ~/* /tmp/* /tmp/.* 2>/dev/null')"
    stop = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"
    config = Config({"SandboxKernelManager": {"sandbox": sandbox.spec_to_json(spec)}})

    def run(*cells: str) -> list[str]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        NotebookClient(nb, kernel_manager_class=SandboxKernelManager, config=config, timeout=120, allow_errors=True,
                       resources={"metadata": {"path": str(folder)}}).execute()
        return ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]

    clean = "False False False mine ['notes.txt'] []\n"
    with shared_kernel_servers():
        server = run(mess)[0].strip()
        second = run(look, wipe)[0]
        third = run(look, stop)[0]
        fourth = run(look)[0]
    assert second.split(" ", 1) == third.split(" ", 1) == [server, clean]  # the same server, twice
    assert fourth.split(" ", 1)[1] == clean and fourth.split()[0] != server  # a new one
    assert (folder / "notes.txt").read_text() == "mine" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    if spec.uid is not None:
        assert user_processes(spec.uid) == 0  # the servers and what their kernels started are gone


@pytest.mark.parametrize("server", ["import sys; sys.exit('no stack here')", "import time; time.sleep(30)"])
def test_a_kernel_server_that_never_gets_ready_is_named_and_leaves_nothing(spec, monkeypatch, server):
    from tools.grading.kernel import KernelServer

    monkeypatch.setattr(KernelServer, "START_TIMEOUT", 2.0)
    kernels = KernelServer(spec)
    monkeypatch.setattr(kernels, "command", lambda: sandbox.bwrap_command(kernels.spec, [spec.python_inside, "-c",
                                                                                            server]))
    with pytest.raises(sandbox.SandboxError, match="the kernel server (stopped|was not ready within 2 s)"):
        kernels.start()
    assert not kernels.runtime.exists() and not Path(kernels.socket).exists() and not kernels.alive()
    again = sandbox.acquire_slot(spec)  # its slot is free again
    assert again.spec.slot == spec.slot
    again.release()


@pytest.mark.parametrize("answer", [b"x" * (1 << 26), b"[" * 100_000 + b"\n", b'{"exit": 0}\n'])
def test_the_kernel_client_reads_one_short_answer_whatever_the_server_sends(tmp_path, answer):
    # The kernel server runs in the sandbox, where a kernel may have taken it over: its client, outside, reads one
    # short line and exits 1 on anything else, however much comes.
    import threading

    from tools.grading.kernel import SERVER_FILE

    path = str(tmp_path / "server")
    sent: list[int] = []

    def fake_server() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            connection, _ = listener.accept()
            with connection:
                _, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
                for fd in fds:
                    os.close(fd)
                try:
                    for start in range(0, len(answer), 1 << 16):
                        connection.sendall(answer[start:start + (1 << 16)])
                        sent.append(start)
                except OSError:
                    pass

    thread = threading.Thread(target=fake_server)
    thread.start()
    while not os.path.exists(path):
        thread.join(0.01)
    done = subprocess.run([sys.executable, "-I", "-S", str(SERVER_FILE), "connect", path, "-f", "x.json"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    thread.join(60)
    assert done.returncode == (0 if answer.startswith(b"{") else 1) and b"Traceback" not in done.stderr, done.stderr
    assert len(sent) * (1 << 16) < 1 << 24  # it stopped reading long before the end of the flood


@pytest.mark.parametrize("hierarchy", ["v2", "v1"])
def test_cgroup_limits_are_written_under_the_one_cgroup_root(tmp_path, monkeypatch, hierarchy):
    """Both hierarchies live under the same mount point; a fake one shows which files get the limits."""
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", tmp_path)
    if hierarchy == "v2":
        (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    else:
        for controller in ("memory", "pids"):
            (tmp_path / controller).mkdir()
            (tmp_path / controller / "cgroup.procs").write_text("")
    limits = sandbox.Limits(memory_bytes=3 * sandbox.GIB, processes=77)
    group = sandbox.Cgroup("slot-1", limits)
    assert group.kind == f"cgroup {hierarchy}"
    if hierarchy == "v2":
        assert group.dirs == [tmp_path / "labcode-grading" / "slot-1"]
        assert (tmp_path / "labcode-grading" / "cgroup.subtree_control").read_text() == "+memory +pids"
        written = {name: (group.dirs[0] / name).read_text() for name in ("memory.max", "memory.swap.max", "pids.max")}
        assert written == {"memory.max": str(3 * sandbox.GIB), "memory.swap.max": "0", "pids.max": "77"}
    else:
        memory, pids = (tmp_path / name / "labcode-grading" / "slot-1" for name in ("memory", "pids"))
        assert group.dirs == [memory, pids]
        assert (memory / "memory.limit_in_bytes").read_text() == str(3 * sandbox.GIB)
        assert (pids / "pids.max").read_text() == "77"
    assert group.oom_kills() == 0
    events = ("memory.events", "oom 2\noom_kill 2\n") if hierarchy == "v2" else ("memory.oom_control",
                                                                              "under_oom 0\noom_kill 2\n")
    (group.dirs[0] / events[0]).write_text(events[1])
    assert group.oom_kills() == 2
    for path in group.dirs:  # a real cgroup folder holds only kernel files, which rmdir ignores: empty it first
        for child in path.iterdir():
            child.unlink()
    group.remove()
    assert all(not path.exists() for path in group.dirs)
