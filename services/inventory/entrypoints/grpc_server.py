"""The gRPC API (ADR 0025): protobuf in, the same use case as REST, protobuf or a status out.

`add_grpc_server(app, host, port)` serves `portico.inventory.v1.Inventory` (generated from
proto/portico/inventory/v1/inventory.proto into `portico_proto`) on its own port, with the
standard health service and server reflection, for as long as the aiohttp app runs: it starts
after the app's own set-up (the use cases and the token verifier are the app's `Deps` and
`VERIFIER`) and stops before the database engine is disposed. On the way out the health
service answers NOT_SERVING first, then calls in flight get `grace` seconds to finish.

Each call checks, in this order and before any database work: the bearer token in the
`authorization` metadata (the chassis verifier, as for REST; UNAUTHENTICATED, or
PERMISSION_DENIED without the scope), then its fields (INVALID_ARGUMENT naming each bad
field in a google.rpc.BadRequest). Use-case errors map to status codes in `_status`; the
proto file documents every code per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chassis.aiohttp import VERIFIER
from chassis.tokens import (
    AsyncTokenVerifier,
    InsufficientScope,
    KeysUnavailable,
    TokenError,
    bearer_token,
)
from portico_proto.inventory.v1 import inventory_pb2 as pb
from portico_proto.inventory.v1 import inventory_pb2_grpc as pb_grpc

from ..domain import Line, Reservation, StockLevel, check_quantity, check_sku
from ..schemas import ORDER_ID
from ..service_layer import services
from .deps import DEPS

__all__ = ["SERVICE_NAME", "GrpcServer", "InventoryServicer", "add_grpc_server"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inventory"].full_name
READ, WRITE = "inventory:read", "inventory:write"  # as the REST routes
MAX_LINES = 100  # as ReserveRequestSchema
_ORDER_ID_RULE = "must be 1-64 visible ASCII characters"  # as ReserveRequestSchema
_DETAILS_KEY = "grpc-status-details-bin"  # the google.rpc.Status of a failed call
T = TypeVar("T")


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    detail: Message | None = None,
) -> NoReturn:
    """End the call with `code`; `detail` travels in the standard rich-error trailer."""
    trailer: tuple[tuple[str, bytes], ...] = ()
    if detail is not None:
        status = status_pb2.Status(code=code.value[0], message=message)
        status.details.add().Pack(detail)
        trailer = ((_DETAILS_KEY, status.SerializeToString()),)
    await context.abort(code, message, trailing_metadata=trailer)
    raise AssertionError("context.abort returned")  # pragma: no cover - it always raises


async def _authorize(
    context: grpc.aio.ServicerContext[Any, Any], verifier: AsyncTokenVerifier, scope: str
) -> None:
    """The REST check (`chassis.aiohttp.require_scopes`) on the `authorization` metadata."""
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    try:
        if len(values) > 1:  # as the gateway refuses two Authorization headers
            raise TokenError("more than one authorization entry")
        raw = values[0] if values else None
        claims = await verifier.verify(bearer_token(raw if isinstance(raw, str) else None))
        claims.require((scope,))
    except InsufficientScope as exc:
        await _abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.description)
    except KeysUnavailable as exc:
        await _abort(context, grpc.StatusCode.UNAVAILABLE, exc.description)
    except TokenError as exc:
        await _abort(context, grpc.StatusCode.UNAUTHENTICATED, exc.description)


class _Fields:
    """Collects field violations, so one INVALID_ARGUMENT names every bad field."""

    def __init__(self) -> None:
        self.bad = error_details_pb2.BadRequest()

    def check(self, field: str, problem: str | None) -> None:
        if problem:
            self.bad.field_violations.add(field=field, description=problem)

    def order_id(self, value: str) -> str:
        self.check("order_id", None if ORDER_ID.fullmatch(value) else _ORDER_ID_RULE)
        return value

    async def done(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.bad.field_violations:
            first = self.bad.field_violations[0]
            message = f"invalid {first.field}: {first.description}"
            if len(self.bad.field_violations) > 1:
                message += f" (and {len(self.bad.field_violations) - 1} more)"
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, message, self.bad)


def _precondition(kind: str, subject: str, description: str) -> Message:
    return error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=kind, subject=subject, description=description
            )
        ]
    )


def _status(
    exc: services.InventoryError, order_id: str
) -> tuple[grpc.StatusCode, str, Message | None]:
    """A use-case error as the call's status (the REST twin is `routes._problem`)."""
    if isinstance(exc, services.StockNotFound):
        return grpc.StatusCode.NOT_FOUND, f"no stock record for sku {exc}", None
    if isinstance(exc, services.ReservationNotFound):
        return grpc.StatusCode.NOT_FOUND, f"no reservation for order {exc}", None
    if isinstance(exc, services.OutOfStock):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="OUT_OF_STOCK",
                    subject=s.sku,
                    description=f"requested {s.requested}, available {s.available}",
                )
                for s in exc.reservation.shortages
            ]
        )
        return grpc.StatusCode.FAILED_PRECONDITION, f"not enough stock for: {exc}", failure
    if isinstance(exc, services.ReservationConflict):
        detail = _precondition("RESERVATION_STATE", order_id, exc.status.value)
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc), detail
    if isinstance(exc, services.ReservationMismatch):
        message = f"order {exc} was already reserved with different lines"
        return grpc.StatusCode.ALREADY_EXISTS, message, None
    return grpc.StatusCode.INTERNAL, "an unexpected error occurred", None  # pragma: no cover


def _reservation(reservation: Reservation) -> pb.Reservation:
    return pb.Reservation(
        order_id=reservation.order_id,
        status=pb.Reservation.Status.Value(reservation.status.value),
        lines=[pb.Line(sku=ln.sku, quantity=ln.quantity) for ln in reservation.lines],
    )


def _level(level: StockLevel) -> pb.StockLevel:
    return pb.StockLevel(
        sku=level.sku, on_hand=level.on_hand, reserved=level.reserved, available=level.available
    )


class InventoryServicer(pb_grpc.InventoryServicer):
    """The four calls over the app's use cases and token verifier (method names as generated)."""

    def __init__(self, service: services.InventoryService, verifier: AsyncTokenVerifier) -> None:
        self.service = service
        self.verifier = verifier

    async def _call(
        self, context: grpc.aio.ServicerContext[Any, Any], use_case: Awaitable[T], order_id: str
    ) -> T:
        try:
            return await use_case
        except services.InventoryError as exc:
            code, message, detail = _status(exc, order_id)
            await _abort(context, code, message, detail)

    async def Reserve(
        self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Reservation:
        await _authorize(context, self.verifier, WRITE)
        fields = _Fields()
        order_id = fields.order_id(request.order_id)
        if not 1 <= len(request.lines) <= MAX_LINES:
            fields.check("lines", f"must hold 1 to {MAX_LINES} lines")
        lines = []
        for i, line in enumerate(request.lines[:MAX_LINES]):
            fields.check(f"lines[{i}].sku", check_sku(line.sku))
            fields.check(f"lines[{i}].quantity", check_quantity(line.quantity))
            lines.append(Line(line.sku, line.quantity))
        await fields.done(context)
        unknown = await self.service.unknown_skus(line.sku for line in lines)
        if unknown:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no stock record for sku {', '.join(unknown)}",
                error_details_pb2.ResourceInfo(
                    resource_type="sku", resource_name=",".join(unknown)
                ),
            )
        reservation = await self._call(context, self.service.reserve(order_id, lines), order_id)
        return _reservation(reservation)

    async def Commit(
        self, request: pb.CommitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Reservation:
        await _authorize(context, self.verifier, WRITE)
        fields = _Fields()
        order_id = fields.order_id(request.order_id)
        await fields.done(context)
        return _reservation(await self._call(context, self.service.commit(order_id), order_id))

    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Reservation:
        await _authorize(context, self.verifier, WRITE)
        fields = _Fields()
        order_id = fields.order_id(request.order_id)
        await fields.done(context)
        return _reservation(await self._call(context, self.service.release(order_id), order_id))

    async def GetStock(
        self, request: pb.GetStockRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StockLevel:
        await _authorize(context, self.verifier, READ)
        fields = _Fields()
        fields.check("sku", check_sku(request.sku))
        await fields.done(context)
        return _level(await self._call(context, self.service.get_stock(request.sku), ""))


@dataclass
class GrpcServer:
    """One `grpc.aio` server bound to `host:port` (0: a free port, read `port` once started)."""

    host: str
    port: int
    grace: float = 5.0
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None

    async def start(self, service: services.InventoryService, verifier: AsyncTokenVerifier) -> int:
        # No SO_REUSEPORT (grpc's default on Linux): a second process on the port must fail
        # to start, not share the calls with the first (another stack, another database).
        # Clients' keepalive pings (orders pings every 20 s, idle or not: ADR 0027) are
        # welcome down to every 5 s; grpc's default would answer them with GOAWAY.
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ]
        )
        pb_grpc.add_InventoryServicer_to_server(InventoryServicer(service, verifier), server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:  # the port is taken (or the host is not ours): say which
            await server.stop(None)
            raise RuntimeError(f"inventory gRPC cannot listen on {self.host}:{self.port}") from None
        await server.start()
        for name in ("", SERVICE_NAME):  # "": the server as a whole
            await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server, self.health = server, checker
        return self.port

    async def stop(self) -> None:
        server, checker, self.server, self.health = self.server, self.health, None, None
        if checker is not None:
            await checker.enter_graceful_shutdown()  # NOT_SERVING, and it stays so
        if server is not None:
            await server.stop(self.grace)


GRPC_SERVER = web.AppKey("portico.inventory.grpc", GrpcServer)


def add_grpc_server(
    app: web.Application, host: str, port: int, *, grace: float = 5.0
) -> GrpcServer:
    """Serve gRPC while `app` runs (after `create_app`, whose `Deps` it uses)."""
    grpc_server = GrpcServer(host, port, grace)
    app[GRPC_SERVER] = grpc_server

    async def serve_grpc(app: web.Application) -> AsyncIterator[None]:
        await grpc_server.start(app[DEPS].service, app[VERIFIER])
        yield
        await grpc_server.stop()

    app.cleanup_ctx.append(serve_grpc)
    return grpc_server
