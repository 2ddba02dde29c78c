"""Notebook kernels that run in the sandbox, for nbgrader's autograding.

nbgrader (trusted, outside) drives the kernel over ZeroMQ; the kernel process (the submission's code) runs inside
:mod:`tools.grading.sandbox`. Since the sandbox has no network, the two talk through Unix sockets (ZeroMQ's ``ipc``
transport) in a private folder bound into the sandbox at the same path. The kernel works on a copy of the
submission in the sandbox's tmpfs home: whatever it writes stays there and disappears with it; nbgrader writes the
graded notebooks itself, from the kernel's messages. Interrupts (the per-cell timeout) go as messages, not signals,
since the kernel is not a child of the grader.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as t
from dataclasses import replace
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute

from tools.grading import sandbox

REPO = Path(__file__).resolve().parents[2]

#: Where the submission's copy lives inside the sandbox (the kernel's working directory).
WORKDIR = f"{sandbox.HOME}/submission"
#: Where the submission folder is bound read-only, to be copied to WORKDIR.
SOURCE = "/srv/submission"


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
    return sandbox.SandboxSpec(python=python, datadir=Path(datadir),
                               isolated=os.environ.get("LABCODE_GRADING_NO_SANDBOX") != "1")


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in a sandbox: the class attribute ``spec``, else :func:`default_spec`."""

    spec: t.ClassVar[sandbox.SandboxSpec | None] = None

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        if self.spec is None:
            self.spec = default_spec()
        self._runtime = Path(tempfile.mkdtemp(prefix="lg-", dir="/tmp"))  # short: Unix socket paths are limited
        os.chmod(self._runtime, 0o700)
        if self.spec.uid is not None:
            os.chown(self._runtime, self.spec.uid, self.spec.uid)
        self.transport = "ipc"
        self.ip = str(self._runtime / "k")
        self.connection_file = str(self._runtime / "connection.json")
        self._limits_context = None
        self._prefix: list[str] = []
        self.cgroup: sandbox.Cgroup | None = None

    def write_connection_file(self, **kwargs: t.Any) -> None:
        super().write_connection_file(**kwargs)
        if self.spec.uid is not None:  # the kernel runs as the sandbox user and must read it
            os.chown(self.connection_file, self.spec.uid, self.spec.uid)

    async def _async_pre_start_kernel(self, **kw: t.Any) -> tuple[list[str], dict[str, t.Any]]:
        self.kernel_spec.interrupt_mode = "message"  # a signal would reach bubblewrap, not the kernel
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        kw.pop("env", None)  # the sandbox builds its own environment
        return self._prefix + kernel_cmd, kw

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        if os.environ.get("NBGRADER_EXECUTION"):  # the notebooks pick their grading settings by it
            grading = {"NBGRADER_EXECUTION": os.environ["NBGRADER_EXECUTION"]}
            self.spec = replace(self.spec, env={**self.spec.env, **grading})
        if self._limits_context is None:
            self._limits_context = sandbox.limited("kernel", self.spec.limits)
            self._prefix, self.cgroup = self._limits_context.__enter__()
        kernel = [self.spec.python_inside, "-m", "ipykernel_launcher", "-f", self.connection_file,
                  *(extra_arguments or [])]
        if not self.spec.isolated:  # opted out: the kernel runs in nbgrader's folder, with the same environment
            home = self._runtime / "home"
            home.mkdir(exist_ok=True)
            env = sandbox.environment(self.spec, datadir=str(self.spec.datadir), home=str(home), tmp=str(home))
            return ["env", "-i", *(f"{key}={value}" for key, value in env.items()), *kernel]
        source = Path(self._launch_args.get("cwd") or os.getcwd())
        inner = ["sh", "-c", f'mkdir {WORKDIR} && cp -R {SOURCE}/. {WORKDIR}/ && cd {WORKDIR} && exec "$@"',
                 "sandbox-kernel", *kernel]
        binds = [(source, SOURCE, False), (self._runtime, str(self._runtime), True)]
        return sandbox.bwrap_command(self.spec, inner, binds=binds, cwd=sandbox.HOME)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._limits_context is not None and not restart:
            self._limits_context.__exit__(None, None, None)
            self._limits_context = None
        if not restart:
            shutil.rmtree(self._runtime, ignore_errors=True)


class SandboxedExecute(Execute):
    """nbgrader's Execute preprocessor with the kernel in the sandbox, and a dead kernel ending only its notebook.

    When the kernel dies (memory limit, a student's ``os._exit``), the cell that was running and every later cell
    get an error output instead of aborting the whole submission: their tests score 0 and the other notebooks are
    graded as usual.

    In a test cell, only an exception fails the test: nbgrader would also give 0 for any text on stderr, so a
    warning printed by a library (a deprecation, a progress bar's notice) would cost a correct answer its points.
    Such text is kept in the output, on stdout, marked ``[stderr]``.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)
        self._dead_reason: str | None = None

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> NotebookNode:
        if self._dead_reason is not None:
            if cell.cell_type == "code":
                cell.outputs = [_error_output("KernelDied", f"not run: {self._dead_reason}")]
            return cell
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            cgroup = getattr(self.km, "cgroup", None)
            oom = cgroup is not None and cgroup.oom_killed()
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
    """nbgrader's autograde preprocessors with :class:`SandboxedExecute` in place of ``Execute``."""
    from nbgrader.converters import Autograde

    defaults = Autograde.class_traits()["autograde_preprocessors"].default()
    return [SandboxedExecute if cls is Execute else cls for cls in defaults]


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
