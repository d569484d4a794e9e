"""Coarse timers for per-request deadlines: one loop timer per slot of `resolution` seconds.

Why: every proxied request bounds its wait for the upstream (and for Redis) with a timer that
is almost always cancelled a moment later. On uvloop a `call_at` + `cancel` pair costs 2-3 us
(a handle allocated, a libuv timer started and stopped): about 5% of the gateway's CPU per
request. Here a timer is an entry in the slot its deadline rounds up to, and the slot's one
loop timer fires what is left in it: under load that is a few hundred loop timers a second
instead of one per request. A timer fires at most `resolution` after its time, never before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "Timers"]

# Under this much before its time, a timer counts as due (the loop's own clock granularity).
_EARLY = 0.001


class Timer:
    """One scheduled callback; `cancel()` is a dict deletion."""

    __slots__ = ("_args", "_callback", "_slot", "when")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        slot: dict[Timer, None],
    ) -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self._slot: dict[Timer, None] | None = slot

    def cancel(self) -> None:
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.pop(self, None)

    def pending(self) -> bool:
        """Neither fired nor cancelled yet."""
        return self._slot is not None


class Timers:
    """`call_at` / `call_later` for many short-lived timers on one event loop."""

    __slots__ = ("_loop", "_resolution", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.005) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self._loop = loop
        self._resolution = resolution
        self._slots: dict[int, dict[Timer, None]] = {}

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self._loop.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        slot = self._slot(when)
        timer = Timer(when, callback, args, slot)
        slot[timer] = None
        return timer

    def _slot(self, when: float) -> dict[Timer, None]:
        key = int(when / self._resolution) + 1  # the slot's time is after `when`
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = {}
            self._loop.call_at(key * self._resolution, self._fire, key)
        return slot

    def _fire(self, key: int) -> None:
        slot = self._slots.pop(key, None)
        if not slot:
            return
        due = self._loop.time() + _EARLY
        for timer in list(slot):  # a callback may cancel others of this slot
            if timer._slot is not slot:
                continue
            if timer.when > due:  # the loop woke a little early: the same timer, re-armed
                again = timer._slot = self._slot(timer.when)
                again[timer] = None
                continue
            timer._slot = None
            try:
                timer._callback(*timer._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {"message": "timer callback failed", "exception": exc, "handle": timer}
                )
