"""orders as a gRPC consumer of inventory (ADR 0027): the saga's real `GrpcInventory`, on a
channel built by orders' own settings code, calls a stub gRPC server (`contracts.grpc_stub`)
that answers each interaction's example - rich error details included - and each call's
domain outcome is checked (FAILED_PRECONDITION with OUT_OF_STOCK violations must read as
OutOfStock, NOT_FOUND on a reserve as Refused, ...). The stub also checks that the client
sent exactly the recorded request and orders' token. Then `pacts/orders-inventory-grpc.json`
is written in the format contracts/README.md describes ("gRPC contract"): the Pact V4 layout
with `Synchronous/gRPC` interactions whose messages are protobuf JSON, because the Pact
protobuf plugin cannot be installed from the registries reached here.

`matchingRules` name only what the client reads of an answer: the status always; of an
out-of-stock answer, the detail's type and each violation's type and subject.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry

from chassis.resilience import CircuitBreaker
from contracts.grpc_stub import Canned, StubServer
from portico_proto.inventory.v1 import inventory_pb2 as pb
from services.orders.adapters.inventory_grpc import (
    OUTBOUND_GRPC,
    SERVICE_NAME,
    GrpcInventory,
    channel_options,
    channel_target,
)
from services.orders.domain import Committed, Line, OutOfStock, Refused, Released, Reserved
from services.orders.settings import OrdersSettings

from . import BOUNDARY, ConsumerFailed

__all__ = ["INTERACTIONS", "PROTO", "Interaction", "pact_document", "run"]

CONSUMER, PROVIDER = "orders", "inventory"
PROTO = "proto/portico/inventory/v1/inventory.proto"
TOKEN = "service.token"
SKU_RULE = {"match": "regex", "regex": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}


@dataclass(frozen=True)
class Interaction:
    """One call: what the client sends, the example answer, the outcome it must read."""

    description: str
    method: str  # as in OUTBOUND_GRPC
    state: tuple[str, dict[str, Any]] | None
    request: Message
    answer: Canned
    outcome: object
    rules: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/{SERVICE_NAME}/{self.method}"

    def call(self, client: GrpcInventory) -> Any:
        if isinstance(self.request, pb.ReserveRequest):
            lines = [Line(ln.sku, ln.quantity) for ln in self.request.lines]
            return client.reserve(self.request.order_id, lines)
        step = {"Commit": client.commit, "Release": client.release}[self.method]
        return step(self.request.order_id)  # type: ignore[attr-defined]


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _reservation(order_id: str, status: int, *lines: tuple[str, int]) -> pb.Reservation:
    return pb.Reservation(
        order_id=order_id, status=status, lines=[pb.Line(sku=s, quantity=q) for s, q in lines]
    )


def _reserve(order_id: str, sku: str, quantity: int) -> pb.ReserveRequest:
    return pb.ReserveRequest(order_id=order_id, lines=[pb.Line(sku=sku, quantity=quantity)])


R = pb.Reservation
SHORT = error_details_pb2.PreconditionFailure(
    violations=[
        error_details_pb2.PreconditionFailure.Violation(
            type="OUT_OF_STOCK", subject="SKU-9", description="requested 5, available 1"
        )
    ]
)

INTERACTIONS = (
    Interaction(
        "a reservation",
        "Reserve",
        ("stock exists", {"sku": "SKU-1", "on_hand": 10}),
        _reserve("ord-g1", "SKU-1", 2),
        Canned(reply=_reservation("ord-g1", R.RESERVED, ("SKU-1", 2))),
        Reserved(),
    ),
    Interaction(
        "a reservation of more than the stock",
        "Reserve",
        ("stock exists", {"sku": "SKU-9", "on_hand": 1}),
        _reserve("ord-g2", "SKU-9", 5),
        Canned(
            grpc.StatusCode.FAILED_PRECONDITION, text="not enough stock for: SKU-9", details=[SHORT]
        ),
        OutOfStock(("SKU-9",)),
        {
            "details[0].@type": {"match": "equality"},
            "details[0].violations[*].type": {"match": "equality"},
            "details[0].violations[*].subject": SKU_RULE,
        },
    ),
    Interaction(
        "a reservation of a sku without stock",
        "Reserve",
        None,
        _reserve("ord-g3", "SKU-404", 1),
        Canned(grpc.StatusCode.NOT_FOUND, text="no stock record for sku SKU-404"),
        Refused("no stock record for sku SKU-404"),
    ),
    Interaction(
        "committing a reservation",
        "Commit",
        ("stock is reserved for an order", {"order_id": "ord-gc1"}),
        pb.CommitRequest(order_id="ord-gc1"),
        Canned(reply=_reservation("ord-gc1", R.COMMITTED, ("SKU-1", 1))),
        Committed(),
    ),
    Interaction(
        "committing a reservation that does not exist",
        "Commit",
        None,
        pb.CommitRequest(order_id="ord-gc2"),
        Canned(grpc.StatusCode.NOT_FOUND, text="no reservation for order ord-gc2"),
        Refused("no reservation for order ord-gc2"),
    ),
    Interaction(
        "releasing a reservation",
        "Release",
        ("stock is reserved for an order", {"order_id": "ord-gl1"}),
        pb.ReleaseRequest(order_id="ord-gl1"),
        Canned(reply=_reservation("ord-gl1", R.RELEASED, ("SKU-1", 1))),
        Released(),
    ),
    Interaction(
        "releasing an order that reserved nothing",
        "Release",
        None,
        pb.ReleaseRequest(order_id="ord-gl2"),
        Canned(reply=_reservation("ord-gl2", R.RELEASED)),
        Released(),
    ),
)


def interaction_json(i: Interaction) -> dict[str, Any]:
    """One interaction in the pact's gRPC format (contracts/README.md)."""
    response: dict[str, Any] = {"status": i.answer.code.name}
    if i.answer.reply is not None:
        response["message"] = _dict(i.answer.reply)
    if i.answer.details:
        response["details"] = [
            {"@type": f"type.googleapis.com/{d.DESCRIPTOR.full_name}", **_dict(d)}
            for d in i.answer.details
        ]
    response["matchingRules"] = dict(i.rules)
    doc: dict[str, Any] = {
        "type": "Synchronous/gRPC",
        "description": i.description,
        "comments": {BOUNDARY: f"grpc:{i.method}"},
    }
    if i.state is not None:
        doc["providerStates"] = [{"name": i.state[0], "params": i.state[1]}]
    doc["method"] = i.path
    doc["request"] = {
        "metadata": {"authorization": f"Bearer {TOKEN}"},
        "message": _dict(i.request),
    }
    doc["response"] = response
    return doc


def pact_document(interactions: tuple[Interaction, ...] = INTERACTIONS) -> dict[str, Any]:
    return {
        "consumer": {"name": CONSUMER},
        "provider": {"name": PROVIDER},
        "metadata": {
            "pactSpecification": {"version": "4.0"},
            "portico": {"kind": "grpc", "proto": PROTO},
        },
        "interactions": [interaction_json(i) for i in interactions],
    }


class _Token:
    """orders' service token, as far as the contract is concerned: some bearer token."""

    async def get(self) -> str:
        return TOKEN

    def invalidate(self, token: str) -> None:
        pass


async def _drive(interactions: tuple[Interaction, ...]) -> list[str]:
    problems: list[str] = []
    stub = StubServer()

    def answer_for(path: str) -> Any:
        def answer(request: bytes) -> Canned:
            for i in interactions:
                if i.path == path and type(i.request).FromString(request) == i.request:
                    return i.answer
            problems.append(f"orders -> inventory (gRPC): unexpected {path} request {request!r}")
            return Canned(grpc.StatusCode.UNIMPLEMENTED, text="not in the contract")

        return answer

    for path in {i.path for i in interactions}:
        stub.answers[path] = answer_for(path)
    await stub.start((SERVICE_NAME,))
    defaults = OrdersSettings()
    channel = grpc.aio.insecure_channel(
        channel_target([f"127.0.0.1:{stub.port}"]),
        # orders' real channel, without retries: each interaction is exactly one call
        options=channel_options(
            1, defaults.retry_base_delay, defaults.inventory_grpc_keepalive, 10.0
        ),
    )
    breaker = CircuitBreaker("inventory", failure_threshold=1000, registry=CollectorRegistry())
    client = GrpcInventory(
        channel,
        _Token(),  # type: ignore[arg-type]
        deadline=defaults.inventory_grpc_deadline,
        breaker=breaker,
    )
    try:
        for i in interactions:
            before = len(stub.seen)
            outcome = await i.call(client)
            if outcome != i.outcome:
                problems.append(
                    f"orders -> inventory (gRPC): {i.description!r}: the client read "
                    f"{outcome!r}, expected {i.outcome!r}"
                )
            calls = stub.seen[before:]
            if len(calls) != 1 or calls[0].method != i.path:
                problems.append(f"{i.description!r}: expected one {i.path} call, saw {calls}")
            elif calls[0].metadata.get("authorization") != f"Bearer {TOKEN}":
                problems.append(f"{i.description!r}: the call carried no bearer token")
    finally:
        await channel.close()
        await stub.stop()
    return problems


def run(pact_dir: Path, interactions: tuple[Interaction, ...] = INTERACTIONS) -> list[Path]:
    called = {i.method for i in interactions}
    uncovered = sorted(set(OUTBOUND_GRPC) - called)
    problems = asyncio.run(_drive(interactions))
    if uncovered:  # the runner names them too; here, so the consumer fails on its own
        problems.append(f"no interaction calls {', '.join(uncovered)}")
    if problems:
        raise ConsumerFailed("; ".join(problems))
    path = pact_dir / f"{CONSUMER}-{PROVIDER}-grpc.json"
    path.write_text(json.dumps(pact_document(interactions), indent=2) + "\n", encoding="utf-8")
    return [path]
