"""Notebook kernels that run in the sandbox, for nbgrader's autograding.

nbgrader (trusted, outside) drives the kernel over ZeroMQ; the kernel process (the submission's code) runs inside
:mod:`tools.grading.sandbox`. Since the sandbox has no network, the two talk through Unix sockets (ZeroMQ's ``ipc``
transport) in a private folder bound into the sandbox at the same path. The kernel works on a copy of the
submission in the sandbox's tmpfs home: whatever it writes stays there and is removed before the next kernel starts;
nbgrader writes the graded notebooks itself, from the kernel's messages. Interrupts (the per-cell timeout) go as
messages, not signals, since the kernel is not a child of the grader.

Kernels are forked in the sandbox by a kernel server (:mod:`tools.grading.kernel_server`) that has imported the
notebooks' stack once: a grading worker keeps one server, one sandbox, for all the notebooks of a submission
(:func:`shared_kernel_servers`); elsewhere (a plain ``nbgrader autograde``) each kernel has a server of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import typing as t
from dataclasses import replace
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async, run_hook, run_sync
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode

from tools.grading import kernel_server, outputs, sandbox

REPO = Path(__file__).resolve().parents[2]

#: Where the submission's copy lives inside the sandbox (the kernel's working directory).
WORKDIR = f"{sandbox.HOME}/submission"

#: The kernel server's program (:mod:`tools.grading.kernel_server`), run in the sandbox as ``python -c``.
SERVER_FILE = Path(kernel_server.__file__)


def default_spec() -> sandbox.SandboxSpec:
    """The sandbox of a plain ``nbgrader autograde`` run with the course configuration (one submission at a time).

    Environment: ``LABCODE_GRADING_PYTHON`` (default: ``.venv-grading/bin/python`` of this repository),
    ``LABCODE_DATADIR`` (default: the generated data set), ``LABCODE_GRADING_NO_SANDBOX=1`` to opt out of the
    isolation (the grading environment is still used).
    """
    python = Path(os.environ.get("LABCODE_GRADING_PYTHON") or REPO / ".venv-grading" / "bin" / "python")
    if not python.is_file():
        raise sandbox.SandboxError(f"no grading environment at {python}: create it with `bash scripts/setup.sh "
                                   "--grading` (the third-party stack only, without the course library)")
    datadir = os.environ.get("LABCODE_DATADIR")
    if not datadir:
        from labcode.synth import ensure_default_dataset

        datadir = str(ensure_default_dataset(progress=False))
    from labcode.reference import find_reference_model

    return sandbox.SandboxSpec(python=python, datadir=Path(datadir), reference=find_reference_model(),
                               isolated=os.environ.get("LABCODE_GRADING_NO_SANDBOX") != "1")


class KernelServer:
    """A sandbox whose first process is the kernel server (:mod:`tools.grading.kernel_server`): it has imported the
    notebooks' stack and forks a fresh kernel for each notebook.

    From :meth:`start` to :meth:`close` it holds a sandbox slot (:func:`~tools.grading.sandbox.acquire_slot`), a cgroup,
    the server's listening socket (in the grader's state folder, which the sandbox does not show: the server gets it
    as its standard input) and the folder of the kernels' own sockets, bound writable into the sandbox at the same
    path: as root, a tmpfs of :attr:`RUNTIME_BYTES`; without root a plain folder of the host's ``/tmp`` (the kernels
    then run as the grader's own user, and only the file size limit bounds what they write there). The kernels
    receive their working copy of the submission as a tar archive: nothing of the course is bound into the sandbox,
    so no host path of it shows inside.
    """

    #: Size of the sockets' folder: the sockets and the connection files need a few kB.
    RUNTIME_BYTES: t.ClassVar[int] = 1 << 20
    #: Seconds the server may take to import the stack before it is given up.
    START_TIMEOUT: t.ClassVar[float] = 120.0

    def __init__(self, spec: sandbox.SandboxSpec) -> None:
        self.spec = spec
        token = secrets.token_hex(5)  # short: socket paths are limited
        self.runtime = Path("/tmp") / f"lg-{token}"
        self.socket = str(sandbox.state_dir() / f"ks-{token}")
        self.cgroup: sandbox.Cgroup | None = None
        self._lease: sandbox.SlotLease | None = None
        self._mounted = False
        self._limits: t.Any = None
        self._process: subprocess.Popen | None = None
        self._output: OutputRelay | None = None

    def command(self) -> list[str]:
        """The server's command line (bubblewrap's), without the limits' prefix."""
        inner = [self.spec.python_inside, "-c", SERVER_FILE.read_text(), "serve", WORKDIR]
        return sandbox.bwrap_command(self.spec, inner, binds=[(self.runtime, str(self.runtime), True)],
                                     cwd=sandbox.HOME)

    def start(self) -> KernelServer:
        """Start the server and wait until it has imported the stack; ``self``.

        Raises:
            SandboxError: it did not say it was ready within :attr:`START_TIMEOUT` seconds (its own error output is
                in the grader's log).
        """
        try:
            self._lease = sandbox.acquire_slot(self.spec)
            self.spec = self._lease.spec
            self.runtime.mkdir(mode=0o700)
            uid = self.spec.uid
            if uid is not None:
                _unmount_stale(uid)
                _mount_tmpfs(self.runtime, self.RUNTIME_BYTES, uid)
                self._mounted = True
                os.chown(self.runtime, uid, uid)
            self._limits = sandbox.limited("kernels", self.spec.limits)
            prefix, self.cgroup = self._limits.__enter__()
            self._output = OutputRelay(SandboxKernelManager.MAX_KERNEL_OUTPUT)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(self.socket)
                listener.listen(8)
                self._process = subprocess.Popen(prefix + self.command(), stdin=listener.fileno(),
                                                 stdout=subprocess.PIPE, stderr=self._output.write_end,
                                                 start_new_session=True)
            self._output.started()
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        """Wait for the server's ``ready`` line (what its imports print before it is passed over)."""
        assert self._process is not None and self._process.stdout is not None
        stdout, seen = self._process.stdout.fileno(), b""
        deadline = time.monotonic() + self.START_TIMEOUT
        while not seen.endswith(b"ready\n"):
            left = deadline - time.monotonic()
            chunk = os.read(stdout, 4096) if left > 0 and select.select([stdout], [], [], left)[0] else None
            if not chunk:
                why = "stopped" if chunk == b"" else f"was not ready within {self.START_TIMEOUT:g} s"
                raise sandbox.SandboxError(f"the kernel server {why} (its error output is in the grader's log)")
            seen = (seen + chunk)[-4096:]
        self._process.stdout.close()

    def alive(self) -> bool:
        """Whether the server still runs (a kernel may have killed it: its sandbox then ended with it)."""
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Stop the server and everything in its sandbox, unmount and remove the socket folder, give the slot back."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()  # bubblewrap: its PID namespace, the whole sandbox, ends with it
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()  # (closed once ready)
            self._process = None
        if self._limits is not None:
            self._limits.__exit__(None, None, None)
            self._limits = None
        if self._lease is not None and self.spec.uid is not None:
            sandbox.clear_user(self.spec.uid)  # what was still dying when the sandbox ended
        if self._mounted:
            _unmount(self.runtime)
            self._mounted = False
        shutil.rmtree(self.runtime, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        if self._lease is not None:
            self._lease.release()
            self._lease = None


#: The kernel servers shared by the kernels started in a :func:`shared_kernel_servers` block, by sandbox settings.
_shared_servers: dict[str, KernelServer] | None = None


@contextlib.contextmanager
def shared_kernel_servers() -> t.Iterator[None]:
    """Within the block, kernels with the same sandbox settings come from one kernel server (started by the first of
    them, started again if a kernel killed it) instead of one server each: the grading worker's one sandbox per
    submission. The servers are closed at the end of the block."""
    global _shared_servers
    previous, _shared_servers = _shared_servers, {}
    try:
        yield
    finally:
        servers, _shared_servers = _shared_servers, previous
        for server in servers.values():
            server.close()


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in a sandbox, forked there by a :class:`KernelServer`.

    The sandbox is ``c.SandboxKernelManager.sandbox``, a :class:`~tools.grading.sandbox.SandboxSpec` as JSON
    (:func:`~tools.grading.sandbox.spec_to_json`): nbclient creates its kernel manager with the notebook client's
    configuration, so the grader passes it in the configuration of ``nbgrader autograde``. When it is empty, the class
    attribute ``spec`` (deprecated: process-wide), else :func:`default_spec`.

    The kernel comes from the block's shared server inside :func:`shared_kernel_servers`, else from a server of its
    own, closed with it. The process jupyter_client starts and watches is the server's client
    (``kernel_server.py connect``): it hands the kernel its standard streams (the submission as a tar archive on
    standard input), waits for its end, and killing it kills the kernel. Kernel and nbgrader talk through Unix sockets
    in the server's socket folder.
    """

    spec: t.ClassVar[sandbox.SandboxSpec | None] = None

    # (in the methods, `sandbox` is still the module: only `self.sandbox` is this setting)
    sandbox = Unicode("", config=True, help="The kernels' sandbox, as JSON (tools.grading.sandbox.spec_to_json); "
                                            "empty: SandboxKernelManager.spec when set, else default_spec()")
    #: What the kernel process may write to its own stdout and stderr (not the notebook's outputs: those go through
    #: ZeroMQ) before the rest is dropped; it reaches the grader's stderr (the worker's log).
    MAX_KERNEL_OUTPUT: t.ClassVar[int] = 64 << 10

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        if self.sandbox:
            self.spec = sandbox.spec_from_json(self.sandbox)
        elif type(self).spec is None:
            self.spec = default_spec()
        self.transport = "ipc"
        #: The server the kernel comes from (made when the kernel starts: a manager that never starts one has none).
        self.server: KernelServer | None = None
        self._own_server = False
        self._token = secrets.token_hex(5)
        self._plain_folder: Path | None = None  # without isolation: the kernel's sockets and home
        self._archive: t.IO[bytes] | None = None
        self._output: OutputRelay | None = None
        self._limits_context = None
        self._prefix: list[str] = []
        self._oom_mark = 0
        self.cgroup: sandbox.Cgroup | None = None

    def write_connection_file(self, **kwargs: t.Any) -> None:
        super().write_connection_file(**kwargs)
        if self.spec.uid is not None:  # the kernel runs as the sandbox user and must read it
            os.chown(self.connection_file, self.spec.uid, self.spec.uid)

    def kernel_sandbox(self) -> sandbox.SandboxSpec:
        """The sandbox of the next kernel: the configured one, with nbgrader's ``NBGRADER_EXECUTION`` when it is set
        (the notebooks pick their grading settings by it; nothing else of the grader's environment goes in)."""
        if not os.environ.get("NBGRADER_EXECUTION"):
            return self.spec
        return replace(self.spec, env={**self.spec.env, "NBGRADER_EXECUTION": os.environ["NBGRADER_EXECUTION"]})

    def _take_server(self) -> None:
        """The block's shared server for this sandbox (started when missing or dead), else one of the kernel's own."""
        if self.server is not None and self.server.alive():
            return  # a restart keeps its server
        if self.server is not None and self._own_server:
            self.server.close()
        key = sandbox.spec_to_json(self.spec)
        if _shared_servers is None:
            self.server, self._own_server = KernelServer(self.spec).start(), True
        else:
            server = _shared_servers.get(key)
            if server is None or not server.alive():
                if server is not None:
                    server.close()
                server = _shared_servers[key] = KernelServer(self.spec).start()
            self.server, self._own_server = server, False
        self.spec = self.server.spec  # with the slot it holds (its user)
        self.ip = str(self.server.runtime / f"k{self._token}")
        self.connection_file = str(self.server.runtime / f"{self._token}.json")

    async def _async_pre_start_kernel(self, **kw: t.Any) -> tuple[list[str], dict[str, t.Any]]:
        self.spec = self.kernel_sandbox()
        if self.spec.isolated:
            self._take_server()
        elif self._plain_folder is None:
            self._plain_folder = Path("/tmp") / f"lg-{self._token}"
            self._plain_folder.mkdir(mode=0o700)
            self.ip = str(self._plain_folder / "k")
            self.connection_file = str(self._plain_folder / "connection.json")
        self.kernel_spec.interrupt_mode = "message"  # a signal would reach the client, not the kernel
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        kw.pop("env", None)  # the sandbox builds its own environment
        if self.spec.isolated:
            if self._archive is not None:
                self._archive.close()
            self._archive = submission_archive(Path(kw.get("cwd") or os.getcwd()))
            kw["stdin"] = self._archive
        self._output = OutputRelay(self.MAX_KERNEL_OUTPUT)
        kw["stdout"] = kw["stderr"] = self._output.write_end
        return self._prefix + kernel_cmd, kw

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: t.Any) -> None:
        self._oom_mark = self._oom_kills()
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        finally:
            if self._output is not None:
                self._output.started()  # the kernel holds its end of the pipe now

    def _oom_kills(self) -> int:
        """The out-of-memory kills so far in the kernel's cgroup (its server's, shared by its sandbox's kernels)."""
        cgroup = self.server.cgroup if self.server is not None else self.cgroup
        return cgroup.oom_kills() if cgroup is not None else 0

    def oom_killed(self) -> bool:
        """Whether a process of the kernel's sandbox was killed for exceeding its memory since the kernel started."""
        return self._oom_kills() > self._oom_mark

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        if self.spec.isolated:
            assert self.server is not None
            return [sys.executable, "-I", "-S", str(SERVER_FILE), "connect", self.server.socket,
                    "-f", self.connection_file, *(extra_arguments or [])]
        # opted out: the kernel runs in nbgrader's folder, with the sandbox's environment and limits
        if self._limits_context is None:
            self._limits_context = sandbox.limited("kernel", self.spec.limits)
            self._prefix, self.cgroup = self._limits_context.__enter__()
        assert self._plain_folder is not None
        home = self._plain_folder / "home"
        home.mkdir(exist_ok=True)
        env = sandbox.environment(self.spec, datadir=str(self.spec.datadir), home=str(home), tmp=str(home))
        return ["env", "-i", *(f"{key}={value}" for key, value in env.items()), self.spec.python_inside, "-m",
                "ipykernel_launcher", "-f", self.connection_file, *(extra_arguments or [])]

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if restart:
            return
        if self._limits_context is not None:
            self._limits_context.__exit__(None, None, None)
            self._limits_context = None
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        if self.server is not None and self._own_server:
            self.server.close()
        self.server = None
        if self._plain_folder is not None:
            shutil.rmtree(self._plain_folder, ignore_errors=True)
            self._plain_folder = None


class OutputRelay:
    """A pipe for a kernel's own stdout and stderr, relayed to the grader's stderr up to ``limit`` bytes.

    Past the limit the rest is read and dropped (the kernel never blocks on it) and one line says so: whatever the
    submission writes to its file descriptors 1 and 2, the worker's log grows by at most ``limit`` bytes per kernel.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        read_end, self.write_end = os.pipe()
        self._thread = threading.Thread(target=self._relay, args=(read_end,), daemon=True)
        self._thread.start()

    def started(self) -> None:
        """Close this process's copy of the write end, once the kernel has its own (the relay ends with the kernel)."""
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1

    def _relay(self, read_end: int) -> None:
        relayed = 0
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                if relayed < self.limit:
                    kept = chunk[:self.limit - relayed]
                    relayed += len(chunk)
                    if relayed >= self.limit:
                        kept += f"\n[kernel output cut at {self.limit} bytes]\n".encode()
                    _write_all(2, kept)  # where the kernel's output went before: the grader's stderr


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]


def submission_archive(folder: Path) -> t.IO[bytes]:
    """The plain files and folders under ``folder`` as a tar archive in an anonymous temporary file, rewound.

    Links and special files are left out; every entry is readable by the sandbox user who unpacks it.
    """
    archive = tempfile.TemporaryFile()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(folder):
            for name in sorted(dirs) + sorted(files):
                path = Path(root) / name
                if path.is_symlink() or not (path.is_dir() or path.is_file()):
                    continue
                info = tar.gettarinfo(path, arcname=path.relative_to(folder).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isdir():
                    tar.addfile(info)
                else:
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
            dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    archive.seek(0)
    return archive


_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _mount_tmpfs(path: Path, size: int, uid: int) -> None:
    """Mount a tmpfs of ``size`` bytes, owned by ``uid``, on ``path`` (root only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size},nr_inodes=64,mode=0700,uid={uid},gid={uid}".encode()
    if libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options) != 0:
        error = ctypes.get_errno()
        raise sandbox.SandboxError(f"cannot mount the kernel's socket folder {path} as a tmpfs: "
                                   f"{os.strerror(error)}")


def _unmount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(str(path).encode(), _MNT_DETACH)


def _unmount_stale(uid: int) -> None:
    """Unmount the socket folders of ``uid`` left by a grader killed before its cleanup (its slot is ours now)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        target, options = fields[4], fields[-1]
        if target.startswith("/tmp/lg-") and " - tmpfs " in line and f"uid={uid}," in f"{options},":
            _unmount(Path(target))
            shutil.rmtree(target, ignore_errors=True)


class SandboxedExecute(Execute):
    """nbgrader's Execute preprocessor with the kernel in the sandbox, and a dead kernel ending only its notebook.

    When the kernel dies (memory limit, a student's ``os._exit``), the cell that was running and every later cell
    get an error output instead of aborting the whole submission: their tests score 0 and the other notebooks are
    graded as usual.

    In a test cell, only an exception fails the test: nbgrader would also give 0 for any text on stderr, so a
    warning printed by a library (a deprecation, a progress bar's notice) would cost a correct answer its points.
    Such text is kept in the output, on stdout, marked ``[stderr]``.

    Outputs are bounded as the kernel's messages arrive (:mod:`tools.grading.outputs`): per cell, per notebook, per
    message; a cell whose output was cut ends with a one-line note. Widget messages are ignored (no widget state is
    kept), and a late output after a cell's reply never fails the cell (``raise_on_iopub_timeout`` is off: a message
    refused for its size can take the kernel's "idle" status with it).
    """

    cell_output_limit = Integer(outputs.OutputLimits.cell_bytes,
                                help="Characters of output kept per cell (text and rich data).").tag(config=True)
    notebook_output_limit = Integer(outputs.OutputLimits.notebook_bytes,
                                    help="Characters of output kept per notebook.").tag(config=True)
    probe_output_limit = Integer(outputs.OutputLimits.probe_cell_bytes,
                                 help="Characters of probe data kept per probe cell.").tag(config=True)
    message_limit = Integer(outputs.OutputLimits.message_bytes,
                            help="Largest message (bytes) accepted from the kernel.").tag(config=True)
    raise_on_iopub_timeout = Bool(False, help="Fail a cell whose outputs end after its reply (off: see above).")

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)
        self._dead_reason: str | None = None
        self._budget = outputs.OutputBudget(self.output_limits())

    def output_limits(self) -> outputs.OutputLimits:
        """The output bounds of this preprocessor's settings."""
        return outputs.OutputLimits(cell_bytes=self.cell_output_limit, notebook_bytes=self.notebook_output_limit,
                                    probe_cell_bytes=self.probe_output_limit, message_bytes=self.message_limit)

    def reset_execution_trackers(self) -> None:
        """A new notebook: a fresh output budget, and a live kernel."""
        super().reset_execution_trackers()
        self._dead_reason = None
        self._budget = outputs.OutputBudget(self.output_limits())

    async def async_start_new_kernel_client(self) -> t.Any:
        """nbclient's client start, with every socket and channel bounded (:func:`tools.grading.outputs.limit_client`)
        before it connects."""
        assert self.km is not None
        try:
            self.kc = self.km.client()
            outputs.limit_client(self.kc, self.output_limits())
            await ensure_async(self.kc.start_channels())
            await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
        except Exception:
            await self._async_cleanup_kernel()
            raise
        self.kc.allow_stdin = False
        await run_hook(self.on_notebook_start, notebook=self.nb)
        return self.kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int) -> NotebookNode | None:
        """nbclient's message handling, after the output budget: outputs cut or dropped, widget messages ignored."""
        kind = msg.get("msg_type", "")
        content = msg.get("content")
        if not isinstance(content, dict):
            return None
        if outputs.DROPPED in content:  # a message refused for its size
            self._budget.dropped_message()
            return None
        if kind.startswith("comm"):
            return None
        if kind == "clear_output":
            self._budget.clear()
        elif kind in outputs.OUTPUT_MESSAGES:
            if self._budget.admit(msg, probe_cell=cell.metadata.get(outputs.PROBE_FLAG) is True) is None:
                return None
        return super().process_message(msg, cell, cell_index)

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> NotebookNode:
        if self._dead_reason is not None:
            if cell.cell_type == "code":
                cell.outputs = [_error_output("KernelDied", f"not run: {self._dead_reason}")]
            return cell
        self._budget.start_cell()
        refused = outputs.refused_messages(self.kc)
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            for _ in range(outputs.refused_messages(self.kc) - refused):
                self._budget.dropped_message()
            note = self._budget.note()
            if note is not None:
                cell.outputs.append(note)
        except DeadKernelError:
            oom = isinstance(self.km, SandboxKernelManager) and self.km.oom_killed()
            self._dead_reason = ("the kernel was stopped at the sandbox's memory limit" if oom
                                 else "the kernel died in an earlier cell")
            cell.outputs = list(cell.get("outputs", [])) + [
                _error_output("KernelDied", "the kernel stopped while running this cell"
                              + (" (memory limit of the sandbox)" if oom else ""))]
            return cell
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            for output in cell.outputs:
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
                    output.text = "".join(f"[stderr] {line}" for line in output.text.splitlines(keepends=True))
        return cell

    execute_cell = run_sync(async_execute_cell)  # nbclient binds its own coroutine otherwise


def autograde_preprocessors() -> list[type]:
    """nbgrader's autograde preprocessors with :class:`SandboxedExecute` in place of ``Execute``, between the judge's
    :class:`~tools.grading.verdicts.InsertProbes` (before) and :class:`~tools.grading.verdicts.JudgeVerdicts` (after),
    and :class:`~tools.grading.sanitize.SanitizeSubmission` just before ``SaveAutoGrades``.
    """
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import SaveAutoGrades

    from tools.grading.sanitize import SanitizeSubmission
    from tools.grading.verdicts import InsertProbes, JudgeVerdicts

    defaults = Autograde.class_traits()["autograde_preprocessors"].default()
    out = []
    for cls in defaults:
        if cls is SaveAutoGrades:  # the autograded notebook, as saved and rendered, is inert
            out.append(SanitizeSubmission)
        out += [InsertProbes, SandboxedExecute, JudgeVerdicts] if cls is Execute else [cls]
    return out


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
