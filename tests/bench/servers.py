"""The processes the benchmark starts besides nginx and the gateway itself.

`python -m tests.bench.servers upstream PORT JWKS_FILE`: the upstream - an aiohttp app on
uvloop answering a fixed ~100-byte JSON at `/bench`, serving a JWKS for the gateway's token
checks, and `/slow` (20 ms) for aggregation parts.
`python -m tests.bench.servers naive PORT UPSTREAM`: the forwarder most users would write - an
aiohttp handler relaying through one shared `ClientSession`.
`python -m tests.bench.servers saga-peers PORT`: what the orders saga calls, answered at once
(a service token, a catalog price, a reservation, its commit, a captured payment), so the
`POST /api/v1/orders` row measures orders' own work and not its peers'.
`python -m tests.bench.servers gateway-quiet`: `python -m gateway` with the access log off, to
measure what the per-request JSON log line costs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

PAYLOAD = (
    b'{"id":"b3f1c2d4","name":"Benchmark widget","price_cents":1999,'
    b'"currency":"EUR","stock":42,"tags":["a","b"]}'
)


def upstream_app(jwks: bytes) -> web.Application:
    async def bench(_request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(body=PAYLOAD, content_type="application/json")

    async def keys(_request: web.Request) -> web.Response:
        return web.Response(body=jwks, content_type="application/json")

    app = web.Application()
    app.router.add_get("/bench", bench)
    app.router.add_get("/slow/{part}", slow)
    app.router.add_get("/.well-known/jwks.json", keys)
    app.router.add_get("/health/ready", bench)
    return app


def naive_app(upstream: str) -> web.Application:
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def forward(request: web.Request) -> web.Response:
        async with request.app[session_key].request(
            request.method, upstream + request.path_qs, headers=request.headers
        ) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type=resp.content_type)

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession()
        yield
        await app[session_key].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def saga_peers_app() -> web.Application:
    """The catalog, inventory, payments and token endpoint as orders' saga sees them."""
    counter = iter(range(1, 1 << 62))

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench", "expires_in": 3600})

    async def products(request: web.Request) -> web.Response:
        sku = request.query.get("sku", "")
        return web.json_response({"items": [{"sku": sku, "price": "19.99"}]})

    async def reserve(_request: web.Request) -> web.Response:
        return web.json_response({}, status=201)

    async def no_content(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def charge(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": f"pay-{next(counter)}",
                "status": "CAPTURED",
                "amount": body.get("amount"),
                "currency": body.get("currency"),
            },
            status=201,
        )

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/v1/products", products)
    app.router.add_post("/api/v1/reservations", reserve)
    app.router.add_post("/api/v1/reservations/{order_id}/commit", no_content)
    app.router.add_post("/api/v1/reservations/{order_id}/release", no_content)
    app.router.add_post("/api/v1/payments", charge)
    app.router.add_get("/health/ready", token)
    return app


def _serve(app: web.Application, port: int) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "upstream":
        _serve(upstream_app(Path(argv[2]).read_bytes()), int(argv[1]))
    elif kind == "saga-peers":
        _serve(saga_peers_app(), int(argv[1]))
    elif kind == "naive":
        _serve(naive_app(argv[2]), int(argv[1]))
    elif kind == "gateway-quiet":
        from gateway import __main__ as gateway_main

        configure = gateway_main.configure_logging

        def quiet(service: str) -> None:
            configure(service)
            logging.getLogger("portico.http").setLevel(logging.WARNING)

        gateway_main.configure_logging = quiet  # type: ignore[assignment]
        serve = getattr(gateway_main, "serve", None)  # `python -m gateway serve`
        if serve is not None:
            serve()
        else:
            gateway_main.main()
    else:
        print(f"unknown server {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
