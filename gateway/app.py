"""The gateway's composition root: build every stage once and wire the aiohttp application.

`create_app(config)` uses the real upstream client - the pooled HTTP/1.1 one (`gateway.http1`)
unless GATEWAY_TRANSPORT=aiohttp picks aiohttp's `ClientSession` - and a verifier fetching the
JWKS through it; tests pass a `MockTransport` and/or their own verifier. The gateway's own endpoints
(`/healthz`, `/readyz`, the chassis' `/health/*` and `/metrics`, `/openapi.json`) take
precedence over routed paths; everything else goes to `Proxy.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from chassis import LIVE, AsyncTokenVerifier, from_env, run_checks_async
from chassis.aiohttp import install

from .auth import jwks_fetcher, make_verifier
from .config import GatewayConfig
from .http1 import Http1Transport
from .openapi import OpenApiMerger
from .proxy import Proxy
from .ratelimit import RateLimiter, add_headers
from .routing import Router
from .transport import AiohttpTransport, Transport
from .upstreams import UpstreamPool

__all__ = [
    "CONFIG",
    "PROXY",
    "TRANSPORT",
    "TRANSPORTS",
    "UPSTREAMS",
    "create_app",
    "make_transport",
]

CONFIG = web.AppKey("gateway.config", GatewayConfig)
PROXY = web.AppKey("gateway.proxy", Proxy)
TRANSPORT = web.AppKey("gateway.transport", Transport)
UPSTREAMS = web.AppKey("gateway.upstreams", UpstreamPool)

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


def create_app(
    config: GatewayConfig,
    *,
    transport: Transport | None = None,
    verifier: AsyncTokenVerifier | None = None,
    transport_kind: str | None = None,
    limiter: RateLimiter | None = None,
) -> web.Application:
    """`transport_kind` None reads GATEWAY_TRANSPORT (ConfigError when it names no client)."""
    owns_transport = transport is None
    if transport is None:
        kind = transport_kind or from_env(TransportSettings, "GATEWAY_").transport
        transport = make_transport(kind, {n: u.pool_size for n, u in config.upstreams.items()})
    if verifier is None:
        verifier = make_verifier(config.auth, transport)

    router = Router(config.routes)
    upstreams = UpstreamPool(config.upstreams)
    if limiter is None:
        limiter = RateLimiter(config.rate_limits, config.routes, config.server.trusted_proxies)
    proxy = Proxy(router, upstreams, transport, verifier, limiter)
    openapi = OpenApiMerger(router, upstreams, transport)

    checks: dict[str, Callable[[], Any]] = {
        f"upstream:{name}": partial(upstream.ready, transport)
        for name, upstream in upstreams.upstreams.items()
    }
    checks["jwks"] = jwks_fetcher(transport, config.auth.jwks_url, timeout=2.0)

    # request.read() is only used for bodies the proxy has already checked against the limit
    app = web.Application(
        client_max_size=max(
            [config.server.max_body_bytes, *(r.max_body_bytes for r in router.routes)]
        )
        + 1
    )
    app[CONFIG] = config
    app[PROXY] = proxy
    app[TRANSPORT] = transport
    app[UPSTREAMS] = upstreams
    metrics = install(app, _SERVICE, ready_checks=checks, verifier=verifier)
    limiter.register_metrics(metrics.registry)
    if limiter.enabled:
        app.on_response_prepare.append(add_headers)

        async def rate_limits(_app: web.Application) -> AsyncIterator[None]:
            await limiter.start()  # waits at most the connect timeout for Redis
            yield
            await limiter.close()

        app.cleanup_ctx.append(rate_limits)

    async def live(_request: web.Request) -> web.Response:
        return web.json_response(LIVE)

    async def ready(_request: web.Request) -> web.Response:
        status, body = await run_checks_async(checks)
        return web.json_response(body, status=status)

    async def openapi_view(_request: web.Request) -> web.Response:
        return web.Response(body=await openapi.document(), content_type="application/json")

    app.router.add_get("/healthz", live)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/openapi.json", openapi_view)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        watchers = [
            asyncio.create_task(upstream.watch(transport), name=f"health:{name}")
            for name, upstream in upstreams.upstreams.items()
        ]
        yield
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if owns_transport:
            await transport.close()

    app.cleanup_ctx.append(lifecycle)
    return app
