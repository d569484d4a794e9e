"""Consumer-driven contracts (Pact V4) for every boundary of Portico, and their runner.

`python -m contracts` (`make contracts`) runs the consumer tests (they write `pacts/`), then
verifies every pact against its provider running for real, prints the consumer x provider
matrix and writes it to `var/contracts/matrix.json`. See contracts/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

# The Pact core otherwise tries to send usage analytics; set before pact is imported.
os.environ.setdefault("PACT_DO_NOT_TRACK", "true")

PACT_DIR = Path(__file__).with_name("pacts")
MATRIX_PATH = Path("var/contracts/matrix.json")

__all__ = ["MATRIX_PATH", "PACT_DIR"]
