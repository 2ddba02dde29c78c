# Your copy of the course library: labcode/errors.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Errors raised on bad input; the CLI prints them as one line without a traceback."""


class LabError(Exception):
    """Base class of the errors whose message is meant for the user (names the file or argument)."""


class DatasetError(LabError, ValueError):
    """A data set on disk is missing, incomplete or unreadable."""


class UsageError(LabError):
    """A command-line option is missing or has a bad value (raised while parsing)."""


class UnknownNameError(LabError, KeyError):
    """A registry (models, losses, weight strategies) was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, valid: "list[str] | tuple[str, ...]") -> UnknownNameError:
    """Build the registry error: ``unknown loss 'foo'; valid names: ce, dice, ...``."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(valid))}")


def user_message(error: BaseException) -> str:
    """The one-line message of ``error`` meant for the user.

    An error raised inside a ``DataLoader`` worker process reaches the main process re-created by PyTorch with the
    worker's whole traceback as its message (``Caught DatasetError in DataLoader worker process 0. Original
    Traceback ...``); the original message is its last line, after the error's type name.
    """
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        name = type(error).__name__
        for prefix in (f"{type(error).__module__}.{type(error).__qualname__}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix):]
    return text
