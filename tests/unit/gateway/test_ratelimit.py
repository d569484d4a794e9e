"""The rate-limit stage without Redis: GCRA math on an injected clock, the RateLimit header
fields, who the consumer is (client_id, sub, IP behind trusted proxies), consumer classes, the
config section, and the Redis failure paths against sockets that refuse or never answer."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chassis import ConfigError
from chassis.tokens import Claims
from gateway.app import create_app
from gateway.config import GatewayConfig, Quota, parse_config
from gateway.ratelimit import (
    LocalLimiter,
    RateLimiter,
    RedisClient,
    RedisTimeout,
    RedisUnavailable,
    client_ip,
    consumer_key,
    gcra,
    interval_ns,
    pack_command,
    policy_header,
    rate_header,
)
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

from .conftest import BASE, FakeUpstreams, make_config

SECOND = 1_000_000_000


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- GCRA ------------------------------------------------------------------------------------


def test_gcra_admits_the_burst_at_once_then_one_per_interval() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    quota = Quota(limit=60, period=60, burst=5)  # one a second, five at once
    t = interval_ns(quota)
    assert t == SECOND

    decisions = [limiter.acquire("k", t, quota.burst) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[0].reset_after == pytest.approx(1.0)  # one used: back in one interval
    assert decisions[4].reset_after == pytest.approx(5.0)
    assert decisions[5].retry_after == pytest.approx(1.0)
    assert decisions[5].reset_after == pytest.approx(5.0)

    clock.advance(0.5)
    refused = limiter.acquire("k", t, quota.burst)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.acquire("k", t, quota.burst).allowed
    assert not limiter.acquire("k", t, quota.burst).allowed

    # Sustained: one per interval forever, never more.
    admitted = 0
    for _ in range(100):
        clock.advance(0.25)
        admitted += limiter.acquire("k", t, quota.burst).allowed
    assert admitted == 25

    # Idle for the full reset time: the whole burst is back, and no more.
    clock.advance(60)
    assert sum(limiter.acquire("k", t, quota.burst).allowed for _ in range(10)) == 5


def test_gcra_buckets_are_per_key() -> None:
    limiter = LocalLimiter(Clock())
    assert limiter.acquire("a", SECOND, 1).allowed
    assert not limiter.acquire("a", SECOND, 1).allowed
    assert limiter.acquire("b", SECOND, 1).allowed


def test_gcra_within_any_span_admits_at_most_burst_plus_span_over_interval() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    quota = Quota(limit=100, period=60, burst=20)
    t = interval_ns(quota)
    times: list[float] = []
    for _ in range(2000):  # hammer it every 10 ms for 20 s
        if limiter.acquire("k", t, quota.burst).allowed:
            times.append(clock.now)
        clock.advance(0.01)
    span = 20.0
    assert len(times) <= quota.burst + span / (t / SECOND) + 1
    assert len(times) >= quota.burst + span / (t / SECOND) - 1


def test_gcra_pure_function_keeps_the_tat_when_refusing() -> None:
    tat, allowed, remaining, reset, retry = gcra(tat=10, now=10, interval=10, burst=1)
    assert (tat, allowed, remaining, reset, retry) == (20, True, 0, 10, 0)
    assert gcra(tat=20, now=15, interval=10, burst=1) == (20, False, 0, 5, 5)


def test_local_limiter_forgets_full_buckets() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock, sweep_at=10)
    for i in range(10):
        limiter.acquire(f"k{i}", SECOND, 5)
    assert len(limiter) == 10
    clock.advance(2)
    limiter.acquire("fresh", SECOND, 5)  # over the threshold: full buckets are swept
    assert len(limiter) == 1


# --- header fields ---------------------------------------------------------------------------


def test_header_fields_follow_the_ietf_draft() -> None:
    from gateway.ratelimit import Decision

    assert policy_header("api", Quota(100, 60, 20)) == '"api";q=100;w=60'
    assert rate_header("api", Decision(True, 19, 0.6, 0.0)) == '"api";r=19;t=1'
    assert rate_header("api.partners", Decision(False, 0, 12.0, 0.6)) == '"api.partners";r=0;t=12'


def _limited(**policy: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["rate_limits"] = {"policies": {"p": {"limit": 60, "period": 60, "burst": 3, **policy}}}
    for route in raw["routes"]:
        if route["name"] in ("public", "items.list"):
            route["rate_limit"] = "p"
    return raw


async def _client(
    aiohttp_client: Any,
    upstreams: FakeUpstreams,
    config: GatewayConfig,
    clock: Callable[[], float] = time.monotonic,
) -> TestClient:
    limiter = RateLimiter(
        config.rate_limits, config.routes, config.server.trusted_proxies, clock=clock
    )
    app = create_app(config, transport=upstreams.transport, limiter=limiter)
    client: TestClient = await aiohttp_client(app)
    return client


async def test_responses_carry_ratelimit_fields_and_429_is_a_problem(
    aiohttp_client: Any, upstreams: FakeUpstreams
) -> None:
    clock = Clock()
    client = await _client(aiohttp_client, upstreams, parse_config(_limited(), environ={}), clock)
    seen = []
    for _ in range(3):
        resp = await client.get("/public/x")
        assert resp.status == 200
        seen.append(resp.headers["RateLimit"])
        assert resp.headers["RateLimit-Policy"] == '"p";q=60;w=60'
    assert seen == ['"p";r=2;t=1', '"p";r=1;t=2', '"p";r=0;t=3']

    resp = await client.get("/public/x")
    assert resp.status == 429
    assert resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["RateLimit"] == '"p";r=0;t=3'
    assert resp.headers["RateLimit-Policy"] == '"p";q=60;w=60'
    doc = await resp.json()
    assert doc["status"] == 429
    assert doc["type"] == "https://portico.dev/problems/rate-limited"
    assert doc["correlation_id"] == resp.headers["X-Request-ID"]
    assert len(upstreams.seen()) == 3  # the refused request never reached the upstream

    clock.advance(1)
    assert (await client.get("/public/x")).status == 200

    # A route without a policy is never limited and carries no fields.
    resp = await client.get("/old/1")
    assert resp.status == 200
    assert "RateLimit" not in resp.headers

    metrics = await (await client.get("/metrics")).text()
    assert (
        'gateway_ratelimit_decisions_total{backend="local",outcome="limited",policy="p"} 1.0'
        in (metrics)
    )


async def test_upstream_errors_after_the_stage_still_carry_the_fields(
    aiohttp_client: Any, upstreams: FakeUpstreams
) -> None:
    from gateway.transport import UpstreamUnavailable

    def refuse(_request: Any) -> Any:
        raise UpstreamUnavailable("refused")

    upstreams.on("http://svc.test", "/public/down", refuse)
    client = await _client(aiohttp_client, upstreams, parse_config(_limited(), environ={}))
    resp = await client.get("/public/down")
    assert resp.status == 502
    assert resp.headers["RateLimit"].startswith('"p";r=2;')


# --- who is the consumer -------------------------------------------------------------------


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("remote", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], PROXIES, "203.0.113.9"),  # untrusted peer: XFF ignored
        ("203.0.113.9", ["1.2.3.4"], (), "203.0.113.9"),  # no proxies configured
        ("10.0.0.2", ["198.51.100.7"], PROXIES, "198.51.100.7"),
        # a client forging the left part gains nothing: the right-most untrusted hop wins
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.5"], PROXIES, "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7"], PROXIES, "198.51.100.7"),  # repeated header
        ("10.0.0.2", ["10.0.0.9"], PROXIES, "10.0.0.9"),  # every hop a proxy: the left-most
        ("10.0.0.2", [], PROXIES, "10.0.0.2"),
        ("10.0.0.2", ["garbage, 10.0.0.7"], PROXIES, "10.0.0.7"),  # stop at the unparsable hop
        ("::ffff:10.0.0.2", ["2001:db8::1"], PROXIES, "2001:db8::1"),
        ("fd00::1", ["::ffff:192.0.2.1"], PROXIES, "192.0.2.1"),
        (None, [], PROXIES, "unknown"),
    ],
)
def test_client_ip(remote: str | None, xff: list[str], trusted: Any, expected: str) -> None:
    assert client_ip(remote, xff, trusted) == expected


def _claims(client_id: str | None, sub: str = "user-1", scopes: tuple[str, ...] = ()) -> Claims:
    return Claims(
        raw={}, subject=sub, client_id=client_id, scopes=frozenset(scopes), expires_at=0.0
    )


def test_consumer_key_is_the_user_for_user_tokens_the_client_for_client_tokens() -> None:
    """Issue 15: a user token is limited per user (`sub`), whatever client it came through;
    a client_credentials token (identity makes its `sub` the client id) per client; no
    claims (a public route, a refused token) per client address."""
    ip = lambda: "1.2.3.4"  # noqa: E731
    assert consumer_key(_claims("portico-public", sub="alice"), ip) == "sub:alice"
    assert consumer_key(_claims("portico-public", sub="bob"), ip) == "sub:bob"
    assert consumer_key(_claims("portico-dev", sub="alice"), ip) == "sub:alice"
    assert (
        consumer_key(_claims("orders-service", sub="orders-service"), ip) == "client:orders-service"
    )
    assert consumer_key(_claims(None, sub="alice"), ip) == "sub:alice"
    assert consumer_key(_claims("app-1", sub=""), ip) == "client:app-1"
    assert consumer_key(_claims(None, sub=""), ip) == "ip:1.2.3.4"
    assert consumer_key(None, ip) == "ip:1.2.3.4"


async def test_a_refused_token_counts_against_the_address(
    aiohttp_client: Any, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    """401s spend the caller's address' budget: forged tokens are throttled (429), and the
    401 itself carries the RateLimit fields."""
    client = await _client(aiohttp_client, upstreams, parse_config(_limited(), environ={}), Clock())
    forged = {"Authorization": "Bearer forged"}
    got = [await client.get("/items", headers=forged) for _ in range(4)]
    assert [r.status for r in got] == [401, 401, 401, 429]
    assert got[0].headers["RateLimit-Policy"] == '"p";q=60;w=60'
    assert got[0].headers["WWW-Authenticate"].startswith("Bearer")
    assert got[3].headers["Content-Type"] == "application/problem+json"
    # a valid user token is not that address' budget
    good = {"Authorization": f"Bearer {issuer.token(scopes=['items:read'], sub='u1')}"}
    assert (await client.get("/items", headers=good)).status == 200


async def test_each_client_has_its_own_budget(
    aiohttp_client: Any, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await _client(aiohttp_client, upstreams, parse_config(_limited(), environ={}), Clock())
    for client_id, expect in (("a", [200, 200, 200, 429]), ("b", [200, 200, 200, 429])):
        # client_credentials tokens: their `sub` is their client
        headers = {"Authorization": f"Bearer {issuer.token(scopes=['items:read'], sub=client_id)}"}
        got = [(await client.get("/items", headers=headers)).status for _ in range(4)]
        assert got == expect, client_id


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    aiohttp_client: Any, upstreams: FakeUpstreams
) -> None:
    raw = _limited()
    raw["rate_limits"]["policies"]["p"]["burst"] = 1
    client = await _client(aiohttp_client, upstreams, parse_config(raw, environ={}), Clock())
    # The test client's peer (127.0.0.1) is not trusted: all these share one bucket.
    got = [
        (await client.get("/public/x", headers={"X-Forwarded-For": f"192.0.2.{i}"})).status
        for i in range(2)
    ]
    assert got == [200, 429]

    raw["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    client = await _client(aiohttp_client, upstreams, parse_config(raw, environ={}), Clock())
    got = [
        (await client.get("/public/x", headers={"X-Forwarded-For": f"192.0.2.{i}"})).status
        for i in range(2)
    ]
    assert got == [200, 200]
    resp = await client.get("/public/x", headers={"X-Forwarded-For": "192.0.2.0"})
    assert resp.status == 429


async def test_consumer_classes_pick_their_own_quota(
    aiohttp_client: Any, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    raw = _limited(
        classes={
            "partners": {"limit": 60, "period": 60, "burst": 5},
            "anonymous": {"limit": 1, "period": 60},
        }
    )
    raw["rate_limits"]["consumer_classes"] = {
        "partners": {"client_ids": ["partner-app"], "scopes": ["rate:partner"]}
    }
    raw["routes"][0]["auth"] = {"required": False}
    client = await _client(aiohttp_client, upstreams, parse_config(raw, environ={}), Clock())

    async def statuses(path: str, n: int, **token: Any) -> tuple[list[int], str]:
        headers = {"Authorization": f"Bearer {issuer.token(**token)}"} if token else {}
        got = [await client.get(path, headers=headers) for _ in range(n)]
        return [r.status for r in got], got[0].headers["RateLimit-Policy"]

    assert await statuses("/items", 6, scopes=["items:read"], sub="partner-app") == (
        [200] * 5 + [429],
        '"p.partners";q=60;w=60',
    )
    assert await statuses("/items", 6, scopes=["items:read", "rate:partner"], sub="x") == (
        [200] * 5 + [429],
        '"p.partners";q=60;w=60',
    )
    assert await statuses("/items", 4, scopes=["items:read"], sub="plain") == (
        [200] * 3 + [429],
        '"p";q=60;w=60',
    )
    assert await statuses("/public/x", 2) == ([200, 429], '"p.anonymous";q=1;w=60')


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["routes"][0].update(rate_limit="nope"),
            "routes[0].rate_limit: unknown rate-limit policy 'nope'",
        ),
        (
            lambda r: r.update(
                aggregates=[
                    {
                        "name": "a",
                        "path": "/a",
                        "rate_limit": "nope",
                        "parts": [{"name": "x", "path": "/items"}],
                    }
                ]
            ),
            "aggregates[0].rate_limit: unknown rate-limit policy 'nope'",
        ),
        (
            lambda r: r["rate_limits"]["policies"]["p"].update(limit=0),
            "rate_limits.policies.p.limit: must be > 0",
        ),
        (
            lambda r: r["rate_limits"]["policies"]["p"].update(period=1.5),
            "rate_limits.policies.p.period: Not a valid integer",
        ),
        (
            lambda r: r["rate_limits"]["policies"]["p"].update(on_redis_error="maybe"),
            "rate_limits.policies.p.on_redis_error: must be one of fail_open, fail_closed",
        ),
        (
            lambda r: r["rate_limits"]["policies"]["p"].update(
                classes={"vip": {"limit": 1, "period": 1}}
            ),
            "rate_limits.policies.p.classes: unknown consumer class 'vip'",
        ),
        (
            lambda r: r["rate_limits"]["policies"]["p"].update(rate=5),
            "rate_limits.policies.p.rate: Unknown field",
        ),
        (
            lambda r: r["rate_limits"].update(consumer_classes={"anonymous": {"scopes": ["x"]}}),
            "is a built-in class",
        ),
        (
            lambda r: r["rate_limits"].update(consumer_classes={"vip": {}}),
            "rate_limits.consumer_classes.vip: must list client_ids or scopes",
        ),
        (
            lambda r: r["rate_limits"].update(redis_url="http://127.0.0.1:6379"),
            "rate_limits.redis_url: must be redis://",
        ),
        (
            lambda r: r["rate_limits"].update(redis_timeout=0),
            "rate_limits.redis_timeout: must be > 0",
        ),
        (
            lambda r: r["server"].update(trusted_proxies=["10.0.0.0/33"]),
            "server.trusted_proxies[0]: must be an IP address or CIDR block",
        ),
    ],
)
def test_config_errors_name_the_key(change: Callable[[dict[str, Any]], None], message: str) -> None:
    raw = _limited()
    change(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, environ={})
    assert message in str(err.value)


def test_config_defaults_and_env_override() -> None:
    raw = _limited()
    raw["rate_limits"]["policies"]["p"].pop("burst")
    config = parse_config(raw, environ={})
    rl = config.rate_limits
    assert rl.redis_url is None  # the in-process limiter
    assert rl.redis_timeout == 0.005
    assert rl.policies["p"].quota == Quota(limit=60, period=60, burst=60)  # burst = limit
    assert rl.policies["p"].on_redis_error == "fail_open"
    assert [r.rate_limit for r in config.routes][:2] == ["p", "p"]

    env = {"GATEWAY_REDIS_URL": "redis://:secret@10.1.2.3:6380/2"}
    assert parse_config(raw, environ=env).rate_limits.redis_url == env["GATEWAY_REDIS_URL"]
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_URL"):
        parse_config(raw, environ={"GATEWAY_REDIS_URL": "rediss://x"})
    assert make_config().rate_limits.policies == {}


def test_packaged_config_limits_the_demo_routes() -> None:
    from gateway.config import load_config

    config = load_config(environ={})
    assert config.rate_limits.redis_url is None
    limited = {r.name: r.rate_limit for r in config.routes}
    assert limited["products.list"] == "api" and limited["oauth"] == "oauth"


# --- Redis failures without a Redis ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_fails_open_or_closed_at_once(
    aiohttp_client: Any, upstreams: FakeUpstreams
) -> None:
    raw = _limited()
    raw["rate_limits"]["redis_url"] = f"redis://127.0.0.1:{_free_port()}"  # nobody listens
    raw["rate_limits"]["policies"]["shut"] = {
        "limit": 60,
        "period": 60,
        "burst": 3,
        "on_redis_error": "fail_closed",
    }
    raw["routes"][1]["rate_limit"] = "shut"
    raw["routes"][1]["auth"] = {"required": False}
    client = await _client(aiohttp_client, upstreams, parse_config(raw, environ={}))

    started = time.monotonic()
    open_statuses = [(await client.get("/public/x")).status for _ in range(4)]
    assert open_statuses == [200, 200, 200, 429]  # the in-process fallback still limits
    resp = await client.get("/items")
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 2.0

    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_ratelimit_redis_errors_total{error="unavailable",policy="p"} 4.0' in metrics
    assert 'outcome="allowed",policy="p"} 3.0' in metrics
    assert 'backend="fallback"' in metrics
    assert (
        'gateway_ratelimit_decisions_total{backend="redis",outcome="unavailable",policy="shut"} 1.0'
        in metrics
    )


class SilentServer:
    """A TCP server that accepts and reads but never answers: a hung Redis."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.received = 0

    async def __aenter__(self) -> SilentServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    self.received += len(data)
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


async def test_client_times_out_in_milliseconds_and_drops_a_stalled_connection(
    silent_server: SilentServer,
) -> None:
    client = RedisClient(
        f"redis://127.0.0.1:{silent_server.port}", timeout=0.005, connect_timeout=0.2
    )
    # The connection is accepted but SCRIPT LOAD / AUTH never answer: connect gives up.
    client.register_script("return 1")
    await client.start(wait=1.0)
    assert not client.connected
    with pytest.raises(RedisUnavailable):
        await client.execute("PING")
    await client.close()

    # Without set-up commands the connection is up; each call is bounded by the timeout.
    client = RedisClient(f"redis://127.0.0.1:{silent_server.port}", timeout=0.005, stale_after=0.05)
    await client.start(wait=1.0)
    assert client.connected
    started = time.monotonic()
    with pytest.raises(RedisTimeout):
        await client.execute("PING")
    assert time.monotonic() - started < 0.5
    # Still no answer after `stale_after`: the connection is dropped (calls fail fast).

    async def reconnected() -> bool:
        if client.connects >= 2:
            return True
        with pytest.raises((RedisTimeout, RedisUnavailable)):
            await client.execute("PING")
        return False

    await wait_until_async(reconnected, 5, "the stale connection replaced", interval=0.01)
    await client.close()


class HeldServer:
    """A RESP server that answers ECHO only when told (`release`), every reply in order: a
    Redis that answers late."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.pending: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.want = 1 << 30
        self.enough = asyncio.Event()  # set once `want` commands wait for their replies

    async def __aenter__(self) -> HeldServer:
        import hiredis

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            parser = hiredis.Reader()
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.pending.append((writer, command[-1]))
                    if len(self.pending) >= self.want:
                        self.enough.set()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def release(self) -> None:
        for writer, value in self.pending:
            writer.write(b"$%d\r\n%b\r\n" % (len(value), value))
        self.pending.clear()

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


async def test_late_replies_are_dropped_and_later_calls_get_their_own() -> None:
    """Calls time out by the connection's watchdog, each caller is told once, and a reply that
    comes after its call timed out never answers the next call (replies match in order)."""
    async with HeldServer() as server:
        client = RedisClient(f"redis://127.0.0.1:{server.port}", timeout=0.2, stale_after=30)
        await client.start(wait=1.0)
        assert client.connected
        told: list[tuple[str, Any, Any]] = []

        def tell(name: str, reply: Any, error: Any) -> None:
            told.append((name, reply, error))

        started = time.monotonic()
        for name in ("a1", "a2", "a3"):
            client.submit_callback(pack_command("ECHO", name), tell, name)
        with pytest.raises(RedisTimeout):
            await client.execute("ECHO", "a4")
        assert time.monotonic() - started < 2.0
        assert [(n, r) for n, r, _ in told] == [("a1", None), ("a2", None), ("a3", None)]
        assert all(isinstance(e, RedisTimeout) for _, _, e in told)

        # The late replies arrive before the answers to the next calls: each is dropped.
        server.want = 6
        client.submit_callback(pack_command("ECHO", "b"), tell, "b")
        later = client.submit(pack_command("ECHO", "c"))
        await asyncio.wait_for(server.enough.wait(), 5)
        server.release()
        assert await later == b"c"
        assert told[3:] == [("b", b"b", None)]
        assert len(told) == 4  # the timed-out calls were told once, not again
        await client.close()


def test_pack_command() -> None:
    assert pack_command("GET", "k", 12) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert pack_command(b"\x00") == b"*1\r\n$1\r\n\x00\r\n"


def test_redis_client_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        RedisClient("rediss://127.0.0.1")


async def test_quiet_only_while_redis_answers() -> None:
    """`quiet` lets the Redis reply's callback skip the correlation id: it must turn false
    as soon as a call fails (the next decisions log), and back once Redis answers."""
    raw = _limited()
    raw["rate_limits"]["redis_url"] = f"redis://127.0.0.1:{_free_port()}"  # never dialled here
    config = parse_config(raw, environ={})
    limiter = RateLimiter(config.rate_limits, config.routes)
    asked = limiter.begin("public", None, lambda: "192.0.2.1")
    assert asked is not None
    plan, key = asked
    assert limiter.quiet
    limiter.decided(plan, key, None, RedisUnavailable("down"))  # fail_open: the local limiter
    assert not limiter.quiet
    limiter._with_redis(None)  # type: ignore[arg-type]  # what `decided` does with a good reply
    assert limiter.quiet
    await limiter.close()
