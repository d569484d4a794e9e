"""Circuit breaker state machine (fake clock) and retry counts/backoff (fake sleep)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from chassis.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen, Retry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Down(ConnectionError):
    pass


class Declined(Exception):
    """A domain answer (say, 402): the dependency works."""


def fail() -> None:
    raise Down("no route")


def gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("circuit_breaker_state", {"name": name})


def test_breaker_opens_half_opens_and_closes() -> None:
    clock, registry = Clock(), CollectorRegistry()
    cb = CircuitBreaker(
        "payments", failure_threshold=3, recovery_timeout=10, registry=registry, clock=clock
    )
    assert cb.state == CLOSED and gauge(registry, "payments") == 0
    for _ in range(2):
        with pytest.raises(Down):
            cb.call(fail)
    assert cb.call(lambda: "ok") == "ok"  # a success resets the consecutive count
    for _ in range(3):
        with pytest.raises(Down):
            cb.call(fail)
    assert cb.state == OPEN and gauge(registry, "payments") == 1
    calls: list[int] = []
    with pytest.raises(CircuitOpen) as refused:
        cb.call(calls.append, 1)
    assert calls == [] and refused.value.retry_after == pytest.approx(10)

    clock.now += 10
    assert cb.state == HALF_OPEN and gauge(registry, "payments") == 2
    with pytest.raises(Down):  # the trial fails: open for another full timeout
        cb.call(fail)
    assert cb.state == OPEN
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        cb.call(lambda: None)
    clock.now += 0.1
    assert cb.call(lambda: "back") == "back"
    assert cb.state == CLOSED and gauge(registry, "payments") == 0


def test_half_open_admits_one_trial_at_a_time() -> None:
    clock = Clock()
    cb = CircuitBreaker(
        "inv", failure_threshold=1, recovery_timeout=1, registry=CollectorRegistry(), clock=clock
    )
    with pytest.raises(Down):
        cb.call(fail)
    clock.now += 1

    def nested() -> str:
        with pytest.raises(CircuitOpen):  # a second caller while the trial is in flight
            cb.call(lambda: None)
        return "trial"

    assert cb.call(nested) == "trial" and cb.state == CLOSED


def test_excluded_errors_count_as_answers() -> None:
    cb = CircuitBreaker(
        "pay", failure_threshold=1, exclude=(Declined,), registry=CollectorRegistry()
    )
    for _ in range(3):
        with pytest.raises(Declined):
            cb.call(lambda: (_ for _ in ()).throw(Declined()))
    assert cb.state == CLOSED


async def test_breaker_async_shares_the_state() -> None:
    clock = Clock()
    cb = CircuitBreaker(
        "cat", failure_threshold=2, recovery_timeout=5, registry=CollectorRegistry(), clock=clock
    )

    async def down() -> None:
        raise Down()

    async def up() -> int:
        return 7

    with pytest.raises(Down):
        await cb.call_async(down)
    with pytest.raises(Down):
        cb.call(fail)  # sync and async failures add up
    with pytest.raises(CircuitOpen):
        await cb.call_async(up)
    clock.now += 5

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):  # a cancelled trial frees the slot, no verdict
        await cb.call_async(cancelled)
    assert cb.state == HALF_OPEN
    assert await cb.call_async(up) == 7 and cb.state == CLOSED


def test_breakers_share_one_gauge_per_registry() -> None:
    registry = CollectorRegistry()
    CircuitBreaker("a", registry=registry)
    CircuitBreaker("b", registry=registry)
    assert gauge(registry, "a") == 0 and gauge(registry, "b") == 0


def flaky(failures: int, exc: type[BaseException] = Down) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise exc("boom")
        return "done"

    return calls, fn


def test_retry_counts_and_full_jitter_bounds() -> None:
    sleeps: list[float] = []
    retry = Retry(attempts=6, base_delay=0.1, max_delay=0.5, sleep=sleeps.append)
    calls, fn = flaky(4)
    assert retry.call(fn) == "done"  # type: ignore[arg-type]
    assert len(calls) == 5 and len(sleeps) == 4
    for n, slept in enumerate(sleeps):  # uniform(0, min(max, base * 2**n))
        assert 0 <= slept <= min(0.5, 0.1 * 2**n)


def test_retry_gives_up_with_the_last_error_and_ignores_unnamed_errors() -> None:
    sleeps: list[float] = []
    retry = Retry(attempts=3, sleep=sleeps.append)
    calls, fn = flaky(10)
    with pytest.raises(Down):
        retry.call(fn)  # type: ignore[arg-type]
    assert len(calls) == 3 and len(sleeps) == 2
    calls, fn = flaky(10, ValueError)
    with pytest.raises(ValueError):
        retry.call(fn)  # type: ignore[arg-type]
    assert len(calls) == 1
    cb = CircuitBreaker("x", failure_threshold=1, registry=CollectorRegistry())
    with pytest.raises(Down):
        cb.call(fail)
    with pytest.raises(CircuitOpen):  # an open circuit is not retried unless named
        retry.call(cb.call, fail)


async def test_retry_async_uses_the_async_sleep() -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls: list[int] = []

    async def fn(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise TimeoutError
        return x * 2

    retry = Retry(attempts=3, base_delay=1, max_delay=1.5, async_sleep=fake_sleep)
    assert await retry.call_async(fn, 21) == 42
    assert len(calls) == 3 and len(sleeps) == 2 and all(0 <= s <= 1.5 for s in sleeps)
