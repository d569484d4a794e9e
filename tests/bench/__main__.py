"""Entry point: `python -m tests.bench [--rounds N] [--duration S] [--connections C] [--rows R]`."""

import sys

from .harness import main

sys.exit(main())
