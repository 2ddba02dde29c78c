# Your copy of the course library: labcode/commands/cli.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode <command> ...``: one thin command per module of ``labcode.commands``.

Each command module has ``main(argv) -> int``; ``check`` is :mod:`labcode.check` itself, the students' self-check.
Errors meant for the user (``LabError``, missing files, bad options) are printed as one ``error: ...`` line with exit
status 2, also when they were raised in a data loader's worker process; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

from labcode.errors import LabError, user_message

#: command name -> (module holding ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("labcode.commands.synth", "generate a data set in the Stanford 2D-3D-S format"),
    "show": ("labcode.commands.show", "draw an image of the data set with its mask (and an augmented version)"),
    "stats": ("labcode.commands.stats", "class pixel histogram of some areas and the derived class weights"),
    "prepare": ("labcode.commands.prepare", "decode, resize and cache a data set for fast loading"),
    "models": ("labcode.commands.models", "print a model summary for a dummy batch"),
    "train": ("labcode.commands.train", "train a model, keep the best one by validation macro F1"),
    "export": ("labcode.commands.export", "export a checkpoint to ONNX and check it against PyTorch"),
    "test": ("labcode.commands.test", "evaluate a model on areas, or segment a single photo"),
    "view": ("labcode.commands.view", "open an ONNX graph in netron"),
    "slurm": ("labcode.commands.slurm", "write (and submit) a SLURM batch script for a training run"),
    "reference": ("labcode.commands.reference", "train and score the course's reference model (CPU recipe)"),
    "pipeline": ("labcode.commands.pipeline", "the whole lab on the offline data set: train, export, test, infer"),
    "serve": ("labcode.commands.serve", "serve an ONNX model behind a web API and page"),
    "check": ("labcode.check", "check your exercises with readable diagnostics"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m labcode <command> [options]   (python -m labcode <command> --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except (LabError, FileNotFoundError) as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
