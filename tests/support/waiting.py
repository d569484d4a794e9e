"""The one way tests wait for state that has no event to await: poll a condition with a deadline.

`wait_until` (threads, subprocesses, HTTP) and `wait_until_async` (on the test's event loop)
call `condition` until it returns something truthy and hand that value back, so a wait can
also be the read ("the order, once it is CONFIRMED"). Past `timeout` seconds they raise
`WaitTimeout` (an AssertionError, so pytest reports it as a failed expectation) naming `what`.
`interval` is the pause between calls; with `max_interval` it doubles up to that bound
(back-off for polls that cross the network). Never a bare sleep: the deadline is the test's
only timing assumption, and a generous one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not come true in time (catch this one, not any AssertionError)."""


def _next(delay: float, max_interval: float | None) -> float:
    return delay if max_interval is None else min(delay * 2, max_interval)


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    max_interval: float | None = None,
) -> T:
    """`condition()`'s first truthy value; WaitTimeout naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)  # polling a condition with a deadline
        delay = _next(delay, max_interval)


async def wait_until_async(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    timeout: float,  # noqa: ASYNC109 - the deadline is this helper's job, as in wait_until
    what: str,
    *,
    interval: float = 0.02,
    max_interval: float | None = None,
) -> T:
    """As `wait_until`, on the running loop; `condition` may be sync or a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = interval
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(delay)  # polling a condition with a deadline
        delay = _next(delay, max_interval)
