"""Errors raised on bad input; the CLI prints them as one line without a traceback."""


class LabError(Exception):
    """Base class of the errors whose message is meant for the user (names the file or argument)."""


class DatasetError(LabError, ValueError):
    """A data set on disk is missing, incomplete or unreadable."""


class UnknownNameError(LabError, KeyError):
    """A registry (models, losses, weight strategies) was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, valid: "list[str] | tuple[str, ...]") -> UnknownNameError:
    """Build the registry error: ``unknown loss 'foo'; valid names: ce, dice, ...``."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(valid))}")
