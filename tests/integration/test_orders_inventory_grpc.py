"""orders' gRPC client against the real inventory gRPC server (ADR 0027): every saga step's
outcome from real answers (tokens checked by the chassis verifier, rich error details from
the real use cases), and round_robin over two real instances skipping the one whose health
service says NOT_SERVING, then the one that stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from chassis.resilience import CircuitBreaker
from services.orders.adapters.inventory_grpc import (
    SERVICE_NAME,
    GrpcInventory,
    channel_options,
    channel_target,
)
from services.orders.domain import (
    Committed,
    Line,
    OutOfStock,
    Refused,
    Released,
    Reserved,
    Unavailable,
)
from tests.integration.test_inventory_grpc import Inventory, _start
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async


class IssuedToken:
    """orders' service token, from the test issuer; counts what the client asks for."""

    def __init__(self, issuer: TestIssuer, scopes: list[str]) -> None:
        self.issuer, self.scopes = issuer, scopes
        self.fetched = 0
        self.invalidated = 0

    async def get(self) -> str:
        self.fetched += 1
        return self.issuer.token(self.scopes)

    def invalidate(self, token: str) -> None:
        self.invalidated += 1


@contextlib.asynccontextmanager
async def client(ports: list[int], token: IssuedToken) -> AsyncIterator[GrpcInventory]:
    channel = grpc.aio.insecure_channel(
        channel_target([f"127.0.0.1:{p}" for p in ports]),
        options=channel_options(3, 0.05, 20.0, 10.0),
    )
    breaker = CircuitBreaker("inventory", failure_threshold=1000, registry=CollectorRegistry())
    try:
        yield GrpcInventory(channel, token, deadline=10.0, breaker=breaker)  # type: ignore[arg-type]
    finally:
        await channel.close()


@pytest.fixture
async def inventory(tmp_path: Path) -> AsyncIterator[Inventory]:
    async for running in _start(f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"):
        yield running


async def test_every_step_reads_the_real_answers(inventory: Inventory) -> None:
    await inventory.put_stock("SKU-1", 5)
    token = IssuedToken(inventory.issuer, ["inventory:write"])
    async with client([inventory.grpc_port], token) as grpc_inventory:
        assert await grpc_inventory.reserve("o1", [Line("SKU-1", 2)]) == Reserved()
        assert await grpc_inventory.reserve("o1", [Line("SKU-1", 2)]) == Reserved()  # again
        assert await inventory.level("SKU-1") == (5, 2)
        assert await grpc_inventory.reserve("o2", [Line("SKU-1", 9)]) == OutOfStock(("SKU-1",))
        unknown = await grpc_inventory.reserve("o3", [Line("NOPE-1", 1)])
        assert isinstance(unknown, Refused) and "NOPE-1" in unknown.detail
        assert await grpc_inventory.commit("o1") == Committed()
        assert await inventory.level("SKU-1") == (3, 0)
        assert isinstance(await grpc_inventory.commit("o-none"), Refused)
        assert isinstance(await grpc_inventory.release("o1"), Unavailable)  # committed: gone
        await inventory.put_stock("SKU-1", 5)
        assert await grpc_inventory.reserve("o4", [Line("SKU-1", 1)]) == Reserved()
        assert await grpc_inventory.release("o4") == Released()
        assert await grpc_inventory.release("o-never") == Released()  # nothing reserved
        assert await inventory.level("SKU-1") == (5, 0)


async def test_a_refused_token_is_fetched_again_then_unavailable(inventory: Inventory) -> None:
    token = IssuedToken(TestIssuer(), ["inventory:write"])  # an issuer inventory does not trust
    async with client([inventory.grpc_port], token) as grpc_inventory:
        outcome = await grpc_inventory.reserve("o1", [Line("SKU-1", 1)])
    assert isinstance(outcome, Unavailable) and "UNAUTHENTICATED" in outcome.error
    assert (token.fetched, token.invalidated) == (2, 2)
    assert not [s for s in inventory.statements if "reservation" in s.lower()]


async def test_a_token_without_the_scope_is_unavailable(inventory: Inventory) -> None:
    token = IssuedToken(inventory.issuer, ["inventory:read"])
    async with client([inventory.grpc_port], token) as grpc_inventory:
        outcome = await grpc_inventory.commit("o1")
    assert isinstance(outcome, Unavailable) and "PERMISSION_DENIED" in outcome.error


async def test_round_robin_skips_the_instance_not_serving_then_the_one_stopped(
    tmp_path: Path,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first, second = [
            await stack.enter_async_context(
                contextlib.asynccontextmanager(_start)(
                    f"sqlite+aiosqlite:///{tmp_path / f'inventory-{n}.db'}"
                )
            )
            for n in (1, 2)
        ]
        for instance in (first, second):
            await instance.put_stock("SKU-1", 1000)
        assert first.server.health is not None
        await first.server.health.set(SERVICE_NAME, _status(serving=False))
        # the instances trust different issuers: the token of the one serving
        token = IssuedToken(second.issuer, ["inventory:write"])
        async with client([first.grpc_port, second.grpc_port], token) as grpc_inventory:
            before = len(first.statements)
            for i in range(10):
                assert await grpc_inventory.reserve(f"a{i}", [Line("SKU-1", 1)]) == Reserved()
            assert len(first.statements) == before  # not one call reached it
            assert await second.level("SKU-1") == (1000, 10)

            # the second stops (NOT_SERVING, then gone); the first serves again
            token.issuer = first.issuer
            await first.server.health.set(SERVICE_NAME, _status(serving=True))
            await second.server.stop()

            async def reserved_on_first() -> bool:
                return await grpc_inventory.reserve("b", [Line("SKU-1", 1)]) == Reserved()

            await wait_until_async(reserved_on_first, 10, "calls going to the first instance")
            for i in range(5):
                assert await grpc_inventory.reserve(f"c{i}", [Line("SKU-1", 1)]) == Reserved()
            assert await first.level("SKU-1") == (1000, 6)


def _status(*, serving: bool) -> int:
    status = health_pb2.HealthCheckResponse
    return status.SERVING if serving else status.NOT_SERVING
