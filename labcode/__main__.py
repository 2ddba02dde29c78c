"""Entry point of ``python -m labcode``."""

import sys

from labcode.commands.cli import main

sys.exit(main())
