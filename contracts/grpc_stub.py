"""A stub gRPC server: any unary method answers a canned reply or status (with google.rpc
rich error details in the standard trailer), and every call is recorded.

The gRPC consumer contract (`contracts.consumers.orders_grpc`) drives orders' real client
against it, and the client's unit tests use it as inventory. It serves the standard health
service too, so a client's `healthCheckConfig` sees SERVING (or what `set_health` says).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["Canned", "Seen", "StubServer"]

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Canned:
    """One answer: `reply` when `code` is OK, else the status, its text and its details."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    reply: Message | None = None
    text: str = ""
    details: Sequence[Message] = ()

    def trailer(self) -> tuple[tuple[str, bytes], ...]:
        if not self.details:
            return ()
        status = status_pb2.Status(code=self.code.value[0], message=self.text)
        for detail in self.details:
            status.details.add().Pack(detail)
        return ((DETAILS_KEY, status.SerializeToString()),)


@dataclass(frozen=True)
class Seen:
    """A call received: its method path, metadata and serialized request."""

    method: str
    metadata: dict[str, str]
    request: bytes


Answer = Canned | Callable[[bytes], Canned | Awaitable[Canned]]


@dataclass
class StubServer:
    """Serves on 127.0.0.1 (a free port unless given); `answers` maps a method path
    (`/pkg.Service/Method`) to a `Canned` or a (sync or async) function of the request."""

    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None

    async def _handle(self, method: str, request: bytes, context: Any) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.seen.append(Seen(method, metadata, request))
        answer = self.answers.get(method)
        if answer is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no answer for {method}")
        canned = answer(request) if callable(answer) else answer
        if inspect.isawaitable(canned):
            canned = await canned
        if canned.code != grpc.StatusCode.OK:
            await context.abort(canned.code, canned.text, trailing_metadata=canned.trailer())
        return canned.reply.SerializeToString() if canned.reply is not None else b""

    def _generic(self) -> grpc.GenericRpcHandler:
        stub = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                method = details.method  # type: ignore[attr-defined]
                if method not in stub.answers:
                    return None  # UNIMPLEMENTED (the health service is registered apart)

                async def behaviour(request: bytes, context: Any) -> bytes:
                    return await stub._handle(method, request, context)

                return grpc.unary_unary_rpc_method_handler(behaviour)

        return Handler()

    async def start(self, services: Sequence[str] = ("",)) -> int:
        """Start serving; `services` are the names the health service says SERVING for."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_generic_rpc_handlers((self._generic(),))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        for name in ("", *services):
            await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server, self.health = server, checker
        return self.port

    async def set_health(self, service: str, serving: bool) -> None:
        assert self.health is not None, "start() first"
        status = health_pb2.HealthCheckResponse
        await self.health.set(service, status.SERVING if serving else status.NOT_SERVING)

    async def stop(self) -> None:
        server, self.server, self.health = self.server, None, None
        if server is not None:
            await server.stop(None)
