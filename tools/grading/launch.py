"""Start a sandbox: close inherited file descriptors, enter cgroups, set rlimits, then exec the command.

Run as ``python -I -S launch.py [--cgroup DIR]... [--rlimit NAME=VALUE]... -- COMMAND...`` (standard library only,
so that it starts in a few milliseconds). Doing this in a process of its own, rather than in a ``preexec_fn``, keeps
it safe in multi-threaded callers (the kernel manager) and independent of how the caller spawns processes: nothing
the grader has open (its gradebook, sockets, logs) reaches the sandboxed code.
"""

import os
import resource
import sys


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
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
