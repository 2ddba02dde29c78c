"""Start a sandbox: close inherited file descriptors, enter cgroups, set rlimits, then exec the command.

Run as ``python -I -S launch.py [--cgroup DIR]... [--rlimit NAME=VALUE]... -- COMMAND...`` (standard library only,
so that it starts in a few milliseconds). Doing this in a process of its own, rather than in a ``preexec_fn``, keeps
it safe in multi-threaded callers (the kernel manager) and independent of how the caller spawns processes: nothing
the grader has open (its gradebook, sockets, logs) reaches the sandboxed code, and neither does its environment (the
command starts with an empty one; bubblewrap and ``env -i`` set the sandbox's own).

When COMMAND is bubblewrap (``bwrap OPTIONS... -- INNER...``), its OPTIONS go through an anonymous file read with
``--args FD`` instead of its command line: the sandbox's first process is bubblewrap, whose command line anyone
inside can read in ``/proc/1/cmdline``, and its options name host paths.
"""

import os
import resource
import sys

#: The environment bubblewrap (or ``env -i``) starts with: the sandbox's own is set by the command.
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def options_through_fd(command: list[str]) -> list[str]:
    """``bwrap --args FD -- INNER...`` with bubblewrap's options written to an inheritable anonymous file FD."""
    split = command.index("--")
    fd = os.memfd_create("bwrap-args", 0)  # no MFD_CLOEXEC: bubblewrap must inherit it (it closes it once read)
    os.write(fd, b"".join(arg.encode() + b"\0" for arg in command[1:split]))
    os.lseek(fd, 0, os.SEEK_SET)
    return [command[0], "--args", str(fd), *command[split:]]


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: launch.py [--cgroup DIR]... [--rlimit NAME=VALUE]... -- COMMAND...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--cgroup":
            with open(os.path.join(value, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        elif flag == "--rlimit":
            name, _, limit = value.partition("=")
            number = getattr(resource, f"RLIMIT_{name.upper()}")
            resource.setrlimit(number, (int(limit), int(limit)))
        else:
            sys.exit(f"launch.py: unknown option {flag}")
    if os.path.basename(command[0]) == "bwrap" and "--" in command:
        command = options_through_fd(command)
    os.execvpe(command[0], command, ENVIRONMENT)


if __name__ == "__main__":
    main(sys.argv[1:])
