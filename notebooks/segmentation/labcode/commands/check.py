# Your copy of the course library: labcode/commands/check.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode check`` (also ``python -m labcode.check``): check your exercises with readable diagnostics.

The checks live in :mod:`labcode.check`; this command passes its arguments on (``--help`` lists them).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from labcode.check import main as check_main

    return check_main(None if argv is None else list(argv))
