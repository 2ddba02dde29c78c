# Your copy of the course library: labcode/commands/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Thin command-line commands, one per module, each with ``main(argv) -> int`` (see ``labcode.commands.cli``)."""
