"""inventory's gRPC API as a provider (ADR 0028): the service's own gRPC server
(`add_grpc_server`, as `serve` runs it) on a free port beside its app, on SQLite in the run's
temporary folder, with the REST provider's states set through the same use cases."""

from __future__ import annotations

from services.inventory.entrypoints.grpc_server import add_grpc_server

from ..grpcpact import GrpcProvider
from ..harness import serve_aiohttp
from . import Context
from .inventory import build_app, states


def start(ctx: Context) -> GrpcProvider:
    app = build_app(ctx)
    server = add_grpc_server(app, "127.0.0.1", 0, grace=1.0)  # starts with the app
    backend = ctx.loop.run(serve_aiohttp(app))
    return GrpcProvider(
        "inventory",
        f"127.0.0.1:{server.port}",
        states(ctx, app),
        close=lambda: ctx.loop.run(backend.stop()),
    )
