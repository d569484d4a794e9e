"""Login throttling policy: N failures for one username from one address within a window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LoginThrottle"]


@dataclass(frozen=True)
class LoginThrottle:
    max_failures: int = 5
    window: float = 300.0

    def retry_after(self, failures: Sequence[float], now: float) -> int:
        """Seconds to wait before the next attempt (0: go ahead). `failures` are timestamps."""
        recent = sorted(t for t in failures if t > now - self.window)
        if len(recent) < self.max_failures:
            return 0
        # The attempt is allowed again once enough of the recent failures have aged out.
        unblocks_at = recent[-self.max_failures] + self.window
        return max(1, math.ceil(unblocks_at - now))
