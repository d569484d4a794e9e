"""Stage 4: which instance of the route's upstream gets the request, and what happens when it
fails.

An `Upstream` is one or more instances and a balancing policy:

* `round_robin` - each available instance in turn;
* `least_connections` - the one with the fewest requests waiting for their answer (ties in
  turn); a request counts from the moment it is sent until its response headers are in;
* `weighted` - smooth weighted round-robin as nginx does it: weights 5, 1, 1 give
  a a b a c a a, never five in a row.

An instance is *available* when it passed its active health checks, is not ejected and its
breaker is not open:

* active checks - `GET health.path` every `health.interval` s; `unhealthy_threshold`
  consecutive failures take the instance out, `healthy_threshold` passes put it back. Every
  instance starts healthy so the gateway serves at once;
* passive ejection (`passive`) - `consecutive_failures` failed requests in a row (a transport
  error or a 502/503/504 answer) take it out for `ejection_time` s; only with two or more
  instances, since ejecting the only one gains nothing over its breaker;
* a `chassis.CircuitBreaker` per instance (`breaker`), counting the same failures, its state
  a gauge on the gateway's /metrics. A half-open breaker lets one trial request through.

Retries (`Upstream.send` with a route's `RetryPolicy`): the proxy passes a policy only for
idempotent methods with a replayable body. A failed attempt (by `retry.on`) is tried again on
another instance, never the same one, at most `attempts` tries in all, and only while the
upstream's `RetryBudget` has credit: every request that may be retried earns `budget_ratio`
of a retry, every retry spends one, and the balance is capped, so retries stay within about
`budget_ratio` extra requests however long an outage lasts (Finagle's and Envoy's retry
budgets). A breaker that refuses a call means nothing was sent: the next instance is tried
without spending an attempt or budget. Each attempt has the route's timeout.

The common case - one instance, no breaker - is a health flag test and the transport call:
no clock, no lock, no allocation beyond what the proxy already does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from chassis.resilience import OPEN, CircuitBreaker, CircuitOpen

from .config import RetryPolicy, UpstreamConfig
from .transport import (
    NotSent,
    OutboundRequest,
    Transport,
    TransportError,
    UpstreamResponse,
    UpstreamTimeout,
)

__all__ = [
    "GATEWAY_FAILURES",
    "Instance",
    "NoReadyInstance",
    "RetryBudget",
    "Upstream",
    "UpstreamPool",
]

log = logging.getLogger("portico.gateway.upstreams")

_PROBE_TIMEOUT = 2.0
_PROBE_HEADERS = {"Accept": "application/json"}
_UNHEALTHY_RETRY_AFTER = 5
# Answers that say the instance (or what is behind it) failed, not the request.
GATEWAY_FAILURES = frozenset({502, 503, 504})
_BUDGET_CAP = 10.0  # retries a quiet upstream may spend at once; also the burst above the ratio


class NoReadyInstance(Exception):
    """No instance of an upstream is available (unhealthy, ejected or breaker open)."""

    def __init__(self, message: str, retry_after: int = _UNHEALTHY_RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _FailedStatus(Exception):
    """A 502/503/504 answer, raised inside the breaker so that it counts as a failure."""

    def __init__(self, response: UpstreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


async def _send_checked(transport: Transport, request: OutboundRequest) -> UpstreamResponse:
    response = await transport.send(request)
    if response.status in GATEWAY_FAILURES:
        raise _FailedStatus(response)
    return response


class Instance:
    __slots__ = (
        "active",
        "breaker",
        "current",
        "ejected_until",
        "failures",
        "healthy",
        "origin",
        "probe_fails",
        "probe_passes",
        "weight",
    )

    def __init__(self, origin: str, weight: int = 1) -> None:
        self.origin = origin
        self.weight = weight
        self.healthy = True
        self.breaker: CircuitBreaker | None = None
        self.active = 0  # requests awaiting their response headers (least_connections)
        self.current = 0  # smooth weighted round-robin's running score
        self.failures = 0  # consecutive failed requests (passive ejection)
        self.ejected_until = 0.0
        self.probe_passes = 0
        self.probe_fails = 0

    def __repr__(self) -> str:
        return f"Instance({self.origin!r})"


class RetryBudget:
    """Retry credit for one upstream: `deposit(ratio)` per request that may be retried,
    `withdraw()` per retry. Capped at `cap`, so credit earned long ago does not pile up: over
    any run of N such requests at most cap + ratio * N retries are sent.
    """

    __slots__ = ("balance", "cap")

    def __init__(self, cap: float = _BUDGET_CAP) -> None:
        self.cap = cap
        self.balance = cap

    def deposit(self, ratio: float) -> None:
        balance = self.balance + ratio
        self.balance = balance if balance < self.cap else self.cap

    def withdraw(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retries = Counter(
            "gateway_upstream_retries_total",
            "Retries of failed upstream attempts; outcome=budget_exhausted when refused",
            ["upstream", "outcome"],
            registry=registry,
        )
        self.ejections = Counter(
            "gateway_upstream_ejections_total",
            "Instances taken out of rotation after consecutive failed requests",
            ["upstream", "instance"],
            registry=registry,
        )


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_metrics_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    """One set of counters per registry, shared by every pool a reload builds on it."""
    with _metrics_lock:
        metrics = _metrics.get(registry)
        if metrics is None:
            metrics = _metrics[registry] = _Metrics(registry)
        return metrics


class Upstream:
    def __init__(
        self,
        config: UpstreamConfig,
        *,
        registry: CollectorRegistry | None = None,
        metrics: _Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        weights = config.weights or (1,) * len(config.instances)
        self.instances = tuple(
            Instance(url, w) for url, w in zip(config.instances, weights, strict=True)
        )
        self.balanced = len(self.instances) > 1
        self._clock = clock
        self._next = 0
        self._policy = config.balancing
        self._least = config.balancing == "least_connections" and len(self.instances) > 1
        self._passive = config.passive if len(self.instances) > 1 else None
        self._fast: Instance | None = None
        self.budget = RetryBudget()
        self._probe_timeout = config.health.timeout or min(
            _PROBE_TIMEOUT, config.timeout, config.health.interval
        )
        registry = registry or CollectorRegistry(auto_describe=True)
        self._bind(registry, metrics or _metrics_for(registry))

    def _bind(self, registry: CollectorRegistry, metrics: _Metrics) -> None:
        """Build the breakers and keep the counters on `registry` (where their state shows)."""
        self._metrics = metrics
        breaker = self.config.breaker
        for instance in self.instances:
            instance.breaker = (
                None
                if breaker is None
                else CircuitBreaker(
                    f"{self.name}:{instance.origin}",
                    failure_threshold=breaker.failure_threshold,
                    recovery_timeout=breaker.recovery_timeout,
                    registry=registry,
                    clock=self._clock,
                )
            )
        only = self.instances[0] if len(self.instances) == 1 else None
        self._fast = only if only is not None and breaker is None else None

    # --- balancing ---------------------------------------------------------------------

    def _usable(self, instance: Instance, now: float) -> bool:
        if not instance.healthy or instance.ejected_until > now:
            return False
        breaker = instance.breaker
        return breaker is None or breaker.state != OPEN

    def pick(self, exclude: Sequence[Instance] = ()) -> Instance | None:
        """The next available instance by the balancing policy (not one in `exclude`)."""
        instances = self.instances
        if len(instances) == 1:
            only = instances[0]
            return only if only.healthy and only not in exclude else None
        now = self._clock()
        if self._policy == "weighted":
            return self._pick_weighted(now, exclude)
        count = len(instances)
        start = self._next
        if self._least:
            best: Instance | None = None
            for i in range(count):
                instance = instances[(start + i) % count]
                if instance in exclude or not self._usable(instance, now):
                    continue
                if best is None or instance.active < best.active:
                    best = instance
            self._next = (start + 1) % count  # ties go round in turn
            return best
        for i in range(count):
            instance = instances[(start + i) % count]
            if instance not in exclude and self._usable(instance, now):
                self._next = (start + i + 1) % count
                return instance
        return None

    def _pick_weighted(self, now: float, exclude: Sequence[Instance]) -> Instance | None:
        """nginx's smooth weighted round-robin over the available instances."""
        best: Instance | None = None
        total = 0
        for instance in self.instances:
            if instance in exclude or not self._usable(instance, now):
                continue
            instance.current += instance.weight
            total += instance.weight
            if best is None or instance.current > best.current:
                best = instance
        if best is not None:
            best.current -= total
        return best

    @property
    def direct(self) -> Instance | None:
        """The one instance when there is nothing to balance, retry or break (no breaker):
        a request to it needs no bookkeeping around the exchange."""
        return self._fast

    # --- sending -----------------------------------------------------------------------

    def send(
        self, transport: Transport, request: OutboundRequest, retry: RetryPolicy | None = None
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        """Send `request` to an instance (its `origin` is set to the one that answered).

        Raises NoReadyInstance when none is available, else the last TransportError; a
        502/503/504 answer that is not retried is returned as it is. Not itself a coroutine:
        the fast path hands back the transport's own, one frame less per request.
        """
        only = self._fast
        if only is not None:  # one instance, no breaker: nothing to balance or retry
            if not only.healthy:
                raise NoReadyInstance(f"no healthy instance of {self.name}")
            request.origin = only.origin
            return transport.send(request)
        return self._send(transport, request, retry)

    async def _send(
        self, transport: Transport, request: OutboundRequest, retry: RetryPolicy | None
    ) -> UpstreamResponse:
        instance = self.pick()
        if instance is None:
            raise NoReadyInstance(f"no healthy instance of {self.name}")
        if retry is not None:
            self.budget.deposit(retry.budget_ratio)
        tried: list[Instance] = []
        sent = 0
        while True:
            request.origin = instance.origin
            try:
                response = await self._attempt(transport, instance, request)
            except CircuitOpen as exc:
                # Nothing was sent: the next instance, free of attempts and budget.
                tried.append(instance)
                following = self.pick(tried)
                if following is None:
                    raise NoReadyInstance(
                        f"no instance of {self.name} is available (circuit open)",
                        retry_after=max(1, math.ceil(exc.retry_after)),
                    ) from None
                instance = following
                continue
            except NotSent as exc:
                # Nothing left for that instance: any method goes to the next one, each instance
                # once, free of the retry budget (the request was never received).
                tried.append(instance)
                following = self.pick(tried)
                if following is None:
                    raise
                log.info(
                    "not sent: trying another instance",
                    extra={"upstream": self.name, "instance": instance.origin, "error": str(exc)},
                )
                instance = following
                continue
            except TransportError as exc:
                sent += 1
                if retry is None or sent >= retry.attempts or not _retries_error(retry, exc):
                    raise
                tried.append(instance)
                following = self._retry_target(tried)
                if following is None:
                    raise
                log.info(
                    "retrying on another instance",
                    extra={"upstream": self.name, "instance": instance.origin, "error": str(exc)},
                )
                instance = following
                continue
            sent += 1
            if retry is not None and response.status in retry.on_status and sent < retry.attempts:
                tried.append(instance)
                following = self._retry_target(tried)
                if following is not None:
                    log.info(
                        "retrying on another instance",
                        extra={
                            "upstream": self.name,
                            "instance": instance.origin,
                            "status": response.status,
                        },
                    )
                    response.close()
                    instance = following
                    continue
            return response

    def _retry_target(self, tried: list[Instance]) -> Instance | None:
        """Another available instance, if the budget allows one more request."""
        following = self.pick(tried)
        if following is None:
            return None
        if not self.budget.withdraw():
            self._metrics.retries.labels(self.name, "budget_exhausted").inc()
            log.warning("retry budget exhausted", extra={"upstream": self.name})
            return None
        self._metrics.retries.labels(self.name, "retried").inc()
        return following

    async def _attempt(
        self, transport: Transport, instance: Instance, request: OutboundRequest
    ) -> UpstreamResponse:
        """One try on `instance`, its outcome recorded by the breaker and passive ejection."""
        least = self._least
        if least:
            instance.active += 1
        breaker = instance.breaker
        try:
            if breaker is None:
                response = await transport.send(request)
                if response.status in GATEWAY_FAILURES:
                    self._failed(instance)
                    return response
            else:
                response = await breaker.call_async(_send_checked, transport, request)
        except _FailedStatus as exc:
            self._failed(instance)
            return exc.response
        except TransportError:
            self._failed(instance)
            raise
        finally:
            if least:
                instance.active -= 1
        if instance.failures:
            instance.failures = 0
        return response

    def _failed(self, instance: Instance) -> None:
        passive = self._passive
        if passive is None:
            return
        instance.failures += 1
        if instance.failures >= passive.consecutive_failures:
            instance.failures = 0
            instance.ejected_until = self._clock() + passive.ejection_time
            self._metrics.ejections.labels(self.name, instance.origin).inc()
            log.warning(
                "upstream instance ejected",
                extra={
                    "upstream": self.name,
                    "instance": instance.origin,
                    "seconds": passive.ejection_time,
                },
            )

    # --- active health checks ----------------------------------------------------------

    async def _check(self, transport: Transport, instance: Instance) -> bool:
        request = OutboundRequest(
            pool=self.name,
            origin=instance.origin,
            method="GET",
            target=self.config.health.path,
            headers=_PROBE_HEADERS,
            timeout=self._probe_timeout,
        )
        try:
            response = await transport.send(request)
            try:
                await response.read()
            finally:
                response.close()
        except TransportError as exc:
            log.debug(
                "health probe failed",
                extra={"upstream": self.name, "instance": instance.origin, "error": str(exc)},
            )
            return False
        return 200 <= response.status < 300

    def _record_probe(self, instance: Instance, ok: bool) -> None:
        health = self.config.health
        if ok:
            instance.probe_fails = 0
            instance.probe_passes += 1
            if not instance.healthy and instance.probe_passes >= health.healthy_threshold:
                instance.healthy = True
                log.warning(
                    "upstream instance is healthy",
                    extra={"upstream": self.name, "instance": instance.origin},
                )
        else:
            instance.probe_passes = 0
            instance.probe_fails += 1
            if instance.healthy and instance.probe_fails >= health.unhealthy_threshold:
                instance.healthy = False
                log.warning(
                    "upstream instance is unhealthy",
                    extra={"upstream": self.name, "instance": instance.origin},
                )

    async def _probe_one(self, transport: Transport, instance: Instance) -> bool:
        ok = await self._check(transport, instance)
        self._record_probe(instance, ok)
        return ok

    async def probe(self, transport: Transport) -> bool:
        """Check every instance now and count the result; True when any answered."""
        results = await asyncio.gather(*(self._probe_one(transport, i) for i in self.instances))
        return any(results)

    async def ready(self, transport: Transport) -> None:
        if not await self.probe(transport):
            raise NoReadyInstance(f"no instance of {self.name} is ready")

    async def watch(self, transport: Transport) -> None:
        """Probe forever at the configured interval (a background task)."""
        while True:
            await asyncio.sleep(self.config.health.interval)
            await self.probe(transport)


def _retries_error(retry: RetryPolicy, exc: TransportError) -> bool:
    if isinstance(exc, UpstreamTimeout):
        return retry.on_timeout
    return retry.on_connect_error  # refused, reset, unreachable, or no pooled connection free


class UpstreamPool:
    def __init__(
        self,
        configs: Mapping[str, UpstreamConfig],
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        metrics = _metrics_for(self.registry)
        self.upstreams = {
            name: Upstream(cfg, registry=self.registry, metrics=metrics, clock=clock)
            for name, cfg in configs.items()
        }

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Move breaker states and retry counters onto `registry` (the gateway's /metrics);
        before any traffic, since the breakers are built anew."""
        self.registry = registry
        metrics = _metrics_for(registry)
        for upstream in self.upstreams.values():
            upstream._bind(registry, metrics)

    def __getitem__(self, name: str) -> Upstream:
        return self.upstreams[name]
