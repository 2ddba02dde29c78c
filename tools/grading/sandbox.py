"""The sandbox that every piece of a submission's code runs in: bubblewrap, an unprivileged user, resource limits.

A sandboxed command sees

- the system's programs and libraries (``/usr``, ``/lib*``, ``/bin``, ``/sbin``, a few files of ``/etc``), read-only;
- the grading environment (a virtual environment with the third-party stack only, never the instructor library) and
  the Python installation it was made from, read-only;
- the data set, read-only, at ``/data/stanford`` (``LABCODE_DATADIR`` points there);
- a private ``/tmp`` and a home folder, ``/home/student``, on a size-limited tmpfs: the only writable places, gone when
  the sandbox exits;
- whatever the caller binds explicitly (the kernel's connection folder, an output folder).

It does not see the instructor repository, other submissions, the real home folders, the network (its own empty
network namespace), the other processes (its own PID namespace) or the host's IPC. When the grader runs as root, the
command runs as a dedicated unprivileged user (one per worker slot, so that the process limit is per submission) with
no capabilities and ``no_new_privs``; memory, process count and file size are bounded by rlimits, and by a cgroup
(memory and pids) where the machine lets the grader create one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Where things appear inside the sandbox.
HOME = "/home/student"
DATA = "/data/stanford"
ENV = "/opt/grading-env"

#: First uid of the unprivileged users the sandboxed code runs as (worker slot ``i`` gets ``BASE_UID + i``).
BASE_UID = 61000

GIB = 1 << 30


class SandboxError(RuntimeError):
    """The sandbox cannot be started on this machine (the message says why and what to do)."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one sandbox (one submission's kernel, or one model evaluation).

    Attributes:
        memory_bytes: memory of the whole sandbox (cgroup), and address space of each process (rlimit).
        processes: processes and threads of the sandbox's user at once (``RLIMIT_NPROC``; cgroup ``pids.max``).
        file_bytes: largest file a process may write (``RLIMIT_FSIZE``).
        scratch_bytes: size of the writable tmpfs holding ``/home/student`` (and of ``/tmp``).
        open_files: file descriptors per process.
    """

    memory_bytes: int = 6 * GIB
    processes: int = 512
    file_bytes: int = 1 * GIB
    scratch_bytes: int = 2 * GIB
    open_files: int = 1024


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox is made of.

    Attributes:
        python: the grading environment's interpreter (``<venv>/bin/python``).
        datadir: the data set to expose read-only at ``/data/stanford`` (``None``: no data).
        slot: the worker slot; selects the unprivileged uid when running as root.
        limits: resource bounds.
        env: extra environment variables of the sandboxed process (the environment is otherwise cleared).
        isolated: ``False`` only when the instructor explicitly opts out of the sandbox (``--no-sandbox``): the
            command then runs directly, with the same environment variables and limits but no isolation.
    """

    python: Path
    datadir: Path | None = None
    slot: int = 0
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    isolated: bool = True

    @property
    def python_inside(self) -> str:
        """The interpreter's path as the sandboxed process sees it (the environment is mounted at ``ENV``)."""
        return f"{ENV}/bin/{self.python.name}" if self.isolated else str(self.python)

    @property
    def uid(self) -> int | None:
        """The uid the code runs as, or ``None`` when the grader is not root (it then keeps the caller's)."""
        return BASE_UID + self.slot if os.geteuid() == 0 else None


# --------------------------------------------------------------------------------------------------------------------
# The bubblewrap command line
# --------------------------------------------------------------------------------------------------------------------

def python_roots(python: Path) -> list[Path]:
    """The folders an interpreter needs: its virtual environment (first) and the installation it points to."""
    venv = python.parent.parent
    roots = [venv]
    config = venv / "pyvenv.cfg"
    if config.is_file():
        for line in config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                roots.append(Path(value.strip()).resolve().parent)
    real = Path(os.path.realpath(python)).parent.parent  # the interpreter the venv's link resolves to
    if real not in roots:
        roots.append(real)
    return roots


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts))]


class _Args:
    """bubblewrap arguments, creating each mount point's parents world-readable (they would be 0700 otherwise)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._made: set[str] = {"/"}

    def parents(self, dest: str) -> None:
        for parent in _ancestors(dest):
            if parent not in self._made:
                self.args += ["--perms", "0755", "--dir", parent]
                self._made.add(parent)

    def bind(self, src: Path | str, dest: str, *, writable: bool = False, optional: bool = False) -> None:
        self.parents(dest)
        flag = "--bind" if writable else "--ro-bind"
        self.args += [f"{flag}-try" if optional else flag, str(src), dest]
        self._made.add(dest)

    def tmpfs(self, dest: str, size: int) -> None:
        self.parents(dest)
        self.args += ["--perms", "1777", "--size", str(size), "--tmpfs", dest]
        self._made.add(dest)


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd",
                "/etc/group", "/etc/hosts", "/etc/mime.types", "/etc/fonts")


def bwrap_command(spec: SandboxSpec, argv: Sequence[str], *, binds: Sequence[tuple[Path, str, bool]] = (),
                  cwd: str = HOME) -> list[str]:
    """The command line running ``argv`` in the sandbox described by ``spec``.

    Args:
        spec: the sandbox.
        argv: the command to run inside (its paths are the sandbox's).
        binds: extra mounts, ``(host path, path inside, writable)``.
        cwd: working directory inside.
    """
    if not spec.isolated:
        raise SandboxError("bwrap_command needs an isolated SandboxSpec")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    args = _Args()
    for directory in SYSTEM_DIRS:
        if Path(directory).is_symlink():  # merged /usr: /bin -> usr/bin
            args.args += ["--symlink", os.readlink(directory), directory]
        elif Path(directory).is_dir():
            args.bind(directory, directory)
    for name in SYSTEM_FILES:
        args.bind(name, name, optional=True)
    args.bind("/sys/devices/system/cpu", "/sys/devices/system/cpu", optional=True)  # CPU topology for torch
    venv, *installations = python_roots(spec.python)
    args.bind(venv, ENV)  # not at its own path, which would reveal where the course's files live
    for root in installations:
        args.bind(root, str(root))
    if spec.datadir is not None:
        args.bind(Path(spec.datadir).resolve(), DATA)
    args.tmpfs("/tmp", spec.limits.scratch_bytes)
    args.tmpfs(HOME, spec.limits.scratch_bytes)
    for src, dest, writable in binds:
        args.bind(src, dest, writable=writable)
    command = [bwrap, "--die-with-parent", "--new-session", "--clearenv",
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev", *args.args]
    for key, value in environment(spec).items():
        command += ["--setenv", key, value]
    command += ["--chdir", cwd]
    if spec.uid is not None:  # as root: become an unprivileged user without any capability before running argv
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                    "setpriv", f"--reuid={spec.uid}", f"--regid={spec.uid}", "--clear-groups",
                    "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]
    else:
        command += ["--unshare-user", "--disable-userns", "--"]
    return command + list(argv)


def environment(spec: SandboxSpec, datadir: str = DATA, home: str = HOME, tmp: str = "/tmp") -> dict[str, str]:
    """The whole environment of a sandboxed process (nothing of the grader's own environment leaks in)."""
    return {
        "PATH": f"{Path(spec.python_inside).parent}:/usr/bin:/bin",
        "HOME": home,
        "USER": "student",
        "LANG": "C.UTF-8",
        "TMPDIR": tmp,
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "ORT_DISABLE_TELEMETRY": "1",
        **({"LABCODE_DATADIR": datadir} if spec.datadir is not None else {}),
        **spec.env,
    }


# --------------------------------------------------------------------------------------------------------------------
# Limits: rlimits always, a cgroup where the machine allows it
# --------------------------------------------------------------------------------------------------------------------

CGROUP_V1 = Path("/sys/fs/cgroup")
CGROUP_V2 = Path("/sys/fs/cgroup")


class Cgroup:
    """A memory + pids cgroup for one sandbox (v1 hierarchies or the v2 unified one), or nothing where unavailable."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.dirs: list[Path] = []
        self.kind = "none"
        try:
            self._create(name, limits)
        except OSError:
            self.remove()
            self.dirs, self.kind = [], "none"

    def _create(self, name: str, limits: Limits) -> None:
        if (CGROUP_V2 / "cgroup.controllers").is_file():
            controllers = (CGROUP_V2 / "cgroup.controllers").read_text().split()
            if {"memory", "pids"} <= set(controllers):
                parent = CGROUP_V2 / "labcode-grading"
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
                group = parent / name
                group.mkdir()
                self.dirs = [group]
                (group / "memory.max").write_text(str(limits.memory_bytes))
                (group / "memory.swap.max").write_text("0")
                (group / "pids.max").write_text(str(limits.processes))
                self.kind = "cgroup v2"
            return
        memory, pids = CGROUP_V1 / "memory", CGROUP_V1 / "pids"
        if (memory / "cgroup.procs").is_file() and (pids / "cgroup.procs").is_file():
            for hierarchy in (memory, pids):
                group = hierarchy / "labcode-grading" / name
                group.mkdir(parents=True)
                self.dirs.append(group)
            (self.dirs[0] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                (self.dirs[0] / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
            (self.dirs[1] / "pids.max").write_text(str(limits.processes))
            self.kind = "cgroup v1"

    def enter(self) -> None:
        """Move the calling process into the cgroup (used in the child between fork and exec)."""
        for group in self.dirs:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def peak_memory(self) -> int | None:
        """Highest memory use of the sandbox so far, in bytes, when the cgroup records it."""
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            for group in self.dirs:
                if (group / name).is_file():
                    return int((group / name).read_text().split()[0])
        return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the sandbox for exceeding its memory."""
        for group in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                path = group / name
                if path.is_file():
                    fields = dict(line.split() for line in path.read_text().splitlines() if " " in line)
                    if int(fields.get("oom_kill", 0)) > 0:
                        return True
        return False

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the cgroup."""
        for group in self.dirs:
            procs = group / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), 9)

    def remove(self) -> None:
        for group in reversed(self.dirs):
            with contextlib.suppress(OSError):
                group.rmdir()


#: The rlimits of a sandboxed process, by ``resource.RLIMIT_<name>`` (inherited by everything it starts).
def rlimits(limits: Limits) -> dict[str, int]:
    return {"as": limits.memory_bytes, "nproc": limits.processes, "fsize": limits.file_bytes,
            "nofile": limits.open_files, "core": 0}


LAUNCHER = Path(__file__).with_name("launch.py")


@contextlib.contextmanager
def limited(name: str, limits: Limits) -> Iterator[tuple[list[str], Cgroup]]:
    """A command prefix that starts a process under ``limits``, and its cgroup (emptied and removed on exit).

    The prefix runs :mod:`tools.grading.launch`: it closes every inherited file descriptor, enters the cgroup and
    sets the rlimits, then executes the rest of the command line.

    Yields:
        ``(prefix, cgroup)``.
    """
    cgroup = Cgroup(f"{name}-{uuid.uuid4().hex[:8]}", limits)
    prefix = [sys.executable, "-I", "-S", str(LAUNCHER)]
    for group in cgroup.dirs:
        prefix += ["--cgroup", str(group)]
    for key, value in rlimits(limits).items():
        prefix += ["--rlimit", f"{key}={value}"]
    try:
        yield prefix + ["--"], cgroup
    finally:
        cgroup.kill_all()
        cgroup.remove()


#: The end of ``stderr`` of a command stopped at its wall-time limit.
TIMED_OUT = "\nsandbox: wall-time limit reached"


def run(spec: SandboxSpec, argv: Sequence[str], *, binds: Sequence[tuple[Path, str, bool]] = (), cwd: str = HOME,
        timeout: float | None = None, name: str = "run") -> subprocess.CompletedProcess:
    """Run ``argv`` in the sandbox and wait for it (at most ``timeout`` seconds, then kill everything it started).

    Without isolation (``spec.isolated`` false, the instructor's explicit opt-out) the command runs directly, with
    the same environment and limits, and every argument naming a bind's inside path is given the host path.

    Returns:
        The completed process, with ``stdout``/``stderr`` as text; after a timeout its ``returncode`` is -9 and
        ``stderr`` ends with :data:`TIMED_OUT`.
    """
    if spec.isolated:
        command = bwrap_command(spec, argv, binds=binds, cwd=cwd)
    else:
        host = {dest: str(src) for src, dest, _ in binds}
        env = environment(spec, str(spec.datadir), home="/tmp", tmp="/tmp")
        command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *(host.get(arg, arg) for arg in argv)]
    with limited(name, spec.limits) as (prefix, _cgroup):
        process = subprocess.Popen(prefix + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            stdout, stderr = process.communicate()
            return subprocess.CompletedProcess(command, -9, stdout, stderr + TIMED_OUT)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def probe(python: Path | None = None) -> str | None:
    """Why the sandbox cannot start here, or ``None`` when it can (a trivial command is run in it)."""
    spec = SandboxSpec(python=Path(python or sys.executable), limits=Limits(memory_bytes=2 * GIB))
    try:
        done = run(spec, [spec.python_inside, "-c", "print(42)"], timeout=60, name="probe")
    except SandboxError as err:
        return str(err)
    except OSError as err:
        return f"bubblewrap could not be started: {err}"
    if done.returncode != 0 or done.stdout.strip() != "42":
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return f"bubblewrap failed (status {done.returncode}): {last}"
    return None
