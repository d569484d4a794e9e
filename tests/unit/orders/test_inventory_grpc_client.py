"""orders' gRPC inventory client against stub gRPC servers on free ports (ADR 0027).

The table holds `GrpcInventory` and `HttpUpstreams` to the same domain outcome for the same
answer of inventory (a REST status and body, its gRPC status and details), then: metadata
sent, UNAVAILABLE retried by the service config, a refused token fetched anew, the deadline,
the shared circuit breaker, round_robin over two instances skipping one whose health check
says NOT_SERVING, and the settings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry

from chassis import ConfigError, correlation_id
from chassis.resilience import CircuitBreaker, Retry
from contracts.grpc_stub import Canned, StubServer
from portico_proto.inventory.v1 import inventory_pb2 as pb
from services.orders.__main__ import init
from services.orders.adapters.inventory_grpc import (
    SERVICE_NAME,
    GrpcInventory,
    channel_options,
    channel_target,
    service_config,
)
from services.orders.adapters.inventory_transport import WithInventory
from services.orders.adapters.upstreams import HttpUpstreams, Transient
from services.orders.app import create_app
from services.orders.domain import (
    Committed,
    Line,
    OutOfStock,
    Refused,
    Released,
    Reserved,
    Unavailable,
)
from services.orders.entrypoints import DEPS
from services.orders.settings import OrdersSettings
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

RESERVE, COMMIT, RELEASE = (f"/{SERVICE_NAME}/{m}" for m in ("Reserve", "Commit", "Release"))
Code = grpc.StatusCode


class FakeToken:
    """Hands out tok-1, tok-2, ...: a new one after each invalidation."""

    def __init__(self) -> None:
        self.issued = 0
        self.current: str | None = None

    async def get(self) -> str:
        if self.current is None:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return self.current

    def invalidate(self, token: str) -> None:
        if token == self.current:
            self.current = None


def _shortage(*skus: str) -> error_details_pb2.PreconditionFailure:
    return error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="OUT_OF_STOCK", subject=s, description="requested 5, available 1"
            )
            for s in skus
        ]
    )


STATE = error_details_pb2.PreconditionFailure(
    violations=[
        error_details_pb2.PreconditionFailure.Violation(
            type="RESERVATION_STATE", subject="o1", description="RELEASED"
        )
    ]
)
RESERVATION = pb.Reservation(order_id="o1", status=pb.Reservation.RESERVED)


@dataclass(frozen=True)
class Case:
    step: str  # reserve | commit | release
    rest: tuple[int, dict[str, Any]]
    grpc: Canned
    expected: object


# One row per answer inventory gives; both transports must read it the same way.
CASES = {
    "reserve ok": Case(
        "reserve", (201, {"status": "RESERVED"}), Canned(reply=RESERVATION), Reserved()
    ),
    "reserve out of stock": Case(
        "reserve",
        (409, {"detail": "not enough stock", "skus": ["SKU-9", "SKU-8"]}),
        Canned(
            Code.FAILED_PRECONDITION, text="not enough stock", details=[_shortage("SKU-9", "SKU-8")]
        ),
        OutOfStock(("SKU-9", "SKU-8")),
    ),
    "reserve of a released order": Case(
        "reserve",
        (409, {"detail": "reservation is RELEASED"}),
        Canned(Code.FAILED_PRECONDITION, text="reservation is RELEASED", details=[STATE]),
        Refused("reservation is RELEASED"),
    ),
    "reserve unknown sku": Case(
        "reserve",
        (404, {"detail": "no stock record for sku NOPE"}),
        Canned(Code.NOT_FOUND, text="no stock record for sku NOPE"),
        Refused("no stock record for sku NOPE"),
    ),
    "reserve with other lines": Case(
        "reserve",
        (422, {"detail": "other lines"}),
        Canned(Code.ALREADY_EXISTS, text="other lines"),
        Refused("other lines"),
    ),
    "reserve bad field": Case(
        "reserve",
        (400, {"detail": "bad"}),
        Canned(Code.INVALID_ARGUMENT, text="bad"),
        Refused("bad"),
    ),
    "reserve down": Case("reserve", (503, {}), Canned(Code.UNAVAILABLE, text="down"), Unavailable),
    "reserve scope missing": Case(
        "reserve", (403, {}), Canned(Code.PERMISSION_DENIED, text="scope"), Unavailable
    ),
    "reserve throttled": Case(
        "reserve", (429, {}), Canned(Code.RESOURCE_EXHAUSTED, text="slow down"), Unavailable
    ),
    "reserve crashed": Case("reserve", (500, {}), Canned(Code.INTERNAL, text="boom"), Unavailable),
    "reserve token refused": Case(
        "reserve", (401, {}), Canned(Code.UNAUTHENTICATED, text="no"), Unavailable
    ),
    "commit ok": Case(
        "commit", (200, {"status": "COMMITTED"}), Canned(reply=RESERVATION), Committed()
    ),
    "commit unknown order": Case(
        "commit",
        (404, {"detail": "no reservation"}),
        Canned(Code.NOT_FOUND, text="no reservation"),
        Refused("no reservation"),
    ),
    "commit of a released order": Case(
        "commit",
        (409, {"detail": "reservation is RELEASED"}),
        Canned(Code.FAILED_PRECONDITION, text="reservation is RELEASED", details=[STATE]),
        Refused("reservation is RELEASED"),
    ),
    "commit down": Case("commit", (503, {}), Canned(Code.UNAVAILABLE, text="down"), Unavailable),
    "release ok": Case(
        "release", (200, {"status": "RELEASED"}), Canned(reply=RESERVATION), Released()
    ),
    "release unknown order": Case(
        "release", (404, {}), Canned(Code.NOT_FOUND, text="none"), Released()
    ),
    "release of a committed order": Case(
        "release",
        (409, {"detail": "COMMITTED"}),
        Canned(Code.FAILED_PRECONDITION, text="COMMITTED", details=[STATE]),
        Unavailable,
    ),
    "release down": Case("release", (503, {}), Canned(Code.UNAVAILABLE, text="down"), Unavailable),
}


def _breaker(threshold: int = 1000) -> CircuitBreaker:
    return CircuitBreaker(
        "inventory", failure_threshold=threshold, recovery_timeout=60, registry=CollectorRegistry()
    )


@pytest.fixture
async def stub() -> AsyncIterator[StubServer]:
    server = StubServer()
    await server.start((SERVICE_NAME,))
    yield server
    await server.stop()


def _client(
    targets: list[str],
    *,
    attempts: int = 2,
    deadline: float = 10.0,
    breaker: CircuitBreaker | None = None,
    token: FakeToken | None = None,
) -> tuple[grpc.aio.Channel, GrpcInventory]:
    channel = grpc.aio.insecure_channel(
        channel_target(targets), options=channel_options(attempts, 0.001, 20.0, 10.0)
    )
    client = GrpcInventory(
        channel,
        token or FakeToken(),  # type: ignore[arg-type]
        deadline=deadline,
        breaker=breaker or _breaker(),
    )
    return channel, client


@pytest.fixture
async def inventory(stub: StubServer) -> AsyncIterator[GrpcInventory]:
    channel, client = _client([f"127.0.0.1:{stub.port}"])
    yield client
    await channel.close()


@pytest.fixture
async def rest(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Any]:
    """HttpUpstreams against an app answering each inventory route with `answer[0]`."""
    answer: list[tuple[int, dict[str, Any]]] = [(200, {})]

    async def handler(request: web.Request) -> web.Response:
        status, body = answer[0]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/api/v1/reservations", handler)
    app.router.add_post("/api/v1/reservations/{id}/{step}", handler)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        client = HttpUpstreams(
            session,
            FakeToken(),  # type: ignore[arg-type]
            catalog_url=url,
            inventory_url=url,
            payments_url=url,
            retry=Retry(attempts=2, base_delay=0.001, max_delay=0.002, retry_on=(Transient,)),
            failure_threshold=1000,
            registry=CollectorRegistry(),
        )
        yield answer, client


async def _step(client: Any, step: str) -> object:
    if step == "reserve":
        return await client.reserve("o1", [Line("SKU-9", 5), Line("SKU-8", 1)])
    return await getattr(client, step)("o1")


@pytest.mark.parametrize("name", CASES)
async def test_both_transports_read_an_answer_the_same(
    name: str, stub: StubServer, inventory: GrpcInventory, rest: Any
) -> None:
    case = CASES[name]
    answer, http = rest
    answer[0] = case.rest
    stub.answers[f"/{SERVICE_NAME}/{case.step.capitalize()}"] = case.grpc
    over_rest = await _step(http, case.step)
    over_grpc = await _step(inventory, case.step)
    if isinstance(case.expected, type):
        assert isinstance(over_rest, case.expected) and isinstance(over_grpc, case.expected)
        # the channel's retries end with the answer, never by waiting out the deadline
        assert "DEADLINE_EXCEEDED" not in getattr(over_grpc, "error", ""), over_grpc
    else:
        assert over_rest == over_grpc == case.expected


async def test_requests_carry_the_token_the_request_id_and_the_lines(
    stub: StubServer, inventory: GrpcInventory
) -> None:
    stub.answers[RESERVE] = Canned(reply=RESERVATION)
    token = correlation_id.set("req-42")
    try:
        assert await inventory.reserve("o1", [Line("SKU-1", 2)]) == Reserved()
    finally:
        correlation_id.reset(token)
    seen = stub.seen[-1]
    assert seen.metadata["authorization"] == "Bearer tok-1"
    assert seen.metadata["x-request-id"] == "req-42"
    request = pb.ReserveRequest.FromString(seen.request)
    assert request.order_id == "o1"
    assert [(ln.sku, ln.quantity) for ln in request.lines] == [("SKU-1", 2)]


async def test_unavailable_is_retried_by_the_channel_with_the_same_request(
    stub: StubServer,
) -> None:
    answers = iter([Canned(Code.UNAVAILABLE, text="busy")] * 2 + [Canned(reply=RESERVATION)])
    stub.answers[RESERVE] = lambda _request: next(answers)
    channel, client = _client([f"127.0.0.1:{stub.port}"], attempts=3)
    try:
        assert await client.reserve("o1", [Line("SKU-1", 1)]) == Reserved()
    finally:
        await channel.close()
    assert len(stub.seen) == 3 and len({s.request for s in stub.seen}) == 1


async def test_other_failures_are_not_retried_by_the_channel(
    stub: StubServer, inventory: GrpcInventory
) -> None:
    stub.answers[COMMIT] = Canned(Code.INTERNAL, text="boom")
    assert isinstance(await inventory.commit("o1"), Unavailable)
    assert len(stub.seen) == 1


async def test_a_refused_token_is_fetched_anew_and_the_call_tried_again(
    stub: StubServer,
) -> None:
    stub.answers[COMMIT] = lambda request: (
        Canned(reply=RESERVATION)
        if stub.seen[-1].metadata["authorization"] == "Bearer tok-2"
        else Canned(Code.UNAUTHENTICATED, text="expired")
    )
    token = FakeToken()
    channel, client = _client([f"127.0.0.1:{stub.port}"], token=token)
    try:
        assert await client.commit("o1") == Committed()
    finally:
        await channel.close()
    assert token.issued == 2 and len(stub.seen) == 2


async def test_a_call_past_its_deadline_is_unavailable(stub: StubServer) -> None:
    async def never(_request: bytes) -> Canned:
        await asyncio.Event().wait()  # inventory takes the call and never answers
        raise AssertionError("unreachable")

    stub.answers[RESERVE] = never
    channel, client = _client([f"127.0.0.1:{stub.port}"], deadline=0.2)
    try:
        outcome = await client.reserve("o1", [Line("SKU-1", 1)])
    finally:
        await channel.close()
    assert isinstance(outcome, Unavailable) and "DEADLINE_EXCEEDED" in outcome.error


async def test_the_breaker_opens_and_spares_inventory(stub: StubServer) -> None:
    stub.answers[COMMIT] = Canned(Code.INTERNAL, text="boom")
    breaker = _breaker(threshold=2)
    channel, client = _client([f"127.0.0.1:{stub.port}"], breaker=breaker)
    try:
        for _ in range(2):
            assert isinstance(await client.commit("o1"), Unavailable)
        assert breaker.state == "open"
        outcome = await client.commit("o1")
    finally:
        await channel.close()
    assert isinstance(outcome, Unavailable) and "inventory" in outcome.error
    assert len(stub.seen) == 2  # the third call never left orders


async def test_round_robin_skips_an_instance_whose_health_check_fails() -> None:
    servers = [StubServer(), StubServer()]
    for server in servers:
        server.answers[RESERVE] = Canned(reply=RESERVATION)
        await server.start((SERVICE_NAME,))
    sick, well = servers
    await sick.set_health(SERVICE_NAME, serving=False)
    channel, client = _client([f"127.0.0.1:{s.port}" for s in servers])
    try:
        for i in range(20):
            assert await client.reserve(f"o{i}", [Line("SKU-1", 1)]) == Reserved()
        assert (len(sick.seen), len(well.seen)) == (0, 20)

        # Both serving: calls spread over both; then the other one is skipped.
        await sick.set_health(SERVICE_NAME, serving=True)

        async def both_used() -> bool:
            await client.reserve("o-x", [Line("SKU-1", 1)])
            return bool(sick.seen)

        await wait_until_async(both_used, 10, "calls reaching the instance back in service")
        await well.set_health(SERVICE_NAME, serving=False)

        async def only_sick() -> bool:
            before = len(well.seen)
            for _ in range(4):
                await client.reserve("o-y", [Line("SKU-1", 1)])
            return len(well.seen) == before

        await wait_until_async(only_sick, 10, "calls skipping the instance now NOT_SERVING")
    finally:
        await channel.close()
        for server in servers:
            await server.stop()


async def test_with_inventory_delegates_only_inventory_steps(
    stub: StubServer, inventory: GrpcInventory
) -> None:
    class Base:
        async def prices(self, skus: Any) -> str:
            return "priced by base"

        async def reserve(self, *args: Any) -> str:
            raise AssertionError("reserve went to the base")

    composed = WithInventory(Base(), inventory)  # type: ignore[arg-type]
    stub.answers[RESERVE] = Canned(reply=RESERVATION)
    assert await composed.prices(["SKU-1"]) == "priced by base"
    assert await composed.reserve("o1", [Line("SKU-1", 1)]) == Reserved()


def test_service_config_and_targets() -> None:
    config = service_config(3, 0.05)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": SERVICE_NAME}
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 3 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert service_config(9, 0.05)["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5
    assert service_config(3, 0.001)["methodConfig"][0]["retryPolicy"]["initialBackoff"] == "0.010s"
    assert "retryPolicy" not in service_config(1, 0.05)["methodConfig"][0]
    options = dict(channel_options(3, 0.05, 20.0, 10.0))
    assert json.loads(options["grpc.service_config"]) == config
    assert options["grpc.keepalive_time_ms"] == 20000
    assert channel_target(["127.0.0.1:50061", "127.0.0.1:50062"]) == (
        "ipv4:127.0.0.1:50061,127.0.0.1:50062"
    )
    assert channel_target(["inventory:50061"]) == "dns:///inventory:50061"
    assert channel_target(["[::1]:50061"]) == "ipv6:[::1]:50061"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORDERS_INVENTORY_TRANSPORT": "soap"}, "ORDERS_INVENTORY_TRANSPORT"),
        ({"ORDERS_INVENTORY_GRPC_TARGETS": "a:1,b:2"}, "ORDERS_INVENTORY_GRPC_TARGETS"),
        ({"ORDERS_INVENTORY_GRPC_TARGETS": "127.0.0.1"}, "ORDERS_INVENTORY_GRPC_TARGETS"),
        ({"ORDERS_INVENTORY_GRPC_TARGETS": ","}, "ORDERS_INVENTORY_GRPC_TARGETS"),
        ({"ORDERS_INVENTORY_GRPC_DEADLINE": "0"}, "ORDERS_INVENTORY_GRPC_DEADLINE"),
    ],
)
def test_bad_settings_are_refused_at_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        OrdersSettings.from_env(env)


def test_settings_defaults() -> None:
    settings = OrdersSettings.from_env({})
    assert settings.inventory_transport == "grpc"
    assert settings.inventory_grpc_targets == ("127.0.0.1:50061",)
    two = OrdersSettings.from_env(
        {"ORDERS_INVENTORY_GRPC_TARGETS": "127.0.0.1:50061, 127.0.0.1:50062"}
    )
    assert two.inventory_grpc_targets == ("127.0.0.1:50061", "127.0.0.1:50062")


@pytest.mark.parametrize("transport", ["grpc", "rest"])
async def test_the_app_wires_the_chosen_transport(
    transport: str,
    settings: OrdersSettings,
    issuer: TestIssuer,
    aiohttp_client: Callable[..., Awaitable[Any]],
) -> None:
    settings = settings.replace(inventory_transport=transport, client_id="o", client_secret="s")
    init(settings)
    app = create_app(settings, verifier=issuer.async_verifier())
    await aiohttp_client(app)
    upstreams = app[DEPS].started.upstreams
    if transport == "rest":
        assert isinstance(upstreams, HttpUpstreams)
        return
    assert isinstance(upstreams, WithInventory)
    assert isinstance(upstreams.base, HttpUpstreams)
    assert isinstance(upstreams.inventory, GrpcInventory)
    assert upstreams.inventory.breaker is upstreams.base.inventory.breaker  # one per dependency
    assert upstreams.inventory.deadline == settings.inventory_grpc_deadline
