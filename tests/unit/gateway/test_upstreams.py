"""Upstream pools on a MockTransport: balancing, health thresholds, passive ejection, breakers,
retries and their budget - with a fake clock, never a sleep."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.config import RetryPolicy, UpstreamConfig, parse_config
from gateway.transport import (
    MockResponse,
    MockTransport,
    OutboundRequest,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstreams import NoReadyInstance, RetryBudget, Upstream, UpstreamPool

from .conftest import IDENTITY, FakeUpstreams, make_config

A, B, C = "http://a.test", "http://b.test", "http://c.test"
DEADLINE = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(**upstream: Any) -> UpstreamConfig:
    raw = {
        "upstreams": {"svc": {"instances": [A, B], "health": {"interval": 60}, **upstream}},
        "routes": [{"name": "r", "methods": ["GET"], "path": "/*", "upstream": "svc"}],
    }
    return parse_config(raw, environ={}).upstreams["svc"]


def _upstream(clock: Clock | None = None, **upstream: Any) -> Upstream:
    return Upstream(_config(**upstream), clock=clock or Clock())


def _retry(attempts: int = 2, **kw: Any) -> RetryPolicy:
    defaults: dict[str, Any] = {
        "on_status": frozenset({502, 503, 504}),
        "on_connect_error": True,
        "on_timeout": False,
        "budget_ratio": 0.2,
    }
    return RetryPolicy(attempts=attempts, **{**defaults, **kw})


def _request(method: str = "GET") -> OutboundRequest:
    return OutboundRequest(pool="svc", origin="", method=method, target="/x", headers={})


class Origins:
    """A handler per origin; the default answers 200 naming the origin."""

    def __init__(self, **behaviour: Any) -> None:
        self.behaviour = behaviour  # "a" -> "refuse" | "timeout" | status int | coroutine fn
        self.transport = MockTransport(self.handle)

    async def handle(self, request: OutboundRequest) -> MockResponse:
        how = self.behaviour.get(request.origin.removeprefix("http://").removesuffix(".test"))
        if how == "refuse":
            raise UpstreamUnavailable("connection refused")
        if how == "timeout":
            raise UpstreamTimeout("no answer in time")
        if isinstance(how, int):
            return MockResponse(how, json={"origin": request.origin})
        if callable(how):
            result: MockResponse = await how(request)
            return result
        return MockResponse(json={"origin": request.origin})

    def origins(self) -> list[str]:
        return [r.origin for r in self.transport.requests]


async def _send(
    upstream: Upstream, origins: Origins, retry: RetryPolicy | None = None, method: str = "GET"
) -> UpstreamResponse:
    return await upstream.send(origins.transport, _request(method), retry)


# --- balancing ---------------------------------------------------------------------------


def test_round_robin_skips_unavailable_instances() -> None:
    upstream = _upstream(instances=[A, B, C])
    assert [upstream.pick().origin for _ in range(4)] == [A, B, C, A]  # type: ignore[union-attr]
    upstream.instances[1].healthy = False
    assert [upstream.pick().origin for _ in range(4)] == [C, A, C, A]  # type: ignore[union-attr]
    for instance in upstream.instances:
        instance.healthy = False
    assert upstream.pick() is None


def test_weighted_is_smooth_like_nginx() -> None:
    upstream = _upstream(
        instances=[{"url": A, "weight": 5}, B, {"url": C, "weight": 1}], balancing="weighted"
    )
    picks = [upstream.pick().origin for _ in range(14)]  # type: ignore[union-attr]
    # nginx's documented sequence for weights 5, 1, 1: a a b a c a a, then again
    assert picks == [A, A, B, A, C, A, A] * 2
    upstream.instances[0].healthy = False
    picks = [upstream.pick().origin for _ in range(4)]  # type: ignore[union-attr]
    assert Counter(picks) == {B: 2, C: 2}


async def test_least_connections_prefers_the_idle_instance() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: OutboundRequest) -> MockResponse:
        arrived.set()
        async with asyncio.timeout(DEADLINE):
            await release.wait()
        return MockResponse(json={"origin": request.origin})

    origins = Origins(a=held)
    upstream = _upstream(balancing="least_connections")
    slow = asyncio.create_task(_send(upstream, origins))  # goes to a, and waits there
    async with asyncio.timeout(DEADLINE):
        await arrived.wait()
    assert upstream.instances[0].active == 1
    for _ in range(3):  # round-robin would alternate; a is busy, so b every time
        response = await _send(upstream, origins)
        assert response.status == 200
    assert origins.origins() == [A, B, B, B]
    release.set()
    assert (await slow).status == 200
    assert [i.active for i in upstream.instances] == [0, 0]


# --- active health checks ------------------------------------------------------------------


async def test_health_thresholds_take_an_instance_out_and_put_it_back() -> None:
    origins = Origins()
    upstream = _upstream(
        health={"interval": 60, "path": "/ping", "unhealthy_threshold": 2, "healthy_threshold": 3}
    )
    a = upstream.instances[0]
    origins.behaviour["a"] = 503
    await upstream.probe(origins.transport)
    assert a.healthy  # one failed probe is not enough
    await upstream.probe(origins.transport)
    assert not a.healthy
    assert [upstream.pick() for _ in range(3)] == [upstream.instances[1]] * 3
    origins.behaviour["a"] = 200
    for _ in range(2):
        await upstream.probe(origins.transport)
        assert not a.healthy
    await upstream.probe(origins.transport)
    assert a.healthy
    assert {r.target for r in origins.transport.requests} == {"/ping"}


async def test_readiness_fails_only_when_no_instance_answers() -> None:
    origins = Origins(a="refuse")
    upstream = _upstream()
    await upstream.ready(origins.transport)
    origins.behaviour["b"] = "timeout"
    with pytest.raises(NoReadyInstance):
        await upstream.ready(origins.transport)


# --- passive ejection ----------------------------------------------------------------------


async def test_consecutive_failures_eject_an_instance_for_a_while() -> None:
    clock = Clock()
    origins = Origins(a=502)
    upstream = _upstream(clock, passive={"consecutive_failures": 2, "ejection_time": 10})
    statuses = [(await _send(upstream, origins)).status for _ in range(6)]
    # a, b, a (second failure: ejected), then b only
    assert statuses == [502, 200, 502, 200, 200, 200]
    assert origins.origins() == [A, B, A, B, B, B]
    clock.now += 10
    origins.behaviour.pop("a")
    await _send(upstream, origins)
    await _send(upstream, origins)
    assert sorted(origins.origins()[-2:]) == [A, B]  # a is back in rotation


async def test_a_success_resets_the_failure_count() -> None:
    origins = Origins()
    upstream = _upstream(instances=[A, B], passive={"consecutive_failures": 2})
    outcomes = iter([502, 200, 502, 200, 502])

    async def flaky(request: OutboundRequest) -> MockResponse:
        return MockResponse(next(outcomes))

    origins.behaviour["a"] = flaky
    for _ in range(10):
        await _send(upstream, origins)
    assert origins.origins().count(A) == 5  # never ejected: no two failures in a row
    assert upstream.instances[0].ejected_until == 0.0


async def test_the_only_instance_is_never_ejected() -> None:
    origins = Origins(a="refuse")
    upstream = _upstream(instances=[A], passive={"consecutive_failures": 1})
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await _send(upstream, origins)
    assert len(origins.origins()) == 3


# --- circuit breaker ---------------------------------------------------------------------


async def test_breaker_opens_skips_the_instance_then_lets_a_trial_through() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    pool = UpstreamPool(
        {"svc": _config(breaker={"failure_threshold": 2, "recovery_timeout": 5})},
        registry=registry,
        clock=clock,
    )
    upstream = pool["svc"]
    origins = Origins(a=503)
    for _ in range(4):
        await _send(upstream, origins)
    assert origins.origins() == [A, B, A, B]
    breaker = upstream.instances[0].breaker
    assert breaker is not None and breaker.state == "open"
    labels = {"name": f"svc:{A}"}
    assert registry.get_sample_value("circuit_breaker_state", labels) == 1
    for _ in range(3):
        await _send(upstream, origins)
    assert origins.origins()[4:] == [B, B, B]
    clock.now += 5  # half-open: one trial; it succeeds and closes the breaker
    origins.behaviour.pop("a")
    for _ in range(4):
        await _send(upstream, origins)
    assert origins.origins()[7:].count(A) == 2
    assert breaker.state == "closed"
    assert registry.get_sample_value("circuit_breaker_state", labels) == 0


async def test_open_breaker_on_the_only_instance_is_503_with_retry_after(
    aiohttp_client: Any, upstreams: FakeUpstreams
) -> None:
    config = make_config(
        upstreams={
            "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
            "svc": {
                "instances": ["http://svc.test"],
                "health": {"interval": 60},
                "breaker": {"failure_threshold": 2, "recovery_timeout": 30},
            },
        }
    )
    upstreams.on("http://svc.test", "/public/x", lambda _r: MockResponse(502))
    client: TestClient = await aiohttp_client(create_app(config, transport=upstreams.transport))
    assert [(await client.get("/public/x")).status for _ in range(2)] == [502, 502]
    resp = await client.get("/public/x")
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    assert len(upstreams.seen("http://svc.test")) == 2  # the third never left the gateway
    metrics = await (await client.get("/metrics")).text()
    assert 'circuit_breaker_state{name="svc:http://svc.test"} 1.0' in metrics


# --- retries -------------------------------------------------------------------------------


async def test_retry_goes_to_another_instance() -> None:
    origins = Origins(a="refuse")
    upstream = _upstream()
    response = await _send(upstream, origins, _retry())
    assert response.status == 200
    assert origins.origins() == [A, B]


async def test_retry_on_a_gateway_status_and_last_answer_passes_through() -> None:
    origins = Origins(a=503, b=504, c=502)
    upstream = _upstream(instances=[A, B, C])
    response = await _send(upstream, origins, _retry(attempts=3))
    assert response.status == 502  # the last attempt's answer, as it is
    assert origins.origins() == [A, B, C]
    origins.transport.requests.clear()
    response = await _send(upstream, origins, _retry(attempts=2, on_status=frozenset({504})))
    assert response.status == 503  # a's 503 is not in `on`
    assert origins.origins() == [A]


async def test_timeouts_are_retried_only_when_named() -> None:
    origins = Origins(a="timeout")
    upstream = _upstream()
    with pytest.raises(UpstreamTimeout):
        await _send(upstream, origins, _retry())
    assert origins.origins() == [A]
    response = await _send(upstream, origins, _retry(on_timeout=True))
    assert response.status == 200
    assert origins.origins()[1:] == [B]  # round-robin moved on; b answered at once


async def test_never_the_same_instance_twice() -> None:
    origins = Origins(a="refuse", b="refuse")
    upstream = _upstream()
    with pytest.raises(UpstreamUnavailable):
        await _send(upstream, origins, _retry(attempts=5))
    assert sorted(origins.origins()) == [A, B]


async def test_retry_budget_bounds_extra_requests() -> None:
    registry = CollectorRegistry()
    pool = UpstreamPool({"svc": _config()}, registry=registry)
    upstream = pool["svc"]
    origins = Origins(a=503, b=503)
    requests = 200
    for _ in range(requests):
        await _send(upstream, origins, _retry(budget_ratio=0.2))
    retries = len(origins.origins()) - requests
    assert retries <= 10 + 0.2 * requests  # the cap plus the ratio
    assert retries >= 0.2 * requests - 1
    assert registry.get_sample_value(
        "gateway_upstream_retries_total", {"upstream": "svc", "outcome": "retried"}
    ) == float(retries)
    refused = registry.get_sample_value(
        "gateway_upstream_retries_total", {"upstream": "svc", "outcome": "budget_exhausted"}
    )
    assert refused is not None and refused > 0


def test_retry_budget_is_capped() -> None:
    budget = RetryBudget(cap=2)
    for _ in range(100):
        budget.deposit(0.5)
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    budget.deposit(0.5)
    assert not budget.withdraw()
    budget.deposit(0.5)
    assert budget.withdraw()


def _retrying_config(svc: dict[str, Any]) -> Any:
    return make_config(
        upstreams={
            "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
            "svc": {"health": {"interval": 60}, **svc},
        },
        routes=[
            {
                "name": "things",
                "methods": ["GET", "POST", "PUT", "DELETE", "PATCH"],
                "path": "/things",
                "upstream": "svc",
                "auth": {"required": False},
                "retry": {"attempts": 2, "on": [502, "connect_error"]},
            }
        ],
    )


async def test_post_and_patch_are_never_retried(aiohttp_client: Any) -> None:
    origins = Origins(a="refuse", b="refuse")
    config = _retrying_config({"instances": [A, B]})
    client: TestClient = await aiohttp_client(create_app(config, transport=origins.transport))
    for method in ("POST", "PATCH"):
        origins.transport.requests.clear()
        resp = await client.request(method, "/things", data=b"{}")
        assert resp.status == 502
        assert len(origins.origins()) == 1, method
    for method in ("GET", "PUT", "DELETE"):
        origins.transport.requests.clear()
        resp = await client.request(method, "/things", data=b"{}" if method == "PUT" else None)
        assert resp.status == 502
        assert sorted(origins.origins()) == [A, B], method


async def test_the_answering_instance_is_in_the_access_log(
    aiohttp_client: Any, caplog: Any
) -> None:
    origins = Origins(a="refuse")
    config = _retrying_config({"instances": [A, B]})
    client: TestClient = await aiohttp_client(create_app(config, transport=origins.transport))
    with caplog.at_level("INFO", logger="portico.http"):
        resp = await client.get("/things")
    assert resp.status == 200
    (record,) = [r for r in caplog.records if r.name == "portico.http"]
    assert record.instance == B
    assert record.upstream == "svc"


async def test_one_instance_without_breaker_takes_the_fast_path() -> None:
    def no_clock() -> float:
        raise AssertionError("the fast path reads no clock")

    origins = Origins()
    upstream = Upstream(_config(instances=[A]), clock=no_clock)
    for _ in range(3):
        assert (await _send(upstream, origins, _retry())).status == 200
    assert upstream.budget.balance == upstream.budget.cap  # no budget bookkeeping either
    upstream.instances[0].healthy = False
    with pytest.raises(NoReadyInstance):
        await _send(upstream, origins)
