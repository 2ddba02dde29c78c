"""The sandbox that every piece of a submission's code runs in: bubblewrap, an unprivileged user, resource limits.

A sandboxed command sees

- the system's programs and libraries (``/usr``, ``/lib*``, ``/bin``, ``/sbin``, a few files of ``/etc``), read-only;
- the grading environment (a virtual environment with the third-party stack only, never the instructor library) at
  ``/opt/grading-env`` and the Python installation it was made from at ``/opt/python``, read-only: neither at its host
  path, so no home folder of the host (pyenv's ``/root/.pyenv``) appears inside;
- the data set, read-only, at ``/data/stanford`` (``LABCODE_DATADIR`` points there), and the course's reference
  model (the one the students' distribution ships) with its ``reference.json``, read-only in ``/data/reference``
  (``LABCODE_REFERENCE_MODEL`` points there), so that the notebooks that study it never depend on another one;
- a private ``/tmp`` and a home folder, ``/home/student``, on size-limited tmpfs: the only writable places, gone when
  the sandbox exits;
- whatever the caller binds explicitly (the kernel's connection folder, itself a small tmpfs when running as root).

It does not see the instructor repository, other submissions, the real home folders, the network (its own empty
network namespace), the other processes (its own PID namespace) or the host's IPC. bubblewrap reads its options from a
file descriptor, so its command line (``/proc/1/cmdline`` inside) names no host path. When the grader runs as root,
the command runs as a dedicated unprivileged user with no capabilities and ``no_new_privs``: one per *slot*, and a
slot is held by one sandbox at a time on the machine (a lock per slot, see :func:`acquire_slot`), so that the
process limit of one submission never starves another, even across concurrent gradings. Memory, process count and
file size are bounded by rlimits, and by a cgroup (memory and pids) where the machine lets the grader create one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

#: Where things appear inside the sandbox.
HOME = "/home/student"
DATA = "/data/stanford"
REFERENCE = "/data/reference"
ENV = "/opt/grading-env"
#: Where the Python installation of the grading environment appears inside (never at its host path).
PYTHON_HOME = "/opt/python"

#: First uid of the unprivileged users the sandboxed code runs as (slot ``i`` gets ``BASE_UID + i``).
BASE_UID = 61000
#: Number of slots (sandbox users); a sandbox whose preferred slot is held takes the next free one.
SLOTS = 512
#: The grader's own state on this machine as root (slot locks, staged files): root-owned, usually on a tmpfs.
STATE_ROOT = Path("/run/labcode-grading")

GIB = 1 << 30


class SandboxError(RuntimeError):
    """The sandbox cannot be started on this machine (the message says why and what to do)."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one sandbox (one submission's kernels, or one model evaluation).

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
        reference: the reference model's ONNX file, exposed read-only in ``/data/reference`` with the
            ``reference.json`` beside it (``None``: none).
        slot: the worker slot; selects the unprivileged uid when running as root.
        limits: resource bounds.
        env: extra environment variables of the sandboxed process (the environment is otherwise cleared).
        isolated: ``False`` only when the instructor explicitly opts out of the sandbox (``--no-sandbox``): the
            command then runs directly, with the same environment variables and limits but no isolation.
    """

    python: Path
    datadir: Path | None = None
    reference: Path | None = None
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


def spec_to_json(spec: SandboxSpec) -> str:
    """``spec`` as JSON text, the form in which it travels in a configuration (:func:`spec_from_json` reads it)."""
    values = asdict(spec)
    values["python"] = str(spec.python)
    values["datadir"] = None if spec.datadir is None else str(spec.datadir)
    values["reference"] = None if spec.reference is None else str(spec.reference)
    return json.dumps(values, sort_keys=True)


def spec_from_json(text: str) -> SandboxSpec:
    """The :class:`SandboxSpec` written by :func:`spec_to_json`.

    Raises:
        SandboxError: the text is not such a JSON object (the message names what is wrong).
    """
    try:
        values = json.loads(text)
    except ValueError as err:
        raise SandboxError(f"sandbox settings are not JSON: {err}") from None
    if not isinstance(values, dict) or "python" not in values:
        raise SandboxError("sandbox settings must be a JSON object with at least 'python'")
    unknown = set(values) - set(SandboxSpec.__dataclass_fields__)
    limits = values.get("limits") or {}
    unknown |= {f"limits.{key}" for key in set(limits) - set(Limits.__dataclass_fields__)}
    if unknown:
        raise SandboxError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
    env = values.get("env") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise SandboxError("sandbox setting 'env' must map names to strings")
    try:
        return SandboxSpec(python=Path(values["python"]),
                           datadir=None if values.get("datadir") is None else Path(values["datadir"]),
                           reference=None if values.get("reference") is None else Path(values["reference"]),
                           slot=int(values.get("slot", 0)), limits=Limits(**{k: int(v) for k, v in limits.items()}),
                           env=dict(env), isolated=bool(values.get("isolated", True)))
    except (TypeError, ValueError) as err:
        raise SandboxError(f"invalid sandbox settings: {err}") from None


# --------------------------------------------------------------------------------------------------------------------
# The bubblewrap command line
# --------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PythonLayout:
    """Where an interpreter's files are on the host.

    Attributes:
        venv: its virtual environment (``None``: the interpreter is a plain installation's).
        installation: the installation (prefix) its binary belongs to.
        binary: the binary's name in ``installation/bin``.
        version: ``"3.11"``.
    """

    venv: Path | None
    installation: Path
    binary: str
    version: str

    @property
    def system(self) -> bool:
        """Whether the installation lies in the system folders, which the sandbox shows at their own paths."""
        return any(self.installation == Path(d) or Path(d) in self.installation.parents for d in SYSTEM_DIRS)


def python_layout(python: Path) -> PythonLayout:
    """The layout of the interpreter ``python`` (typically ``<venv>/bin/python``)."""
    python = Path(python).absolute()
    real = Path(os.path.realpath(python))
    venv = python.parent.parent if (python.parent.parent / "pyvenv.cfg").is_file() else None
    installation = real.parent.parent
    if venv is not None:  # the installation the venv was made from (its interpreter may be a copy, not a link)
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and Path(value.strip()).is_dir():
                installation = Path(value.strip()).resolve().parent
    stdlib = sorted(installation.glob("lib/python3.*/os.py"))
    version = stdlib[-1].parent.name.removeprefix("python") if stdlib else "{}.{}".format(*sys.version_info[:2])
    binary = real.name if real.parent == installation / "bin" else f"python{version}"
    return PythonLayout(venv=venv, installation=installation, binary=binary, version=version)


def staged_file(name: str, content: str) -> Path:
    """A small file the grader writes once (named by its content) to bind into sandboxes, at a neutral host path.

    As root it lies under :data:`STATE_ROOT` (root-owned); otherwise in a folder of the user's own in the temp folder.
    """
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    folder = state_dir() / "staged"
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / f"{digest}-{name}"
    if not path.is_file():
        temporary = folder / f".{digest}-{uuid.uuid4().hex}"
        temporary.write_text(content)
        temporary.chmod(0o644)
        temporary.replace(path)
    return path


def state_dir() -> Path:
    """The grader's folder on this machine (created ``0755``): :data:`STATE_ROOT` as root, else a per-user one."""
    folder = STATE_ROOT if os.geteuid() == 0 else Path(tempfile.gettempdir()) / f"labcode-grading-{os.geteuid()}"
    folder.mkdir(mode=0o755, exist_ok=True)
    if folder.stat().st_uid != os.geteuid() or folder.stat().st_mode & 0o022:
        raise SandboxError(f"{folder} must belong to uid {os.geteuid()} and be writable by it alone")
    return folder


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

    Start it through :func:`limited`'s prefix: that launcher gives bubblewrap its options (every host path) through a
    file descriptor, so that its command line, visible inside, names none.

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
    extra_env = _bind_python(args, python_layout(spec.python))
    if spec.datadir is not None:
        args.bind(Path(spec.datadir).resolve(), DATA)
    if spec.reference is not None:
        model = Path(spec.reference).resolve()
        args.bind(model, f"{REFERENCE}/{model.name}")
        args.bind(model.with_name("reference.json"), f"{REFERENCE}/reference.json", optional=True)
    args.tmpfs("/tmp", spec.limits.scratch_bytes)
    args.tmpfs(HOME, spec.limits.scratch_bytes)
    for src, dest, writable in binds:
        args.bind(src, dest, writable=writable)
    command = [bwrap, "--die-with-parent", "--new-session", "--clearenv",
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev", *args.args]
    for key, value in {**environment(spec), **extra_env}.items():
        command += ["--setenv", key, value]
    command += ["--chdir", cwd]
    if "--" in command:  # launch.py hands bubblewrap its options up to the first "--" through a file descriptor
        raise SandboxError(f"a sandbox setting may not be '--' (an environment value?): {spec.env}")
    if spec.uid is not None:  # as root: become an unprivileged user without any capability before running argv
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                    "setpriv", f"--reuid={spec.uid}", f"--regid={spec.uid}", "--clear-groups",
                    "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]
    else:
        command += ["--unshare-user", "--disable-userns", "--"]
    return command + list(argv)


def _bind_python(args: _Args, layout: PythonLayout) -> dict[str, str]:
    """Show the interpreter inside at ``ENV``, its installation at ``PYTHON_HOME``; return the variables it needs.

    A virtual environment is rebuilt from parts: its ``lib`` folder (the packages), a ``bin`` holding only links to
    the interpreter, and a ``pyvenv.cfg`` naming the installation's inside path. Neither the venv's scripts nor its
    configuration (both name host paths) are shown.
    """
    if layout.venv is None:  # a plain installation: shown whole at ENV
        args.bind(layout.installation, ENV)
        return {} if layout.system else {"LD_LIBRARY_PATH": f"{ENV}/lib"}
    home, variables = str(layout.installation), {}
    if not layout.system:
        args.bind(layout.installation, PYTHON_HOME)
        home, variables = PYTHON_HOME, {"LD_LIBRARY_PATH": f"{PYTHON_HOME}/lib"}  # its RUNPATH names the host path
    args.parents(f"{ENV}/bin/python")  # ENV and ENV/bin, made world-readable
    args.bind(layout.venv / "lib", f"{ENV}/lib")
    if (layout.venv / "lib64").exists():
        args.args += ["--symlink", "lib", f"{ENV}/lib64"]
    for name in sorted({"python", "python3", f"python{layout.version}", layout.binary}):
        args.args += ["--symlink", f"{home}/bin/{layout.binary}", f"{ENV}/bin/{name}"]
    config = staged_file("pyvenv.cfg", f"home = {home}/bin\ninclude-system-site-packages = false\n"
                                       f"version = {layout.version}\n")
    args.bind(config, f"{ENV}/pyvenv.cfg")
    return variables


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
        **({"LABCODE_REFERENCE_MODEL": f"{REFERENCE}/{Path(spec.reference).resolve().name}" if spec.isolated
            else str(spec.reference)} if spec.reference is not None else {}),
        **spec.env,
    }


# --------------------------------------------------------------------------------------------------------------------
# Limits: rlimits always, a cgroup where the machine allows it
# --------------------------------------------------------------------------------------------------------------------

#: Where the cgroup hierarchies are mounted: the v2 unified one, or one folder per v1 controller.
CGROUP_ROOT = Path("/sys/fs/cgroup")


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
        if (CGROUP_ROOT / "cgroup.controllers").is_file():
            controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
            if {"memory", "pids"} <= set(controllers):
                parent = CGROUP_ROOT / "labcode-grading"
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
        memory, pids = CGROUP_ROOT / "memory", CGROUP_ROOT / "pids"
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

    def oom_kills(self) -> int:
        """How many processes of the sandbox the kernel has killed for exceeding its memory (0 without a cgroup)."""
        for group in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                path = group / name
                if path.is_file():
                    fields = dict(line.split() for line in path.read_text().splitlines() if " " in line)
                    return int(fields.get("oom_kill", 0))
        return 0

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


# --------------------------------------------------------------------------------------------------------------------
# Slots: one sandbox per unprivileged user at a time, across every grading on the machine
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class SlotLease:
    """A slot held by this process until :meth:`release` (or the process's end: the lock goes with it).

    Attributes:
        spec: the sandbox's settings with the slot actually held (its ``uid`` is that slot's user).
    """

    spec: SandboxSpec
    _lock: IO | None = None

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock
            self._lock = None


def acquire_slot(spec: SandboxSpec, *, wait: float | None = None) -> SlotLease:
    """Hold a slot for a sandbox: ``spec.slot`` when free, else the next free one (wrapping around at :data:`SLOTS`).

    Every process that starts sandboxed code takes a slot first and keeps it while that code runs, so that two
    sandboxes never run as the same user at once, whichever grading (the parallel grader, a plain ``nbgrader
    autograde``) started them. A slot is an exclusive ``flock`` on ``STATE_ROOT/slots/<n>.lock``, released when the
    lease is released or its process ends, however it ends. Each process holds its slots independently (a lock per
    open file), the search order is fixed and no one waits while holding a lock it has just tried, so there is no
    deadlock. Processes left running under the slot's user (from a grading killed before this machinery existed)
    are killed before the slot is handed out.

    Without root, or for an unisolated spec, there is no user to separate: the lease holds nothing.

    Args:
        spec: the sandbox; ``spec.slot`` is the preferred slot.
        wait: when every slot is held, seconds to wait for the preferred one (``None``: as long as it takes).

    Raises:
        SandboxError: every slot stayed held for ``wait`` seconds.
    """
    if spec.uid is None or not spec.isolated:
        return SlotLease(spec)
    folder = state_dir() / "slots"
    folder.mkdir(mode=0o700, exist_ok=True)
    preferred = spec.slot % SLOTS
    for offset in range(SLOTS):
        slot = (preferred + offset) % SLOTS
        lock = _open_lock(folder / f"{slot}.lock")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return _leased(spec, slot, lock)
    lock = _open_lock(folder / f"{preferred}.lock")
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _leased(spec, preferred, lock)
        except BlockingIOError:
            if deadline is not None and time.monotonic() > deadline:
                lock.close()
                raise SandboxError(f"all {SLOTS} sandbox slots stayed in use for {wait:g} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def slot(spec: SandboxSpec) -> Iterator[SandboxSpec]:
    """Hold a slot (:func:`acquire_slot`) for the duration of the block; yields the spec with the slot held."""
    lease = acquire_slot(spec)
    try:
        yield lease.spec
    finally:
        lease.release()


def _open_lock(path: Path) -> IO:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "r+b")


def _leased(spec: SandboxSpec, slot_number: int, lock: IO) -> SlotLease:
    held = replace(spec, slot=slot_number)
    clear_user(held.uid)
    return SlotLease(held, lock)


def _user_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


def clear_user(uid: int, patience: float = 10.0) -> None:
    """Kill every process running as ``uid`` and wait until they are gone (at most ``patience`` seconds)."""
    deadline = time.monotonic() + patience
    while _user_processes(uid) and time.monotonic() < deadline:
        # kill(-1) as that user reaches all its processes at once, faster than a fork bomb refills (setuid does not
        # check RLIMIT_NPROC, and no exec follows it)
        subprocess.run([sys.executable, "-I", "-S", "-c",
                        f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); os.kill(-1, 9)"],
                       check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------------------------
# Running a command
# --------------------------------------------------------------------------------------------------------------------

#: The end of ``stderr`` of a command stopped at its wall-time limit.
TIMED_OUT = "\nsandbox: wall-time limit reached"
#: The end of ``stderr`` of a command stopped for writing more than its output limit.
TOO_MUCH_OUTPUT = "\nsandbox: output limit reached"
#: The most a command may write on stdout (and, separately, on stderr) unless the caller says otherwise.
MAX_OUTPUT = 64 << 20


def run(spec: SandboxSpec, argv: Sequence[str], *, binds: Sequence[tuple[Path, str, bool]] = (), cwd: str = HOME,
        timeout: float | None = None, name: str = "run", input: bytes | None = None, text: bool = True,
        max_output: int = MAX_OUTPUT) -> subprocess.CompletedProcess:
    """Run ``argv`` in the sandbox and wait for it (at most ``timeout`` seconds, then kill everything it started).

    The command holds a slot (:func:`acquire_slot`) while it runs. Without isolation (``spec.isolated`` false, the
    instructor's explicit opt-out) the command runs directly, with the same environment and limits, and every
    argument naming a bind's inside path is given the host path.

    Args:
        input: bytes for the command's standard input (none: an empty input).
        text: decode stdout and stderr (UTF-8, undecodable bytes replaced); ``False``: bytes.
        max_output: the most bytes kept of stdout, and of stderr; a command writing more is killed.

    Returns:
        The completed process; after a timeout its ``returncode`` is -9 and ``stderr`` ends with :data:`TIMED_OUT`,
        after an output flood with :data:`TOO_MUCH_OUTPUT`.
    """
    with slot(spec) as held, limited(name, spec.limits) as (prefix, _cgroup):
        if held.isolated:
            command = bwrap_command(held, argv, binds=binds, cwd=cwd)
        else:
            host = {dest: str(src) for src, dest, _ in binds}
            env = environment(held, str(held.datadir), home="/tmp", tmp="/tmp")
            command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *(host.get(arg, arg) for arg in argv)]
        process = subprocess.Popen(prefix + command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        returncode, stdout, stderr, ending = _communicate(process, input or b"", timeout, max_output)
    if text:
        stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace") + ending
    else:
        stderr += ending.encode()
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def _communicate(process: subprocess.Popen, data: bytes, timeout: float | None,
                 limit: int) -> tuple[int, bytes, bytes, str]:
    """Feed ``data``, collect at most ``limit`` bytes of each output, stop at ``timeout``; kill on any excess."""
    flooded = threading.Event()
    collected: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 9)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            process.stdin.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            process.stdin.close()

    def drain(stream: IO, key: int) -> None:
        buffer = collected[key]
        while chunk := os.read(stream.fileno(), 1 << 16):
            if len(buffer) + len(chunk) > limit:
                buffer += chunk[:limit - len(buffer)]
                flooded.set()
                kill()
                break
            buffer += chunk
        stream.close()

    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=drain, args=(process.stdout, 1), daemon=True),
               threading.Thread(target=drain, args=(process.stderr, 2), daemon=True)]
    for thread in threads:
        thread.start()
    ending = ""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        ending = TIMED_OUT
        kill()
        process.wait()
    kill()  # whatever the command left behind in its session
    for thread in threads:
        thread.join(timeout=10)
    if flooded.is_set():
        ending = TOO_MUCH_OUTPUT
    returncode = -9 if ending else process.returncode
    return returncode, bytes(collected[1]), bytes(collected[2]), ending


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
