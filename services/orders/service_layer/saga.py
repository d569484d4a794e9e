"""Running sagas: `SagaRunner` moves one order's saga as far as it can go now; `SagaDriver`
runs new sagas at once and sweeps for unfinished ones at start-up and periodically.

A run first claims the order (a lease in its row, taken with one conditional UPDATE), then
repeats: perform the current step (I/O, outside any transaction) -> apply the outcome to the
order (pure) -> store the new state and its events in one transaction, conditional on the
lease and the version read. So two processes never run one saga step at the same time, and
if a process dies anywhere, the step is performed again after the lease runs out - which is
harmless, because every step is keyed by the order id upstream. A step whose service is
unavailable ends the run; the order is due again after a growing delay - until the step has
lasted `step_timeout` seconds (ORDERS_SAGA_STEP_TIMEOUT): then a forward step is given up,
compensated and the order rejected, all as events (`Order.time_out`). The events of each
transition are appended to the order's stream (and the outbox) in the transaction that saves
its cached row.

With tracing on, each step is a span whose parent is the request that placed the order (its
`traceparent` is stored with the order), so the step's calls and the events it writes stay in
that order's trace whichever process runs it, and however late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from chassis import correlation_id, tracing
from chassis.eventstore import ConcurrencyConflict

from ..adapters.repository import AGE_BUCKETS, OLDEST_BUCKET
from ..adapters.upstreams import Upstreams
from ..domain import Order, Outcome, Refused, Step, Unavailable, retry_delay, utcnow
from .unit_of_work import UnitOfWorkFactory

__all__ = ["SagaDriver", "SagaRunner"]

log = logging.getLogger("portico.orders.saga")
_OUTCOMES = frozenset({"order.confirmed", "order.rejected"})
_STEPS = [s.value for s in Step if s is not Step.DONE]
_AGES = [name for name, _ in AGE_BUCKETS] + [OLDEST_BUCKET]


class _Then(Enum):
    """After a step: the next one now, wait (its service is unavailable; due again later),
    or stop (the lease was lost: another process runs the saga now)."""

    GO_ON = "go on"
    WAIT = "wait"
    LOST = "lost"


class SagaRunner:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        upstreams: Upstreams,
        *,
        instance_id: str | None = None,
        lease: float = 30.0,
        retry_base: float = 0.5,
        retry_max: float = 10.0,
        clock: Callable[[], float] = time.time,
        on_events: Callable[[], None] = lambda: None,
        registry: CollectorRegistry | None = None,
        step_timeout: float = 300.0,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.uow = uow
        self.upstreams = upstreams
        self.instance_id = instance_id or f"orders-{uuid.uuid4().hex[:12]}"
        self.lease = lease
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock = clock
        self.on_events = on_events
        self.step_timeout = step_timeout
        self.wall = wall
        self._pending = Gauge(
            "orders_saga_pending",
            "Unfinished sagas by current step and how long that step has lasted (age bucket)",
            ["step", "age"],
            registry=registry,
        )
        self._steps = Counter(
            "orders_saga_steps_total",
            "Saga steps performed, by step and outcome",
            ["step", "outcome"],
            registry=registry,
        )
        self._outcomes = Counter(
            "orders_saga_outcomes_total",
            "Sagas finished, by order status",
            ["status"],
            registry=registry,
        )

    async def perform(self, order: Order) -> Outcome:
        """The current step's call; an unexpected error is treated as "try again later"."""
        up = self.upstreams
        try:
            match order.step:
                case Step.PRICE:
                    return await up.prices([ln.sku for ln in order.lines])
                case Step.RESERVE:
                    return await up.reserve(order.id, order.lines)
                case Step.CHARGE:
                    assert order.total is not None, "charging an unpriced order"
                    return await up.charge(
                        order.id,
                        order.total,
                        order.currency,
                        order.payment_method,
                        owner=order.owner,
                    )
                case Step.COMMIT:
                    return await up.commit(order.id)
                case Step.REFUND:
                    assert order.payment_id is not None, "refunding without a payment"
                    return await up.refund(order.id, order.payment_id)
                case Step.RELEASE:
                    return await up.release(order.id)
        except Exception as exc:
            log.exception("saga step failed unexpectedly", extra={"order_id": order.id})
            return Unavailable(f"{type(exc).__name__}: {exc}")
        raise AssertionError(f"no action for step {order.step}")

    def _backoff(self, attempts: int) -> float:
        delay = retry_delay(attempts, self.retry_base, self.retry_max)
        return delay * random.uniform(0.5, 1.0)  # spread the retries of many waiting orders

    async def run(self, order_id: str) -> Order | None:
        """Advance one saga as far as possible; None when another process holds it."""
        now = self.clock()
        async with self.uow() as unit:
            claimed = await unit.orders.claim(order_id, self.instance_id, now, now + self.lease)
            stored = await unit.orders.get(order_id) if claimed else None
            await unit.commit()
        if stored is None:
            return None
        order = stored.order
        token = correlation_id.set(order.correlation_id or order.id)
        try:
            while not order.finished:
                step = order.step
                # A child of the placing request's span, whoever runs the step and when: its
                # calls and the events it writes to the outbox are in that order's trace.
                with tracing.resumed_span(
                    f"saga {step.value}",
                    stored.traceparent,
                    service="orders",
                    **{"portico.order.id": order.id, "portico.saga.step": step.value},
                ) as span:
                    then = await self._step(order, span)
                if then is _Then.WAIT:
                    return order
                if then is _Then.LOST:
                    return None
            return order
        finally:
            correlation_id.reset(token)

    async def _step(self, order: Order, span: Any) -> _Then:
        """Perform the current step, store its outcome and events; say what comes next."""
        step, read_version = order.step, order.version
        outcome = await self.perform(order)
        at = self.wall()
        events = order.apply(outcome, at)
        label = type(outcome).__name__
        stuck = isinstance(outcome, Unavailable) or (
            isinstance(outcome, Refused) and order.step is Step.COMMIT
        )
        if isinstance(outcome, Unavailable) and order.timed_out(at, self.step_timeout):
            log.warning(
                "saga step timed out",
                extra={"order_id": order.id, "step": step.value, "error": order.last_error},
            )
            events, label, stuck = order.time_out(at), "TimedOut", False
        self._steps.labels(step.value, label).inc()
        if span is not None:
            span.set_attribute("portico.saga.outcome", label)
        now = self.clock()
        if order.finished or stuck:
            next_at = now + (self._backoff(order.attempts) if stuck else 0.0)
            lease_until = None  # let go: due again at next_at, for anyone
        else:
            next_at, lease_until = now, now + self.lease
        async with self.uow() as unit:
            saved = await unit.orders.save(
                order,
                expected_version=read_version,
                lease_owner=self.instance_id,
                next_attempt_at=next_at,
                lease_until=lease_until,
                lines_changed=step is Step.PRICE and order.total is not None,
            )
            if not saved:
                log.warning("saga lease lost", extra={"order_id": order.id})
                return _Then.LOST
            try:
                await unit.orders.add_events(order, events, cause=f"saga {step.value}: {label}")
            except ConcurrencyConflict:
                log.warning("order stream moved on", extra={"order_id": order.id})
                return _Then.LOST
            await unit.commit()
        if events:
            self.on_events()
        if stuck:
            log.info(
                "saga waits",
                extra={
                    "order_id": order.id,
                    "step": order.step.value,
                    "attempts": order.attempts,
                    "error": order.last_error,
                    "retry_in": round(next_at - now, 3),
                },
            )
            return _Then.WAIT
        for event in events:  # the order's one outcome: confirmed or rejected
            if event.type in _OUTCOMES:
                self._outcomes.labels(order.status.value).inc()
                log.info(
                    "order %s",
                    order.status.value.lower(),
                    extra={"order_id": order.id, "reason": order.reason},
                )
        return _Then.GO_ON

    async def release_leases(self) -> int:
        """On a clean shutdown: give back every lease this instance holds, so another process
        (or this one, restarted) can go on at once instead of waiting for them to run out."""
        async with self.uow() as unit:
            released = await unit.orders.release_leases(self.instance_id)
            await unit.commit()
        return released

    async def refresh_pending(self) -> dict[tuple[str, str], int]:
        """Set the pending-sagas gauge from the database (every step x age, zeros too)."""
        async with self.uow() as unit:
            counts = await unit.orders.pending(self.wall())
        for step in _STEPS:
            for age in _AGES:
                self._pending.labels(step, age).set(counts.get((step, age), 0))
        return counts

    async def due(self, limit: int) -> list[str]:
        async with self.uow() as unit:
            return await unit.orders.due(self.clock(), limit)


class SagaDriver:
    """The background part: `kick` runs a new saga now; a loop sweeps for due ones."""

    def __init__(
        self,
        runner: SagaRunner,
        *,
        poll_interval: float = 1.0,
        concurrency: int = 32,
        gauge_interval: float = 15.0,
    ) -> None:
        self.runner = runner
        self.gauge_interval = gauge_interval
        self._gauge_at = float("-inf")
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def kick(self, order_id: str) -> None:
        """Run this saga now (called after the order was committed)."""
        if order_id not in self._running:
            task = asyncio.create_task(self._run_one(order_id), name=f"saga-{order_id}")
            self._running[order_id] = task
            task.add_done_callback(lambda _t, oid=order_id: self._running.pop(oid, None))

    async def _run_one(self, order_id: str) -> None:
        async with self._slots:
            try:
                await self.runner.run(order_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga run failed", extra={"order_id": order_id})

    async def sweep(self) -> int:
        """Start every due saga not already running here; returns how many were started."""
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        started = 0
        for order_id in await self.runner.due(free + len(self._running)):
            if order_id not in self._running:
                self.kick(order_id)
                started += 1
        return started

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.sweep()
                if time.monotonic() - self._gauge_at >= self.gauge_interval:
                    self._gauge_at = time.monotonic()
                    await self.runner.refresh_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga sweep failed")
            if self._stopping:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def wake(self) -> None:
        """Sweep now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._loop_task = asyncio.create_task(self._loop(), name="saga-driver")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop sweeping, let running steps finish for `grace` seconds, cancel the rest,
        and give back this instance's leases."""
        if self._loop_task is not None:
            # Out of its wait; a sweep under way finishes its query first: cancelling it
            # mid-query left aiosqlite's thread to answer a loop that may be closed by then.
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), grace)
            except TimeoutError:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        running = list(self._running.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.runner.release_leases()
        except Exception:
            log.exception("could not release saga leases")
