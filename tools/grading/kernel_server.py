"""A kernel server for the sandbox: it imports the notebooks' stack once, then forks a fresh kernel for each notebook.

Most of what a kernel costs before its first cell does anything of its own is imports: ipykernel, PyTorch, NumPy and
matplotlib. A submission's notebooks are graded one after the other in one sandbox whose first process, this server,
has imported that stack (third-party code only: never the submission's nor the course's); each kernel is a child
forked from it, so it starts with the imports done.

Each kernel still starts clean: when a kernel ends, the server kills every other process of the sandbox (what the
kernel left running) and empties the home folder and ``/tmp``; the next child unpacks its own copy of the submission,
reseeds the random generators and becomes the kernel. When nbgrader stops it, it exits at once: tearing down an
interpreter that imported PyTorch takes longer than many cells, and nothing of the kernel outlives it anyway.
(``python -m benchmarks.bench_grading`` times grading as a whole.)

One file, two roles, standard library only (each runs with nothing of the course importable):

- ``python -c <this file's text> serve WORKDIR`` in the sandbox (:class:`tools.grading.kernel.KernelServer`
  starts it): accepts connections on the listening Unix socket it gets as standard input (its path is a folder of
  the grader's that the sandbox does not show, so no kernel can remove it) and says ``ready`` on its standard
  output once its imports are done;
- ``python -I -S kernel_server.py connect SOCKET [KERNEL ARGS]...`` outside, as the kernel process that
  jupyter_client starts and watches: it hands the server its standard input (the submission as a tar archive),
  output and error (where the kernel writes), waits for the kernel's end and exits with its status. Killing it kills
  the kernel.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys

#: What the server imports before it forks any kernel: what every notebook's setup cell imports, and the kernel.
PRELOAD = ("numpy", "torch", "PIL.Image", "matplotlib.pyplot", "matplotlib_inline.backend_inline", "IPython",
           "IPython.display", "ipykernel.ipkernel", "ipykernel.kernelapp")

#: The most the client reads of the server's answer (``{"exit": status}`` and a newline).
ANSWER_BYTES = 256

#: The folders a kernel may write to, emptied before each kernel starts.
SCRATCH = ("/tmp", os.environ.get("HOME", "/home/student"))


# --------------------------------------------------------------------------------------------------------------------
# Inside the sandbox: the server
# --------------------------------------------------------------------------------------------------------------------

def serve(workdir: str) -> None:
    """Import :data:`PRELOAD`, then start one kernel per connection on the listening socket of standard input, one at
    a time."""
    listener = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # the working directory is the kernel's business, not the server's
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    print("ready", flush=True)
    os.dup2(2, 1)  # nothing more for the grader to read: whatever else the server prints joins its error output
    while True:
        connection, _ = listener.accept()
        with connection:
            _serve_one(connection, listener, workdir)


def _serve_one(connection: socket.socket, listener: socket.socket, workdir: str) -> None:
    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    if len(fds) != 3 or not message.endswith(b"\n"):
        for fd in fds:
            os.close(fd)
        return
    argv = json.loads(message)["argv"]
    pid = os.fork()
    if pid == 0:
        listener.close()
        connection.close()
        _become_kernel(fds, argv, workdir)  # never returns
    for fd in fds:
        os.close(fd)
    status = _wait(pid, connection)
    if status is not None:
        connection.sendall(json.dumps({"exit": status}).encode() + b"\n")
    _reset()  # what the kernel left behind, before the next one starts


def _wait(pid: int, connection: socket.socket) -> int | None:
    """The kernel's exit status; ``None`` when the client went away first (the kernel is then killed)."""
    watched = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([watched, connection], [], [])
        if watched not in ready:  # the client closed the connection: it was killed, and so is the kernel
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        os.close(watched)


def _reset() -> None:
    """Kill every process of the sandbox but this one (and bubblewrap's init), then empty the scratch folders (but
    the folder of the kernels' sockets, mounted there)."""
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)  # every process this user may signal in the sandbox's PID namespace, at once
        except OSError:  # none left to signal
            pass
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
        if not others:
            break
        select.select([], [], [], 0.01)
    for folder in SCRATCH:
        for entry in os.scandir(folder):
            if os.path.ismount(entry.path):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=_writable_then_retry)
            else:
                os.unlink(entry.path)


def _writable_then_retry(function, path: str, _info) -> None:
    """``rmtree``'s error handler: a folder a kernel made unreadable or unwritable is opened up, then removed."""
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        shutil.rmtree(path, onerror=_writable_then_retry)
    else:
        function(path)


def _become_kernel(fds: list[int], argv: list[str], workdir: str) -> None:
    """The forked child: unpack the submission into ``workdir``, then run ipykernel with ``argv``; exit with it."""
    code = 1
    try:
        archive, stdout, stderr = fds
        os.setsid()
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.makedirs(workdir)
        subprocess.run(["tar", "-x", "-f", "-", "-C", workdir, "--no-same-owner"], stdin=archive, check=True)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd in (archive, stdout, stderr, null):
            os.close(fd)
        os.chdir(workdir)
        random.seed()  # a fresh process would have drawn its own seeds
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        from ipykernel import kernelapp

        sys.argv = ["ipykernel", *argv]
        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported on the kernel's stderr, then the exit status says it
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream: nothing left to say
                pass
        os._exit(code)


# --------------------------------------------------------------------------------------------------------------------
# Outside: the kernel process that jupyter_client starts
# --------------------------------------------------------------------------------------------------------------------

def connect(path: str, argv: list[str]) -> int:
    """Ask the server at ``path`` for a kernel with ``argv``, with this process's three standard streams; its status.

    Returns 1 when the server is gone before the kernel ends (the sandbox then ended with it), or answers anything but
    its one short line: the server runs in the sandbox, where a kernel may have tampered with it.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.connect(path)
        socket.send_fds(server, [json.dumps({"argv": argv}).encode() + b"\n"], [0, 1, 2])
        for fd in (0, 1, 2):  # the kernel has them now: the relay of its output ends when the kernel does
            os.close(fd)
        answer = b""
        while len(answer) < ANSWER_BYTES and not answer.endswith(b"\n"):
            chunk = server.recv(ANSWER_BYTES - len(answer))
            if not chunk:
                break
            answer += chunk
    try:
        return int(json.loads(answer)["exit"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        serve(argv[1])
        return 0
    if len(argv) >= 2 and argv[0] == "connect":
        return connect(argv[1], argv[2:])
    print("usage: kernel_server.py serve WORKDIR | connect SOCKET [KERNEL ARGS]...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
