# Your copy of the course library: labcode/__main__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Entry point of ``python -m labcode``."""

import sys

from labcode.commands.cli import main

sys.exit(main())
