"""Notifications' retention wiring: old inbox rows are purged by the app's purger, recent
ones kept; row counts are on /metrics from start-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from chassis import create_db_engine
from services.notifications.__main__ import init
from services.notifications.adapters.orm import inbox
from services.notifications.app import create_app
from services.notifications.entrypoints import DEPS
from services.notifications.settings import NotificationsSettings
from tests.support.tokens import TestIssuer

Client = TestClient[web.Request, web.Application]


async def test_old_inbox_rows_purged_and_counts_on_metrics(
    tmp_path: Path, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    settings = NotificationsSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", consume=False, retention_days=2
    )
    init(settings)
    now = datetime.now(UTC)
    db = create_db_engine(settings.database_url.replace("+aiosqlite", ""))
    with db.begin() as conn:
        for mid, age in [("old", timedelta(days=3)), ("new", timedelta(days=1))]:
            conn.execute(
                inbox.insert().values(
                    consumer="notifications", message_id=mid, event_type="t", processed_at=now - age
                )
            )
    client = await aiohttp_client(create_app(settings, verifier=TestIssuer().async_verifier()))
    text = await (await client.get("/metrics")).text()
    assert 'db_table_rows{service="notifications",table="inbox"} 2.0' in text
    assert 'db_table_rows{service="notifications",table="notifications"} 0.0' in text

    purger = client.app[DEPS].purger
    assert purger.purge(now) == {"inbox": 1, "outbox": 0}
    with db.connect() as conn:
        assert list(conn.execute(select(inbox.c.message_id)).scalars()) == ["new"]
    purger.refresh_counts()  # what each periodic pass does after purging
    text = await (await client.get("/metrics")).text()
    assert 'db_table_rows{service="notifications",table="inbox"} 1.0' in text
    assert 'retention_purged_rows_total{service="notifications",table="inbox"} 1.0' in text
    db.dispose()
