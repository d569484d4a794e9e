"""The cheap per-request paths: request ids, the batching JSON line handler, the access-log
fast path (same line as the LogRecord path), and the lock-and-add request metrics."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from chassis import correlation_id, new_request_id
from chassis.logging import JsonLineHandler, fast_json_handler
from chassis.metrics import RequestMetrics, render
from tests.support.waiting import wait_until_async


@pytest.fixture
def quiet_logger() -> Iterator[tuple[logging.Logger, io.StringIO, JsonLineHandler]]:
    stream = io.StringIO()
    handler = JsonLineHandler("svc", stream)
    # outside the logger tree: pytest's own capture handlers must not see (or block) it
    logger = logging.Logger("portico.test.fastpath", logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream, handler


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_request_ids_are_32_hex_digits_and_unique() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_off_a_loop_a_line_is_written_at_once(
    quiet_logger: tuple[logging.Logger, io.StringIO, JsonLineHandler],
) -> None:
    logger, stream, _ = quiet_logger
    logger.info("hello", extra={"n": 1})
    (doc,) = lines(stream)
    assert doc["msg"] == "hello" and doc["n"] == 1 and doc["service"] == "svc"


async def test_on_a_loop_lines_are_batched_and_written_soon(
    quiet_logger: tuple[logging.Logger, io.StringIO, JsonLineHandler],
) -> None:
    logger, stream, _ = quiet_logger
    for i in range(100):
        logger.info("line", extra={"i": i})
    # the writer thread runs within ms
    written = lambda: len(stream.getvalue().splitlines()) >= 100  # noqa: E731
    await wait_until_async(written, 5, "100 lines written", interval=0.005)
    assert [d["i"] for d in lines(stream)] == list(range(100))


def test_fast_path_writes_the_line_a_log_record_would(
    quiet_logger: tuple[logging.Logger, io.StringIO, JsonLineHandler],
) -> None:
    logger, stream, _ = quiet_logger
    handler = fast_json_handler(logger, logging.INFO)
    assert handler is not None
    fields = {"method": "GET", "status": 200, "client_id": None}
    token = correlation_id.set("rid-1")
    try:
        handler.write_fields(logger.name, "info", "request", fields)
        logger.info("request", extra=fields)
    finally:
        correlation_id.reset(token)
    fast, slow = lines(stream)
    assert fast.pop("ts") and slow.pop("ts")
    assert fast == slow
    assert list(fast) == list(slow)  # the same key order too


@pytest.mark.parametrize("rid", ["rid-2", None])
def test_the_access_line_is_the_one_a_log_record_would_write(
    rid: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chassis import access

    stream = io.StringIO()
    # named as the access logger, outside the logger tree (pytest's handlers stay away)
    logger = logging.Logger("portico.http", logging.INFO)
    logger.addHandler(JsonLineHandler("svc", stream))
    monkeypatch.setattr(access, "log", logger)
    metrics = RequestMetrics("svc")
    args = (metrics, "GET", "items", "/items/1", 200, 0.0012345, "client-1", {"upstream": "u"})
    token = correlation_id.set(rid)
    try:
        assert fast_json_handler(logger, logging.INFO) is not None
        access.record_request(*args)  # the fast path
        logger.addHandler(logging.NullHandler())  # a second handler: the LogRecord path
        assert fast_json_handler(logger, logging.INFO) is None
        access.record_request(*args)
    finally:
        correlation_id.reset(token)
    fast, slow = lines(stream)
    assert fast.pop("ts") and slow.pop("ts")
    assert fast == slow and list(fast) == list(slow)  # the same fields, in the same order
    assert fast["duration_ms"] == 1.234 and fast["upstream"] == "u"
    assert ("correlation_id" in fast) is (rid is not None)


def test_fast_path_steps_aside_for_other_handlers_and_levels(
    quiet_logger: tuple[logging.Logger, io.StringIO, JsonLineHandler],
) -> None:
    logger, _, _ = quiet_logger
    assert fast_json_handler(logger, logging.DEBUG) is None  # the logger is off for DEBUG
    other = logging.StreamHandler(io.StringIO())
    logger.addHandler(other)  # e.g. pytest's caplog: it must see the records
    assert fast_json_handler(logger, logging.INFO) is None


def test_request_metrics_render_counts_and_buckets() -> None:
    metrics = RequestMetrics("svc")
    metrics.observe("items", "GET", 200, 0.003)
    metrics.observe("items", "GET", 200, 0.0005)
    metrics.observe("items", "GET", 500, 30.0)
    text = render(metrics.registry).decode()
    labels = 'method="GET",route="items",service="svc"'
    assert f'http_requests_total{{{labels},status="200"}} 2.0' in text
    assert f'http_requests_total{{{labels},status="500"}} 1.0' in text
    assert f'http_request_duration_seconds_bucket{{le="0.001",{labels}}} 1.0' in text
    assert f'http_request_duration_seconds_bucket{{le="0.005",{labels}}} 2.0' in text
    assert f'http_request_duration_seconds_bucket{{le="+Inf",{labels}}} 3.0' in text
    assert f"http_request_duration_seconds_count{{{labels}}} 3.0" in text


@pytest.mark.parametrize(
    "created",
    [1764111111.0, 1764111111.0004, 1764111111.9999, 1764111112.5, 1764111111.25, 0.001],
)
def test_timestamps_are_iso_utc_milliseconds_across_second_boundaries(created: float) -> None:
    """The date and time part is cached per second: a cached second must never leak into the
    next one, and the milliseconds are truncated as datetime's isoformat truncates them."""
    from datetime import UTC, datetime

    from chassis.logging import timestamp

    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert timestamp(created) == expected.replace("+00:00", "Z")


def test_a_cached_millisecond_never_leaks_into_the_next() -> None:
    """Lines within one millisecond share one stamp; the next millisecond gets its own."""
    from datetime import UTC, datetime

    from chassis.logging import timestamp

    base = 1764111111.0
    for offset in (0.0001, 0.0004, 0.0011, 0.0019, 0.0021, 0.9991, 0.9999, 1.0, 1.0005, 61.0):
        created = base + offset
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert timestamp(created) == expected.replace("+00:00", "Z"), offset
