"""Orders' retention wiring (aiohttp): a purge removes old published outbox rows but never an
order, so a replayed Idempotency-Key keeps returning the first order; counts on /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update

from chassis import create_db_engine
from chassis.db import sync_url
from services.orders.__main__ import init
from services.orders.adapters.orm import orders, outbox
from services.orders.app import create_app
from services.orders.entrypoints import DEPS
from services.orders.settings import OrdersSettings
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

from .fakes import FakeUpstreams
from .test_api import auth, post

Client = TestClient[web.Request, web.Application]


async def saga_done(client: Client, issuer: TestIssuer, url: str) -> bool:
    doc = await (await client.get(url, headers=auth(issuer))).json()
    return bool(doc["saga"]["step"] == "DONE")


async def test_replay_after_a_purge_returns_the_first_order(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    settings: OrdersSettings,
    issuer: TestIssuer,
    upstreams: FakeUpstreams,
) -> None:
    init(settings)
    client = await aiohttp_client(
        create_app(settings, verifier=issuer.async_verifier(), upstreams=upstreams)
    )
    first = await post(client, issuer)
    assert first.status == 202
    # The saga's last step (inventory commit) runs after the order reads CONFIRMED: wait for
    # it, or the blocking writes below would hold the event loop while the saga holds
    # SQLite's write lock (a 30 s busy wait) and count outbox rows it has yet to add.
    await wait_until_async(
        lambda: saga_done(client, issuer, first.headers["Location"]), 5, "saga not done"
    )
    db = create_db_engine(sync_url(settings.database_url))
    try:
        with db.begin() as conn:  # as the relay would have, long ago
            published = datetime.now(UTC) - timedelta(days=30)
            conn.execute(update(outbox).values(published_at=published))
            events = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        assert events > 0

        purged = client.app[DEPS].purger.purge()
        assert purged == {"outbox": events}
        again = await post(client, issuer)
        assert again.status in (200, 202)
        assert (await again.json())["id"] == (await first.json())["id"]
        with db.connect() as conn:
            assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 1

        client.app[DEPS].purger.refresh_counts()
        text = await (await client.get("/metrics")).text()
        assert 'db_table_rows{service="orders",table="orders"} 1.0' in text
        assert 'db_table_rows{service="orders",table="outbox"} 0.0' in text
        assert f'retention_purged_rows_total{{service="orders",table="outbox"}} {events}.0' in text
    finally:
        db.dispose()
