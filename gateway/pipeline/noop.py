"""`noop`: a policy that does nothing, for the bench's "gateway + 3 no-op policies" row and as
the smallest example of the API (it continues at once, so the chain stays inline)."""

from __future__ import annotations

from .exchange import Exchange
from .policy import Policy, Verdict

__all__ = ["NoOp"]


class NoOp(Policy):
    name = "noop"

    def on_request(self, ex: Exchange) -> Verdict:
        return None
