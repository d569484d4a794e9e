"""The simulated payment provider, inside the service, driven by test payment-method tokens
the way real providers' test modes are:

    pm_card_ok        approved
    pm_card_declined  declined (card_declined)      -> 402 to the client
    pm_card_error     provider outage (raises)      -> 503, retry with the same key
    pm_card_slow      approved after `slow_delay`   (timeouts and concurrent retries)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProviderResult", "ProviderUnavailable", "SimulatedProvider"]


class ProviderUnavailable(Exception):
    """The provider could not be reached or failed; nothing was charged. Retryable."""


@dataclass(frozen=True)
class ProviderResult:
    approved: bool
    reference: str
    decline_code: str | None = None


class SimulatedProvider:
    def __init__(self, slow_delay: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.slow_delay = slow_delay
        self.sleep = sleep

    def charge(
        self, key: str, payment_method: str, amount_cents: int, currency: str
    ) -> ProviderResult:
        """Authorize and capture at once (the saga needs no separate capture step)."""
        reference = f"sim_{uuid.uuid4().hex[:16]}"
        if payment_method == "pm_card_error":
            raise ProviderUnavailable("simulated provider outage")
        if payment_method == "pm_card_slow":
            self.sleep(self.slow_delay)
        if payment_method == "pm_card_declined":
            return ProviderResult(False, reference, "card_declined")
        return ProviderResult(True, reference)
