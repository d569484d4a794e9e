"""The gateway's composition root: build every stage once and wire the aiohttp application.

`create_app(config)` uses the real aiohttp transport and a verifier fetching the JWKS through
it; tests pass a `MockTransport` and/or their own verifier. The gateway's own endpoints
(`/healthz`, `/readyz`, the chassis' `/health/*` and `/metrics`, `/openapi.json`) take
precedence over routed paths; everything else goes to `Proxy.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from aiohttp import web

from chassis import LIVE, AsyncTokenVerifier, run_checks_async
from chassis.aiohttp import install

from .auth import jwks_fetcher, make_verifier
from .config import GatewayConfig
from .openapi import OpenApiMerger
from .proxy import Proxy
from .routing import Router
from .transport import AiohttpTransport, Transport
from .upstreams import UpstreamPool

__all__ = ["CONFIG", "PROXY", "TRANSPORT", "UPSTREAMS", "create_app"]

CONFIG = web.AppKey("gateway.config", GatewayConfig)
PROXY = web.AppKey("gateway.proxy", Proxy)
TRANSPORT = web.AppKey("gateway.transport", Transport)
UPSTREAMS = web.AppKey("gateway.upstreams", UpstreamPool)

_SERVICE = "gateway"


def create_app(
    config: GatewayConfig,
    *,
    transport: Transport | None = None,
    verifier: AsyncTokenVerifier | None = None,
) -> web.Application:
    owns_transport = transport is None
    if transport is None:
        transport = AiohttpTransport({n: u.pool_size for n, u in config.upstreams.items()})
    if verifier is None:
        verifier = make_verifier(config.auth, transport)

    router = Router(config.routes)
    upstreams = UpstreamPool(config.upstreams)
    proxy = Proxy(router, upstreams, transport, verifier)
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
    install(app, _SERVICE, ready_checks=checks, verifier=verifier)

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
