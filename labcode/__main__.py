"""Entry point of ``python -m labcode``."""

import sys

from labcode.cli import main

sys.exit(main())
