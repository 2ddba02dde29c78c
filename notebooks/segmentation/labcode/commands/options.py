# Your copy of the course library: labcode/commands/options.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""What the commands share for parsing: a parser whose errors are one line, and checked number types.

Each function below is an argparse ``type=``: it turns the text of an option into a number or raises
``argparse.ArgumentTypeError``, so a bad value is refused while parsing, before anything is loaded. With
:class:`ArgumentParser`, ``python -m labcode`` prints every parse error as one ``error: ...`` line (exit status 2),
e.g. ``error: --batch-size must be positive, got 0``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from labcode.errors import UsageError

_ARGUMENT = re.compile(r"argument ([^:/\s]+)(?:/\S+)?: (.*)", re.DOTALL)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising :class:`labcode.errors.UsageError` instead of printing the usage and exiting.

    ``labcode.commands.cli`` prints the error as one line and exits with status 2; ``--help`` is unchanged.
    """

    def error(self, message: str):
        found = _ARGUMENT.fullmatch(message)
        if found:  # "argument --lr: must be ..." -> "--lr must be ..."
            message = f"{found.group(1)} {found.group(2)}"
        raise UsageError(f"{message} (see {self.prog} --help)")


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """Type of an integer option that must be ``>= minimum``."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            need = {0: "zero or positive", 1: "positive"}.get(minimum, f"at least {minimum}")
            raise argparse.ArgumentTypeError(f"must be {need}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
             ) -> Callable[[str], float]:
    """Type of a finite float option within ``[low, high]`` (either end excluded when ``*_open``)."""
    def parse(text: str) -> float:
        value = _number(text, float)
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            if high != math.inf:
                need = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            elif low == 0:
                need = "positive" if low_open else "zero or positive"
            else:
                need = f"{'greater than' if low_open else 'at least'} {low:g}"
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
#: Sides of training and cached images: at least 8 pixels.
image_side = int_at_least(8)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)
#: A share strictly between 0 and 1 (e.g. the validation hold-out).
open_ratio = float_in(0.0, 1.0, low_open=True, high_open=True)


def seed(text: str) -> int:
    """Type of a random seed: an integer from 0 to 2**32 - 1."""
    value = _number(text, int)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to {2**32 - 1}, got {value}")
    return value


def port(text: str) -> int:
    """Type of a TCP port number, 0 (any free port) to 65535."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535)")
    return value
