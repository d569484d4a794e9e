"""Owner checks with two users: a payment is its owner's (the order's owner, named by orders'
charge) or a `payments:read:all` token's; another user's answers 404 and is never listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from chassis.migrations import PreBaselineError
from services.payments.__main__ import init
from services.payments.settings import PaymentsSettings
from tests.support.tokens import TestIssuer

PROBLEM = "application/problem+json"
READ_ALL = ("payments:read", "payments:read:all")


def charge(
    client: FlaskClient, issuer: TestIssuer, key: str, order_id: str, **extra: Any
) -> dict[str, Any]:
    """A charge as orders makes it: its own client token, the order's owner in the body."""
    body = {"order_id": order_id, "amount": "9.99", "payment_method": "pm_card_ok", **extra}
    headers = {**issuer.auth(["payments:write"], sub="orders-service"), "Idempotency-Key": key}
    resp = client.post("/api/v1/payments", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def read(issuer: TestIssuer, sub: str, scopes: tuple[str, ...] = ("payments:read",)) -> Any:
    return issuer.auth(scopes, sub=sub)


def listed(client: FlaskClient, headers: dict[str, str], query: str = "") -> list[str]:
    resp = client.get(f"/api/v1/payments{query}", headers=headers)
    assert resp.status_code == 200
    return [p["order_id"] for p in resp.get_json()["items"]]


def test_each_user_sees_only_their_own_payments(api: Any, issuer: TestIssuer) -> None:
    client = api.client
    alices = charge(client, issuer, "charge-oa", "oa", owner="alice")
    bobs = charge(client, issuer, "charge-ob", "ob", owner="bob")
    alice, bob = read(issuer, "alice"), read(issuer, "bob")

    assert listed(client, alice) == ["oa"]
    assert listed(client, bob) == ["ob"]
    assert listed(client, alice, "?order_id=ob") == []  # not even when asked by order
    assert client.get(f"/api/v1/payments/{alices['id']}", headers=alice).get_json() == alices

    for path in (f"/api/v1/payments/{bobs['id']}", "/api/v1/payments/no-such-payment"):
        resp = client.get(path, headers=alice)
        assert resp.status_code == 404 and resp.mimetype == PROBLEM
    # another user's payment reads exactly like one that does not exist
    other = client.get(f"/api/v1/payments/{bobs['id']}", headers=alice).get_json()
    missing = client.get("/api/v1/payments/x", headers=alice).get_json()
    assert other["title"] == missing["title"] and other["type"] == missing["type"]
    assert bobs["id"] not in str(client.get("/api/v1/payments", headers=alice).get_json())


def test_read_all_scope_sees_everyones(api: Any, issuer: TestIssuer) -> None:
    client = api.client
    charge(client, issuer, "charge-oa", "oa", owner="alice")
    bobs = charge(client, issuer, "charge-ob", "ob", owner="bob")
    staff = read(issuer, "carol", READ_ALL)
    assert sorted(listed(client, staff)) == ["oa", "ob"]
    assert listed(client, staff, "?order_id=ob") == ["ob"]
    assert client.get(f"/api/v1/payments/{bobs['id']}", headers=staff).status_code == 200
    # the staff scope widens reads only: it is no substitute for payments:read
    only_all = read(issuer, "carol", ("payments:read:all",))
    assert client.get("/api/v1/payments", headers=only_all).status_code == 403


def test_owner_defaults_to_the_caller_and_is_validated(api: Any, issuer: TestIssuer) -> None:
    client = api.client
    mine = charge(client, issuer, "k1", "o1")  # no owner named: the caller's own
    assert listed(client, read(issuer, "orders-service")) == ["o1"]
    assert (
        client.get(f"/api/v1/payments/{mine['id']}", headers=read(issuer, "alice")).status_code
        == 404
    )
    headers = {**issuer.auth(["payments:write"], sub="orders-service"), "Idempotency-Key": "k2"}
    for bad in ("", "a b", "x" * 256, 7):
        body = {"order_id": "o2", "amount": "1.00", "payment_method": "pm_card_ok", "owner": bad}
        resp = client.post("/api/v1/payments", json=body, headers=headers)
        assert resp.status_code == 422 and "owner" in resp.get_json()["errors"]
    # a customer token (payments:read only) cannot charge, so cannot name an owner either
    forbidden = client.post(
        "/api/v1/payments",
        json={"order_id": "o3", "amount": "1.00", "payment_method": "pm_card_ok", "owner": "me"},
        headers={**read(issuer, "alice"), "Idempotency-Key": "k3"},
    )
    assert forbidden.status_code == 403


def test_migrate_refuses_a_database_from_before_owners(tmp_path: Path) -> None:
    check_refuses_a_database_from_before_owners(f"sqlite:///{tmp_path / 'old.db'}")


def check_refuses_a_database_from_before_owners(url: str) -> None:
    """A payments table from before owners (SQLite here, PostgreSQL in the integration test)
    lacks part of the baseline: `init` refuses to adopt it, naming `payments.owner`, and
    changes nothing (ADR 0019: the release before migrations adds the column)."""
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(text(_OLD_TABLE))
        conn.execute(text(_OLD_ROW))
    settings = PaymentsSettings(database_url=url, relay=False)
    with pytest.raises(PreBaselineError, match=r"payments\.owner"):
        init(settings)
    found = inspect(old)
    assert set(found.get_table_names()) == {"payments"}  # nothing created, not stamped
    assert "owner" not in {c["name"] for c in found.get_columns("payments")}
    old.dispose()


# The payments table as released before owners were recorded.
_OLD_TABLE = """CREATE TABLE payments (
    id VARCHAR(36) PRIMARY KEY, idempotency_key VARCHAR(255) NOT NULL UNIQUE,
    fingerprint VARCHAR(64) NOT NULL, order_id VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL, currency VARCHAR(3) NOT NULL,
    payment_method VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL,
    decline_code VARCHAR(64), created_at VARCHAR(40) NOT NULL, updated_at VARCHAR(40) NOT NULL,
    attempt_at FLOAT NOT NULL, refund_key VARCHAR(255), refunded_at VARCHAR(40))"""
_OLD_ROW = """INSERT INTO payments VALUES ('p-old', 'k-old', 'f', 'o-old', 100, 'EUR',
    'pm_card_ok', 'CAPTURED', NULL, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00',
    0, NULL, NULL)"""


def test_refund_is_not_owner_checked(api: Any, issuer: TestIssuer) -> None:
    """Refunds are payments:write (orders' own client, staff), whoever the payment is for."""
    paid = charge(api.client, issuer, "charge-o9", "o9", owner="alice")
    headers = {**issuer.auth(["payments:write"], sub="orders-service"), "Idempotency-Key": "r9"}
    resp = api.client.post(f"/api/v1/payments/{paid['id']}/refund", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "REFUNDED"
