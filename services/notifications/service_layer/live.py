"""Live delivery: who is following whose notifications in this process, and waking them.

The store is the truth: a stream only ever sends what it reads from the notifications table
after its last id (`queries.notifications_after`), so a resumed or woken stream never loses
or invents one. This hub only says *when* to read: the event consumer (a thread) calls
`notify_threadsafe(owners)` once its transaction has committed, which wakes the streams of
those owners (and staff streams following everyone) on the event loop at once. A stream also
reads on its own every `poll` seconds: the fallback for notifications stored by *another*
notifications process (ADR 0035).

It also counts open streams per consumer (the connection limit) and ends every stream when
the process drains (`close_all`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

__all__ = ["Follower", "LiveHub", "TooManyStreams"]


class TooManyStreams(Exception):
    """This consumer already holds the most streams allowed (429)."""


class Follower:
    """One open stream: an event set when there may be something new (or when closing)."""

    __slots__ = ("consumer", "owner", "wake")

    def __init__(self, owner: str | None, consumer: str) -> None:
        self.owner = owner  # None: a staff stream, everyone's notifications
        self.consumer = consumer
        self.wake = asyncio.Event()


class LiveHub:
    def __init__(self, limit: int, heartbeat: float, poll: float) -> None:
        self.limit = limit
        self.heartbeat = heartbeat
        self.poll = poll
        self.closing = False
        self._by_owner: dict[str | None, set[Follower]] = {}
        self._open: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the streams run on (the app's), for wakes from the consumer thread."""
        self._loop = loop

    def open(self, owner: str | None, consumer: str) -> Follower:
        """Register a stream; TooManyStreams over the per-consumer limit."""
        if self._open.get(consumer, 0) >= self.limit:
            raise TooManyStreams(consumer)
        self._open[consumer] = self._open.get(consumer, 0) + 1
        follower = Follower(owner, consumer)
        self._by_owner.setdefault(owner, set()).add(follower)
        if self.closing:
            follower.wake.set()
        return follower

    def close(self, follower: Follower) -> None:
        left = self._open.get(follower.consumer, 0) - 1
        if left > 0:
            self._open[follower.consumer] = left
        else:
            self._open.pop(follower.consumer, None)
        followers = self._by_owner.get(follower.owner)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._by_owner[follower.owner]

    def open_count(self, consumer: str) -> int:
        return self._open.get(consumer, 0)

    def notify(self, owners: Iterable[str | None]) -> None:
        """Wake the streams that may see a notification of one of `owners` (loop thread)."""
        staff = self._by_owner.get(None, ())
        for follower in staff:
            follower.wake.set()
        for owner in set(owners):
            if owner is None:
                continue  # an owner not yet known: only staff streams can see it
            for follower in self._by_owner.get(owner, ()):
                follower.wake.set()

    def notify_threadsafe(self, owners: list[str | None]) -> None:
        """`notify` from another thread (the event consumer's), after its commit."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile, nobody is following any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.notify, owners)

    def close_all(self) -> None:
        """Draining or stopping: every stream ends (SSE: the body ends; WS: close 1001)."""
        self.closing = True
        for followers in self._by_owner.values():
            for follower in followers:
                follower.wake.set()
