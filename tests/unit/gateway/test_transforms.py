"""Header transforms (gateway.pipeline.transforms): settings checked at load by key path, the
operations through the chain, on the front server's fast path (test transports) and on the
aiohttp server, on aggregates and their parts."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import pytest

from chassis import ConfigError
from chassis.tokens import Claims
from gateway.app import create_app
from gateway.config import parse_config
from gateway.pipeline import RELAY, Answer, Chain, Exchange, Policy, Verdict, run_to_end
from gateway.pipeline.transforms import Transforms, parse_template
from gateway.routing import Route
from gateway.transport import MockResponse
from tests.support.fastpath import FastPath
from tests.support.tokens import TestIssuer

from .conftest import BASE, SVC, FakeUpstreams, GatewayClient

# --- settings, checked when the config loads ---------------------------------------------------


def _config(route_settings: Any = None, top_settings: Any = None, route: int = 0) -> Any:
    raw = copy.deepcopy(BASE)
    if route_settings is not None:
        raw["routes"][route]["policies"] = [{"use": "transforms", "settings": route_settings}]
    if top_settings is not None:
        raw["policies"] = [{"use": "transforms", "settings": top_settings}]
    return parse_config(raw, environ={})


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"bogus": {}}, "settings.bogus: Unknown field"),
        ({"request": {"append": {}}}, "settings.request.append: Unknown field"),
        (
            {"request": {"set": {"X-U": "{claims.nope}"}}},
            "settings.request.set.X-U: unknown placeholder {claims.nope}",
        ),
        ({"request": {"add": {"X-U": "{sub"}}}, "settings.request.add.X-U: a lone '{'"),
        (
            {"request": {"add": {"Bad Name": "x"}}},
            "settings.request.add.Bad Name: not a valid field name",
        ),
        (
            {"request": {"remove": ["ok", "x:y"]}},
            "settings.request.remove[1]: not a valid field name",
        ),
        (
            {"request": {"set": {"Host": "x"}}},
            "settings.request.set.Host: Host is managed by the gateway",
        ),
        ({"request": {"set": {"X-Forwarded-For": "x"}}}, "settings.request.set.X-Forwarded-For: "),
        ({"request": {"remove": ["Transfer-Encoding"]}}, "settings.request.remove[0]: "),
        (
            {"request": {"rename": {"X-A": "Content-Length"}}},
            "settings.request.rename.X-A: Content-Length is managed",
        ),
        (
            {"request": {"add": {"Proxy-Authorization": "x"}}},
            "settings.request.add.Proxy-Authorization: ",
        ),
        (
            {"request": {"set": {"Authorization": "Bearer x"}}},
            "settings.request.set.Authorization: Authorization may only be removed",
        ),
        (
            {"request": {"rename": {"Authorization": "X-Token"}}},
            "settings.request.rename.Authorization: ",
        ),
        ({"response": {"set": {"X-Request-Id": "x"}}}, "settings.response.set.X-Request-Id: "),
        ({"response": {"remove": ["RateLimit"]}}, "settings.response.remove[0]: "),
        (
            {"response": {"add": {"Access-Control-Allow-Origin": "*"}}},
            "settings.response.add.Access-Control-Allow-Origin: ",
        ),
        (
            {"response": {"set": {"X-A": "a\r\nX-B: b"}}},
            "settings.response.set.X-A: a field value must not contain control characters",
        ),
        (
            {"response": {"set": {"X-A": "1", "x-a": "2"}}},
            "settings.response.set.x-a: x-a is named twice",
        ),
        ({"response": {"set": {"X-A": ["1"]}}}, "settings.response.set.X-A: must be a string"),
        ({"response": {"remove": "Server"}}, "settings.response.remove: must be a list"),
    ],
)
def test_bad_settings_are_refused_with_their_key_path(settings: Any, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(settings)
    assert f"routes[0].policies[0].{where}" in str(err.value)


def test_templates_are_parsed_once() -> None:
    template = parse_template("id={request_id} {{literal}} by {claims.sub}")
    assert template.pieces == (
        ("id=", ""),
        ("", "request_id"),
        (" {literal} by ", ""),
        ("", "claims.sub"),
    )
    assert parse_template("plain").static and not template.static
    # an authorization header may be removed; the top level takes the same settings
    config = _config({"request": {"remove": ["Authorization"]}}, top_settings={})
    assert config.routes[0].policies[0].settings.request.remove == ("authorization",)


# --- the operations, through the chain -----------------------------------------------------------


class Capture(Policy):
    """The last step: answers 200 with the request fields it was given."""

    order = 1000
    seen: list[tuple[str, str]] = []

    def on_request(self, ex: Exchange) -> Verdict:
        Capture.seen = list(ex.headers)
        return Answer(200, [("Content-Type", "text/plain"), ("Server", "x")], b"ok")


def _transforms(settings: dict[str, Any]) -> Transforms:
    assert Transforms.Settings is not None
    return Transforms(Transforms.Settings().load(settings))


def _claims(sub: str = "user-1", client_id: str | None = "web") -> Claims:
    raw = {"sub": sub, "client_id": client_id, "iss": "https://issuer.test"}
    return Claims(raw, sub, client_id, frozenset({"b", "a"}), 0.0)


async def _run(
    settings: dict[str, Any], headers: list[tuple[str, str]], claims: Claims | None = None
) -> Exchange:
    ex = Exchange("GET", "/x", "/x", headers)
    ex.rid = "rid-9"
    ex.claims = claims
    ex.done = lambda _ex: None
    return await run_to_end(Chain([_transforms(settings), Capture()]), ex)


async def test_request_operations_in_kongs_order() -> None:
    settings = {
        "request": {
            "remove": ["x-debug"],
            "rename": {"X-Old": "X-New", "X-Missing": "X-Never"},
            "set": {"X-User-Id": "{claims.sub}", "X-Rid": "r={request_id}"},
            "add": {"X-Kept": "added", "X-Added": "{claims.client_id}/{claims.scope}"},
        }
    }
    headers = [
        ("X-Debug", "1"),
        ("X-DEBUG", "2"),
        ("x-old", "a"),
        ("X-Old", "b"),
        ("X-New", "replaced"),
        ("X-User-Id", "spoofed"),
        ("X-Kept", "client's"),
        ("Accept", "*/*"),
    ]
    await _run(settings, headers, _claims())
    assert Capture.seen == [
        ("X-Kept", "client's"),
        ("Accept", "*/*"),
        ("X-New", "a"),
        ("X-New", "b"),
        ("X-User-Id", "user-1"),
        ("X-Rid", "r=rid-9"),
        ("X-Added", "web/a b"),
    ]


async def test_a_value_that_cannot_be_made_is_left_out_and_set_still_removes() -> None:
    settings = {
        "request": {
            "set": {"X-User-Id": "{claims.sub}", "X-Client": "{claims.client_id}"},
            "add": {"X-Iss": "{claims.iss}"},
        }
    }
    spoofed = [("X-User-Id", "admin"), ("X-Client", "evil")]
    await _run(settings, list(spoofed))  # no token on this route
    assert Capture.seen == []
    await _run(settings, list(spoofed), _claims(client_id=None))  # no client_id claim
    assert Capture.seen == [("X-User-Id", "user-1"), ("X-Iss", "https://issuer.test")]


async def test_a_claim_with_a_line_break_never_injects_a_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "portico.gateway.transforms")
    settings = {"request": {"set": {"X-User-Id": "{claims.sub}"}}}
    await _run(settings, [("X-User-Id", "admin")], _claims(sub="u\r\nX-Admin: yes"))
    assert Capture.seen == []
    assert any("control character" in r.getMessage() for r in caplog.records)


async def test_response_operations_on_an_answer() -> None:
    settings = {
        "response": {
            "remove": ["server"],
            "rename": {"Content-Type": "X-Original-Type"},
            "set": {"X-Served-For": "{claims.sub}"},
            "add": {"Content-Type": "application/octet-stream", "X-Rid": "{request_id}"},
        }
    }
    ex = await _run(settings, [], _claims())
    assert ex.response_drop == {"server", "content-type", "x-original-type", "x-served-for"}
    assert ex.response_extra == [
        ("X-Original-Type", "text/plain"),
        ("X-Served-For", "user-1"),
        ("Content-Type", "application/octet-stream"),
        ("X-Rid", "rid-9"),
    ]


async def test_response_operations_on_a_relayed_answer() -> None:
    class Relay(Policy):
        order = 1000

        def on_request(self, ex: Exchange) -> Verdict:
            fields = [("Server", "up"), ("ETag", '"1"'), ("ETag", '"2"')]
            ex.response = MockResponse(headers=fields)
            return RELAY

    settings = {"response": {"rename": {"ETag": "X-Tag"}, "add": {"Server": "portico", "X-A": "a"}}}
    ex = Exchange("GET", "/x", "/x", [])
    ex.rid = "r"
    await run_to_end(Chain([_transforms(settings), Relay()]), ex)
    assert ex.status == 200
    assert ex.response_drop == {"etag", "x-tag"}
    assert ex.response_extra == [("X-Tag", '"1"'), ("X-Tag", '"2"'), ("X-A", "a")]


def test_bind_keeps_only_the_phases_a_route_needs() -> None:
    both = _transforms({"request": {"remove": ["a"]}, "response": {"remove": ["b"]}})
    config = _config()
    proxied = Route.from_config(config.routes[0])
    aggregate = Route.from_config(dataclasses.replace(config.routes[0], upstream=""))
    assert both.bind(proxied) is both
    only_response = both.bind(aggregate)  # an aggregate has no upstream request of its own
    assert only_response is not None
    assert len(Chain([only_response]).requests) == 0 and len(Chain([only_response]).heads) == 1
    assert _transforms({"request": {"remove": ["a"]}}).bind(aggregate) is None
    request_only = _transforms({"request": {"remove": ["a"]}}).bind(proxied)
    assert request_only is not None and not Chain([request_only]).heads


# --- on the front server's fast path -------------------------------------------------------------


class TokenFastPath(FastPath):
    """`FastPath` whose gateway verifies tokens of `issuer` (its JWKS needs no upstream)."""

    def __init__(self, config: Any, issuer: TestIssuer) -> None:
        super().__init__(config, "svc", SVC)
        self.app = create_app(config, verifier=issuer.async_verifier())


UPSTREAM_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: upstream/1.0\r\n"
    b"X-Internal: secret\r\nContent-Length: 2\r\n\r\n{}"
)


async def test_transforms_on_the_fast_path_stay_inline() -> None:
    config = _config(
        {
            "request": {"remove": ["X-Debug"], "set": {"X-Via-Rid": "{request_id}"}},
            "response": {"remove": ["Server", "X-Internal"], "set": {"X-Served": "portico"}},
        }
    )
    raw = b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: rid-1\r\nX-Debug: on\r\n\r\n"
    async with FastPath(config, "svc", SVC) as fast:
        status, headers, body = await fast.request(raw, UPSTREAM_ANSWER)
        assert fast.inline
    assert (status, body) == (200, b"{}")
    sent = fast.upstream_requests[0]
    assert b"X-Via-Rid: rid-1\r\n" in sent and b"X-Debug" not in sent
    assert "server" not in headers and "x-internal" not in headers
    assert headers["x-served"] == "portico" and headers["x-request-id"] == "rid-1"


async def test_claims_on_the_fast_path_replace_a_spoofed_field(issuer: TestIssuer) -> None:
    settings = {
        "request": {"set": {"X-User-Id": "{claims.sub}"}},
        "response": {"add": {"X-Consumer": "{claims.client_id}"}},
    }
    config = _config(top_settings=settings)  # global: on every route
    token = issuer.token(["items:read"], sub="alice")
    get = (
        b"GET /items/7 HTTP/1.1\r\nHost: gw\r\nX-User-Id: admin\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    async with TokenFastPath(config, issuer) as fast:
        for _ in range(2):  # verified in a task, then from the verifier's cache, inline
            status, headers, _ = await fast.request(get)
            assert status == 200 and headers["x-consumer"] == "alice"
        assert fast.inline
        evil = issuer.token(["items:read"], sub="bob\r\nX-Admin: yes")
        status, headers, _ = await fast.request(
            get.replace(token.encode(), evil.encode()), UPSTREAM_ANSWER
        )
        assert status == 200 and "x-admin" not in headers
    first, second, third = fast.upstream_requests
    for sent in (first, second):
        assert b"X-User-Id: alice\r\n" in sent and b"admin" not in sent
    assert b"X-User-Id" not in third and b"X-Admin" not in third


# --- on the aiohttp server, and on aggregates ----------------------------------------------------


async def test_transforms_on_the_aiohttp_server(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    upstreams.on(SVC, "/items/7", lambda _r: MockResponse(json={}, headers={"X-Powered-By": "up"}))
    routes = copy.deepcopy(BASE["routes"])
    routes[3]["policies"] = [
        {
            "use": "transforms",
            "settings": {
                "request": {
                    "rename": {"X-Trace": "X-Upstream-Trace"},
                    "set": {"X-User-Id": "{claims.sub}"},
                },
                "response": {"rename": {"X-Powered-By": "X-Upstream"}},
            },
        }
    ]
    client = await gateway(routes=routes)
    headers = {**issuer.auth(["items:read"], sub="alice"), "X-Trace": "t1", "X-User-Id": "x"}
    resp = await client.get("/items/7", headers=headers)
    assert resp.status == 200
    assert resp.headers["X-Upstream"] == "up" and "X-Powered-By" not in resp.headers
    sent = upstreams.seen()[-1].headers
    assert sent["X-Upstream-Trace"] == "t1" and "X-Trace" not in sent
    assert sent.getall("X-User-Id") == ["alice"]


async def test_aggregates_answer_with_their_transforms_and_parts_meet_their_routes(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    routes = copy.deepcopy(BASE["routes"])
    routes.append(
        {
            "name": "a",
            "methods": ["GET"],
            "path": "/a",
            "upstream": "svc",
            "auth": {"required": False},
            "policies": [
                {"use": "transforms", "settings": {"request": {"set": {"X-Part": "{request_id}"}}}}
            ],
        }
    )
    aggregate = {
        "name": "composite",
        "path": "/composite",
        "auth": {"required": False},
        "parts": [{"name": "a", "path": "/a"}],
        "policies": [
            {
                "use": "transforms",
                "settings": {
                    "request": {"set": {"X-Never": "x"}},  # no request of its own: not applied
                    "response": {"set": {"X-Composite": "{request_id}"}},
                },
            }
        ],
    }
    client = await gateway(routes=routes, aggregates=[aggregate])
    resp = await client.get("/composite", headers={"X-Request-Id": "agg-1"})
    assert resp.status == 200 and resp.headers["X-Composite"] == "agg-1"
    body = await resp.json()
    part_headers = body["a"]["headers"]  # the fake upstream echoes what it was sent
    assert part_headers["X-Part"] == "agg-1" and "X-Never" not in part_headers


async def test_the_gateways_own_answers_of_a_route_are_transformed_too() -> None:
    config = _config(top_settings={"response": {"add": {"X-Gateway": "portico"}}})
    async with FastPath(config, "svc", SVC) as fast:
        status, headers, _ = await fast.request(b"GET /items HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 401 and headers["x-gateway"] == "portico"
        assert headers["content-type"] == "application/problem+json"
        status, headers, _ = await fast.request(b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 404 and "x-gateway" not in headers  # no route: no route's chain
    assert fast.upstream_requests == []
