"""Start-up without orders: the consumer follows live events anyway, the catch-up keeps
retrying, and the read models are not "complete" (so the routes' bound applies); `rebuild`
without a feed exits 1 naming it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from chassis import create_db_engine, sqlite_url
from chassis.service_token import BlockingServiceToken
from services.views.__main__ import main, migrate
from services.views.adapters.feed import SCOPE, FeedClient
from services.views.service_layer.follower import Follower
from services.views.service_layer.lag import LagTracker
from services.views.service_layer.projector import Projector
from services.views.settings import ViewsSettings
from tests.support.waiting import wait_until

CLOSED = "http://127.0.0.1:9"  # discard: nothing listens


class FakeConsumer:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.declared = False

    def declare(self) -> None:
        self.declared = True

    def start(self) -> None:
        self.started.set()

    def stop(self, timeout: float = 5.0) -> None:
        pass


def test_without_orders_the_consumer_follows_and_the_catch_up_retries(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "views.db")
    migrate(ViewsSettings(database_url=url.replace("sqlite://", "sqlite+aiosqlite://")))
    engine = create_db_engine(url)
    session = requests.Session()
    token = BlockingServiceToken(
        session, f"{CLOSED}/oauth/token", SCOPE, client_id="v", client_secret="s"
    )
    lag = LagTracker()
    consumer = FakeConsumer()
    follower = Follower(
        Projector(lag, FeedClient(CLOSED, token, session, 1.0)),
        consumer,  # type: ignore[arg-type]
        engine,
        retry=0.01,
    )
    follower.start()
    try:
        wait_until(consumer.started.is_set, 10, "the consumer to start")
        assert consumer.declared
        wait_until(lambda: lag.catch_up_error, 10, "a failed catch-up")
        assert "unreachable" in str(lag.catch_up_error)
        assert not lag.caught_up
        lag.idle()  # an empty queue proves nothing before the history is in
        assert lag.complete_at is None
    finally:
        follower.stop()
        session.close()
        engine.dispose()


def test_rebuild_without_the_feed_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'views.db'}"
    for name, value in {
        "VIEWS_DATABASE_URL": db,
        "VIEWS_ORDERS_URL": CLOSED,
        "VIEWS_TOKEN_URL": f"{CLOSED}/oauth/token",
        "VIEWS_CLIENT_ID": "views-service",
        "VIEWS_CLIENT_SECRET": "s",
        "VIEWS_FEED_TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 0
    assert main(["rebuild"]) == 1
    assert "token endpoint unreachable" in capsys.readouterr().err
