"""Resilience for calls to other services: a circuit breaker and retries with backoff.

One implementation serves sync (Flask, threads) and async (aiohttp) callers alike.

- `Retry` is built on tenacity (`Retrying` / `AsyncRetrying`): exponential backoff with full
  jitter (`wait_random_exponential`), only for the exception types the caller names, so
  that only idempotent or keyed calls are retried. The sleep is injectable for tests.
- `CircuitBreaker` is written here (about a hundred lines). pybreaker's async support
  needs Tornado, and purgatory keeps separate sync and async breaker factories over its own
  storage, with no injectable clock; a small breaker whose state sits behind one lock is
  shared by both call styles and tested with a fake clock. Its state is a Prometheus gauge.

Exceptions: `CircuitOpen` (the breaker refused the call; nothing was sent). Everything
else is the callee's own exception, re-raised unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitOpen", "Retry"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

_gauges: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()
_gauges_lock = threading.Lock()


def _state_gauge(registry: CollectorRegistry) -> Gauge:
    """One gauge per registry, shared by every breaker registered there."""
    with _gauges_lock:
        gauge = _gauges.get(registry)
        if gauge is None:
            gauge = _gauges[registry] = Gauge(
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                ["name"],
                registry=registry,
            )
        return gauge


class CircuitOpen(Exception):
    """The breaker is open (or its half-open trial is taken): the call was not made."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class CircuitBreaker:
    """Closed -> (failure_threshold consecutive failures) -> open -> (recovery_timeout) ->
    half-open: one trial call; success closes, failure opens again for another timeout.

    Exceptions in `exclude` (say, a 4xx domain error) mean the dependency answered, so they
    count as successes and pass through.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        registry: CollectorRegistry | None = None,
        exclude: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or recovery_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and recovery_timeout > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.exclude = exclude
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self._gauge = _state_gauge(registry if registry is not None else REGISTRY).labels(name)
        self._gauge.set(0)

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    @property
    def failures(self) -> int:
        return self._failures

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_timeout:
            self._set(HALF_OPEN)
        return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            log.warning(
                "circuit breaker %s: %s -> %s",
                self.name,
                self._state,
                state,
                extra={"breaker": self.name, "state": state},
            )
        self._state = state
        self._gauge.set(_STATE_VALUE[state])

    def _before(self) -> bool:
        """Admit a call or raise CircuitOpen; True when the call is the half-open trial."""
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return False
            if state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            wait = max(0.0, self.recovery_timeout - (self._clock() - self._opened_at))
            raise CircuitOpen(self.name, wait)

    def _after(self, trial: bool, error: BaseException | None) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
            if error is None or isinstance(error, self.exclude):
                self._failures = 0
                if self._state != CLOSED:
                    self._set(CLOSED)
                return
            self._failures += 1
            if trial or self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._set(OPEN)

    def _abandon(self, trial: bool) -> None:
        """Cancelled or interrupted: neither success nor failure; free the trial slot."""
        if trial:
            with self._lock:
                self._trial_running = False

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        trial = self._before()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._after(trial, exc)
            raise
        except BaseException:
            self._abandon(trial)
            raise
        self._after(trial, None)
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        trial = self._before()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            self._after(trial, exc)
            raise
        except BaseException:  # asyncio.CancelledError: the caller gave up, not the callee
            self._abandon(trial)
            raise
        self._after(trial, None)
        return result


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    log.info(
        "retrying after %r",
        outcome.exception() if outcome else None,
        extra={"attempt": state.attempt_number, "sleep": state.upcoming_sleep},
    )


class Retry:
    """Up to `attempts` tries, sleeping uniform(0, min(max_delay, base_delay * 2**n)) between
    them (full jitter), only when the exception is one of `retry_on`. The last error is
    re-raised as is; `CircuitOpen` is never retried unless named.
    """

    def __init__(
        self,
        attempts: int = 3,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        retry_on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retry_on = retry_on
        common: dict[str, Any] = {
            "stop": stop_after_attempt(attempts),
            "wait": wait_random_exponential(multiplier=base_delay, max=max_delay),
            "retry": retry_if_exception_type(retry_on),
            "reraise": True,
            "before_sleep": _log_retry,
        }
        self._sync = Retrying(sleep=sleep, **common)
        self._async = AsyncRetrying(sleep=async_sleep, **common)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._sync.copy()(fn, *args, **kwargs)

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await self._async.copy()(fn, *args, **kwargs)
