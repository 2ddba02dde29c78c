"""Thin command-line commands, one per module, each with ``main(argv) -> int`` (see ``labcode.commands.cli``)."""
