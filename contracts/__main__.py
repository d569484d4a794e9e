"""`python -m contracts [--publish] [--no-consumers]`: consumers, providers, the matrix.

Exit status 0 only when every interaction verifies and every derived boundary has a contract.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import MATRIX_PATH
from .runner import CONSUMERS, render, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts", description=__doc__)
    parser.add_argument(
        "--publish",
        action="store_true",
        default=os.environ.get("PUBLISH") == "1",
        help="also PUT the pacts to the Pact Broker at $PACT_BROKER_BASE_URL",
    )
    parser.add_argument(
        "--no-consumers", action="store_true", help="verify the pact files as they are"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(consumers=None if args.no_consumers else CONSUMERS, publish_to_broker=args.publish)
    print(render(report))
    print(f"matrix: {MATRIX_PATH} ({time.monotonic() - started:.1f} s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
