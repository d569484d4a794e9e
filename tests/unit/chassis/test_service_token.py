"""The chassis' service token clients (orders' async one, views' blocking one) against a fake
token endpoint on a real socket: the request, the cache, the credentials, the answer's bounds."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from chassis import service_token
from chassis.service_token import (
    MAX_ANSWER_BYTES,
    MAX_TOKEN_CHARS,
    BlockingServiceToken,
    ServiceToken,
    TokenUnavailable,
)

CLOSED = "http://127.0.0.1:9"  # discard: nothing listens
SCOPE = "orders:events"


class Endpoint:
    """A token endpoint answering `answer` (default: a fresh token `t<n>` for 300 s)."""

    def __init__(self) -> None:
        self.url = ""
        self.answer: tuple[int, bytes] | None = None
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.seen.append((request.headers.get("Authorization", ""), {**form}))  # type: ignore[dict-item]
        status, body = self.answer or (
            200,
            json.dumps({"access_token": f"t{len(self.seen)}", "expires_in": 300}).encode(),
        )
        return web.Response(status=status, body=body, content_type="application/json")


class Client:
    """One interface over both clients: the blocking one runs on a worker thread, as in views."""

    def __init__(self, token: ServiceToken | BlockingServiceToken) -> None:
        self.token = token

    async def get(self) -> str:
        if isinstance(self.token, ServiceToken):
            return await self.token.get()
        return await asyncio.to_thread(self.token.get)


Make = Callable[..., Client]


@pytest.fixture
async def endpoint(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Endpoint:
    ep = Endpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", ep.handle)
    server = await aiohttp_server(app)
    ep.url = str(server.make_url("/oauth/token"))
    return ep


@pytest.fixture(params=["async", "blocking"])
async def make(request: pytest.FixtureRequest, endpoint: Endpoint) -> AsyncIterator[Make]:
    """Builds the client under test (async or blocking) for the fake endpoint."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(60):
        with requests.Session() as blocking:

            def build(url: str | None = None, **kw: Any) -> Client:
                kw.setdefault("timeout", 5.0)
                if "client_file" not in kw:
                    kw.setdefault("client_id", "views-service")
                    kw.setdefault("client_secret", "s3cret")
                if request.param == "async":
                    return Client(ServiceToken(session, url or endpoint.url, SCOPE, **kw))
                return Client(BlockingServiceToken(blocking, url or endpoint.url, SCOPE, **kw))

            yield build


async def test_the_request_is_client_credentials_with_basic_auth(
    make: Make, endpoint: Endpoint
) -> None:
    assert await make().get() == "t1"
    auth, form = endpoint.seen[0]
    assert auth == "Basic " + base64.b64encode(b"views-service:s3cret").decode()
    assert form == {"grant_type": "client_credentials", "scope": SCOPE}


async def test_the_token_is_cached_until_the_margin_before_expiry(
    make: Make, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(service_token, "time", SimpleNamespace(monotonic=lambda: clock.now))
    client = make(margin=30.0)
    assert await client.get() == "t1"
    clock.now += 269.0  # 300 s token, 30 s margin: still fresh
    assert await client.get() == "t1"
    clock.now += 1.0
    assert await client.get() == "t2"
    assert len(endpoint.seen) == 2


async def test_invalidate_drops_only_the_refused_token(make: Make, endpoint: Endpoint) -> None:
    client = make()
    first = await client.get()
    client.token.invalidate("an older token")  # a late refusal of a token already replaced
    assert await client.get() == first
    client.token.invalidate(first)
    assert await client.get() == "t2"


async def test_concurrent_callers_share_one_request(make: Make, endpoint: Endpoint) -> None:
    client = make()
    assert set(await asyncio.gather(*(client.get() for _ in range(5)))) == {"t1"}
    assert len(endpoint.seen) == 1


async def test_credentials_from_the_client_file_read_when_first_needed(
    make: Make, endpoint: Endpoint, tmp_path: Path
) -> None:
    creds = tmp_path / "client.json"
    client = make(client_file=creds)  # identity has not seeded it yet
    creds.write_text(json.dumps({"client_id": "orders-service", "client_secret": "x"}))
    assert await client.get() == "t1"
    assert endpoint.seen[0][0] == "Basic " + base64.b64encode(b"orders-service:x").decode()


@pytest.mark.parametrize(
    "content",
    [None, "not json", '["a"]', '{"client_id": "a"}', '{"client_id": 1, "client_secret": "b"}'],
)
async def test_missing_or_bad_credentials_are_unavailable(
    make: Make, endpoint: Endpoint, tmp_path: Path, content: str | None
) -> None:
    creds = tmp_path / "client.json"
    if content is not None:
        creds.write_text(content)
    with pytest.raises(TokenUnavailable, match="client credentials"):
        await make(client_file=creds).get()
    assert endpoint.seen == []


async def test_no_credentials_is_unavailable(make: Make, endpoint: Endpoint) -> None:
    with pytest.raises(TokenUnavailable, match="no client credentials"):
        await make(client_id="", client_secret="").get()
    assert endpoint.seen == []


async def test_an_oversized_client_file_is_unavailable(make: Make, tmp_path: Path) -> None:
    creds = tmp_path / "client.json"
    pad = "x" * service_token.MAX_CLIENT_FILE_BYTES
    creds.write_text(json.dumps({"client_id": "a", "client_secret": "b", "pad": pad}))
    with pytest.raises(TokenUnavailable, match="client credentials"):
        await make(client_file=creds).get()


def _json(**body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, _json(error="invalid_client"), "answered 401"),
        (503, b"", "answered 503"),
        (200, b"<html>", "JSON object"),
        (200, b'["t"]', "JSON object"),
        (200, _json(expires_in=300), "without an access_token"),
        (200, _json(access_token=123), "without an access_token"),
        (200, _json(access_token=""), "without an access_token"),
        (200, _json(access_token="t" * (MAX_TOKEN_CHARS + 1)), "oversized access_token"),
        (200, _json(access_token="t", expires_in="300"), "bad expires_in"),
        (200, _json(access_token="t", expires_in=True), "bad expires_in"),
        (200, _json(access_token="t", expires_in=0), "bad expires_in"),
        (200, _json(access_token="t", expires_in=-5), "bad expires_in"),
        (200, _json(access_token="t", expires_in=1e308), "bad expires_in"),
        (200, b'{"access_token": "t", "expires_in": NaN}', "bad expires_in"),
        (200, _json(access_token="t", pad="x" * MAX_ANSWER_BYTES), "more than"),
    ],
)
async def test_a_bad_answer_is_unavailable(
    make: Make, endpoint: Endpoint, status: int, body: bytes, error: str
) -> None:
    endpoint.answer = (status, body)
    with pytest.raises(TokenUnavailable, match=error):
        await make().get()


async def test_an_answer_without_expires_in_is_cached_for_the_default(
    make: Make, endpoint: Endpoint
) -> None:
    endpoint.answer = (200, _json(access_token="t"))
    client = make()
    assert await client.get() == "t"
    assert await client.get() == "t"
    assert len(endpoint.seen) == 1


async def test_an_unreachable_endpoint_is_unavailable(make: Make) -> None:
    with pytest.raises(TokenUnavailable, match="unreachable"):
        await make(f"{CLOSED}/oauth/token", timeout=1.0).get()
