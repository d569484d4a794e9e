"""`cache`: a response cache for GET routes, as one policy (an RFC 9111 subset).

Attach it to a route (`cache:` on the route, or `policies: [{use: cache, settings: ...}]`)::

    cache:
      ttl: 30                # freshness when the upstream names none (max-age / s-maxage)
      shared: true           # one entry for every consumer (never for `private` answers)
      stale_if_error: 300    # seconds past expiry an entry may answer when the upstream fails
      purge_on: [product.updated, product.deleted]   # events that drop this route's entries

What it does, per request (`X-Cache` on every answer of the route says which):

- HIT: a fresh entry answers at once, with `Age`; `If-None-Match` / `If-Modified-Since`
  matching it answer 304. With the in-memory store a hit never leaves the inline runner.
- MISS: looked up, not usable; the upstream answers and, if its answer may be stored, it is.
  An expired entry with a validator is revalidated (`If-None-Match` / `If-Modified-Since`
  upstream); the upstream's 304 refreshes it and the entry answers (HIT).
- STALE: the upstream failed (5xx, a timeout, no healthy instance, an open breaker) and an
  expired entry is within its stale-if-error grace (the route's, or the upstream's own
  `stale-if-error=N`); never for `must-revalidate` / `proxy-revalidate` answers.
- BYPASS: the cache was not used: the request says `no-store` / `no-cache`, or the store is
  unreachable (a cache that is down never fails a request).

What is stored: answers to GET with a status in `statuses`, a body up to `max_entry_bytes`, no
`Set-Cookie`, and a `Cache-Control` that allows it (not `no-store`; on a shared route not
`private`, and for a request with `Authorization` only `public`, `s-maxage` or
`must-revalidate` ones, RFC 9111 3.5). `Vary: *` is never stored; other `Vary` fields are part
of the entry (one variant per key: another variant replaces it). Freshness: `s-maxage` (shared
routes), then `max-age`, then `ttl`; `no-cache` means revalidate each time.

Keys: route, request target (path and query) and - unless `shared: true` - the consumer (the
token's subject and client; the `Authorization` field's digest if no token was verified), so
two consumers never share an entry by default. Concurrent misses for one key in one process
make one upstream call: the first request fetches, the others wait for its entry (request
coalescing); if its answer cannot be stored they go upstream themselves.

The store is per gateway (kept across config reloads): an in-memory LRU within
GATEWAY_CACHE_MAX_BYTES, or Redis when GATEWAY_REDIS_URL (`rate_limits.redis_url`) is set,
shared by every gateway process. Purges: see `gateway.pipeline.cache_purge`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from marshmallow import Schema, fields, validate

from chassis import from_env
from chassis.messaging import BrokerSettings, Event

from ..ratelimit import RedisError
from ..routing import Route
from .cache_store import Entry, MemoryStore, RedisStore
from .exchange import Exchange
from .forwarding import response_header_fields, response_headers
from .policy import Answer, Policy, PolicyContext, Verdict

__all__ = ["Cache", "CacheEnv", "CacheInvalidation", "CacheRuntime", "CacheSettings"]

log = logging.getLogger("portico.gateway.cache")

HIT, MISS, STALE, BYPASS = "HIT", "MISS", "STALE", "BYPASS"
_DAY = 86_400
# RFC 9111 4.2.2: statuses a cache may store without explicit freshness
_HEURISTIC = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
_ERRORS = frozenset({500, 502, 503, 504})
# Not stored: per answer (the adapters write their own), hop-by-hop, or the cache's own.
_NOT_STORED = frozenset(
    {
        "age",
        "content-length",
        "date",
        "ratelimit",
        "ratelimit-policy",
        "x-cache",
        "x-request-id",
        "connection",
        "keep-alive",
        "transfer-encoding",
    }
)
# What a 304 repeats of the entry (RFC 9110 15.4.5)
_NOT_MODIFIED_KEEPS = frozenset(
    {"cache-control", "content-location", "etag", "expires", "last-modified", "vary"}
)
# What a 304 from the upstream updates in the entry (RFC 9111 4.3.4)
_REFRESHED = frozenset({"cache-control", "etag", "expires", "last-modified", "vary"})
_EVENT = r"^[A-Za-z0-9_.*#-]{1,128}\Z"


class CacheSettings(Schema):
    """A route's `cache:` settings (unknown keys are refused with their key path)."""

    ttl = fields.Float(load_default=60.0, validate=validate.Range(min=0, max=365 * _DAY))
    shared = fields.Boolean(load_default=False)
    stale_if_error = fields.Float(load_default=300.0, validate=validate.Range(min=0, max=7 * _DAY))
    statuses = fields.List(
        fields.Integer(validate=validate.Range(min=200, max=599)),
        load_default=lambda: list(_HEURISTIC),
        validate=validate.Length(min=1, max=64),
    )
    max_entry_bytes = fields.Integer(
        load_default=1024 * 1024, validate=validate.Range(min=1, max=64 * 1024 * 1024)
    )
    purge_on = fields.List(
        fields.String(validate=validate.Regexp(_EVENT)),
        load_default=list,
        validate=validate.Length(max=64),
    )


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


@dataclass(frozen=True)
class CacheEnv:
    """The process-wide settings of the cache's store (GATEWAY_CACHE_* variables)."""

    max_bytes: int = field(default=64 * 1024 * 1024, metadata={"check": _positive})
    redis_timeout: float = field(default=0.05, metadata={"check": _positive})
    key_prefix: str = "portico:cache:"
    # "" (the default): Redis when the gateway has one (rate_limits.redis_url,
    # GATEWAY_REDIS_URL); "memory": in-process even then.
    store: str = ""


# --- Cache-Control ---------------------------------------------------------------------------


def directives(value: str | None) -> dict[str, str | None]:
    """`Cache-Control` as {directive (lower case): argument or None}."""
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in value.split(","):
        name, eq, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name:
            out[name] = arg.strip().strip('"') if eq else None
    return out


def _seconds(arg: str | None) -> float | None:
    if arg is None:
        return None
    try:
        n = int(arg)
    except ValueError:
        return None
    return float(n) if n >= 0 else None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _tags(value: str) -> list[str]:
    """The entity tags of an `If-None-Match` list, weak prefixes dropped (weak comparison)."""
    return [t.strip().removeprefix("W/") for t in value.split(",") if t.strip()]


def not_modified(inm: list[str], since: str | None, entry: Entry) -> bool:
    """Whether the client's conditional GET (its `If-None-Match` fields, its
    `If-Modified-Since`) matches `entry` (RFC 9110 13.1.2, 13.1.3)."""
    if inm:
        if entry.etag is None:
            return False
        tags = [t for v in inm for t in _tags(v)]
        return "*" in tags or entry.etag.removeprefix("W/") in tags
    ims = _http_date(since)
    if ims is None:
        return False
    modified = _http_date(entry.last_modified)
    return modified is not None and modified <= ims


# --- the per-gateway runtime: store, flights, purges ----------------------------------------


class _Flight:
    """A miss being fetched: other requests for its key wait for its entry (or None)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()

    def finish(self, entry: Entry | None) -> None:
        if not self.future.done():
            self.future.set_result(entry)


class CacheRuntime:
    """What outlives one config: the store, the misses in flight, the purge subscription.

    One per gateway, kept in `PolicyContext.resources` (a reload keeps the entries). The
    route policies `start` and `stop` with their config; the store's connection and the purge
    subscription run while any does.
    """

    def __init__(self, store: Any, broker: BrokerSettings | None = None) -> None:
        self.store = store
        self.broker = broker
        self.flights: dict[str, _Flight] = {}
        self.users: dict[int, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {}
        self.subscriber: Any = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._down = False
        self._started = False

    @classmethod
    def of(cls, context: PolicyContext) -> CacheRuntime:
        resources = context.resources
        runtime = resources.get("cache") if resources is not None else None
        if runtime is None:
            env = from_env(CacheEnv, "GATEWAY_CACHE_")
            url = getattr(getattr(context.config, "rate_limits", None), "redis_url", None)
            store: Any
            if url and env.store != "memory":
                store = RedisStore(url, prefix=env.key_prefix, timeout=env.redis_timeout)
            else:
                store = MemoryStore(env.max_bytes)
            broker = BrokerSettings.from_env() if _broker_named() else None
            runtime = cls(store, broker)
            if resources is not None:
                resources["cache"] = runtime
        return runtime

    # --- lifecycle: the policies of the configs in force use it -----------------------------

    async def acquire(self, policy: Cache) -> None:
        assert policy.route is not None
        route = policy.route
        self.users[id(policy)] = (
            route.name,
            route.config.path,
            policy.params,
            tuple(policy.settings["purge_on"]),
        )
        if not self._started:
            self._started = True
            await self.store.start()
        await self._subscribe()

    async def release(self, policy: Cache) -> None:
        if self.users.pop(id(policy), None) is None:
            return
        if self.users:
            await self._subscribe()
            return
        self._started = False
        await self._unsubscribe()
        for task in list(self.tasks):
            task.cancel()
        await self.store.close()

    def _events(self) -> frozenset[str]:
        return frozenset(e for user in self.users.values() for e in user[3])

    async def _subscribe(self) -> None:
        if self.broker is None:
            return
        keys = self._events()
        old = self.subscriber
        if old is not None and old.keys == keys:
            return
        self.subscriber = None
        if keys:
            from .cache_purge import PurgeSubscriber  # kombu only where purges are wanted

            self.subscriber = PurgeSubscriber(
                self.broker, keys, self.on_event, self.on_connect, asyncio.get_running_loop()
            )
            self.subscriber.start()
        if old is not None:
            await asyncio.to_thread(old.stop)

    async def _unsubscribe(self) -> None:
        old, self.subscriber = self.subscriber, None
        if old is not None:
            await asyncio.to_thread(old.stop)

    # --- purges ---------------------------------------------------------------------------

    def on_connect(self, again: bool) -> None:
        if again and isinstance(self.store, MemoryStore):
            self.store.clear()  # purges may have been missed while disconnected

    def on_event(self, event: Event) -> None:
        """Drop the entries of every route whose `purge_on` names the event: those of the
        path its template gives with the event's data, else all of the route's."""
        done: set[tuple[str, str | None]] = set()
        for name, template, params, events in list(self.users.values()):
            if event.type not in events:
                continue
            path: str | None = None
            if params and "*" not in template and all(p in event.data for p in params):
                path = template
                for p in params:
                    path = path.replace("{" + p + "}", str(event.data[p]))
            elif "*" not in template and not params:
                path = None  # a list: every entry of the route
            if (name, path) in done:
                continue
            done.add((name, path))
            self.spawn(self.purge(name, path, event))

    def cached_routes(self) -> frozenset[str]:
        """The names of the routes whose cache is in force."""
        return frozenset(user[0] for user in self.users.values())

    def invalidate(self, route: str, path: str) -> None:
        """Drop `path`'s entries now (memory) or in a task queued on the store's connection."""
        store = self.store
        if store.sync:
            gone = store.purge_now(route, path)
            log.debug("cache invalidated", extra={"route": route, "path": path, "entries": gone})
        else:
            self.spawn(self.purge(route, path))

    async def purge(self, route: str, path: str | None, event: Event | None = None) -> int:
        try:
            gone = await self.store.purge(route, path)
        except RedisError as exc:
            log.warning("cache purge failed", extra={"route": route, "error": str(exc)})
            return 0
        log.info(
            "cache purged",
            extra={
                "route": route,
                "path": path,
                "entries": gone,
                "event": event.type if event else None,
            },
        )
        return gone

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- store failures -------------------------------------------------------------------

    def failed(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.warning("response cache unavailable; bypassing it", extra={"error": str(exc)})

    def worked(self) -> None:
        if self._down:
            self._down = False
            log.warning("response cache available again")

    def store_entry(self, key: str, route: str, path: str, entry: Entry) -> None:
        store = self.store
        if store.sync:
            store.put_now(key, route, path, entry)
        else:
            self.spawn(self._put(key, route, path, entry))

    async def _put(self, key: str, route: str, path: str, entry: Entry) -> None:
        try:
            await self.store.put(key, route, path, entry)
        except RedisError as exc:
            self.failed(exc)


def _broker_named() -> bool:
    """Whether the deployment names a broker: `PORTICO_BROKER_URL` or, as compose and
    Kubernetes give it (a secret: it holds a password), `PORTICO_BROKER_URL_FILE`."""
    import os

    return bool(os.environ.get("PORTICO_BROKER_URL") or os.environ.get("PORTICO_BROKER_URL_FILE"))


# --- the policy -----------------------------------------------------------------------------


class _State:
    """One request's dealings with the cache (`ex.vars["cache"]`)."""

    __slots__ = (
        "asked",
        "body",
        "entry",
        "flight",
        "key",
        "label",
        "pending",
        "revalidating",
        "size",
    )

    def __init__(self, key: str, label: str = MISS) -> None:
        self.key = key
        self.label = label
        self.entry: Entry | None = None  # a stored entry: to revalidate, or serve on error
        self.revalidating = False
        self.flight: _Flight | None = None  # set when this request fetches for its key
        self.pending: Entry | None = None  # the answer being stored, waiting for its body
        self.body: list[bytes] = []
        self.size = 0
        self.asked: tuple[list[str], str | None] | None = None  # the client's own validators


class Cache(Policy):
    name = "cache"
    order = 700  # after auth, rate limit and body limits; before forwarding headers
    Settings = CacheSettings
    responses = {
        "304": {
            "description": "Not Modified: the copy named by If-None-Match / If-Modified-Since "
            "is current (answered by the gateway's cache)"
        }
    }

    def __init__(self, settings: Any = None, context: PolicyContext | None = None) -> None:
        if settings is None:
            settings = CacheSettings().load({})
        super().__init__(settings, context)
        self.runtime: CacheRuntime | None = None
        self.route: Route | None = None
        self.params: tuple[str, ...] = ()
        self.shared: bool = settings["shared"]
        self.ttl: float = settings["ttl"]
        self.grace: float = settings["stale_if_error"]
        self.statuses = frozenset(settings["statuses"])
        self.max_entry = settings["max_entry_bytes"]

    def bind(self, route: Route) -> Policy | None:
        if "GET" not in route.config.methods:
            return None  # nothing to cache
        bound = Cache(self.settings, self.context)
        bound.route = route
        bound.params = tuple(
            seg[1:-1] for seg in route.config.path.split("/") if seg.startswith("{")
        )
        context = self.context
        bound.runtime = CacheRuntime.of(context) if context else CacheRuntime(MemoryStore())
        return bound

    async def start(self) -> None:
        if self.runtime is not None and self.route is not None:
            await self.runtime.acquire(self)

    def stats(self) -> dict[str, Any] | None:
        store = self.runtime.store if self.runtime is not None else None
        shown: dict[str, Any] = {"ttl": self.ttl, "shared": self.shared}
        if isinstance(store, MemoryStore):  # the process' LRU, shared by every cached route
            shown.update(store="memory", entries=len(store), bytes=store.used)
        elif store is not None:
            shown["store"] = "redis"
        return shown

    async def stop(self) -> None:
        if self.runtime is not None and self.route is not None:
            await self.runtime.release(self)

    # --- on request -----------------------------------------------------------------------

    def _key(self, ex: Exchange) -> str:
        route = self.route
        assert route is not None
        if self.shared:
            who = "*"
        elif ex.claims is not None:
            who = f"{ex.claims.subject}\0{ex.claims.client_id or ''}"
        elif ex.authorization:
            who = hashlib.blake2b(ex.authorization.encode(), digest_size=16).hexdigest()
        else:
            who = "-"
        return f"{route.name}\0{ex.target}\0{who}"

    def on_request(self, ex: Exchange) -> Verdict:
        method = ex.method
        if method != "GET" and method != "HEAD":
            return None
        runtime = self.runtime
        assert runtime is not None
        key = self._key(ex)
        asked = ex.header("Cache-Control")
        if asked is not None:
            said = directives(asked)
            if "no-store" in said or "no-cache" in said:
                ex.set_var("cache", _State(key, BYPASS))
                return None
        store = runtime.store
        if store.sync:
            return self._decide(ex, key, store.get_now(key))
        return self._lookup(ex, key)

    async def _lookup(self, ex: Exchange, key: str) -> Verdict:
        runtime = self.runtime
        assert runtime is not None
        try:
            entry = await runtime.store.get(key)
        except (RedisError, ValueError) as exc:
            runtime.failed(exc)
            ex.set_var("cache", _State(key, BYPASS))
            return None
        runtime.worked()
        verdict = self._decide(ex, key, entry)
        if verdict is not None and not isinstance(verdict, Answer):
            return await verdict
        return verdict

    def _decide(self, ex: Exchange, key: str, entry: Entry | None) -> Verdict:
        now = time.time()
        state = _State(key)
        if entry is not None and _varies(ex, entry):
            entry = None  # another variant: this request's answer replaces it
        if entry is not None:
            if entry.fresh(now):
                return self._hit(ex, entry, now, HIT)
            state.entry = entry
            if entry.etag is not None or entry.last_modified is not None:
                state.revalidating = True
                state.asked = (ex.header_values("If-None-Match"), ex.header("If-Modified-Since"))
                ex.set_header("If-None-Match", entry.etag)
                ex.set_header("If-Modified-Since", entry.last_modified)
        ex.set_var("cache", state)
        if ex.method != "GET":
            return None
        runtime = self.runtime
        assert runtime is not None
        flight = runtime.flights.get(key)
        if flight is not None:
            return self._follow(ex, state, flight)
        state.flight = runtime.flights[key] = _Flight()
        return None

    async def _follow(self, ex: Exchange, state: _State, flight: _Flight) -> Verdict:
        """Wait for the request fetching this key; its entry answers, else go upstream."""
        route = self.route
        assert route is not None
        try:
            async with asyncio.timeout(route.timeout + 1.0):
                entry = await asyncio.shield(flight.future)
        except TimeoutError:
            entry = None
        if entry is not None and not _varies(ex, entry):
            ex.vars.pop("cache", None)  # type: ignore[union-attr]
            return self._hit(ex, entry, time.time(), HIT)
        return None

    def _hit(
        self, ex: Exchange, entry: Entry, now: float, label: str, state: _State | None = None
    ) -> Answer:
        ex.log_field("cache", label)
        age = ("Age", str(int(entry.age(now))))
        if state is not None and state.asked is not None:
            inm, since = state.asked  # ours went upstream in their place
        else:
            inm, since = ex.header_values("If-None-Match"), ex.header("If-Modified-Since")
        if entry.status == 200 and (inm or since) and not_modified(inm, since, entry):
            kept = [f for f in entry.headers if f[0].lower() in _NOT_MODIFIED_KEEPS]
            return Answer(304, [*kept, age, ("X-Cache", label)])
        return Answer(entry.status, [*entry.headers, age, ("X-Cache", label)], entry.body)

    # --- on response ----------------------------------------------------------------------

    def on_response_head(self, ex: Exchange) -> None:
        vars_ = ex.vars
        state: _State | None = vars_.get("cache") if vars_ is not None else None
        if state is None:
            return  # answered from the cache (or not a GET)
        if state.label == BYPASS:
            ex.log_field("cache", BYPASS)
            ex.add_response_header("X-Cache", BYPASS)
            return
        now = time.time()
        status = ex.status
        entry = state.entry
        runtime = self.runtime
        route = self.route
        assert runtime is not None and route is not None
        if status in _ERRORS and entry is not None and entry.usable_stale(now):
            self._finish(state, None)
            self._replace(ex, self._hit(ex, entry, now, STALE, state))
            return
        response = ex.response if ex.answer is None else None
        if response is not None and status == 304 and state.revalidating and entry is not None:
            fresh = self._refreshed(entry, _fields(response), now)
            if fresh is not None:
                runtime.store_entry(state.key, route.name, ex.path, fresh)
                self._finish(state, fresh)
                self._replace(ex, self._hit(ex, fresh, now, HIT, state))
                return
        ex.log_field("cache", MISS)
        ex.add_response_header("X-Cache", MISS)
        if response is not None and ex.method == "GET":
            state.pending = self._storable(ex, status, _fields(response), now)
        if state.pending is None:
            self._finish(state, None)

    def on_response_body(self, ex: Exchange, chunk: bytes, last: bool) -> bytes:
        vars_ = ex.vars
        state: _State | None = vars_.get("cache") if vars_ is not None else None
        if state is None or state.pending is None:
            return chunk
        if chunk:
            state.size += len(chunk)
            if state.size > self.max_entry:
                state.pending = None
                state.body = []
                self._finish(state, None)
                return chunk
            state.body.append(chunk)
        if last:
            entry = state.pending
            state.pending = None
            entry.body = b"".join(state.body)
            state.body = []
            runtime, route = self.runtime, self.route
            assert runtime is not None and route is not None
            runtime.store_entry(state.key, route.name, ex.path, entry)
            self._finish(state, entry)
        return chunk

    def on_log(self, ex: Exchange) -> None:
        vars_ = ex.vars
        state: _State | None = vars_.get("cache") if vars_ is not None else None
        if state is not None:
            self._finish(state, None)  # never leave a flight open (a client gone mid-body)

    def _finish(self, state: _State, entry: Entry | None) -> None:
        flight = state.flight
        if flight is None:
            return
        state.flight = None
        runtime = self.runtime
        assert runtime is not None
        if runtime.flights.get(state.key) is flight:
            del runtime.flights[state.key]
        flight.finish(entry)

    @staticmethod
    def _replace(ex: Exchange, answer: Answer) -> None:
        """Answer from the cache instead of what the chain had (an error, a 304)."""
        if ex.answer is None and ex.response is not None:
            ex.response.close()
        ex.response = None
        ex.answer = answer
        ex.status = answer.status
        ex.response_extra = [(k, v) for k, v in ex.response_extra if k.lower() != "x-cache"]

    def _storable(
        self, ex: Exchange, status: int, fields_: list[tuple[str, str]], now: float
    ) -> Entry | None:
        """The entry for this answer, body to come; None when it may not be stored."""
        if status not in self.statuses:
            return None
        cc: dict[str, str | None] = {}
        vary: list[str] = []
        etag = modified = expires = None
        initial_age = 0.0
        stored: list[tuple[str, str]] = []
        for name, value in fields_:
            low = name.lower()
            if low == "set-cookie":
                return None
            if low == "cache-control":
                cc.update(directives(value))
            elif low == "vary":
                vary.extend(v.strip().lower() for v in value.split(",") if v.strip())
            elif low == "etag":
                etag = value.strip()
            elif low == "last-modified":
                modified = value.strip()
            elif low == "expires":
                expires = value
            elif low == "age":
                initial_age = _seconds(value.strip()) or 0.0
            if low not in _NOT_STORED:
                stored.append((name, value))
        if "no-store" in cc or "*" in vary:
            return None
        if self.shared:
            if "private" in cc:
                return None
            if ex.authorization and not (
                "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
            ):
                return None
        lifetime = self._lifetime(cc, expires, fields_)
        strict = "must-revalidate" in cc or "proxy-revalidate" in cc
        grace = 0.0 if strict else (_seconds(cc.get("stale-if-error")) or self.grace)
        validators = etag is not None or modified is not None
        if lifetime <= 0 and not validators and grace <= 0:
            return None
        keep = lifetime + max(grace, lifetime if validators else 0.0, 1.0)
        return Entry(
            status=status,
            headers=stored,
            body=b"",
            stored=now,
            lifetime=lifetime,
            grace=grace,
            initial_age=initial_age,
            vary=tuple((name, ", ".join(ex.header_values(name))) for name in vary),
            etag=etag,
            last_modified=modified,
            keep=keep,
        )

    def _lifetime(
        self, cc: dict[str, str | None], expires: str | None, fields_: list[tuple[str, str]]
    ) -> float:
        if "no-cache" in cc:
            return 0.0
        if self.shared and "s-maxage" in cc:
            value = _seconds(cc["s-maxage"])
            if value is not None:
                return value
        if "max-age" in cc:
            value = _seconds(cc["max-age"])
            if value is not None:
                return value
        if expires is not None:
            at = _http_date(expires)
            date = _http_date(next((v for k, v in fields_ if k.lower() == "date"), None))
            if at is None:
                return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
            return max(0.0, at - (date if date is not None else time.time()))
        return self.ttl

    def _refreshed(self, entry: Entry, fields_: list[tuple[str, str]], now: float) -> Entry | None:
        """The entry refreshed by the upstream's 304 (RFC 9111 4.3.4), or None if the 304
        names another representation."""
        etag = next((v.strip() for k, v in fields_ if k.lower() == "etag"), None)
        if etag is not None and entry.etag is not None and etag != entry.etag:
            return None
        updates = [(k, v) for k, v in fields_ if k.lower() in _REFRESHED]
        names = {k.lower() for k, _ in updates}
        headers = [f for f in entry.headers if f[0].lower() not in names] + updates
        cc: dict[str, str | None] = {}
        expires = None
        for name, value in headers:
            low = name.lower()
            if low == "cache-control":
                cc.update(directives(value))
            elif low == "expires":
                expires = value
        lifetime = self._lifetime(cc, expires, fields_)
        if "no-store" in cc:
            return None
        return Entry(
            status=entry.status,
            headers=headers,
            body=entry.body,
            stored=now,
            lifetime=lifetime,
            grace=entry.grace,
            initial_age=0.0,
            vary=entry.vary,
            etag=etag or entry.etag,
            last_modified=entry.last_modified,
            keep=lifetime + max(entry.grace, lifetime, 1.0),
        )


_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CacheInvalidation(Policy):
    """RFC 9111 4.4: a successful unsafe request invalidates what this process's cache holds
    for its target URI and for the `Location` / `Content-Location` it answers (same origin
    only), so the gateway that handled a write serves the next read fresh at once, without
    waiting for the service's event (which purges every process, `cache_purge`).

    Built in: bound to every route with an unsafe method when the config caches any route
    (otherwise it costs nothing). The write's route need not be the cached one (a PATCH route
    next to a cached GET route of the same path): the path is resolved with the router, and
    only a path whose GET route has the cache is purged - all of that path's entries (every
    query, every consumer), the unit the stores purge by. With Redis the purge is one Lua call
    on the cache's connection, queued before any later read of that connection.
    """

    name = "cache-invalidation"
    order = 700

    def __init__(self, settings: Any = None, context: PolicyContext | None = None) -> None:
        super().__init__(settings, context)
        self.runtime: CacheRuntime | None = None

    def bind(self, route: Route) -> Policy | None:
        context = self.context
        if context is None or not (set(route.config.methods) - _SAFE):
            return None
        routes = getattr(context.config, "routes", ())
        if not any(issubclass(ref.cls, Cache) for r in routes for ref in r.policies):
            return None
        bound = CacheInvalidation(self.settings, context)
        bound.runtime = CacheRuntime.of(context)
        return bound

    def on_response_head(self, ex: Exchange) -> None:
        status = ex.status
        if ex.method in _SAFE or not 200 <= status < 400:
            return
        runtime = self.runtime
        assert runtime is not None
        cached = runtime.cached_routes()
        if not cached:
            return
        targets = [(ex.target.partition("?")[0], ex.path)]
        for name in ("Location", "Content-Location"):
            value = ex.response_header(name)
            if value:
                raw = _same_origin_path(value, ex.host)
                if raw is not None:
                    targets.append((raw, unquote(raw)))
        router = self.context.router if self.context is not None else None
        seen: set[str] = set()
        for raw, path in targets:
            if path in seen or router is None:
                continue
            seen.add(path)
            found = router.match(raw)
            route = found[0].routes.get("GET") if found is not None else None
            if route is not None and route.name in cached:
                runtime.invalidate(route.name, path)


def _same_origin_path(value: str, host: str | None) -> str | None:
    """The path (raw) of a `Location` / `Content-Location` naming this origin, else None."""
    value = value.strip()
    if value.startswith("/") and not value.startswith("//"):
        return value.partition("?")[0].partition("#")[0]
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not host or parts.netloc.lower() != host.lower():
        return None
    return parts.path or "/"


def _varies(ex: Exchange, entry: Entry) -> bool:
    """Whether this request's fields named by the entry's Vary differ from the stored ones."""
    return any(", ".join(ex.header_values(name)) != value for name, value in entry.vary)


def _fields(response: Any) -> list[tuple[str, str]]:
    """The upstream's fields, hop-by-hop gone, as text."""
    raw = getattr(response, "header_fields", None)  # the pooled client's: as received
    if raw is not None:
        return [
            (k.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
            for k, v in response_header_fields(raw)
        ]
    return list(response_headers(response.headers).items())
