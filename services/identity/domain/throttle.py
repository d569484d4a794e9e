"""Throttling policy: at most `limit` events for one key within a sliding `window` (seconds).

Used for failed logins (key: username + client address) and for self-registrations (key: client
address). The events themselves are stored by the service layer, in the database, so every
worker counts the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Throttle"]


@dataclass(frozen=True)
class Throttle:
    limit: int = 5
    window: float = 300.0

    def retry_after(self, events: Sequence[float], now: float) -> int:
        """Seconds to wait before the next attempt (0: go ahead). `events` are timestamps."""
        recent = sorted(t for t in events if t > now - self.window)
        if len(recent) < self.limit:
            return 0
        # The attempt is allowed again once enough of the recent events have aged out.
        unblocks_at = recent[-self.limit] + self.window
        return max(1, math.ceil(unblocks_at - now))
