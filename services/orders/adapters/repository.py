"""SQL storage for orders and their sagas, on one `AsyncConnection` per unit of work.

Claims and saves are conditional UPDATEs (`WHERE lease ... AND version = ...`), which both
SQLite and PostgreSQL execute atomically: two orders processes never both win a claim, and
a process whose lease ran out cannot overwrite the saga another one moved on.

The reads of one order (`read_order`, `read_order_by_key`) are functions of a blocking
`Connection`: the read endpoints run them through `chassis.db.reader` (no transaction, one
hop), a unit of work through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chassis.eventstore import NewEvent, RecordedEvent

from ..domain import DomainEvent, Line, Order, Status, Step
from .eventlog import STORE
from .orm import order_lines, order_traces, orders

__all__ = [
    "AGE_BUCKETS",
    "OLDEST_BUCKET",
    "AbstractOrderRepository",
    "DuplicateKey",
    "OrderRepository",
    "StoredOrder",
    "read_order",
    "read_order_by_key",
]

# Pending sagas are counted by how long their current step has lasted: (label, seconds).
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("lt_1m", 60.0),
    ("1m_5m", 300.0),
    ("5m_15m", 900.0),
    ("15m_1h", 3600.0),
)
OLDEST_BUCKET = "ge_1h"


class DuplicateKey(Exception):
    """The (owner, Idempotency-Key) pair is taken: a concurrent request stored its order."""


@dataclass(frozen=True)
class StoredOrder:
    order: Order
    fingerprint: str
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    traceparent: str | None = None  # of the request that placed it (chassis.tracing)


def _cents(value: Decimal | None) -> int | None:
    return None if value is None else int((value * 100).to_integral_value())


def _money(cents: int | None) -> Decimal | None:
    return None if cents is None else (Decimal(int(cents)) / 100).quantize(Decimal("0.01"))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _naive_if_sqlite(conn: AsyncConnection, value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def _stored(r: Row[Any], lines: list[Line], traceparent: str | None) -> StoredOrder:
    order = Order(
        id=r.id,
        owner=r.owner,
        payment_method=r.payment_method,
        lines=lines,
        status=Status(r.status),
        step=Step(r.step),
        currency=r.currency,
        total=_money(r.total_cents),
        reason=r.reason,
        payment_id=r.payment_id,
        attempts=r.attempts,
        last_error=r.last_error,
        created_at=_aware(r.created_at),
        updated_at=_aware(r.updated_at),
        version=r.version,
        correlation_id=r.correlation_id,
        stream_version=r.stream_version,
        step_since=_aware(r.step_since if r.step_since is not None else r.created_at),
    )
    return StoredOrder(
        order, r.fingerprint, r.next_attempt_at, r.lease_owner, r.lease_until, traceparent
    )


# An order, its trace and its lines (one row each, in order), for `_load_one`.
_ONE = (
    select(
        orders,
        order_traces.c.traceparent.label("line_traceparent"),
        order_lines.c.sku.label("line_sku"),
        order_lines.c.quantity.label("line_quantity"),
        order_lines.c.unit_price_cents.label("line_unit_price_cents"),
    )
    .select_from(
        orders.outerjoin(order_traces, order_traces.c.order_id == orders.c.id).outerjoin(
            order_lines, order_lines.c.order_id == orders.c.id
        )
    )
    .order_by(order_lines.c.position)
)
_BY_ID = _ONE.where(orders.c.id == bindparam("order_id"))
_BY_KEY = _ONE.where(
    orders.c.owner == bindparam("owner"), orders.c.idempotency_key == bindparam("key")
)


# The writes of an order and its saga, built once: values go in as parameters (a statement
# with its values inlined is traversed for its cache key and compiled on every call).
_INSERT_ORDER = insert(orders)
_INSERT_TRACE = insert(order_traces)
_INSERT_LINES = insert(order_lines)
_CLAIM = (
    update(orders)
    .where(
        orders.c.id == bindparam("b_id"),
        orders.c.step != Step.DONE.value,
        or_(
            orders.c.lease_until.is_(None),
            orders.c.lease_until < bindparam("b_now"),
            orders.c.lease_owner == bindparam("b_owner"),
        ),
    )
    .values(lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until"))
)
_SAVE = update(orders).where(
    orders.c.id == bindparam("b_id"),
    orders.c.version == bindparam("b_version"),
    orders.c.lease_owner == bindparam("b_lease_owner"),
)
_PRICE_LINE = (
    update(order_lines)
    .where(
        order_lines.c.order_id == bindparam("b_order_id"),
        order_lines.c.position == bindparam("b_position"),
    )
    .values(unit_price_cents=bindparam("b_unit_price_cents"))
)


def _one(rows: list[Row[Any]]) -> StoredOrder | None:
    """One order with its lines and trace from one query (a row per line): the reads by id
    and by key are the hot path, and each query is a round trip (or a hop to a thread)."""
    if not rows:
        return None
    lines = [
        Line(r.line_sku, r.line_quantity, _money(r.line_unit_price_cents))
        for r in rows
        if r.line_sku is not None
    ]
    return _stored(rows[0], lines, rows[0].line_traceparent)


def read_order(conn: Connection, order_id: str) -> StoredOrder | None:
    return _one(conn.execute(_BY_ID, {"order_id": order_id}).all())


def read_order_by_key(conn: Connection, owner: str, key: str) -> StoredOrder | None:
    return _one(conn.execute(_BY_KEY, {"owner": owner, "key": key}).all())


class AbstractOrderRepository(abc.ABC):
    """What the use cases and the saga need from storage; SQL here, in memory in
    `adapters/memory.py`. Claims and saves are conditional and answer whether they happened."""

    @abc.abstractmethod
    async def add(
        self,
        order: Order,
        *,
        key: str,
        fingerprint: str,
        now: float,
        traceparent: str | None = None,
    ) -> None:
        """Store a new order; raises DuplicateKey when the owner's key is taken."""

    @abc.abstractmethod
    async def get(self, order_id: str) -> StoredOrder | None: ...

    @abc.abstractmethod
    async def get_by_key(self, owner: str, key: str) -> StoredOrder | None: ...

    @abc.abstractmethod
    async def list_for(
        self,
        owner: str | None,
        *,
        status: Status | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Order]: ...

    @abc.abstractmethod
    async def due(self, now: float, limit: int) -> list[str]: ...

    @abc.abstractmethod
    async def claim(self, order_id: str, owner: str, now: float, until: float) -> bool: ...

    @abc.abstractmethod
    async def save(
        self,
        order: Order,
        *,
        expected_version: int,
        lease_owner: str,
        next_attempt_at: float,
        lease_until: float | None,
        lines_changed: bool = False,
    ) -> bool: ...

    @abc.abstractmethod
    async def add_events(
        self, order: Order, events: list[DomainEvent], *, cause: str | None = None
    ) -> int:
        """Append `events` (just emitted by `order`, which counts them in `stream_version`)
        to its stream and the outbox; `chassis.eventstore.ConcurrencyConflict` when another
        writer appended those versions first."""

    @abc.abstractmethod
    async def history(self, order_id: str) -> list[RecordedEvent]:
        """The order's events in version order (upcast); empty for an unknown order."""

    @abc.abstractmethod
    async def feed(self, after: int, limit: int) -> tuple[list[RecordedEvent], int]:
        """Events after a log position, in order, and the log's last position now."""

    @abc.abstractmethod
    async def pending(self, now: datetime) -> dict[tuple[str, str], int]:
        """Unfinished sagas by (step, age bucket of the step)."""

    @abc.abstractmethod
    async def release_leases(self, owner: str) -> int:
        """Give back every lease `owner` holds; how many there were."""


class OrderRepository(AbstractOrderRepository):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def _order_values(self, order: Order) -> dict[str, Any]:
        return {
            "status": order.status.value,
            "currency": order.currency,
            "total_cents": _cents(order.total),
            "reason": order.reason,
            "payment_id": order.payment_id,
            "updated_at": _naive_if_sqlite(self.conn, order.updated_at),
            "step": order.step.value,
            "attempts": order.attempts,
            "last_error": order.last_error,
            "stream_version": order.stream_version,
            "step_since": _naive_if_sqlite(self.conn, order.step_since),
        }

    async def add(
        self,
        order: Order,
        *,
        key: str,
        fingerprint: str,
        now: float,
        traceparent: str | None = None,
    ) -> None:
        values = {
            **self._order_values(order),
            "id": order.id,
            "owner": order.owner,
            "idempotency_key": key,
            "fingerprint": fingerprint,
            "payment_method": order.payment_method,
            "correlation_id": order.correlation_id,
            "created_at": _naive_if_sqlite(self.conn, order.created_at),
            "version": order.version,
            "next_attempt_at": now,
        }
        try:
            await self.conn.execute(_INSERT_ORDER, values)
        except IntegrityError as exc:
            raise DuplicateKey(key) from exc
        if traceparent is not None:
            await self.conn.execute(
                _INSERT_TRACE, {"order_id": order.id, "traceparent": traceparent}
            )
        await self.conn.execute(
            _INSERT_LINES,
            [
                {
                    "order_id": order.id,
                    "position": i,
                    "sku": ln.sku,
                    "quantity": ln.quantity,
                    "unit_price_cents": _cents(ln.unit_price),
                }
                for i, ln in enumerate(order.lines)
            ],
        )

    async def _load(self, rows: list[Row[Any]]) -> list[StoredOrder]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        lines: dict[str, list[Line]] = {i: [] for i in ids}
        stmt = (
            select(order_lines)
            .where(order_lines.c.order_id.in_(ids))
            .order_by(order_lines.c.order_id, order_lines.c.position)
        )
        for ln in await self.conn.execute(stmt):
            lines[ln.order_id].append(Line(ln.sku, ln.quantity, _money(ln.unit_price_cents)))
        traces = dict(
            (t.order_id, t.traceparent)
            for t in await self.conn.execute(
                select(order_traces).where(order_traces.c.order_id.in_(ids))
            )
        )
        return [_stored(r, lines[r.id], traces.get(r.id)) for r in rows]

    async def get(self, order_id: str) -> StoredOrder | None:
        return await self.conn.run_sync(read_order, order_id)

    async def get_by_key(self, owner: str, key: str) -> StoredOrder | None:
        return await self.conn.run_sync(read_order_by_key, owner, key)

    async def list_for(
        self,
        owner: str | None,
        *,
        status: Status | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Order]:
        """The owner's orders (everyone's for None), newest first, strictly after the `before`
        sort key."""
        c = orders.c
        stmt = select(orders).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        if owner is not None:
            stmt = stmt.where(c.owner == owner)
        if status is not None:
            stmt = stmt.where(c.status == status.value)
        if before is not None:
            at = _naive_if_sqlite(self.conn, before[0])
            stmt = stmt.where(or_(c.created_at < at, and_(c.created_at == at, c.id < before[1])))
        return [s.order for s in await self._load(list(await self.conn.execute(stmt)))]

    async def due(self, now: float, limit: int) -> list[str]:
        """Unfinished sagas whose retry time has come and that nobody holds."""
        c = orders.c
        stmt = (
            select(c.id)
            .where(
                c.step != Step.DONE.value,
                c.next_attempt_at <= now,
                or_(c.lease_until.is_(None), c.lease_until < now),
            )
            .order_by(c.next_attempt_at)
            .limit(limit)
        )
        return [r.id for r in await self.conn.execute(stmt)]

    async def claim(self, order_id: str, owner: str, now: float, until: float) -> bool:
        """Take the saga for `owner` until `until` if it is unfinished and free (or ours)."""
        params = {"b_id": order_id, "b_now": now, "b_owner": owner, "b_until": until}
        result = await self.conn.execute(_CLAIM, params)
        return result.rowcount == 1

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
        """Write the saga's new state if we still hold it and nobody moved it; bumps version.
        `lines_changed`: the step priced the lines, so their unit prices are written too."""
        params = {
            **self._order_values(order),
            "version": expected_version + 1,
            "next_attempt_at": next_attempt_at,
            "lease_owner": lease_owner if lease_until is not None else None,
            "lease_until": lease_until,
            "b_id": order.id,
            "b_version": expected_version,
            "b_lease_owner": lease_owner,
        }
        if (await self.conn.execute(_SAVE, params)).rowcount != 1:
            return False
        order.version = expected_version + 1
        if lines_changed and order.lines:
            await self.conn.execute(
                _PRICE_LINE,
                [
                    {
                        "b_order_id": order.id,
                        "b_position": i,
                        "b_unit_price_cents": _cents(ln.unit_price),
                    }
                    for i, ln in enumerate(order.lines)
                ],
            )
        return True

    async def add_events(
        self, order: Order, events: list[DomainEvent], *, cause: str | None = None
    ) -> int:
        """Append to the order's stream and the outbox, in this transaction."""
        await STORE.append(
            self.conn,
            order.id,
            order.stream_version - len(events),
            [NewEvent(e.type, dict(e.data), order.updated_at) for e in events],
            cause=cause,
            correlation_id=order.correlation_id,
        )
        return len(events)

    async def history(self, order_id: str) -> list[RecordedEvent]:
        return await STORE.load(self.conn, order_id)

    async def feed(self, after: int, limit: int) -> tuple[list[RecordedEvent], int]:
        return await STORE.read_after(self.conn, after, limit)

    async def pending(self, now: datetime) -> dict[tuple[str, str], int]:
        """One GROUP BY over the unfinished orders (the `ix_orders_due` index's `step`)."""
        c = orders.c
        since = func.coalesce(c.step_since, c.created_at)
        bucket = case(
            *(
                (since > _naive_if_sqlite(self.conn, now - timedelta(seconds=age)), literal(name))
                for name, age in AGE_BUCKETS
            ),
            else_=literal(OLDEST_BUCKET),
        ).label("bucket")
        stmt = (
            select(c.step, bucket, func.count())
            .where(c.step != Step.DONE.value)
            .group_by(c.step, bucket)
        )
        return {(r[0], r[1]): int(r[2]) for r in await self.conn.execute(stmt)}

    async def release_leases(self, owner: str) -> int:
        result = await self.conn.execute(
            update(orders)
            .where(orders.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        return result.rowcount
