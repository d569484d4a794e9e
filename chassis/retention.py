"""Retention: purge old bookkeeping rows in small batches, and count every table's rows.

The outbox (published rows), the inbox and idempotency keys only grow unless something
removes what is no longer needed. A `Purger` deletes rows whose timestamp is older than the
retention, one batch at a time: a batch selects at most `batch` primary keys by an indexed
timestamp and deletes exactly those rows in one short transaction, then the purger pauses so
request transactions get the database (SQLite has one writer; PostgreSQL only takes row
locks, never a table lock). A pass ends when a batch comes back short.

Several processes (gunicorn workers, replicas) may run a purger on one database. On
PostgreSQL a pass first takes a session advisory lock without waiting; a process that does
not get it skips the pass, so one process purges at a time. SQLite has no such lock and
needs none: its writers are serialised anyway, and a batch another process already deleted
simply deletes nothing.

Retention is never shorter than `IDEMPOTENCY_WINDOW`, the time the API promises that a
replayed `Idempotency-Key` returns the first answer (documented in the README and the
OpenAPI specs): settings below it are refused at start-up. See ADR 0020.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import ColumnElement, Engine, delete, func, select, text, tuple_
from sqlalchemy.schema import Column, Table

__all__ = [
    "IDEMPOTENCY_WINDOW",
    "PurgeTarget",
    "Purger",
    "RetentionSettings",
    "retention_ctx",
]

log = logging.getLogger(__name__)

# What the API promises: a request replayed with the same Idempotency-Key within this time
# returns the first answer. Retention may be longer, never shorter.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
_MIN_DAYS = IDEMPOTENCY_WINDOW / timedelta(days=1)
MAX_BATCH = 10_000


def _retention_days(value: float) -> str | None:
    if value < _MIN_DAYS:
        return (
            f"must be at least {_MIN_DAYS:g} (the {IDEMPOTENCY_WINDOW} Idempotency-Key window "
            "the API promises)"
        )
    return None


def _purge_batch(value: int) -> str | None:
    return None if 1 <= value <= MAX_BATCH else f"must be 1..{MAX_BATCH}"


def _purge_interval(value: float) -> str | None:
    return None if value >= 0 else "must not be negative (0 turns the periodic purge off)"


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    """Settings mixed into each service's settings, read as `<SERVICE>_RETENTION_DAYS`,
    `<SERVICE>_PURGE_BATCH` and `<SERVICE>_PURGE_INTERVAL` by `chassis.from_env`."""

    # Published outbox rows, inbox rows and idempotency keys older than this are deleted.
    retention_days: float = field(default=7.0, metadata={"check": _retention_days})
    # Rows deleted per transaction: small enough that a batch never stalls a request.
    purge_batch: int = field(default=500, metadata={"check": _purge_batch})
    # Seconds between purge passes; 0 turns the periodic purge off.
    purge_interval: float = field(default=300.0, metadata={"check": _purge_interval})

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)


@dataclass(frozen=True)
class PurgeTarget:
    """Rows of `table` whose `timestamp` is older than the cutoff (NULL never is) and that
    match `where` are purged; `timestamp` should lead an index."""

    table: Table
    timestamp: Column[Any]
    where: ColumnElement[bool] | None = None

    @property
    def name(self) -> str:
        return self.table.name


class Purger:
    """Purges `targets` older than the retention, and counts rows of `counted` tables."""

    def __init__(
        self,
        engine: Engine,
        targets: Sequence[PurgeTarget],
        *,
        retention: timedelta,
        batch: int,
        counted: Sequence[Table] = (),
        pause: float = 0.05,
        on_batch: Callable[[str, int], None] | None = None,
        name: str = "",
    ) -> None:
        self.engine = engine
        self.targets = list(targets)
        self.retention = retention
        self.batch = batch
        self.pause = pause
        self.on_batch = on_batch  # (table, rows deleted) after each batch: metrics, tests
        self.counted = list(counted) or [t.table for t in self.targets]
        self.purged: dict[str, int] = {t.name: 0 for t in self.targets}
        self.last_pass: float | None = None  # time.time() of the last completed pass
        self.counts: dict[str, int] = {}  # rows per counted table, as last counted
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        tables = ",".join(sorted(t.name for t in self.targets))
        self._lock_key = zlib.crc32(f"portico.retention.{name}.{tables}".encode()) - 2**31

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        targets: Sequence[PurgeTarget],
        settings: RetentionSettings,
        **kwargs: Any,
    ) -> Purger:
        return cls(
            engine, targets, retention=settings.retention, batch=settings.purge_batch, **kwargs
        )

    # -- one pass -------------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over every target; returns rows deleted per table ({} when another
        process holds the pass)."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        with self._guard() as mine:
            if not mine:
                return {}
            done = {t.name: self._purge_target(t, cutoff) for t in self.targets}
        self.last_pass = time.time()
        return done

    def _purge_target(self, target: PurgeTarget, cutoff: datetime) -> int:
        table = target.table
        pk = list(table.primary_key.columns)
        old = target.timestamp < cutoff
        if target.where is not None:
            old = old & target.where
        pick = select(*pk).where(old).order_by(target.timestamp).limit(self.batch)
        total = 0
        while not self._stopping.is_set():
            with self.engine.begin() as conn:
                keys = conn.execute(pick).all()
                if not keys:
                    break
                if len(pk) == 1:
                    chosen = pk[0].in_([k[0] for k in keys])
                else:
                    chosen = tuple_(*pk).in_([tuple(k) for k in keys])
                deleted = conn.execute(delete(table).where(chosen, old)).rowcount
            total += deleted
            self.purged[target.name] += deleted
            if self.on_batch is not None:
                self.on_batch(target.name, deleted)
            if len(keys) < self.batch:
                break
            self._stopping.wait(self.pause)  # let request transactions in between batches
        if total:
            log.info("retention purge", extra={"table": table.name, "deleted": total})
        return total

    @contextmanager
    def _guard(self) -> Iterator[bool]:
        """True when this process may run the pass (always, on SQLite)."""
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        key = {"k": self._lock_key}
        with self.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar())
            conn.commit()  # a session lock outlives the transaction: idle, not idle-in-tx
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
                    conn.commit()

    def row_counts(self) -> dict[str, int]:
        """Rows in each counted table (a table that cannot be counted is left out)."""
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table in self.counted:
                try:
                    counts[table.name] = int(
                        conn.execute(select(func.count()).select_from(table)).scalar_one()
                    )
                except Exception:  # not created yet (before init/migrate): no gauge
                    log.debug("cannot count %s", table.name, exc_info=True)
                    conn.rollback()
        return counts

    # -- periodically ---------------------------------------------------------------------

    def refresh_counts(self) -> dict[str, int]:
        """Count now and keep the counts for the metrics collector."""
        self.counts = self.row_counts()
        return self.counts

    def _safe_pass(self) -> None:
        try:
            self.purge()
        except Exception:
            log.exception("retention purge failed; trying again next interval")
        try:
            self.refresh_counts()
        except Exception:
            log.warning("cannot count table rows", exc_info=True)

    def _first_wait(self, interval: float) -> float:
        """Processes started together spread their passes over the first interval."""
        return interval * random.uniform(0.5, 1.0)

    def start(self, interval: float) -> None:
        """Purge every `interval` seconds in a daemon thread (Flask) until `stop()`."""
        if self._thread is not None or interval <= 0:
            return
        self._stopping.clear()

        def loop() -> None:
            wait = self._first_wait(interval)
            while not self._stopping.wait(wait):
                self._safe_pass()
                wait = interval

        self._thread = threading.Thread(target=loop, name="retention-purge", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the batch in hand (blocking; from async code use a worker thread)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def run(self, interval: float) -> None:
        """Purge every `interval` seconds from an asyncio task; each pass in a worker thread
        (the purger's engine is blocking), so the event loop never waits on a batch."""
        self._stopping.clear()
        wait = self._first_wait(interval)
        while True:
            await asyncio.sleep(wait)
            one_pass = asyncio.ensure_future(asyncio.to_thread(self._safe_pass))
            try:
                await asyncio.shield(one_pass)
            except asyncio.CancelledError:
                self._stopping.set()
                await one_pass  # the batch in hand finishes before the engine is disposed
                raise
            wait = interval

    def register(
        self, registry: CollectorRegistry, service: str, *, live: bool = True, ttl: float = 30.0
    ) -> None:
        """Export `db_table_rows` and `retention_purged_rows_total` on `registry`.

        `live`: count when scraped, at most once per `ttl` seconds (threaded servers). An
        event loop must not wait on the database inside a scrape: with `live=False` the
        gauges show the counts of the last pass (taken in a worker thread, see `run`).
        """
        registry.register(_RetentionCollector(self, service, ttl if live else None))


class _RetentionCollector(Collector):
    """Row counts taken when scraped, at most once per `ttl` seconds per process; with no
    `ttl`, the purger's last counts."""

    def __init__(self, purger: Purger, service: str, ttl: float | None) -> None:
        self.purger = purger
        self.service = service
        self.ttl = ttl
        self._lock = threading.Lock()
        self._counted_at = float("-inf")

    def _fresh_counts(self) -> dict[str, int]:
        if self.ttl is None:
            return dict(self.purger.counts)
        with self._lock:
            if time.monotonic() - self._counted_at >= self.ttl:
                try:
                    self.purger.refresh_counts()
                except Exception:  # database down: /metrics still answers
                    log.warning("cannot count table rows", exc_info=True)
                self._counted_at = time.monotonic()
            return dict(self.purger.counts)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no database query when the collector is registered

    def collect(self) -> Iterator[Metric]:
        rows = GaugeMetricFamily(
            "db_table_rows", "Rows in the service's tables", labels=["service", "table"]
        )
        for table, n in sorted(self._fresh_counts().items()):
            rows.add_metric([self.service, table], n)
        purged = CounterMetricFamily(
            "retention_purged_rows",
            "Rows deleted by the retention purge in this process",
            labels=["service", "table"],
        )
        for table, n in sorted(self.purger.purged.items()):
            purged.add_metric([self.service, table], n)
        yield rows
        yield purged
        if self.purger.last_pass is not None:
            last = GaugeMetricFamily(
                "retention_last_pass_timestamp_seconds",
                "When this process last completed a purge pass",
                labels=["service"],
            )
            last.add_metric([self.service], self.purger.last_pass)
            yield last


def retention_ctx(
    purger: Purger, interval: float, *, dispose: bool = False
) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp `cleanup_ctx` entry: counts the rows once (in a worker thread) and runs
    `purger.run(interval)` as a task; on the way out the task is cancelled, the batch in
    hand finishes, and with `dispose` the purger's engine is disposed."""

    async def ctx(_app: Any) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(purger.refresh_counts)
        except Exception:  # the database may come later; the next pass counts again
            log.warning("cannot count table rows", exc_info=True)
        task = asyncio.create_task(purger.run(interval)) if interval > 0 else None
        yield
        purger._stopping.set()  # a pass in its worker thread stops after its batch
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if dispose:
            purger.engine.dispose()

    return ctx
