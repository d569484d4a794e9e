"""Reloading gateway.yaml without a restart: on SIGHUP and when the file changes.

Everything compiled from one config - router, routes, upstream pool, rate limiter, the
pipeline (every route's and aggregate's chain of policies), the OpenAPI merger - is one
immutable `GatewayState`. The catch-all handler reads `StateHolder.state` once per request,
so a request in flight finishes on the state it started with while new requests see the new
one: a reload is one attribute assignment.

A reload (`Reloader.reload`) validates the file first; an invalid file is rejected with a
logged error naming its bad keys, and the running state stays. The compile step reuses what
did not change (an `Upstream` whose config is equal keeps its health state and pooled
connections; the verifier and its JWKS cache when `auth` is equal; the Redis client when its
settings are equal). What the new state no longer uses is retired after the old state's
requests have finished (bounded by the longest route timeout): health probes of dropped
upstreams stop at once, their connection pools are closed after the drain.

The file is polled (mtime, size, inode) every `poll_interval` seconds - no extra dependency,
and it sees editors that write in place and those that rename a new file over the old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from chassis import AsyncTokenVerifier, ConfigError, Problem

from .config import GatewayConfig, load_config, past_sunsets
from .openapi import OpenApiMerger
from .pipeline.compile import Pipeline
from .proxy import handle
from .ratelimit import RateLimiter
from .routing import Router
from .transport import Transport
from .upstreams import Upstream, UpstreamPool

__all__ = [
    "MAX_FIELD_SIZE",
    "MAX_HEADER_BYTES",
    "PARSER_LIMITS",
    "Compiler",
    "GatewayState",
    "Inflight",
    "Reloader",
    "StateHolder",
]

log = logging.getLogger("portico.gateway.reload")

# Request headers: one field over MAX_FIELD_SIZE, or all of them over MAX_HEADER_BYTES, is a
# 431 problem; a request target over MAX_FIELD_SIZE is a 414. aiohttp's parser gets more room
# (PARSER_LIMITS, for `web.Application(handler_args=...)`) so such requests reach us instead
# of its plain-text 400.
MAX_FIELD_SIZE = 8190
MAX_HEADER_BYTES = 32 * 1024
PARSER_LIMITS = {"max_field_size": 4 * MAX_HEADER_BYTES, "max_line_size": 4 * MAX_HEADER_BYTES}

_DRAIN_SLACK = 5.0  # seconds past the longest route timeout before pools close anyway


class Inflight:
    """How many requests are running on one state; `drained()` waits for none."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self, within: float) -> bool:
        """True once no request runs on the state, False if `within` seconds passed first."""
        if self.count == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, slots=True, eq=False)
class GatewayState:
    """Everything compiled from one config; replaced whole, never changed in place."""

    config: GatewayConfig
    router: Router
    upstreams: UpstreamPool
    limiter: RateLimiter
    verifier: AsyncTokenVerifier
    pipeline: Pipeline
    openapi: OpenApiMerger
    generation: int = 0
    inflight: Inflight = field(default_factory=Inflight)

    @property
    def drain_timeout(self) -> float:
        return max((r.timeout for r in self.router.routes), default=0.0) + _DRAIN_SLACK


Compiler = Callable[[GatewayConfig, "GatewayState | None"], GatewayState]


class StateHolder:
    """The one mutable cell: the current state, and the catch-all handler reading it."""

    __slots__ = ("state",)

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        total = len(request.raw_path)
        if total > MAX_FIELD_SIZE:
            raise Problem(414, "the request target is too long", title="URI Too Long")
        for name, value in request.raw_headers:
            size = len(name) + len(value)
            total += size
            if size > MAX_FIELD_SIZE or total > MAX_HEADER_BYTES:
                raise Problem(
                    431,
                    f"request header fields exceed {MAX_FIELD_SIZE} bytes each "
                    f"or {MAX_HEADER_BYTES} in all",
                    title="Request Header Fields Too Large",
                )
        state = self.state  # read once: this request stays on this state to the end
        inflight = state.inflight
        inflight.count += 1
        try:
            return await handle(state.pipeline, request)
        finally:
            inflight.leave()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def reused_upstreams(new: UpstreamPool, previous: GatewayState | None) -> None:
    """Put the previous `Upstream` objects whose config is unchanged into `new` (health kept)."""
    if previous is None:
        return
    for name, old in previous.upstreams.upstreams.items():
        fresh = new.upstreams.get(name)
        if fresh is not None and fresh.config == old.config:
            new.upstreams[name] = old


class Reloader:
    """Owns the state's background work (health probes, the limiter) and swaps states."""

    def __init__(
        self,
        holder: StateHolder,
        compile_state: Compiler,
        transport: Transport,
        *,
        path: str | os.PathLike[str] | None = None,
        poll_interval: float = 1.0,
        on_swap: Callable[[GatewayState], None] | None = None,
    ) -> None:
        self.holder = holder
        self._compile = compile_state
        self._transport = transport
        self.path = Path(path) if path is not None else None
        self.poll_interval = poll_interval
        self._on_swap = on_swap
        self._lock = asyncio.Lock()
        self._watchers: dict[int, tuple[Upstream, asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._signature = _signature(self.path) if self.path is not None else None
        self._signal_installed = False
        self.reloads = 0  # successful swaps, for tests and logs
        self.rejected = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        state = self.holder.state
        await state.limiter.start()
        await state.pipeline.start_policies()
        self._watch(state)
        if self.path is None:
            return
        self._poller = asyncio.create_task(self._poll(), name="gateway-config-poll")
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._signal_installed = True

    async def close(self) -> None:
        if self._signal_installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        tasks = [t for _, t in self._watchers.values()] + list(self._tasks)
        if self._poller is not None:
            tasks.append(self._poller)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        await self.holder.state.pipeline.stop_policies()
        await self.holder.state.limiter.close()

    def _watch(self, state: GatewayState) -> None:
        """Health probes for every upstream of `state`; stop those of upstreams it dropped."""
        current = {id(u): u for u in state.upstreams.upstreams.values()}
        for key in list(self._watchers):
            if key not in current:
                _, task = self._watchers.pop(key)
                task.cancel()
        for key, upstream in current.items():
            if key not in self._watchers:
                task = asyncio.create_task(
                    upstream.watch(self._transport), name=f"health:{upstream.name}"
                )
                self._watchers[key] = (upstream, task)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the gateway config", extra={"path": str(self.path)})
        self._spawn(self.reload())

    def _spawn(self, coro: Awaitable[object]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        assert self.path is not None
        while True:
            await asyncio.sleep(self.poll_interval)
            seen = _signature(self.path)
            if seen is not None and seen != self._signature:
                log.info("gateway config changed: reloading", extra={"path": str(self.path)})
                await self.reload()

    # --- the swap ----------------------------------------------------------------------------

    async def reload(self, config: GatewayConfig | None = None) -> bool:
        """Load, compile and swap in a new config; False (old one kept) when it is invalid."""
        async with self._lock:
            old = self.holder.state
            if config is None:
                assert self.path is not None, "reload() without a config needs a path"
                self._signature = _signature(self.path)
                try:
                    config = load_config(self.path)
                except ConfigError as exc:
                    self.rejected += 1
                    log.error(
                        "gateway config rejected; the running config stays in force: %s",
                        exc,
                        extra={"path": str(self.path)},
                    )
                    return False
            stale = past_sunsets(config)  # a change to a past sunset: refused (ADR 0032)
            if stale:
                self.rejected += 1
                log.error(
                    "gateway config rejected; the running config stays in force: %s",
                    "; ".join(stale),
                    extra={"path": str(self.path)},
                )
                return False
            try:
                new = self._compile(config, old)
            except ConfigError as exc:
                self.rejected += 1
                log.error("gateway config rejected; the running config stays in force: %s", exc)
                return False
            if new.limiter is not old.limiter and new.limiter.redis is not old.limiter.redis:
                await new.limiter.start()
            await new.pipeline.start_policies()
            closers = self._retire_pools(old, new)
            self.holder.state = new  # the swap: new requests see `new` from here on
            self.reloads += 1
            self._watch(new)
            if self._on_swap is not None:
                self._on_swap(new)
            if (old.config.server.host, old.config.server.port) != (
                new.config.server.host,
                new.config.server.port,
            ):
                log.warning("server.host and server.port take effect on restart only")
            log.info(
                "gateway config reloaded",
                extra={"generation": new.generation, "routes": len(new.router.routes)},
            )
            self._spawn(self._after_drain(old, new, closers))
            return True

    def _retire_pools(
        self, old: GatewayState, new: GatewayState
    ) -> list[Callable[[], Awaitable[None]]]:
        """Detach the pools of upstreams dropped or changed; closed once `old` has drained."""
        closers = []
        fresh = new.upstreams.upstreams
        for name, upstream in old.upstreams.upstreams.items():
            if fresh.get(name) is not upstream:
                size = fresh[name].config.pool_size if name in fresh else upstream.config.pool_size
                closers.append(self._transport.replace_pool(name, size))
        for name, upstream in fresh.items():
            if name not in old.upstreams.upstreams:
                closers.append(self._transport.replace_pool(name, upstream.config.pool_size))
        return closers

    async def _after_drain(
        self,
        old: GatewayState,
        new: GatewayState,
        closers: list[Callable[[], Awaitable[None]]],
    ) -> None:
        if not await old.inflight.drained(old.drain_timeout):
            log.warning(
                "requests on the old gateway config still running; closing its pools anyway",
                extra={"inflight": old.inflight.count},
            )
        for close in closers:
            await close()
        await old.pipeline.stop_policies()
        if old.limiter is not new.limiter and old.limiter.redis is not new.limiter.redis:
            await old.limiter.close()
