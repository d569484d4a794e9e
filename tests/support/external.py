"""Real backing services for integration tests: throwaway PostgreSQL databases.

Locally a missing server skips the test; with CI=true it fails, so CI never passes by skipping.
Each test run creates its own databases with a unique name and drops only those.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

PG_ADMIN_DSN = os.environ.get(
    "PORTICO_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, exc: BaseException) -> None:
    """Skip locally, fail in CI."""
    message = f"{what} is not reachable: {exc}"
    if in_ci():
        pytest.fail(message + " (CI=true: integration tests must not skip)", pytrace=False)
    pytest.skip(message)


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """Create `portico_<prefix>_<random>`, yield its SQLAlchemy URL, drop it afterwards."""
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", exc)
        raise  # unreachable: skip/fail raise
    name = f"portico_{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            base = PG_ADMIN_DSN.rsplit("/", 1)[0]
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


REDIS_URL = os.environ.get("PORTICO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_up(url: str = REDIS_URL) -> str:
    """The Redis URL when a PING answers; otherwise skip (locally) or fail (CI=true)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    finally:
        client.close()
    return url


@contextmanager
def throwaway_redis_prefix(url: str, prefix: str) -> Iterator[str]:
    """A key prefix unique to this run; afterwards only keys under it are deleted."""
    import redis

    key_prefix = f"portico-test:{prefix}:{uuid.uuid4().hex[:12]}:"
    try:
        yield key_prefix
    finally:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        try:
            keys = list(client.scan_iter(match=key_prefix + "*", count=1000))
            if keys:
                client.unlink(*keys)
        finally:
            client.close()
