"""The payments HTTP API on SQLite: charges, declines, outages, refunds, idempotency, events."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from chassis.validation import IDEMPOTENCY_KEY_MISSING
from services.payments.__main__ import main
from services.payments.settings import PaymentsSettings

from .conftest import Api, outbox_events

PROBLEM = "application/problem+json"
VALIDATION = "https://portico.dev/problems/validation"


def test_charge_captures_once_and_replays(api: Api, engine: Engine) -> None:
    first = api.charge("charge-o1")
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["status"] == "CAPTURED" and body["amount"] == "79.80"
    assert body["currency"] == "EUR" and body["order_id"] == "o1"
    assert first.headers["Location"] == f"/api/v1/payments/{body['id']}"
    again = api.charge("charge-o1")
    assert again.status_code == 201 and again.get_json()["id"] == body["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.charge("charge-o1", amount="79.8").status_code == 201  # same amount, same request
    assert outbox_events(engine) == [
        (
            "payment.captured",
            {"payment_id": body["id"], "order_id": "o1", "amount": "79.80", "currency": "EUR"},
        )
    ]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT amount_cents FROM payments")).scalar_one() == 7980
    got = api.client.get(f"/api/v1/payments/{body['id']}", headers=api.read)
    assert got.status_code == 200 and got.get_json() == body
    listed = api.client.get("/api/v1/payments?order_id=o1", headers=api.read).get_json()
    assert [p["id"] for p in listed["items"]] == [body["id"]]
    assert api.client.get("/api/v1/payments?order_id=x", headers=api.read).get_json() == {
        "items": []
    }


def test_key_reused_with_a_different_body_is_422(api: Api) -> None:
    assert api.charge("k").status_code == 201
    resp = api.charge("k", amount="1.00")
    assert resp.status_code == 422 and "Idempotency-Key" in resp.get_json()["errors"]


def test_declined_is_402_and_stays_declined(api: Api, engine: Engine) -> None:
    resp = api.charge("d1", "pm_card_declined")
    assert resp.status_code == 402 and resp.mimetype == PROBLEM
    problem = resp.get_json()
    assert problem["decline_code"] == "card_declined" and problem["type"].endswith("declined")
    assert api.charge("d1", "pm_card_declined").status_code == 402
    payment = api.client.get(f"/api/v1/payments/{problem['payment_id']}", headers=api.read)
    assert payment.get_json()["status"] == "DECLINED"
    assert api.refund(problem["payment_id"]).status_code == 409
    assert outbox_events(engine) == []


def test_provider_outage_is_503_retryable_and_charges_nothing(api: Api, engine: Engine) -> None:
    resp = api.charge("e1", "pm_card_error")
    assert resp.status_code == 503 and resp.mimetype == PROBLEM
    assert resp.headers["Retry-After"] == "1" and resp.get_json()["retryable"] is True
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0
    assert outbox_events(engine) == []


def test_slow_card_answers_after_the_delay(api: Api, settings: PaymentsSettings) -> None:
    import time

    started = time.monotonic()
    resp = api.charge("s1", "pm_card_slow")
    assert resp.status_code == 201
    assert time.monotonic() - started >= settings.slow_delay


def test_refund_is_idempotent(api: Api, engine: Engine) -> None:
    payment_id = api.charge("c").get_json()["id"]
    first = api.refund(payment_id)
    assert first.status_code == 200 and first.get_json()["status"] == "REFUNDED"
    second = api.refund(payment_id, key="another")
    assert second.status_code == 200 and second.headers["Idempotent-Replayed"] == "true"
    assert [t for t, _ in outbox_events(engine)] == ["payment.captured", "payment.refunded"]
    assert outbox_events(engine)[1][1] == {
        "payment_id": payment_id,
        "order_id": "o1",
        "amount": "79.80",
    }
    assert api.charge("c").get_json()["status"] == "REFUNDED"  # the key still names it
    assert api.refund("nope").status_code == 404
    no_key = api.client.post(f"/api/v1/payments/{payment_id}/refund", headers=api.write)
    assert no_key.status_code == 400 and no_key.get_json()["type"] == IDEMPOTENCY_KEY_MISSING


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"card_number": "4242424242424242"}, "card_number"),
        ({"cvc": "123"}, "cvc"),
        ({"payment_method": "4242424242424242"}, "payment_method"),
        ({"payment_method": "pm_card_gold"}, "payment_method"),
        ({"amount": "1.005"}, "amount"),
        ({"amount": 12.5}, "amount"),
        ({"amount": "0.00"}, "amount"),
        ({"currency": "USD"}, "currency"),
        ({"order_id": ""}, "order_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_charges_are_422_and_never_echo_card_data(
    api: Api, engine: Engine, extra: dict[str, Any], field: str
) -> None:
    resp = api.charge("bad", **extra)
    assert resp.status_code == 422 and resp.mimetype == PROBLEM
    assert field in resp.get_json()["errors"]
    assert b"4242" not in resp.data
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0


def test_missing_key_malformed_and_auth(api: Api) -> None:
    missing = api.charge(None)  # the same answer as orders' (one chassis helper)
    assert missing.status_code == 400 and missing.mimetype == PROBLEM
    assert missing.get_json()["type"] == IDEMPOTENCY_KEY_MISSING
    assert "Idempotency-Key" in missing.get_json()["errors"]
    malformed = api.charge("k" * 256)
    assert malformed.status_code == 422 and malformed.get_json()["type"] == VALIDATION
    bad = api.client.post(
        "/api/v1/payments",
        data=b"{nope",
        headers={**api.write, "Idempotency-Key": "m", "Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.mimetype == PROBLEM
    big = api.client.post(
        "/api/v1/payments",
        data=b"[" + b"1," * 20_000 + b"1]",
        headers={**api.write, "Idempotency-Key": "m", "Content-Type": "application/json"},
    )
    assert big.status_code == 413
    assert api.client.get("/api/v1/payments/x").status_code == 401
    forbidden = api.client.post(
        "/api/v1/payments", json={}, headers={**api.read, "Idempotency-Key": "f"}
    )
    assert forbidden.status_code == 403
    assert api.client.get("/api/v1/payments/x", headers=api.read).status_code == 404


def test_health_metrics_and_openapi(api: Api) -> None:
    assert api.client.get("/health/live").status_code == 200
    ready = api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok"}
    assert b"http_requests_total" in api.client.get("/metrics").data
    doc = api.client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/payments",
        "/api/v1/payments/{payment_id}",
        "/api/v1/payments/{payment_id}/refund",
    }
    post = doc["paths"]["/api/v1/payments"]["post"]
    assert {"201", "402", "409", "422", "503"} <= set(post["responses"])
    props = doc["components"]["schemas"]["ChargeRequest"]["properties"]
    assert "card_number" not in props and props["amount"]["type"] == "string"


def test_cli_init_and_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Any
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    assert main(["init"]) == 0 and main(["init"]) == 0
    monkeypatch.setenv("PAYMENTS_SLOW_DELAY", "-1")
    assert main(["init"]) == 2
    assert "PAYMENTS_SLOW_DELAY" in capsys.readouterr().err
