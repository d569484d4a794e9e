"""In-memory orders with the SQL adapter's behaviour, for fast use-case and saga tests.

Claims and saves are conditional, as the SQL UPDATEs are: a lease held by another runner, or
a version that moved, makes them change nothing and answer False. Orders are copied in and out
(they are mutable), so a unit of work that is not committed leaves the store as it was.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chassis.eventstore import ConcurrencyConflict, RecordedEvent, format_time
from chassis.messaging import Event

from ..domain import DomainEvent, Order, Status, Step
from .eventlog import UPCASTERS
from .repository import (
    AGE_BUCKETS,
    OLDEST_BUCKET,
    AbstractOrderRepository,
    DuplicateKey,
    StoredOrder,
)

__all__ = ["MemoryOrderRepository", "MemoryStore"]


@dataclass
class _Row:
    order: Order
    key: str
    fingerprint: str
    next_attempt_at: float
    lease_owner: str | None = None
    lease_until: float | None = None
    traceparent: str | None = None


@dataclass
class MemoryStore:
    """The "database": orders with their saga state, the event log and the outbox."""

    rows: dict[str, _Row] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)
    events: list[RecordedEvent] = field(default_factory=list)

    def copy(self) -> MemoryStore:
        return copy.deepcopy(self)


class MemoryOrderRepository(AbstractOrderRepository):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.touched: set[str] = set()  # the orders this repository changed

    async def add(
        self,
        order: Order,
        *,
        key: str,
        fingerprint: str,
        now: float,
        traceparent: str | None = None,
    ) -> None:
        rows = self.store.rows.values()
        if order.id in self.store.rows or any(
            r.order.owner == order.owner and r.key == key for r in rows
        ):
            raise DuplicateKey(key)
        self.store.rows[order.id] = _Row(
            copy.deepcopy(order), key, fingerprint, now, traceparent=traceparent
        )
        self.touched.add(order.id)

    @staticmethod
    def _stored(row: _Row) -> StoredOrder:
        return StoredOrder(
            copy.deepcopy(row.order),
            row.fingerprint,
            row.next_attempt_at,
            row.lease_owner,
            row.lease_until,
            row.traceparent,
        )

    async def get(self, order_id: str) -> StoredOrder | None:
        row = self.store.rows.get(order_id)
        return self._stored(row) if row else None

    async def get_by_key(self, owner: str, key: str) -> StoredOrder | None:
        for row in self.store.rows.values():
            if row.order.owner == owner and row.key == key:
                return self._stored(row)
        return None

    async def list_for(
        self,
        owner: str | None,
        *,
        status: Status | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Order]:
        found = [
            r.order
            for r in self.store.rows.values()
            if (owner is None or r.order.owner == owner)
            and (status is None or r.order.status is status)
            and (before is None or (r.order.created_at, r.order.id) < before)
        ]
        found.sort(key=lambda o: (o.created_at, o.id), reverse=True)
        return [copy.deepcopy(o) for o in found[:limit]]

    async def due(self, now: float, limit: int) -> list[str]:
        found = [
            r
            for r in self.store.rows.values()
            if r.order.step is not Step.DONE
            and r.next_attempt_at <= now
            and (r.lease_until is None or r.lease_until < now)
        ]
        found.sort(key=lambda r: r.next_attempt_at)
        return [r.order.id for r in found[:limit]]

    async def claim(self, order_id: str, owner: str, now: float, until: float) -> bool:
        row = self.store.rows.get(order_id)
        if row is None or row.order.step is Step.DONE:
            return False
        if not (row.lease_until is None or row.lease_until < now or row.lease_owner == owner):
            return False
        row.lease_owner, row.lease_until = owner, until
        self.touched.add(order_id)
        return True

    async def save(
        self,
        order: Order,
        *,
        expected_version: int,
        lease_owner: str,
        next_attempt_at: float,
        lease_until: float | None,
        lines_changed: bool = False,
    ) -> bool:
        row = self.store.rows.get(order.id)
        if row is None or row.order.version != expected_version or row.lease_owner != lease_owner:
            return False
        order.version = expected_version + 1
        stored = copy.deepcopy(order)
        if not lines_changed:
            stored.lines = row.order.lines  # as SQL: prices are written only when they change
        row.order = stored
        row.next_attempt_at = next_attempt_at
        row.lease_owner = lease_owner if lease_until is not None else None
        row.lease_until = lease_until
        self.touched.add(order.id)
        return True

    async def add_events(
        self, order: Order, events: list[DomainEvent], *, cause: str | None = None
    ) -> int:
        log = self.store.events
        start = order.stream_version - len(events)
        if any(e.stream == order.id and e.version > start for e in log):
            raise ConcurrencyConflict(order.id, start)
        for version, e in enumerate(events, start=start + 1):
            recorded = RecordedEvent(
                position=len(log) + 1,
                stream=order.id,
                version=version,
                type=e.type,
                schema_version=UPCASTERS.current(e.type),
                data=dict(e.data),
                occurred_at=format_time(order.updated_at),
                cause=cause,
                id=uuid.uuid4().hex,
            )
            log.append(recorded)
            self.store.outbox.append(recorded.message(order.correlation_id))
        return len(events)

    async def history(self, order_id: str) -> list[RecordedEvent]:
        return [e for e in self.store.events if e.stream == order_id]

    async def feed(self, after: int, limit: int) -> tuple[list[RecordedEvent], int]:
        return self.store.events[after : after + limit], len(self.store.events)

    async def pending(self, now: datetime) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for row in self.store.rows.values():
            if row.order.step is Step.DONE:
                continue
            name = next(
                (
                    n
                    for n, age in AGE_BUCKETS
                    if row.order.step_since > now - timedelta(seconds=age)
                ),
                OLDEST_BUCKET,
            )
            key = (row.order.step.value, name)
            found[key] = found.get(key, 0) + 1
        return found

    async def release_leases(self, owner: str) -> int:
        held = [r for r in self.store.rows.values() if r.lease_owner == owner]
        for row in held:
            row.lease_owner = row.lease_until = None
            self.touched.add(row.order.id)
        return len(held)
