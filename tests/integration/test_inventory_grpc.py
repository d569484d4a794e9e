"""Inventory's gRPC API (ADR 0025) over real sockets: the aiohttp app and its gRPC server on
free ports, a throwaway database (SQLite; the main flow also on PostgreSQL), a `grpc.aio`
channel. Every call moves stock as REST does; bad input is refused before the database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import event

from portico_proto.inventory.v1 import inventory_pb2 as pb
from portico_proto.inventory.v1 import inventory_pb2_grpc as pb_grpc
from services.inventory.__main__ import init
from services.inventory.app import create_app
from services.inventory.entrypoints import DEPS
from services.inventory.entrypoints.grpc_server import SERVICE_NAME, GrpcServer, add_grpc_server
from services.inventory.settings import InventorySettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
READ, WRITE = ["inventory:read"], ["inventory:write"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RESERVED, COMMITTED = pb.Reservation.RESERVED, pb.Reservation.COMMITTED
RELEASED = pb.Reservation.RELEASED


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


@dataclass
class Inventory:
    """The running app: its REST address, a gRPC stub, and the SQL statements it ran."""

    rest: str
    grpc_port: int
    stub: pb_grpc.InventoryStub
    channel: grpc.aio.Channel
    issuer: TestIssuer
    statements: list[str]
    server: GrpcServer
    service: Any

    def auth(self, scopes: list[str]) -> tuple[tuple[str, str], ...]:
        return metadata(self.issuer.token(scopes))

    async def put_stock(self, sku: str, on_hand: int) -> None:
        async with ClientSession() as http:
            resp = await http.put(
                f"{self.rest}/api/v1/inventory/{sku}",
                json={"on_hand": on_hand},
                headers=self.issuer.auth(WRITE),
            )
            assert resp.status == 200, await resp.text()

    async def rest_get(self, path: str) -> tuple[int, Any]:
        async with ClientSession() as http:
            resp = await http.get(f"{self.rest}{path}", headers=self.issuer.auth(READ))
            return resp.status, await resp.json()

    async def level(self, sku: str) -> tuple[int, int]:
        got = await self.stub.GetStock(pb.GetStockRequest(sku=sku), metadata=self.auth(READ))
        return got.on_hand, got.reserved

    def reserve(self, order_id: str, *lines: tuple[str, int]) -> pb.ReserveRequest:
        return pb.ReserveRequest(
            order_id=order_id, lines=[pb.Line(sku=s, quantity=q) for s, q in lines]
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"


async def _start(url: str) -> AsyncIterator[Inventory]:
    settings = InventorySettings(database_url=url, relay=False)
    if url.startswith("sqlite"):
        migrated("inventory", url)  # what `init` does, from a template
    else:
        init(settings)
    issuer = TestIssuer()
    app = create_app(settings, verifier=issuer.async_verifier())
    grpc_server = add_grpc_server(app, "127.0.0.1", 0, grace=1.0)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()  # the app's set-up has run: gRPC is listening
    statements: list[str] = []
    event.listen(
        app[DEPS].engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: statements.append(sql),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}")
    try:
        yield Inventory(
            rest=str(server.make_url("")).rstrip("/"),
            grpc_port=grpc_server.port,
            stub=pb_grpc.InventoryStub(channel),
            channel=channel,
            issuer=issuer,
            statements=statements,
            server=grpc_server,
            service=app[DEPS].service,
        )
    finally:
        await channel.close()
        await server.close()


@pytest.fixture
async def inventory(database_url: str) -> AsyncIterator[Inventory]:
    async for running in _start(database_url):
        yield running


@pytest.fixture
async def on_sqlite(sqlite_url: str) -> AsyncIterator[Inventory]:
    async for running in _start(sqlite_url):
        yield running


def details(exc: grpc.aio.AioRpcError, kind: type[Message]) -> Any:
    """The first detail of the call's google.rpc.Status trailer, unpacked as `kind`."""
    raw = dict(exc.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.code == exc.code().value[0]
    detail = kind()
    assert status.details[0].Unpack(detail)
    return detail


async def test_every_call_moves_stock_as_rest_does(inventory: Inventory) -> None:
    await inventory.put_stock("BK-0001", 10)
    await inventory.put_stock("EL-0001", 4)
    stub, write = inventory.stub, inventory.auth(WRITE)
    level = await stub.GetStock(pb.GetStockRequest(sku="BK-0001"), metadata=inventory.auth(READ))
    assert (level.sku, level.on_hand, level.reserved, level.available) == ("BK-0001", 10, 0, 10)

    request = inventory.reserve("o1", ("EL-0001", 1), ("BK-0001", 2), ("BK-0001", 1))
    held = await stub.Reserve(request, metadata=write)
    assert held.order_id == "o1" and held.status == RESERVED
    assert [(ln.sku, ln.quantity) for ln in held.lines] == [("BK-0001", 3), ("EL-0001", 1)]
    assert await stub.Reserve(request, metadata=write) == held  # a retry: the first answer
    assert await inventory.level("BK-0001") == (10, 3)
    status, doc = await inventory.rest_get("/api/v1/reservations/o1")  # one store for both
    assert status == 200 and doc["status"] == "RESERVED"

    committed = await stub.Commit(pb.CommitRequest(order_id="o1"), metadata=write)
    assert committed.status == COMMITTED
    assert await stub.Commit(pb.CommitRequest(order_id="o1"), metadata=write) == committed
    assert await inventory.level("BK-0001") == (7, 0)
    assert await inventory.level("EL-0001") == (3, 0)

    await stub.Reserve(inventory.reserve("o2", ("BK-0001", 5)), metadata=write)
    assert await inventory.level("BK-0001") == (7, 5)
    released = await stub.Release(pb.ReleaseRequest(order_id="o2"), metadata=write)
    assert released.status == RELEASED
    assert await inventory.level("BK-0001") == (7, 0)
    status, doc = await inventory.rest_get("/api/v1/inventory/BK-0001")
    assert (status, doc["on_hand"], doc["reserved"]) == (200, 7, 0)


async def test_use_case_outcomes_as_status_codes(on_sqlite: Inventory) -> None:
    inv, write = on_sqlite, on_sqlite.auth(WRITE)
    await inv.put_stock("BK-0001", 2)
    await inv.put_stock("EL-0001", 1)

    with pytest.raises(grpc.aio.AioRpcError) as short:
        await inv.stub.Reserve(inv.reserve("big", ("BK-0001", 3), ("EL-0001", 1)), metadata=write)
    assert short.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    failure = details(short.value, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("OUT_OF_STOCK", "BK-0001", "requested 3, available 2")
    ]
    assert await inv.level("BK-0001") == (2, 0)  # all or nothing

    with pytest.raises(grpc.aio.AioRpcError) as unknown_commit:
        await inv.stub.Commit(pb.CommitRequest(order_id="nobody"), metadata=write)
    assert unknown_commit.value.code() is grpc.StatusCode.NOT_FOUND

    await inv.stub.Release(pb.ReleaseRequest(order_id="late"), metadata=write)  # a tombstone
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await inv.stub.Reserve(inv.reserve("late", ("BK-0001", 1)), metadata=write)
    assert late.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    state = details(late.value, error_details_pb2.PreconditionFailure).violations[0]
    assert (state.type, state.subject, state.description) == (
        "RESERVATION_STATE",
        "late",
        "RELEASED",
    )
    with pytest.raises(grpc.aio.AioRpcError) as dead:
        await inv.stub.Commit(pb.CommitRequest(order_id="late"), metadata=write)
    assert dead.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    await inv.stub.Reserve(inv.reserve("o1", ("BK-0001", 1)), metadata=write)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await inv.stub.Reserve(inv.reserve("o1", ("BK-0001", 2)), metadata=write)
    assert other.value.code() is grpc.StatusCode.ALREADY_EXISTS
    await inv.stub.Commit(pb.CommitRequest(order_id="o1"), metadata=write)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await inv.stub.Release(pb.ReleaseRequest(order_id="o1"), metadata=write)
    assert gone.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    with pytest.raises(grpc.aio.AioRpcError) as no_sku:
        await inv.stub.GetStock(pb.GetStockRequest(sku="NO-SUCH"), metadata=inv.auth(READ))
    assert no_sku.value.code() is grpc.StatusCode.NOT_FOUND


async def test_an_unknown_sku_is_not_found_and_records_nothing(on_sqlite: Inventory) -> None:
    await on_sqlite.put_stock("BK-0001", 5)
    on_sqlite.statements.clear()
    request = on_sqlite.reserve("o9", ("BK-0001", 1), ("ZZ-404", 1), ("YY-404", 2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await on_sqlite.stub.Reserve(request, metadata=on_sqlite.auth(WRITE))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "YY-404, ZZ-404" in (caught.value.details() or "")
    info = details(caught.value, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("sku", "YY-404,ZZ-404")
    assert await on_sqlite.level("BK-0001") == (5, 0)
    status, _ = await on_sqlite.rest_get("/api/v1/reservations/o9")
    assert status == 404  # no reservation row, not even a REJECTED one
    assert not any(
        s.lstrip().upper().startswith(("INSERT", "UPDATE")) for s in on_sqlite.statements
    )


def _token_cases(issuer: TestIssuer) -> dict[str, tuple[tuple[str, str], ...]]:
    stranger = TestIssuer()  # a key the verifier does not trust
    return {
        "no token": (),
        "not bearer": (("authorization", f"Basic {issuer.token(WRITE)}"),),
        "garbage": metadata("not-a-jwt"),
        "foreign key": metadata(stranger.token(WRITE)),
        "expired": metadata(issuer.token(WRITE, exp=1)),
        "wrong audience": metadata(issuer.token(WRITE, aud="elsewhere")),
        "two tokens": metadata(issuer.token(WRITE)) + metadata(issuer.token(WRITE)),
    }


def _calls(inv: Inventory) -> dict[str, Any]:
    return {
        "Reserve": (inv.stub.Reserve, inv.reserve("o1", ("BK-0001", 1))),
        "Commit": (inv.stub.Commit, pb.CommitRequest(order_id="o1")),
        "Release": (inv.stub.Release, pb.ReleaseRequest(order_id="o1")),
        "GetStock": (inv.stub.GetStock, pb.GetStockRequest(sku="BK-0001")),
    }


async def test_bad_tokens_and_fields_never_reach_the_database(on_sqlite: Inventory) -> None:
    inv = on_sqlite
    await inv.put_stock("BK-0001", 5)
    inv.statements.clear()
    cases: list[tuple[str, Any, Any, Any, grpc.StatusCode]] = []
    for name, (call, request) in _calls(inv).items():
        for why, md in _token_cases(inv.issuer).items():
            cases.append((f"{name}: {why}", call, request, md, grpc.StatusCode.UNAUTHENTICATED))
        scope = WRITE if name == "GetStock" else READ  # the other one
        denied = grpc.StatusCode.PERMISSION_DENIED
        cases.append((f"{name}: wrong scope", call, request, inv.auth(scope), denied))
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    write = inv.auth(WRITE)
    for why, request in {
        "negative quantity": inv.reserve("o1", ("BK-0001", -1)),
        "zero quantity": inv.reserve("o1", ("BK-0001", 0)),
        "too many units": inv.reserve("o1", ("BK-0001", 1_000_001)),
        "bad sku": inv.reserve("o1", ("-bad sku", 1)),
        "no lines": inv.reserve("o1"),
        "101 lines": inv.reserve("o1", *[(f"S{i}", 1) for i in range(101)]),
        "empty order id": inv.reserve("", ("BK-0001", 1)),
        "order id with a space": inv.reserve("o 1", ("BK-0001", 1)),
    }.items():
        cases.append((f"Reserve: {why}", inv.stub.Reserve, request, write, invalid))
    cases += [
        ("Commit: empty order id", inv.stub.Commit, pb.CommitRequest(), write, invalid),
        ("Release: long order id", inv.stub.Release, pb.ReleaseRequest(order_id="x" * 65), write,
         invalid),
        ("GetStock: bad sku", inv.stub.GetStock, pb.GetStockRequest(sku="a/b"), inv.auth(READ),
         invalid),
    ]  # fmt: skip
    for label, call, request, md, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=md)
        assert caught.value.code() is code, label
        assert inv.statements == [], f"{label}: reached the database"
    assert await inv.level("BK-0001") == (5, 0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # every bad field named at once
        await inv.stub.Reserve(inv.reserve("o1", ("ok", -5), ("b d", 2)), metadata=write)
    bad = details(caught.value, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("lines[0].quantity", "must be between 1 and 1000000"),
        ("lines[1].sku", "must be 1-64 letters, digits, '.', '_' or '-'"),
    ]
    assert caught.value.details() == (
        "invalid lines[0].quantity: must be between 1 and 1000000 (and 1 more)"
    )


async def test_health_and_reflection(on_sqlite: Inventory) -> None:
    health = health_pb2_grpc.HealthStub(on_sqlite.channel)
    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == SERVING

    reflect = reflection_pb2_grpc.ServerReflectionStub(on_sqlite.channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in (await call.read()).list_services_response.service}
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME))
    files = (await call.read()).file_descriptor_response.file_descriptor_proto
    await call.done_writing()
    assert names == {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert files  # a client can build the messages from the server alone

    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == SERVING
    stopping = asyncio.ensure_future(on_sqlite.server.stop())  # what the app's cleanup runs
    assert (await watch.read()).status == NOT_SERVING
    await stopping


async def test_a_second_server_cannot_take_the_port(on_sqlite: Inventory) -> None:
    """No SO_REUSEPORT: another process on the port fails to start instead of sharing calls."""
    other = GrpcServer("127.0.0.1", on_sqlite.grpc_port)
    with pytest.raises(RuntimeError, match=r"cannot listen on 127\.0\.0\.1"):
        await other.start(on_sqlite.service, on_sqlite.issuer.async_verifier())
    await other.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`python -m services.inventory serve` as deployed: REST and gRPC on free ports."""
    rest, grpc_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "INVENTORY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        "INVENTORY_PORT": str(rest),
        "INVENTORY_GRPC_PORT": str(grpc_port),
        "INVENTORY_RELAY": "false",
        "INVENTORY_GRPC_GRACE": "1",
    }
    run = [sys.executable, "-m", "services.inventory"]
    subprocess.run([*run, "init"], env=env, cwd=ROOT, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*run, "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield rest, grpc_port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_serve_runs_grpc_beside_rest(served: tuple[int, int]) -> None:
    rest, grpc_port = served
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                return health.Check(request, timeout=1).status == SERVING
            except grpc.RpcError:
                return False

        wait_until(serving, 20, "inventory's gRPC health to say SERVING")
        with pytest.raises(grpc.RpcError) as caught:  # no token, no answer
            pb_grpc.InventoryStub(channel).GetStock(pb.GetStockRequest(sku="BK-0001"), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    with socket.create_connection(("127.0.0.1", rest), timeout=5):
        pass  # REST listens too
