"""The gRPC consumer contract (ADR 0027): orders' real gRPC client against the stub writes
`orders-inventory-grpc.json` in the documented format, a client that misreads an answer fails
the consumer by name, and the runner counts the `grpc:*` boundary items."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from contracts.boundaries import Boundary
from contracts.consumers import ConsumerFailed, orders_grpc
from contracts.runner import read_pact, run
from portico_proto.inventory.v1 import inventory_pb2 as pb
from services.orders.adapters.inventory_grpc import OUTBOUND_GRPC, SERVICE_NAME
from services.orders.domain import Reserved

REQUESTS = {"Reserve": pb.ReserveRequest, "Commit": pb.CommitRequest, "Release": pb.ReleaseRequest}


@pytest.fixture(scope="module")
def pact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pacts")
    (path,) = orders_grpc.run(out)
    return path


def test_the_pact_is_written_in_the_documented_format(pact: Path) -> None:
    assert pact.name == "orders-inventory-grpc.json"
    doc = json.loads(pact.read_text())
    assert doc["consumer"] == {"name": "orders"} and doc["provider"] == {"name": "inventory"}
    assert doc["metadata"] == {
        "pactSpecification": {"version": "4.0"},
        "portico": {"kind": "grpc", "proto": "proto/portico/inventory/v1/inventory.proto"},
    }
    statuses = set()
    for i in doc["interactions"]:
        assert i["type"] == "Synchronous/gRPC"
        method = i["method"].removeprefix(f"/{SERVICE_NAME}/")
        assert i["comments"] == {"boundary": f"grpc:{method}"}
        assert i["request"]["metadata"] == {"authorization": "Bearer service.token"}
        json_format.ParseDict(i["request"]["message"], REQUESTS[method]())  # a real message
        response = i["response"]
        statuses.add((method, response["status"]))
        if response["status"] == "OK":
            json_format.ParseDict(response["message"], pb.Reservation())
            assert "details" not in response and response["matchingRules"] == {}
        for state in i.get("providerStates", []):
            assert state["name"] in ("stock exists", "stock is reserved for an order")
    assert {
        ("Reserve", "OK"),
        ("Reserve", "FAILED_PRECONDITION"),
        ("Reserve", "NOT_FOUND"),
        ("Commit", "OK"),
        ("Commit", "NOT_FOUND"),
        ("Release", "OK"),
    } <= statuses
    short = next(i for i in doc["interactions"] if i["response"]["status"] == "FAILED_PRECONDITION")
    detail = short["response"]["details"][0]
    assert detail["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    json_format.ParseDict(
        {k: v for k, v in detail.items() if k != "@type"}, error_details_pb2.PreconditionFailure()
    )
    assert short["response"]["matchingRules"]["details[0].violations[*].subject"]["match"] == (
        "regex"
    )


def test_the_runner_reads_it_and_counts_the_grpc_boundary(pact: Path, tmp_path: Path) -> None:
    assert read_pact(pact).provider == "inventory"
    (tmp_path / pact.name).write_bytes(pact.read_bytes())
    items = [f"grpc:{m}" for m in OUTBOUND_GRPC]
    report = run(
        tmp_path,
        consumers=None,
        matrix_path=None,
        boundaries=lambda: [Boundary("orders", "inventory", "grpc", [*items, "grpc:GetStock"])],
    )
    assert report.missing == ["orders -> inventory (grpc): no contract for grpc:GetStock"]
    assert not report.errors


def test_a_client_that_misreads_an_answer_fails_by_name(tmp_path: Path) -> None:
    wrong = tuple(
        dataclasses.replace(i, outcome=Reserved())
        if i.description == "a reservation of more than the stock"
        else i
        for i in orders_grpc.INTERACTIONS
    )
    with pytest.raises(ConsumerFailed, match=r"a reservation of more than the stock.*OutOfStock"):
        orders_grpc.run(tmp_path, wrong)
    assert not list(tmp_path.glob("*.json"))


def test_a_grpc_call_without_an_interaction_fails(tmp_path: Path) -> None:
    no_release = tuple(i for i in orders_grpc.INTERACTIONS if i.method != "Release")
    with pytest.raises(ConsumerFailed, match="no interaction calls Release"):
        orders_grpc.run(tmp_path, no_release)
