"""The gateway's composition root: build every stage once and wire the aiohttp application.

`create_app(config)` uses the real upstream client - the pooled HTTP/1.1 one (`gateway.http1`)
unless GATEWAY_TRANSPORT=aiohttp picks aiohttp's `ClientSession` - and a verifier fetching the
JWKS through it; tests pass a `MockTransport` and/or their own verifier. The gateway's own endpoints
(`/healthz`, `/readyz`, the chassis' `/health/*` and `/metrics`, `/openapi.json`) take
precedence over routed paths; everything else goes to the pipeline (`gateway.proxy.handle`).

What is compiled from the config (router, upstreams, limiter, pipeline, OpenAPI merger) is one
immutable `GatewayState` behind a `StateHolder`; with `config_path` the `Reloader` swaps in a
new state when the file changes or on SIGHUP (see `gateway.reload`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from chassis import LIVE, AsyncTokenVerifier, from_env, tracing
from chassis.aiohttp import install
from chassis.drain import DRAIN, readiness
from chassis.flags import FlagCollector

from . import strict
from .auth import jwks_fetcher, make_verifier
from .config import GatewayConfig
from .http1 import Http1Transport
from .openapi import OpenApiMerger, add_docs_routes
from .pipeline.compile import Pipeline, describe
from .pipeline.deprecation import usage as deprecation_usage
from .pipeline.feature_flag import FLAG_STORE
from .pipeline.policy import PolicyContext
from .pipeline.stream import close_all
from .pipeline.stream import shutdown as shutdown_streams
from .ratelimit import RateLimiter
from .reload import PARSER_LIMITS, GatewayState, Reloader, StateHolder, reused_upstreams
from .routing import Router
from .transport import AiohttpTransport, Transport
from .upstreams import UpstreamPool

__all__ = [
    "CONFIG",
    "RELOADER",
    "STATE",
    "TRANSPORT",
    "TRANSPORTS",
    "UPSTREAMS",
    "create_app",
    "make_transport",
]

CONFIG = web.AppKey("gateway.config", GatewayConfig)
TRANSPORT = web.AppKey("gateway.transport", Transport)
UPSTREAMS = web.AppKey("gateway.upstreams", UpstreamPool)
STATE = web.AppKey("gateway.state", StateHolder)
RELOADER = web.AppKey("gateway.reloader", Reloader)

_SERVICE = "gateway"
TRANSPORTS = ("http1", "aiohttp")


def _transport_kind(value: str) -> str | None:
    return None if value in TRANSPORTS else f"must be one of {', '.join(TRANSPORTS)}"


@dataclass(frozen=True)
class TransportSettings:
    """GATEWAY_TRANSPORT: which upstream client; aiohttp's stays as a fallback and reference."""

    transport: str = field(default="http1", metadata={"check": _transport_kind})


def make_transport(kind: str, pool_sizes: Mapping[str, int]) -> Transport:
    if kind == "aiohttp":
        return AiohttpTransport(pool_sizes)
    return Http1Transport(pool_sizes)


def _policies(config: GatewayConfig) -> dict[str, str | None]:
    return {r.name: r.rate_limit for r in (*config.routes, *config.aggregates)}


def _next_limiter(config: GatewayConfig, previous: GatewayState) -> RateLimiter:
    """The previous limiter when nothing it depends on changed; else a new one that keeps its
    Redis client (same settings), in-process budgets and registered metrics."""
    old, was = previous.limiter, previous.config
    if (
        was.rate_limits == config.rate_limits
        and was.server.trusted_proxies == config.server.trusted_proxies
        and _policies(was) == _policies(config)
    ):
        return old
    same_redis = (
        was.rate_limits.redis_url,
        was.rate_limits.redis_timeout,
        was.rate_limits.redis_connect_timeout,
    ) == (
        config.rate_limits.redis_url,
        config.rate_limits.redis_timeout,
        config.rate_limits.redis_connect_timeout,
    )
    new = RateLimiter(
        config.rate_limits,
        (*config.routes, *config.aggregates),
        config.server.trusted_proxies,
        redis=old.redis if same_redis else None,
    )
    new.local = old.local
    new._decisions, new._redis_errors = old._decisions, old._redis_errors  # registered once
    return new


def compile_state(
    config: GatewayConfig,
    transport: Transport,
    previous: GatewayState | None = None,
    *,
    verifier: AsyncTokenVerifier | None = None,
    limiter: RateLimiter | None = None,
) -> GatewayState:
    """Everything the request path needs from `config`, reusing what `previous` still fits."""
    if verifier is None:
        if previous is not None and previous.config.auth == config.auth:
            verifier = previous.verifier
        else:
            verifier = make_verifier(config.auth, transport)
    router = Router(config.routes)
    upstreams = UpstreamPool(
        config.upstreams, registry=previous.upstreams.registry if previous is not None else None
    )
    reused_upstreams(upstreams, previous)
    if limiter is None:
        if previous is not None:
            limiter = _next_limiter(config, previous)
        else:
            limiter = RateLimiter(
                config.rate_limits,
                (*config.routes, *config.aggregates),
                config.server.trusted_proxies,
            )
    context = PolicyContext(
        config=config,
        router=router,
        upstreams=upstreams,
        transport=transport,
        verifier=verifier,
        limiter=limiter if limiter.enabled else None,
        resources=previous.pipeline.context.resources if previous is not None else {},
    )
    pipeline = Pipeline(config, context)  # every chain; ConfigError keeps the old state
    return GatewayState(
        config=config,
        router=router,
        upstreams=upstreams,
        limiter=limiter,
        verifier=verifier,
        pipeline=pipeline,
        openapi=OpenApiMerger(
            router, upstreams, transport, config=config, policies=describe(pipeline)
        ),
        generation=0 if previous is None else previous.generation + 1,
    )


def _ready_checks(state: GatewayState, transport: Transport) -> dict[str, Callable[[], Any]]:
    checks: dict[str, Callable[[], Any]] = {
        f"upstream:{name}": partial(upstream.ready, transport)
        for name, upstream in state.upstreams.upstreams.items()
    }
    checks["jwks"] = jwks_fetcher(transport, state.config.auth.jwks_url, timeout=2.0)
    return checks


def create_app(
    config: GatewayConfig,
    *,
    transport: Transport | None = None,
    verifier: AsyncTokenVerifier | None = None,
    transport_kind: str | None = None,
    limiter: RateLimiter | None = None,
    config_path: str | os.PathLike[str] | None = None,
    reload_interval: float = 1.0,
) -> web.Application:
    """`transport_kind` None reads GATEWAY_TRANSPORT (ConfigError when it names no client).
    With `config_path`, that file is reloaded on SIGHUP and when it changes."""
    owns_transport = transport is None
    if transport is None:
        kind = transport_kind or from_env(TransportSettings, "GATEWAY_").transport
        transport = make_transport(kind, {n: u.pool_size for n, u in config.upstreams.items()})

    state = compile_state(config, transport, verifier=verifier, limiter=limiter)
    holder = StateHolder(state)
    router, upstreams, limiter = state.router, state.upstreams, state.limiter
    verifier = state.verifier
    checks = _ready_checks(state, transport)

    def refresh_checks(new: GatewayState) -> None:
        checks.clear()  # the same dict the chassis' /health/ready reads
        checks.update(_ready_checks(new, transport))

    reloader = Reloader(
        holder,
        lambda cfg, prev: compile_state(cfg, transport, prev),
        transport,
        path=config_path,
        poll_interval=reload_interval,
        on_swap=refresh_checks,
    )

    # request.read() is only used for bodies the proxy has already checked against the limit
    app = web.Application(
        client_max_size=max(
            [config.server.max_body_bytes, *(r.max_body_bytes for r in router.routes)]
        )
        + 1,
        handler_args=PARSER_LIMITS,  # oversized headers: a 431 problem from StateHolder.handle
    )
    app[CONFIG] = config
    app[TRANSPORT] = transport
    app[UPSTREAMS] = upstreams
    app[STATE] = holder
    app[RELOADER] = reloader
    metrics = install(app, _SERVICE, ready_checks=checks, verifier=verifier)
    app.middlewares.append(strict.middleware(lambda: holder.state.router))  # inside the chassis'
    limiter.register_metrics(metrics.registry)
    upstreams.register_metrics(metrics.registry)  # breaker states on /metrics
    resources = state.pipeline.context.resources  # one dict for this gateway's life
    # deprecated routes' use per consumer and the flags file's errors, across reloads
    metrics.registry.register(deprecation_usage(resources))
    metrics.registry.register(FlagCollector(lambda: (resources or {}).get(FLAG_STORE)))

    async def live(_request: web.Request) -> web.Response:
        return web.json_response(LIVE)

    drain = app[DRAIN]
    # Live streams end when the drain begins, so clients reconnect elsewhere (ADR 0035).
    drain.on_begin(lambda: close_all(holder.state.pipeline.context.resources))

    async def end_streams(_app: web.Application) -> None:
        await shutdown_streams(holder.state.pipeline.context.resources)

    app.on_shutdown.append(end_streams)

    async def ready(_request: web.Request) -> web.Response:
        status, body = await readiness(checks, drain)
        return web.json_response(body, status=status)

    async def openapi_view(_request: web.Request) -> web.Response:
        document = await holder.state.openapi.document()
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/healthz", live)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/openapi.json", openapi_view)
    add_docs_routes(app)
    # Everything else - routes, aggregates, CORS - is the pipeline's, read per request from
    # the current state: a reload adds aggregate paths and turns CORS on or off.
    app.router.add_route("*", "/{tail:.*}", holder.handle)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        # health probes, the limiter (waits at most the connect timeout for Redis), reloads
        await reloader.start()
        yield
        await reloader.close()
        if owns_transport:
            await transport.close()

    app.cleanup_ctx.append(lifecycle)
    tracing.setup(_SERVICE, app)  # no-op unless PORTICO_TRACING is set
    return app
