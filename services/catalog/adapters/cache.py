"""Cache-aside for product reads by id and by sku (ADR 0021), as a repository decorator.

`CachedProductRepository` wraps the SQL repository of one unit of work. On a read unit of work
(`read_through=True`) `get` and `get_by_sku` look in the cache first and fill it on a miss; on
a write unit of work they always read the database (optimistic locking and the duplicate-sku
check must see the row, never a copy) and every write notes the keys it makes stale - the id,
the sku, and the old sku when it changed - which the unit of work deletes right after its
commit and before it wakes the outbox relay, so no one hearing the product event can refill a
cache from the old entry.

Two stores behind one `ProductCache`:

* `RedisStore` (`CATALOG_REDIS_URL`): shared by every catalog process, so one delete serves
  them all. Every call has a short socket timeout and goes through the chassis circuit breaker;
  any failure (or an open breaker) is a fallback to the database, counted, never an error. A
  delete that fails is remembered: those keys are read from the database, and deleted again on
  the next call that reaches Redis.
* `LruStore` (otherwise): bounded, per process, expired by its own TTL. Another process's
  entries are not invalidated by a write here; ADR 0021 says why that is bounded by the TTL
  rather than by a broker subscription per gunicorn worker.

Values are the product's JSON snapshot (`sql.snapshot`), so a cached product is a fresh copy
the caller may change.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter
from redis.backoff import NoBackoff
from redis.retry import Retry

from chassis.resilience import CircuitBreaker, CircuitOpen

from ..domain import Product, SortKey
from .repository import AbstractProductRepository, ProductFilter
from .sql import product_from_snapshot, snapshot

__all__ = [
    "CacheStore",
    "CachedProductRepository",
    "LruStore",
    "ProductCache",
    "RedisStore",
    "StoreUnavailable",
]

log = logging.getLogger("portico.catalog.cache")


class StoreUnavailable(Exception):
    """The store did not answer (error, timeout, open breaker): read the database instead."""


class CacheStore(abc.ABC):
    """Strings by key, each with a time to live. Raises StoreUnavailable, nothing else."""

    kind: str

    @abc.abstractmethod
    def get(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def set(self, key: str, value: str, ttl: float) -> None: ...

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None: ...

    def set_many(self, items: dict[str, str], ttl: float) -> None:
        for key, value in items.items():
            self.set(key, value, ttl)

    def close(self) -> None:
        """Release connections (the LRU has none)."""
        return None


class LruStore(CacheStore):
    """At most `max_entries` entries in this process, least recently used evicted first."""

    kind = "lru"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()  # gthread workers read concurrently
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)


class RedisStore(CacheStore):
    """Redis with a bounded wait: `timeout` for connecting and for each reply, no retries
    inside redis-py (its default retries three times with backoff), and a circuit breaker so
    that a dead Redis costs one refused connection per `retry_after`, not one per request."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        breaker: CircuitBreaker,
        client: Any = None,
    ) -> None:
        self.breaker = breaker
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.breaker.call(fn, *args)
        except CircuitOpen as exc:
            raise StoreUnavailable("circuit_open") from exc
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable("error") from exc

    def get(self, key: str) -> str | None:
        value = self._call(self.client.get, key)
        return None if value is None else bytes(value).decode()

    def set(self, key: str, value: str, ttl: float) -> None:
        self._call(lambda: self.client.set(key, value, px=max(1, int(ttl * 1000))))

    def set_many(self, items: dict[str, str], ttl: float) -> None:
        """Both keys of a product in one round trip (a pipeline, not a transaction)."""

        def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, value, px=max(1, int(ttl * 1000)))
            pipe.execute()

        self._call(write)

    def delete(self, keys: Iterable[str]) -> None:
        names = list(keys)
        if names:
            self._call(self.client.delete, *names)

    def close(self) -> None:
        self.client.close()


class ProductCache:
    """Product entries under `prefix` in `store`, with hit, miss and fallback counters.

    Metrics (on the app's /metrics): `catalog_cache_lookups_total{store, result=hit|miss}`
    (hit ratio = hit / (hit + miss)) and `catalog_cache_fallbacks_total{store, operation,
    reason=error|circuit_open|stale|unreadable}` - a lookup that fell back to the database
    counts there only.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl: float,
        prefix: str = "catalog:",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.prefix = prefix
        self._lock = threading.Lock()
        self._unflushed: set[str] = set()  # deletes that failed: stale in the store
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.lookups = Counter(
            "catalog_cache_lookups",
            "Product cache lookups by id or sku",
            ["store", "result"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "catalog_cache_fallbacks",
            "Product cache calls that failed over to the database",
            ["store", "operation", "reason"],
            registry=registry,
        )
        for result in ("hit", "miss"):
            self.lookups.labels(store.kind, result)

    def id_key(self, product_id: str) -> str:
        return f"{self.prefix}product:id:{product_id}"

    def sku_key(self, sku: str) -> str:
        return f"{self.prefix}product:sku:{sku}"

    def keys_of(self, product: Product) -> list[str]:
        return [self.id_key(product.id), self.sku_key(product.sku)]

    def _fallback(self, operation: str, exc: StoreUnavailable) -> None:
        self.fallbacks.labels(self.store.kind, operation, str(exc)).inc()

    def _flush(self) -> None:
        """Retry the deletes that failed before anything else reaches the store."""
        with self._lock:
            if not self._unflushed:
                return
            keys = sorted(self._unflushed)
        self.store.delete(keys)
        with self._lock:
            self._unflushed.difference_update(keys)

    def get(self, key: str) -> Product | None:
        """The cached product, or None on a miss (or a fallback): read the database."""
        try:
            self._flush()
            if key in self._unflushed:  # made stale meanwhile by a failed delete
                raise StoreUnavailable("stale")
            text = self.store.get(key)
        except StoreUnavailable as exc:
            self._fallback("get", exc)
            return None
        if text is None:
            self.lookups.labels(self.store.kind, "miss").inc()
            return None
        try:
            product = product_from_snapshot(text)
        except (ValueError, KeyError, TypeError):  # not ours, or an older shape: a miss
            self.fallbacks.labels(self.store.kind, "get", "unreadable").inc()
            return None
        self.lookups.labels(self.store.kind, "hit").inc()
        return product

    def put(self, product: Product) -> None:
        """Fill both keys (id and sku) after a miss."""
        text = snapshot(product)
        items = {key: text for key in self.keys_of(product) if key not in self._unflushed}
        try:
            self.store.set_many(items, self.ttl)
        except StoreUnavailable as exc:
            self._fallback("set", exc)

    def invalidate(self, keys: Iterable[str]) -> None:
        names = set(keys)
        if not names:
            return
        try:
            self.store.delete(sorted(names))
        except StoreUnavailable as exc:
            self._fallback("delete", exc)
            with self._lock:
                self._unflushed.update(names)
            log.warning(
                "product cache delete failed; kept to retry, read from the database meanwhile",
                extra={"keys": len(names), "reason": str(exc)},
            )


class CachedProductRepository(AbstractProductRepository):
    """The cache-aside decorator around one unit of work's product repository."""

    def __init__(
        self, inner: AbstractProductRepository, cache: ProductCache, *, read_through: bool
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.read_through = read_through
        self.stale: set[str] = set()  # keys this unit's writes make stale, deleted on commit
        self._seen: dict[str, str] = {}  # id -> sku as read in this unit (the old sku)

    def _read(self, key: str, load: Callable[[], Product | None]) -> Product | None:
        if self.read_through:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        product = load()
        if product is not None:
            self._seen.setdefault(product.id, product.sku)
            if self.read_through:
                self.cache.put(product)
        return product

    def get(self, product_id: str) -> Product | None:
        return self._read(self.cache.id_key(product_id), lambda: self.inner.get(product_id))

    def get_by_sku(self, sku: str) -> Product | None:
        return self._read(self.cache.sku_key(sku), lambda: self.inner.get_by_sku(sku))

    def list(self, filters: ProductFilter, after: SortKey | None, limit: int) -> list[Product]:
        return self.inner.list(filters, after, limit)

    def _old_sku(self, product_id: str) -> str | None:
        if product_id not in self._seen:
            old = self.inner.get(product_id)
            if old is None:
                return None
            self._seen[product_id] = old.sku
        return self._seen[product_id]

    def add(self, product: Product) -> None:
        self.inner.add(product)
        self.stale.update(self.cache.keys_of(product))

    def update(self, product: Product, expected_version: int) -> None:
        old_sku = self._old_sku(product.id)
        self.inner.update(product, expected_version)
        self.stale.update(self.cache.keys_of(product))
        if old_sku is not None:
            self.stale.add(self.cache.sku_key(old_sku))
        self._seen[product.id] = product.sku

    def delete(self, product_id: str, expected_version: int | None = None) -> bool:
        sku = self._old_sku(product_id)
        deleted = self.inner.delete(product_id, expected_version)
        if deleted:
            self.stale.add(self.cache.id_key(product_id))
            if sku is not None:
                self.stale.add(self.cache.sku_key(sku))
        return deleted

    def committed(self) -> None:
        """After the commit: delete what this unit's writes made stale."""
        stale, self.stale = self.stale, set()
        self.cache.invalidate(stale)

    def rolled_back(self) -> None:
        self.stale = set()
