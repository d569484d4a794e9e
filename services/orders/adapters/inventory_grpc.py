"""The saga's inventory steps over gRPC (ADR 0027): reserve, commit and release against
`portico.inventory.v1.Inventory`, with the same domain outcomes as `HttpUpstreams`.

The channel does what the REST client does by hand, per the gRPC service config: a
`round_robin` balancer over every target, each address used only while inventory's standard
health service says SERVING (`healthCheckConfig`), and UNAVAILABLE retried with exponential
backoff (`retryPolicy`). Every call carries a deadline and orders' service token; keepalive
pings find a dead peer on an idle connection. The answer maps onto the outcomes exactly as the
REST status codes do (the table in `_TRANSIENT` and each method); the dependency's circuit
breaker (shared with the REST client, one per dependency) sees every logical call.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from chassis import REQUEST_ID_HEADER, correlation_id
from chassis.resilience import CircuitBreaker, CircuitOpen
from chassis.service_token import ServiceToken, TokenUnavailable
from portico_proto.inventory.v1 import inventory_pb2 as pb
from portico_proto.inventory.v1 import inventory_pb2_grpc as pb_grpc

from ..domain import Committed, Line, OutOfStock, Refused, Released, Reserved, Unavailable
from .upstreams import Transient

__all__ = [
    "OUTBOUND_GRPC",
    "SERVICE_NAME",
    "GrpcInventory",
    "channel_options",
    "channel_target",
    "check_targets",
    "service_config",
]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inventory"].full_name
# Every gRPC method orders calls -> the provider: the contracts runner derives the orders ->
# inventory gRPC boundary (`grpc:Reserve`, ...) from this, as the REST one from `OUTBOUND`.
OUTBOUND_GRPC = {"Reserve": "inventory", "Commit": "inventory", "Release": "inventory"}
MAX_ATTEMPTS = 5  # gRPC's own cap on retryPolicy.maxAttempts
MAX_BACKOFF = 1.0  # seconds, as HttpUpstreams' retries
# grpcio 1.85 sometimes never makes a retry whose initialBackoff is 1 ms (the call then waits
# out its deadline; seen in tests, not at 2 ms and above): the backoff starts at 10 ms at least.
MIN_BACKOFF = 0.01
# A restarted instance is reconnected to within this (gRPC's default grows to 120 s).
MAX_RECONNECT_BACKOFF_MS = 2000
_DETAILS_KEY = "grpc-status-details-bin"
MAX_SKUS, MAX_SKU_LENGTH = 100, 64  # inventory's own bounds on a reservation's lines
_OUT_OF_STOCK = "OUT_OF_STOCK"
# Codes worth trying again later, as HttpUpstreams' 5xx/403/408/425/429 (a 401 too, after a
# fresh token): the saga sees Unavailable. Every other code is the answer (REST's 4xx).
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # 503, or the connection (after the channel's retries)
        grpc.StatusCode.DEADLINE_EXCEEDED,  # 408/504: the deadline passed
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # 429
        grpc.StatusCode.PERMISSION_DENIED,  # 403: a scope missing from orders' token
        grpc.StatusCode.UNAUTHENTICATED,  # 401: the token refused
        grpc.StatusCode.INTERNAL,  # 500
        grpc.StatusCode.UNKNOWN,  # 500
        grpc.StatusCode.DATA_LOSS,  # 500
        grpc.StatusCode.UNIMPLEMENTED,  # 501: an inventory without the call (a rollout)
        grpc.StatusCode.ABORTED,  # a concurrency conflict: retry
        grpc.StatusCode.CANCELLED,  # the call was cut off
    }
)


def _address(target: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `[v6]:port`; None when malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c in host for c in "/ ,"):
        return None
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_targets(targets: Sequence[str]) -> str | None:
    """The settings check of ORDERS_INVENTORY_GRPC_TARGETS; an error string or None."""
    if not targets:
        return "must name at least one host:port"
    try:
        channel_target(targets)
    except ValueError as exc:
        return str(exc)
    return None


def channel_target(targets: Sequence[str]) -> str:
    """The channel's target for a list of `host:port`.

    Several IP addresses: gRPC's static resolvers (`ipv4:a:p,b:p`, `ipv6:...`), one address
    per instance. One host name: `dns:///name:port`, every address it resolves to (a headless
    Kubernetes Service, a compose service with replicas). Several names cannot be one channel's
    target in grpcio (no custom resolvers): refused, naming the alternatives.
    """
    addresses = []
    for target in targets:
        found = _address(target)
        if found is None:
            raise ValueError(f"{target!r} is not host:port")
        addresses.append(found)
    ips = [_ip(host) for host, _ in addresses]
    if len(addresses) == 1 and ips[0] is None:
        host, port = addresses[0]
        return f"dns:///{host}:{port}"
    if any(ip is None for ip in ips):
        raise ValueError(
            "several targets must be IP addresses (or give one DNS name that resolves to "
            "every instance)"
        )
    versions = {ip.version for ip in ips if ip is not None}
    if len(versions) > 1:
        raise ValueError("targets must be all IPv4 or all IPv6 addresses")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in addresses)
    return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in addresses)


def _seconds(value: float) -> str:
    """A protobuf Duration as the service config's JSON spells it."""
    return f"{value:.3f}s"


def service_config(attempts: int, base_delay: float) -> dict[str, Any]:
    """round_robin over the healthy addresses; UNAVAILABLE retried `attempts` times in all."""
    method: dict[str, Any] = {"name": [{"service": SERVICE_NAME}]}
    attempts = min(attempts, MAX_ATTEMPTS)
    if attempts >= 2:
        method["retryPolicy"] = {
            "maxAttempts": attempts,
            "initialBackoff": _seconds(max(base_delay, MIN_BACKOFF)),
            "maxBackoff": _seconds(max(MAX_BACKOFF, base_delay)),
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
        "methodConfig": [method],
    }


def channel_options(
    attempts: int, base_delay: float, keepalive: float, keepalive_timeout: float
) -> list[tuple[str, Any]]:
    """The channel's arguments: service config, retries on, keepalive, quick reconnects."""
    return [
        ("grpc.service_config", json.dumps(service_config(attempts, base_delay))),
        ("grpc.service_config_disable_resolution", 1),  # DNS TXT records cannot override it
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", int(keepalive * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),  # an idle saga still finds a dead peer
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


class _TokenRefused(Transient):
    """UNAUTHENTICATED: the token is dropped and the call tried once more with a fresh one."""


@dataclass(frozen=True)
class Answer:
    """A call's final answer: OK, or a non-transient status with its text and details (the
    saga reads nothing of an OK reply, as it reads nothing of REST's 2xx body)."""

    code: grpc.StatusCode
    message: str = ""
    details: tuple[Message, ...] = field(default=())

    @property
    def out_of_stock(self) -> tuple[str, ...]:
        """The skus short, from PreconditionFailure violations of type OUT_OF_STOCK (bounded:
        an order has at most MAX_SKUS lines, a sku at most 64 characters)."""
        skus = (
            v.subject
            for d in self.details
            if isinstance(d, error_details_pb2.PreconditionFailure)
            for v in d.violations
            if v.type == _OUT_OF_STOCK and 0 < len(v.subject) <= MAX_SKU_LENGTH
        )
        return tuple(itertools.islice(skus, MAX_SKUS))


_KNOWN_DETAILS: tuple[type[Message], ...] = (
    error_details_pb2.PreconditionFailure,
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
)


def rich_details(trailing: Sequence[tuple[str, str | bytes]] | None) -> tuple[Message, ...]:
    """The google.rpc error details of a failed call (the standard trailer); unknown or
    unreadable ones are skipped: the status code alone still decides the outcome."""
    raw = next((v for k, v in trailing or () if k == _DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return ()
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # DecodeError: a broken trailer is no detail
        return ()
    found: list[Message] = []
    for any_detail in status.details:
        for kind in _KNOWN_DETAILS:
            if any_detail.Is(kind.DESCRIPTOR):
                detail = kind()
                if any_detail.Unpack(detail):
                    found.append(detail)
                break
    return tuple(found)


class GrpcInventory:
    """reserve, commit and release over one `grpc.aio` channel (see the module docstring)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: ServiceToken,
        *,
        deadline: float,
        breaker: CircuitBreaker,
    ) -> None:
        self.stub = pb_grpc.InventoryStub(channel)
        self.token = token
        self.deadline = deadline
        self.breaker = breaker

    async def _attempt(self, method: Callable[..., Awaitable[Message]], request: Message) -> Answer:
        token = await self.token.get()
        metadata = [("authorization", f"Bearer {token}")]
        cid = correlation_id.get()
        if cid:
            metadata.append((REQUEST_ID_HEADER.lower(), cid))
        try:
            await method(request, timeout=self.deadline, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                self.token.invalidate(token)
                raise _TokenRefused("inventory: UNAUTHENTICATED (service token refused)") from exc
            if code in _TRANSIENT:
                raise Transient(f"inventory: {code.name} {(exc.details() or '')[:300]}") from exc
            details = rich_details(exc.trailing_metadata())  # type: ignore[arg-type]
            return Answer(code, (exc.details() or code.name)[:300], details)
        return Answer(grpc.StatusCode.OK)

    async def _call(self, method: Callable[..., Awaitable[Message]], request: Message) -> Answer:
        """One logical call through the breaker; a refused token is fetched anew once.

        Raises Transient, CircuitOpen or TokenUnavailable.
        """
        try:
            return await self.breaker.call_async(self._attempt, method, request)
        except _TokenRefused:
            return await self.breaker.call_async(self._attempt, method, request)

    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable:
        request = pb.ReserveRequest(
            order_id=order_id, lines=[pb.Line(sku=ln.sku, quantity=ln.quantity) for ln in lines]
        )
        try:
            answer = await self._call(self.stub.Reserve, request)
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        if answer.code == grpc.StatusCode.OK:
            return Reserved()
        skus = answer.out_of_stock
        if answer.code == grpc.StatusCode.FAILED_PRECONDITION and skus:
            return OutOfStock(skus)
        return Refused(answer.message)  # unknown sku, a released order, other lines, ...

    async def commit(self, order_id: str) -> Committed | Refused | Unavailable:
        try:
            answer = await self._call(self.stub.Commit, pb.CommitRequest(order_id=order_id))
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        if answer.code == grpc.StatusCode.OK:
            return Committed()
        return Refused(answer.message)

    async def release(self, order_id: str) -> Released | Unavailable:
        try:
            answer = await self._call(self.stub.Release, pb.ReleaseRequest(order_id=order_id))
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        # NOT_FOUND: nothing was reserved, nothing to release (REST's 404)
        if answer.code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
            return Released()
        return Unavailable(f"inventory: release answered {answer.code.name} {answer.message}")
