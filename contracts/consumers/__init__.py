"""Consumer tests: each consumer's real client code makes its requests against Pact's mock
servers (or, for messages, its real handler consumes the example messages), and the pacts are
written into `contracts/pacts/`. Each module exposes `run(pact_dir) -> list[str]` (the pact
files written); a mismatch raises `ConsumerFailed` naming the consumer and interaction.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BOUNDARY", "ConsumerFailed", "label"]

BOUNDARY = "boundary"  # the V4 comment key naming the boundary item an interaction covers


class ConsumerFailed(Exception):
    """The consumer's own code did not do what its contract says."""


def label(interaction: Any, item: str) -> Any:
    return interaction.set_comment(BOUNDARY, item)
