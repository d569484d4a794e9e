"""The contracts run inside `make test`: the whole run passes, and it catches real breakage
(a renamed field, a changed status, a dropped event field) and bad input, naming the
consumer, the interaction and the field - or the file / provider - never a bare traceback."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from contracts import runner
from contracts.boundaries import Boundary, derive, topic_matches
from contracts.runner import CONSUMERS, Report, render, run


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    """One whole run (consumers write the pacts into a temp dir, every provider verifies)."""
    base = tmp_path_factory.mktemp("contracts")
    pact_dir = base / "pacts"
    report = run(pact_dir, consumers=CONSUMERS, matrix_path=base / "matrix.json")
    return report, base


@pytest.fixture
def pacts(full: tuple[Report, Path], tmp_path: Path) -> Path:
    """A private copy of the freshly written pacts, for tests that tamper with them."""
    out = tmp_path / "pacts"
    shutil.copytree(full[1] / "pacts", out)
    return out


def only(pact_dir: Path, *names: str) -> Path:
    """Keep just the named pact files (each verification costs about a second)."""
    for f in pact_dir.glob("*.json"):
        if f.stem not in names:
            f.unlink()
    return pact_dir


def verify(pact_dir: Path, **kw: Any) -> Report:
    return run(pact_dir, consumers=None, matrix_path=None, boundaries=lambda: [], **kw)


def test_every_boundary_has_a_passing_contract(full: tuple[Report, Path]) -> None:
    report, base = full
    assert report.ok, render(report)
    matrix = json.loads((base / "matrix.json").read_text())
    cells = {(c["consumer"], c["provider"], c["kind"]): c for c in matrix}
    grpc_verifier = importlib.util.find_spec("contracts.providers.inventory_grpc") is not None
    for b in derive():
        if b.kind == "grpc" and not grpc_verifier:
            continue  # gRPC pacts are verified by contracts.providers.inventory_grpc (ADR 0027)
        cell = cells[b.key]
        assert cell["passed"] >= len(b.items) and cell["failed"] == cell["missing"] == 0, cell
    assert {"consumer", "provider", "kind", "passed", "failed", "missing"} == set(matrix[0])
    assert ("notifications", "orders", "message") in cells
    assert ("gateway", "identity", "http") in cells


def test_boundaries_come_from_the_system() -> None:
    found = {b.key: b.items for b in derive()}
    assert "route:products.get GET" in found["gateway", "catalog", "http"]
    assert {"route:products.update PUT", "route:products.update DELETE"} <= set(
        found["gateway", "catalog", "http"]
    )
    # each aggregate part on the upstream of the route its path resolves to
    assert "aggregate:orders.details.payment" in found["gateway", "payments", "http"]
    assert "aggregate:me.dashboard.profile" in found["gateway", "identity", "http"]
    assert "call:token" in found["orders", "identity", "http"]
    verifiers = ("gateway", "catalog", "inventory", "orders", "payments", "notifications", "views")
    for verifier in verifiers:
        assert "jwks" in found[verifier, "identity", "http"], verifier
    assert ("identity", "identity", "http") not in found
    assert "call:reserve" in found["orders", "inventory", "http"]
    assert set(found["orders", "inventory", "grpc"]) == {
        "grpc:Reserve",
        "grpc:Commit",
        "grpc:Release",
    }
    assert "event:payment.refunded" in found["notifications", "payments", "message"]
    # the read side: orders' feed and events, catalog's product ids, notifications' counts
    assert {"call:feed"} == set(found["views", "orders", "http"])
    assert "call:token" in found["views", "identity", "http"]
    assert "event:order.confirmed" in found["views", "orders", "message"]
    assert "event:product.deleted" in found["views", "catalog", "message"]
    assert found["views", "notifications", "message"] == ["event:notification.sent"]
    assert "route:views.sales_report GET" in found["gateway", "views", "http"]
    assert topic_matches("payment.*", "payment.captured")
    assert not topic_matches("payment.*", "payment.a.b")
    assert topic_matches("order.#", "order.x.y")


def test_a_boundary_without_contract_is_missing(pacts: Path) -> None:
    only(pacts, "orders-catalog")
    extra = [Boundary("orders", "catalog", "http", ["call:prices", "call:stock_of"])]
    report = run(pacts, consumers=None, matrix_path=None, boundaries=lambda: extra)
    assert not report.ok
    assert report.missing == ["orders -> catalog (http): no contract for call:stock_of"]
    assert report.cells["orders", "catalog", "http"].missing == 1


def test_each_new_route_method_aggregate_part_and_event_binding_fails_by_name(
    full: tuple[Report, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make contracts` derives its boundaries from gateway.yaml ($GATEWAY_CONFIG) and the
    services; a config or binding grown one item at a time fails the coverage naming it."""
    import yaml

    from gateway.config import DEFAULT_CONFIG_PATH, load_config
    from services.notifications import domain

    pacts = [runner.read_pact(f) for f in sorted((full[1] / "pacts").glob("*.json"))]
    raw = yaml.safe_load(Path(DEFAULT_CONFIG_PATH).read_text())

    def missing() -> list[str]:
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw), "utf-8")
        report = Report()
        runner.coverage(derive(load_config(path)), pacts, report)
        return report.missing

    assert missing() == []
    raw["routes"].append(
        {"name": "products.search", "methods": ["GET"], "path": "/api/v1/search/products"}
        | {"upstream": "catalog", "auth": {"required": True, "scopes": ["catalog:read"]}}
    )
    assert missing() == ["gateway -> catalog (http): no contract for route:products.search GET"]
    raw["routes"].pop()
    inventory_set = next(r for r in raw["routes"] if r["name"] == "inventory.set")
    inventory_set["methods"].append("PATCH")
    assert missing() == ["gateway -> inventory (http): no contract for route:inventory.set PATCH"]
    inventory_set["methods"].remove("PATCH")
    dashboard = next(a for a in raw["aggregates"] if a["name"] == "me.dashboard")
    dashboard["parts"].append({"name": "stock", "path": "/api/v1/inventory/SKU-1"})
    assert missing() == [
        "gateway -> inventory (http): no contract for aggregate:me.dashboard.stock"
    ]
    dashboard["parts"].pop()
    assert missing() == []
    model = importlib.import_module("services.notifications.domain.model")
    for mod in (model, domain):
        if hasattr(mod, "BINDINGS"):
            monkeypatch.setattr(mod, "BINDINGS", (*mod.BINDINGS, "stock.*"))
    assert missing() == ["notifications -> inventory (message): no contract for event:stock.low"]


def test_a_renamed_response_field_fails_naming_consumer_interaction_and_field(
    pacts: Path,
) -> None:
    def rename(method: str, path: str, status: int, headers: CIMultiDict[str], body: bytes):
        if status == 409 and path == "/api/v1/reservations":
            doc = json.loads(body)
            doc["out_of_stock_skus"] = doc.pop("skus")
            body = json.dumps(doc).encode()
        return status, headers, body

    report = verify(only(pacts, "orders-inventory"), transforms={"inventory": rename})
    assert not report.ok
    assert report.cells["orders", "inventory", "http"].failed == 1
    [failure] = report.failures
    assert failure.startswith("orders -> inventory: 'a reservation of more than the stock'")
    assert "skus" in failure


def test_a_changed_status_code_fails(pacts: Path) -> None:
    def status_400(method: str, path: str, status: int, headers: CIMultiDict[str], body: bytes):
        return (400 if status == 402 else status), headers, body

    report = verify(only(pacts, "orders-payments"), transforms={"payments": status_400})
    [failure] = report.failures
    assert failure.startswith("orders -> payments: 'a charge the card declines'")
    assert "expected 402 but was 400" in failure


def test_a_dropped_event_field_fails(pacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chassis.messaging import Event
    from services.payments.adapters import events

    def refunded(payment: Any) -> Event:  # no `amount` any more
        data = {"payment_id": payment.id, "order_id": payment.order_id}
        return Event(type=events.PAYMENT_REFUNDED, data=data)

    monkeypatch.setattr(events, "refunded", refunded)
    report = verify(only(pacts, "notifications-payments"))
    [failure] = report.failures
    assert failure.startswith("notifications -> payments: 'event payment.refunded'")
    assert "$.data" in failure and "amount" in failure


def test_a_corrupt_pact_file_is_named(pacts: Path) -> None:
    only(pacts)
    (pacts / "gateway-catalog.json").write_text('{"consumer": {"name": "gateway"', "utf-8")
    (pacts / "edited.json").write_text(json.dumps({"consumer": {"name": "x"}}), "utf-8")
    report = verify(pacts)
    assert len(report.errors) == 2
    assert "edited.json: not a pact file (missing 'provider')" in report.errors[0]
    assert "gateway-catalog.json: not a readable pact file" in report.errors[1]
    assert "Traceback" not in render(report)


def test_a_pact_for_an_unknown_provider_is_named(pacts: Path) -> None:
    only(pacts, "orders-catalog")
    doc = json.loads((pacts / "orders-catalog.json").read_text())
    doc["provider"]["name"] = "shipping"
    (pacts / "orders-catalog.json").write_text(json.dumps(doc), "utf-8")
    [error] = verify(pacts).errors
    assert "no provider named 'shipping'" in error and "orders-catalog.json" in error


def test_a_provider_that_does_not_start_is_named(
    pacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts.providers import catalog

    def broken(ctx: Any) -> Any:
        raise OSError("address already in use")

    monkeypatch.setattr(catalog, "start", broken)
    [error] = verify(only(pacts, "orders-catalog")).errors
    assert error.startswith("provider catalog did not start: OSError: address already in use")


def test_the_matrix_is_rendered(full: tuple[Report, Path]) -> None:
    text = render(full[0])
    assert "gateway (http)" in text and "contracts: OK" in text
    assert Path("var/contracts/matrix.json") == runner.MATRIX_PATH


def test_a_run_records_and_publishes_each_pacts_verification_per_version(
    pacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from contracts.__main__ import main

    from .test_deploy import Broker

    results = tmp_path / "verifications.json"
    monkeypatch.setenv("PACT_CONSUMER_VERSION", "c1")
    monkeypatch.setenv("PACT_PROVIDER_VERSION", "p1")
    only(pacts, "orders-catalog", "orders-payments")
    with Broker() as broker:
        monkeypatch.setenv("PACT_BROKER_BASE_URL", broker.url)
        report = verify(pacts, results=results, publish_to_broker=True)
        assert report.ok, render(report)
        sent = [(m, p) for m, p, _, _ in broker.requests if m == "PUT"]
        assert sent == [
            ("PUT", "/pacts/provider/catalog/consumer/orders/version/c1"),
            ("PUT", "/pacts/provider/payments/consumer/orders/version/c1"),
        ]
        posted = [json.loads(body) for m, _, _, body in broker.requests if m == "POST"]
        assert [(r["success"], r["providerApplicationVersion"]) for r in posted] == [
            (True, "p1"),
            (True, "p1"),
        ]

    def status_400(method: str, path: str, status: int, headers: CIMultiDict[str], body: bytes):
        return (400 if status == 402 else status), headers, body

    monkeypatch.delenv("PACT_BROKER_BASE_URL")
    monkeypatch.setenv("PACT_PROVIDER_VERSION", "p2")  # payments changed: the 402 became 400
    report = verify(
        only(pacts, "orders-payments"), transforms={"payments": status_400}, results=results
    )
    assert not report.ok
    monkeypatch.setenv("CONTRACTS_RESULTS", str(results))
    assert main(["can-i-deploy", "payments", "--version", "p1"]) == 0
    assert main(["can-i-deploy", "payments", "--version", "p2"]) == 1
    assert "orders c1 -> payments p2: verification failed" in capsys.readouterr().out
    assert main(["can-i-deploy", "orders", "--version", "c1", "--with", "payments=p1"]) == 0
    assert main(["can-i-deploy", "orders", "--version", "c1"]) == 1  # the latest payments: p2
