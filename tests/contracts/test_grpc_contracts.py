"""The provider half of the gRPC contract (issue 19 must 5, ADR 0028): a sample pact in the
format orders' consumer test writes is verified against inventory's real gRPC server; a pact
needing what the server does not send, a wrong status or an unknown method fails, naming the
interaction and the rule; the result is in the matrix and the recorded verifications."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.deploy import Results, can_i_deploy
from contracts.runner import Report, render, run

SAMPLE = Path(__file__).parent / "fixtures" / "orders-inventory-grpc.json"
HTTP_PACT = Path(__file__).resolve().parents[2] / "contracts" / "pacts" / "orders-inventory.json"


def verify(pact_dir: Path, **kw: Any) -> Report:
    return run(pact_dir, consumers=None, matrix_path=None, boundaries=lambda: [], **kw)


def sample(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    out = tmp_path / "pacts"
    out.mkdir()
    doc = json.loads(SAMPLE.read_text())
    if edit is not None:
        edit(doc)
    (out / SAMPLE.name).write_text(json.dumps(doc))
    return out


def interaction(doc: dict[str, Any], description: str) -> dict[str, Any]:
    return next(i for i in doc["interactions"] if i["description"] == description)


def test_the_sample_pact_verifies_and_is_recorded_for_can_i_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACT_CONSUMER_VERSION", "c1")
    monkeypatch.setenv("PACT_PROVIDER_VERSION", "p1")
    results = tmp_path / "verifications.json"
    report = verify(sample(tmp_path), results=results)
    assert report.ok, render(report)
    cell = report.cells[("orders", "inventory", "grpc")]
    assert (cell.passed, cell.failed) == (5, 0)
    assert "orders (grpc)" in render(report)
    recorded = Results.load(results)
    [v] = recorded.verifications
    assert (v["consumer"], v["provider"], v["success"], v["passed"]) == (
        "orders",
        "inventory",
        True,
        5,
    )
    assert can_i_deploy(recorded, "inventory", "p1").deployable


def test_an_http_and_a_grpc_pact_of_one_pair_are_one_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a broker keeps one pact per pair: both files must pass for the pair to pass."""
    monkeypatch.setenv("PACT_CONSUMER_VERSION", "c1")
    monkeypatch.setenv("PACT_PROVIDER_VERSION", "p1")
    results = tmp_path / "verifications.json"

    def wrong_status(doc: dict[str, Any]) -> None:
        interaction(doc, "a commit")["response"]["status"] = "NOT_FOUND"

    pacts = sample(tmp_path, wrong_status)
    shutil.copy(HTTP_PACT, pacts)
    http_count = len(json.loads(HTTP_PACT.read_text())["interactions"])
    report = verify(pacts, results=results)
    assert report.cells[("orders", "inventory", "http")].passed == http_count
    [v] = Results.load(results).verifications
    assert (v["success"], v["passed"], v["failed"]) == (False, http_count + 4, 1)
    answer = can_i_deploy(Results.load(results), "inventory", "p1")
    assert not answer.deployable
    assert "orders c1 -> inventory p1: verification failed" in answer.reasons


def test_a_field_the_server_does_not_send_fails_naming_interaction_and_rule(
    tmp_path: Path,
) -> None:
    def needs_more(doc: dict[str, Any]) -> None:
        rules = interaction(doc, "a reservation")["response"]["matchingRules"]
        rules["message.reserved_until"] = {"match": "type"}

    report = verify(sample(tmp_path, needs_more))
    assert not report.ok
    [failure] = report.failures
    assert failure.startswith("orders -> inventory (grpc): 'a reservation': ")
    assert "rule message.reserved_until (type): message.reserved_until is not in the answer" in (
        failure
    )
    assert report.cells[("orders", "inventory", "grpc")].failed == 1


def test_a_wrong_status_fails_naming_the_interaction(tmp_path: Path) -> None:
    def exhausted(doc: dict[str, Any]) -> None:
        interaction(doc, "a reservation beyond the stock")["response"]["status"] = (
            "RESOURCE_EXHAUSTED"
        )

    report = verify(sample(tmp_path, exhausted))
    [failure] = report.failures
    assert "'a reservation beyond the stock'" in failure
    assert "status: expected RESOURCE_EXHAUSTED, got FAILED_PRECONDITION" in failure


def test_a_detail_rule_is_checked_on_every_element(tmp_path: Path) -> None:
    def other_subject(doc: dict[str, Any]) -> None:
        rules = interaction(doc, "a reservation beyond the stock")["response"]["matchingRules"]
        rules["details[0].violations[*].subject"]["regex"] = "^ITEM-"

    report = verify(sample(tmp_path, other_subject))
    [failure] = report.failures
    assert "rule details[0].violations[*].subject (regex ^ITEM-)" in failure
    assert "details[0].violations[0].subject is 'SKU-2'" in failure


def test_an_unknown_method_fails_naming_the_interaction(tmp_path: Path) -> None:
    def hold(doc: dict[str, Any]) -> None:
        interaction(doc, "a commit")["method"] = "/portico.inventory.v1.Inventory/Hold"

    report = verify(sample(tmp_path, hold))
    [failure] = report.failures
    assert "'a commit'" in failure
    assert "unknown method /portico.inventory.v1.Inventory/Hold" in failure


def test_a_request_field_the_proto_lacks_fails(tmp_path: Path) -> None:
    def extra(doc: dict[str, Any]) -> None:
        interaction(doc, "a commit")["request"]["message"]["reason"] = "paid"

    report = verify(sample(tmp_path, extra))
    [failure] = report.failures
    assert "'a commit'" in failure and "does not fit" in failure and "reason" in failure


def test_an_unknown_state_fails_naming_it(tmp_path: Path) -> None:
    def state(doc: dict[str, Any]) -> None:
        interaction(doc, "a commit")["providerStates"][0]["name"] = "an order exists"

    report = verify(sample(tmp_path, state))
    [failure] = report.failures
    assert "'a commit'" in failure and "no state 'an order exists'" in failure


def test_a_grpc_interaction_outside_a_grpc_pact_is_refused(tmp_path: Path) -> None:
    def unmarked(doc: dict[str, Any]) -> None:
        del doc["metadata"]["portico"]

    report = verify(sample(tmp_path, unmarked))
    assert any("a pact holds gRPC interactions only" in e for e in report.errors)


def test_a_method_from_another_proto_than_the_pacts_fails(tmp_path: Path) -> None:
    def elsewhere(doc: dict[str, Any]) -> None:
        doc["metadata"]["portico"]["proto"] = "proto/portico/stock/v1/stock.proto"

    report = verify(sample(tmp_path, elsewhere))
    assert len(report.failures) == 5
    assert (
        "/portico.inventory.v1.Inventory/Reserve is defined in "
        "proto/portico/inventory/v1/inventory.proto, not in the pact's "
        "proto/portico/stock/v1/stock.proto"
    ) in report.failures[0]


def test_a_pair_with_http_and_grpc_pacts_is_published_as_one_merged_pact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_deploy import Broker

    monkeypatch.setenv("PACT_CONSUMER_VERSION", "c1")
    monkeypatch.setenv("PACT_PROVIDER_VERSION", "p1")
    pacts = sample(tmp_path)
    shutil.copy(HTTP_PACT, pacts)
    http_count = len(json.loads(HTTP_PACT.read_text())["interactions"])
    with Broker() as broker:
        monkeypatch.setenv("PACT_BROKER_BASE_URL", broker.url)
        report = verify(pacts, publish_to_broker=True)
    assert report.ok, render(report)
    [(path, body)] = [(p, b) for m, p, _, b in broker.requests if m == "PUT"]
    assert path == "/pacts/provider/inventory/consumer/orders/version/c1"
    doc = json.loads(body)
    assert len(doc["interactions"]) == http_count + 5
    assert doc["metadata"]["portico"]["kind"] == "mixed"
    [posted] = [json.loads(b) for m, _, _, b in broker.requests if m == "POST"]
    assert posted["success"] is True
    assert posted["testResults"] == {"passed": http_count + 5, "failed": 0}
