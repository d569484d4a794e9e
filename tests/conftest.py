"""Fixtures shared by every layer of tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.external import throwaway_postgres


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    prefix = request.node.module.__name__.rsplit(".", 1)[-1][:20].lower()
    with throwaway_postgres(prefix) as url:
        yield url
