"""Orders test fixtures: a migrated SQLite file, fake upstreams, a token issuer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.db import create_async_db_engine
from services.orders.settings import OrdersSettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer

from .fakes import FakeUpstreams


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def settings(tmp_path: Path) -> OrdersSettings:
    return OrdersSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}",
        publish_events=False,
        saga_poll_interval=0.05,
        saga_retry_base=0.01,
        saga_retry_max=0.05,
    )


@pytest.fixture
async def engine(settings: OrdersSettings) -> AsyncIterator[AsyncEngine]:
    migrated("orders", settings.database_url)  # what `init` does, from a template
    engine = create_async_db_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def upstreams() -> FakeUpstreams:
    return FakeUpstreams()
