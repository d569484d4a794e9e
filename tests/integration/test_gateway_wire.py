"""Issue 15's gateway items on the wire, against both servers (the front and aiohttp's alone).

Raw client connections, for what an HTTP client library never sends: pipelined requests that
get immediate answers (429, 404, 413), duplicated or missing fields, fragments, TRACE, a body
promised by `Expect: 100-continue` that never comes. And the rate limit's consumer: per user
for user tokens, per client for client_credentials tokens, per address for invalid tokens and
discovery documents.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import parse_config
from tests.support.front import DEADLINE, AiohttpTestServer, FrontTestServer, Wire
from tests.support.tokens import TestIssuer

BODY_TIMEOUT = 0.3


class Seen:
    """What the upstream received, in order."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []

    def paths(self) -> list[str]:
        return [path for _method, path, _body in self.requests]


def _upstream_app(issuer: TestIssuer, seen: Seen) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.requests.append((request.method, request.path_qs, body))
        return web.json_response({"method": request.method, "path": request.path_qs})

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def _config(url: str, issuer: TestIssuer) -> Any:
    public = {"auth": {"required": False}}
    return parse_config(
        {
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": f"{url}/jwks.json",
            },
            "upstreams": {"svc": {"instances": [url], "health": {"interval": 60}}},
            "rate_limits": {
                "policies": {
                    "tight": {"limit": 60, "period": 3600, "burst": 2},
                    "users": {"limit": 60, "period": 3600, "burst": 2},
                    "discovery": {"limit": 60, "period": 3600, "burst": 2},
                    "composite": {"limit": 60, "period": 3600, "burst": 2},
                }
            },
            "routes": [
                {
                    "name": "public",
                    "methods": ["GET", "POST"],
                    "path": "/public/*",
                    "upstream": "svc",
                    "max_body_bytes": 100,
                    "body_timeout": BODY_TIMEOUT,
                    **public,
                },
                {
                    "name": "limited",
                    "methods": ["GET", "POST"],
                    "path": "/limited/*",
                    "upstream": "svc",
                    "rate_limit": "tight",
                    **public,
                },
                {
                    "name": "private",
                    "methods": ["GET"],
                    "path": "/private",
                    "upstream": "svc",
                    "auth": {"scopes": ["things:read"]},
                    "rate_limit": "users",
                },
                {
                    "name": "well-known",
                    "methods": ["GET"],
                    "path": "/.well-known/*",
                    "upstream": "svc",
                    "rate_limit": "discovery",
                    **public,
                },
            ],
            "aggregates": [
                {
                    "name": "composite",
                    "path": "/composite/{id}",
                    "rate_limit": "composite",
                    "parts": [{"name": "thing", "path": "/public/{id}"}],
                }
            ],
        },
        environ={},
    )


Connect = Callable[[], Awaitable[Wire]]


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(params=["front", "aiohttp"])
async def connect(
    request: pytest.FixtureRequest, aiohttp_server: Any, seen: Seen, issuer: TestIssuer
) -> AsyncIterator[Connect]:
    """New raw connections to the gateway behind each of its servers."""
    upstream: TestServer = await aiohttp_server(_upstream_app(issuer, seen), host="127.0.0.1")
    app = create_app(_config(str(upstream.make_url("")).rstrip("/"), issuer))
    server = FrontTestServer(app) if request.param == "front" else AiohttpTestServer(app)
    await server.start_server()
    assert server.port is not None
    port = server.port
    wires: list[Wire] = []

    async def open_wire() -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        wires.append(Wire(reader, writer))
        return wires[-1]

    yield open_wire
    for wire in wires:
        wire.close()
    await server.close()


def _get(path: str, *extra: str, host: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", *(["Host: gw.test"] if host else []), *extra, "", ""]
    return "\r\n".join(lines).encode()


def _post(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {len(body)}", *extra]
    return "\r\n".join([*lines, "", ""]).encode() + body


async def _answers(wire: Wire, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    return [await wire.answer() for _ in range(n)]


def _problem(answer: tuple[int, dict[str, str], bytes], status: int) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = orjson.loads(body)
    assert doc["status"] == status
    return doc


# --- item 9: answers given at once never re-enter the parser ---------------------------------


async def test_pipelined_429s_each_get_their_own_answer_and_nothing_more_goes_up(
    connect: Connect, seen: Seen
) -> None:
    """Two admitted, two refused at once, then a POST: the POST is answered as itself (it
    was sent upstream while its client saw 400 before the fix), each request exactly once."""
    wire = await connect()
    requests = [_get(f"/limited/{i}", f"X-Request-ID: p-{i}") for i in range(4)]
    await wire.send(b"".join(requests) + _post("/public/create", b'{"n":1}', "X-Request-ID: p-4"))
    answers = await _answers(wire, 5)
    assert [a[0] for a in answers] == [200, 200, 429, 429, 200]
    assert [a[1]["x-request-id"] for a in answers] == [f"p-{i}" for i in range(5)]
    assert _problem(answers[2], 429)["instance"] == "/limited/2"
    assert orjson.loads(answers[4][2]) == {"method": "POST", "path": "/public/create"}
    assert seen.paths() == ["/limited/0", "/limited/1", "/public/create"]
    await wire.send(_get("/public/still-open"))  # the connection is kept alive throughout
    assert (await wire.answer())[0] == 200
    assert seen.paths()[-1] == "/public/still-open"


async def test_pipelined_404s_and_413s_in_order(connect: Connect, seen: Seen) -> None:
    wire = await connect()
    big = b"x" * 150  # the route allows 100
    await wire.send(
        _get("/nowhere/1")
        + _get("/nowhere/2")
        + _post("/public/big", big)
        + _post("/public/big", big)
        + _get("/public/between")
        + _get("/nowhere/3")
        + _post("/public/small", b"ok")
    )
    answers = await _answers(wire, 7)
    assert [a[0] for a in answers] == [404, 404, 413, 413, 200, 404, 200]
    for answer in answers:
        if answer[0] != 200:
            _problem(answer, answer[0])
    assert seen.paths() == ["/public/between", "/public/small"]
    assert seen.requests[-1][2] == b"ok"


async def test_a_long_pipeline_of_immediate_answers(connect: Connect, seen: Seen) -> None:
    """Many requests answered at once in one read: in order, and no recursion per request."""
    wire = await connect()
    await wire.send(_get("/limited/a") + _get("/limited/b") + _get("/limited/x") * 300)
    answers = await _answers(wire, 302)
    assert [a[0] for a in answers] == [200, 200] + [429] * 300
    await wire.send(_get("/public/end"))
    assert (await wire.answer())[0] == 200
    assert seen.paths() == ["/limited/a", "/limited/b", "/public/end"]


# --- item 10: fields given twice, Host, fragments, TRACE -------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "detail"),
    [
        (
            _get("/public/x", "Authorization: Bearer a", "Authorization: Bearer b"),
            "the request has more than one Authorization field",
        ),
        (_get("/public/x", "Host: other.test"), "the request has more than one Host field"),
        (_get("/public/x", host=False), "an HTTP/1.1 request must have a Host field"),
        (_get("/public/x?q=1#frag"), "the request target must not contain a fragment ('#')"),
        (_get("/public/x#"), "the request target must not contain a fragment ('#')"),
    ],
    ids=["two-authorization", "two-host", "no-host", "fragment", "empty-fragment"],
)
async def test_ambiguous_heads_are_400_and_close(
    connect: Connect, seen: Seen, request_bytes: bytes, detail: str, request: Any
) -> None:
    wire = await connect()
    await wire.send(_get("/public/before"))
    assert (await wire.answer())[0] == 200
    await wire.send(request_bytes + _get("/public/after"))
    answer = await wire.answer()
    doc = _problem(answer, 400)
    if "Host" in detail and "aiohttp" in request.node.callspec.id:
        assert "Host" in doc["detail"]  # aiohttp's parser refuses it first, in its words
    else:
        assert doc["detail"] == detail
        assert answer[1]["x-request-id"]
    assert answer[1]["connection"] == "close"
    assert await wire.closed()
    assert seen.paths() == ["/public/before"]  # neither the refused nor what followed it


async def test_two_authorization_fields_never_reach_a_private_route(
    connect: Connect, seen: Seen, issuer: TestIssuer
) -> None:
    good = issuer.auth(["things:read"], sub="user-a", client_id="app")["Authorization"]
    wire = await connect()
    await wire.send(_get("/private", f"Authorization: {good}", "Authorization: Bearer forged"))
    _problem(await wire.answer(), 400)
    assert seen.paths() == []


async def test_an_encoded_hash_is_an_ordinary_byte(connect: Connect, seen: Seen) -> None:
    wire = await connect()
    await wire.send(_get("/public/a%23b?q=%23"))
    assert (await wire.answer())[0] == 200
    assert seen.paths() == ["/public/a%23b?q=%23"]


@pytest.mark.parametrize("path", ["/public/x", "/private", "/nowhere", "/healthz"])
async def test_trace_is_405(connect: Connect, seen: Seen, path: str) -> None:
    wire = await connect()
    await wire.send(f"TRACE {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n".encode())
    answer = await wire.answer()
    assert _problem(answer, 405)["detail"] == "TRACE is not allowed"
    assert "TRACE" not in answer[1]["allow"]
    if path == "/public/x":
        assert answer[1]["allow"] == "GET, HEAD, POST"
    assert seen.paths() == []


# --- item 11: a body that never comes ---------------------------------------------------------


@pytest.mark.parametrize("length", [10, 100])
async def test_expect_100_continue_without_a_body_is_408_within_the_body_timeout(
    connect: Connect, seen: Seen, length: int
) -> None:
    wire = await connect()
    head = (
        "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\n"
        f"Content-Length: {length}\r\nX-Request-ID: e-1\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await wire.send(head.encode())
    async with asyncio.timeout(DEADLINE):
        interim = await wire.reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    await wire.send(b"part")  # some of it, never all
    answer = await wire.answer()
    assert loop.time() - begun < DEADLINE
    doc = _problem(answer, 408)
    assert doc["instance"] == "/public/upload"
    assert answer[1]["x-request-id"] == "e-1"
    assert answer[1]["connection"] == "close"
    assert await wire.closed()
    assert seen.paths() == []


async def test_a_body_promised_by_its_length_that_stalls_is_408(
    connect: Connect, seen: Seen
) -> None:
    wire = await connect()
    head = "POST /public/stall HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 20\r\n\r\n"
    await wire.send(head.encode() + b"12345")
    answer = await wire.answer()
    _problem(answer, 408)
    assert answer[1]["connection"] == "close"
    assert await wire.closed()
    assert seen.paths() == []


async def test_expect_100_continue_with_its_body_is_proxied(connect: Connect, seen: Seen) -> None:
    wire = await connect()
    head = (
        "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\n"
        "Content-Length: 5\r\n\r\n"
    )
    await wire.send(head.encode())
    async with asyncio.timeout(DEADLINE):
        interim = await wire.reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    await wire.send(b"hello")
    assert (await wire.answer())[0] == 200
    assert seen.requests == [("POST", "/public/upload", b"hello")]


# --- item 12: who a rate limit counts ----------------------------------------------------------


async def _statuses(wire: Wire, requests: list[bytes]) -> list[int]:
    statuses = []
    for data in requests:  # one at a time: each answer is decided before the next is sent
        await wire.send(data)
        statuses.append((await wire.answer())[0])
    return statuses


async def test_two_users_of_one_client_have_separate_budgets(
    connect: Connect, issuer: TestIssuer
) -> None:
    """A user token counts against its user (`sub`), not its (public) client: user A
    spending their budget leaves user B's whole."""
    a = issuer.auth(["things:read"], sub="user-a", client_id="portico-public")["Authorization"]
    b = issuer.auth(["things:read"], sub="user-b", client_id="portico-public")["Authorization"]
    a_again = issuer.auth(["things:read"], sub="user-a", client_id="portico-dev")["Authorization"]
    wire = await connect()
    as_a = _get("/private", f"Authorization: {a}")
    assert await _statuses(wire, [as_a, as_a, as_a]) == [200, 200, 429]
    as_b = _get("/private", f"Authorization: {b}")
    assert await _statuses(wire, [as_b, as_b, as_b]) == [200, 200, 429]
    # the same user through another client: still that user's (spent) budget
    assert await _statuses(wire, [_get("/private", f"Authorization: {a_again}")]) == [429]


async def test_client_credentials_tokens_are_limited_per_client(
    connect: Connect, issuer: TestIssuer
) -> None:
    """A client_credentials token's `sub` is its client: two tokens of one client share."""
    first = issuer.auth(["things:read"], sub="orders-service")["Authorization"]
    second = issuer.auth(["things:read"], sub="orders-service")["Authorization"]
    other = issuer.auth(["things:read"], sub="other-service")["Authorization"]
    wire = await connect()
    sent = [_get("/private", f"Authorization: {t}") for t in (first, second, first, other)]
    assert await _statuses(wire, sent) == [200, 200, 429, 200]


async def test_invalid_tokens_are_limited_per_address(
    connect: Connect, issuer: TestIssuer, seen: Seen
) -> None:
    """Requests whose token is refused still count, against the caller's address: a flood
    of forged tokens is throttled, and a valid user's budget is untouched by it."""
    wire = await connect()
    forged = _get("/private", "Authorization: Bearer not.a.token")
    missing = _get("/private")
    statuses = await _statuses(wire, [forged, missing, forged])
    assert statuses == [401, 401, 429]
    await wire.send(forged)
    answer = await wire.answer()
    assert _problem(answer, 429) and int(answer[1]["retry-after"]) >= 1
    good = issuer.auth(["things:read"], sub="user-c", client_id="portico-public")["Authorization"]
    assert await _statuses(wire, [_get("/private", f"Authorization: {good}")]) == [200]
    assert seen.paths() == ["/private"]


async def test_invalid_tokens_at_an_aggregate_are_limited_per_address(
    connect: Connect, issuer: TestIssuer, seen: Seen
) -> None:
    """An aggregate counts refused tokens like a route: a forged-token flood at a composite
    endpoint meets 429, no part is called, and a valid user still gets the composite."""
    wire = await connect()
    forged = _get("/composite/1", "Authorization: Bearer not.a.token")
    assert await _statuses(wire, [forged, _get("/composite/1"), forged, forged]) == [
        401,
        401,
        429,
        429,
    ]
    assert seen.paths() == []
    good = issuer.auth(sub="user-d", client_id="portico-public")["Authorization"]
    assert await _statuses(wire, [_get("/composite/1", f"Authorization: {good}")]) == [200]
    assert seen.paths() == ["/public/1"]


async def test_an_aggregate_counts_against_its_own_policy(
    connect: Connect, issuer: TestIssuer
) -> None:
    wire = await connect()
    good = issuer.auth(sub="user-e", client_id="portico-public")["Authorization"]
    sent = [_get(f"/composite/{i}", f"Authorization: {good}") for i in range(3)]
    assert await _statuses(wire, sent) == [200, 200, 429]


async def test_well_known_is_limited_per_address_whatever_the_token(
    connect: Connect, issuer: TestIssuer
) -> None:
    wire = await connect()
    tokens = [issuer.auth(sub=f"user-{i}", client_id="app")["Authorization"] for i in range(3)]
    sent = [_get("/.well-known/openid", f"Authorization: {t}") for t in tokens]
    assert await _statuses(wire, sent) == [200, 200, 429]
