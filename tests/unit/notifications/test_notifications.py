"""Notifications: composing messages, the event handler (owner learnt from order events,
backfilled onto payment notifications), and the API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, func, select

from chassis import create_db_engine
from chassis.messaging import Event
from services.notifications.__main__ import init, main
from services.notifications.adapters.orm import notifications
from services.notifications.app import create_app
from services.notifications.domain import compose
from services.notifications.service_layer.handlers import handle_event
from services.notifications.settings import NotificationsSettings
from tests.support.tokens import TestIssuer

Client = TestClient[web.Request, web.Application]
READ = ("notifications:read",)


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def settings(tmp_path: Path) -> NotificationsSettings:
    return NotificationsSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", consume=False
    )


@pytest.fixture
def db(settings: NotificationsSettings) -> Iterator[Engine]:
    init(settings)
    engine = create_db_engine(settings.database_url.replace("+aiosqlite", ""))
    yield engine
    engine.dispose()


def deliver(db: Engine, type_: str, **data: Any) -> Event:
    event = Event(type=type_, data=data)
    with db.begin() as conn:
        handle_event(event, conn)
    return event


def rows(db: Engine) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(select(notifications).order_by(notifications.c.created_at)))


def test_compose() -> None:
    confirmed = compose("order.confirmed", {"order_id": "abcdef123", "total": "9.90"})
    assert confirmed is not None and confirmed.kind == "order"
    assert "abcdef12" in confirmed.subject and "9.90 EUR" in confirmed.body
    rejected = compose("order.rejected", {"order_id": "x", "reason": "out of stock: A-1"})
    assert rejected is not None and "out of stock: A-1" in rejected.body
    captured = compose("payment.captured", {"order_id": "x", "amount": "9.90", "payment_id": "p"})
    assert captured is not None and captured.kind == "payment"
    assert compose("payment.refunded", {"order_id": "x", "amount": "1"}) is not None
    assert compose("payment.whatever", {}) is not None
    assert compose("order.created", {"order_id": "x"}) is None


def test_one_notification_per_outcome_event_logged_as_email(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="portico.notifications.email"):
        deliver(db, "order.created", order_id="o1", owner="alice", items=[], total="1.00")
        deliver(db, "order.confirmed", order_id="o1", owner="alice", total="1.00")
    (row,) = rows(db)
    assert (row.owner, row.kind, row.event_type, row.order_id) == (
        "alice",
        "order",
        "order.confirmed",
        "o1",
    )
    emails = [r for r in caplog.records if r.name == "portico.notifications.email"]
    assert len(emails) == 1 and emails[0].to == "alice"  # type: ignore[attr-defined]


def test_payment_events_get_the_owner_from_order_events_in_either_order(db: Engine) -> None:
    deliver(db, "order.created", order_id="o1", owner="alice")
    deliver(db, "payment.captured", order_id="o1", payment_id="p1", amount="5.00")
    # Payment first, owner learnt later: the notification is given to the owner then.
    deliver(db, "payment.captured", order_id="o2", payment_id="p2", amount="5.00")
    assert {r.order_id: r.owner for r in rows(db)} == {"o1": "alice", "o2": None}
    deliver(db, "order.rejected", order_id="o2", owner="bob", reason="declined")
    assert {(r.order_id, r.event_type): r.owner for r in rows(db)} == {
        ("o1", "payment.captured"): "alice",
        ("o2", "payment.captured"): "bob",
        ("o2", "order.rejected"): "bob",
    }


@pytest.fixture
async def client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    settings: NotificationsSettings,
    issuer: TestIssuer,
    db: Engine,
) -> Client:
    return await aiohttp_client(create_app(settings, verifier=issuer.async_verifier()))


async def test_api_lists_mine_newest_first_and_marks_read(
    client: Client, issuer: TestIssuer, db: Engine
) -> None:
    for i in range(3):
        deliver(db, "order.confirmed", order_id=f"o{i}", owner="alice", total="1.00")
    deliver(db, "order.rejected", order_id="ob", owner="bob", reason="x")
    alice = issuer.auth(READ, sub="alice")
    doc = await (await client.get("/api/v1/notifications?limit=2", headers=alice)).json()
    assert [n["order_id"] for n in doc["items"]] == ["o2", "o1"]
    assert doc["items"][0]["read"] is False and doc["next_cursor"]
    rest = await (
        await client.get(f"/api/v1/notifications?cursor={doc['next_cursor']}", headers=alice)
    ).json()
    assert [n["order_id"] for n in rest["items"]] == ["o0"] and rest["next_cursor"] is None

    nid = doc["items"][0]["id"]
    resp = await client.post(f"/api/v1/notifications/{nid}/read", headers=alice)
    assert resp.status == 200 and (await resp.json())["read"] is True
    first_read = (await resp.json())["read_at"]
    again = await client.post(f"/api/v1/notifications/{nid}/read", headers=alice)
    assert (await again.json())["read_at"] == first_read  # idempotent
    unread = await (await client.get("/api/v1/notifications?unread=true", headers=alice)).json()
    assert [n["order_id"] for n in unread["items"]] == ["o1", "o0"]

    bob = issuer.auth(READ, sub="bob")
    assert (await client.post(f"/api/v1/notifications/{nid}/read", headers=bob)).status == 404
    mine = await (await client.get("/api/v1/notifications", headers=bob)).json()
    assert [n["order_id"] for n in mine["items"]] == ["ob"]


async def test_two_users_and_the_read_all_scope(
    client: Client, issuer: TestIssuer, db: Engine
) -> None:
    """alice's notification is never listed for bob and is 404 to him; a token with
    notifications:read:all lists both users' (and unowned ones) but marks only its own read."""
    deliver(db, "order.confirmed", order_id="oa", owner="alice", total="1.00")
    deliver(db, "order.rejected", order_id="ob", owner="bob", reason="x")
    deliver(db, "payment.captured", order_id="o?", payment_id="p", amount="1.00")  # no owner yet
    alice, bob = issuer.auth(READ, sub="alice"), issuer.auth(READ, sub="bob")
    (note,) = (await (await client.get("/api/v1/notifications", headers=alice)).json())["items"]
    bobs = await (await client.get("/api/v1/notifications", headers=bob)).json()
    assert [n["order_id"] for n in bobs["items"]] == ["ob"]
    other = await client.post(f"/api/v1/notifications/{note['id']}/read", headers=bob)
    missing = await client.post("/api/v1/notifications/no-such-note/read", headers=bob)
    assert other.status == missing.status == 404  # the same answer: existence not revealed
    assert (await other.json())["title"] == (await missing.json())["title"]

    staff = issuer.auth((*READ, "notifications:read:all"), sub="carol")
    everyone = await (await client.get("/api/v1/notifications", headers=staff)).json()
    assert sorted(n["order_id"] for n in everyone["items"]) == ["o?", "oa", "ob"]
    page = await (await client.get("/api/v1/notifications?limit=2", headers=staff)).json()
    rest = await (
        await client.get(f"/api/v1/notifications?cursor={page['next_cursor']}", headers=staff)
    ).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1
    # reading everyone's is not changing their inbox: alice's stays unread
    assert (
        await client.post(f"/api/v1/notifications/{note['id']}/read", headers=staff)
    ).status == 404
    unread = await (await client.get("/api/v1/notifications?unread=true", headers=alice)).json()
    assert [n["id"] for n in unread["items"]] == [note["id"]]
    only_all = issuer.auth(("notifications:read:all",), sub="carol")
    assert (await client.get("/api/v1/notifications", headers=only_all)).status == 403


async def test_api_errors(client: Client, issuer: TestIssuer) -> None:
    assert (await client.get("/api/v1/notifications")).status == 401
    wrong = issuer.auth(("orders:read",))
    assert (await client.get("/api/v1/notifications", headers=wrong)).status == 403
    ok = issuer.auth(READ)
    for params, field in (
        ("limit=0", "limit"),
        ("cursor=!!", "cursor"),
        ("unread=maybe", "unread"),
    ):
        resp = await client.get(f"/api/v1/notifications?{params}", headers=ok)
        assert resp.status == 422 and field in (await resp.json())["errors"]
        assert resp.content_type == "application/problem+json"


async def test_health_and_openapi(client: Client) -> None:
    ready = await client.get("/health/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"database": "ok"}
    spec = await (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {
        "/api/v1/notifications",
        "/api/v1/notifications/{notification_id}/read",
        "/api/v1/notifications/stream",
        "/api/v1/notifications/ws",
    }


def test_init_cli_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOTIFICATIONS_DATABASE_URL", raising=False)
    assert main(["init"]) == 0 and main(["init"]) == 0
    assert (tmp_path / "var/notifications/notifications.db").exists()
    engine = create_db_engine(f"sqlite:///{tmp_path / 'var/notifications/notifications.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == 0
    engine.dispose()
    monkeypatch.setenv("NOTIFICATIONS_PORT", "nope")
    assert main(["init"]) == 2 and "NOTIFICATIONS_PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=\u0661\u0660", 422),  # 200 on main: int() reads Arabic-Indic digits
        ("limit=%2010", 422),
        ("limit=1_0", 422),
        ("limit=" + "9" * 5000, 422),
        ("cursor=%ED%A0%80", 400),  # a UTF-8-encoded lone surrogate
    ],
)
async def test_list_query_out_of_bounds(
    client: Client, issuer: TestIssuer, query: str, status: int
) -> None:
    resp = await client.get(f"/api/v1/notifications?{query}", headers=issuer.auth(READ))
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
