"""Bad input at the edge: path tricks never reach a route they should not, oversized headers
are a 431 problem, oversized bodies a 413 problem, unknown routes 404, wrong methods 405."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import SVC, FakeUpstreams, GatewayClient


async def _raw(host: str, port: int, head: str, body: bytes = b"") -> bytes:
    """A request exactly as written (client libraries normalise paths)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head.encode() + b"\r\n" + body)
    try:
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "target",
    [
        "/items/../../admin",
        "/items/..%2F..%2Fadmin",
        "/items%2F..%2F..%2Fadmin",
        "/items/%2e%2e/%2e%2e/admin",
        "/public/..%5C..%5Citems",
        "//items",
        "/public//../items",
        "/items%2F1",
        "/items/1%2F2",
    ],
)
async def test_path_tricks_never_reach_another_route(
    gateway: GatewayClient, upstreams: FakeUpstreams, target: str
) -> None:
    client = await gateway()
    head = f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
    answer = await _raw(str(client.host), int(client.port or 0), head)
    assert _status(answer) in (400, 401, 404), answer
    assert b"application/problem+json" in answer
    # only a public '/public/*' request may go upstream, and then only under /public/
    for seen in upstreams.seen(SVC):
        assert seen.target.startswith("/public/"), seen.target


async def test_an_encoded_slash_stays_one_segment(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    """'/public/a%2Fb' is forwarded as is: the upstream sees one encoded segment, not a/b."""
    client = await gateway()
    head = "GET /public/a%2Fb HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
    answer = await _raw(str(client.host), int(client.port or 0), head)
    assert _status(answer) == 200
    (seen,) = upstreams.seen(SVC)
    assert seen.target == "/public/a%2Fb"


async def test_an_oversized_header_is_a_431_problem(gateway: GatewayClient) -> None:
    client = await gateway()
    resp = await client.get("/public/x", headers={"X-Big": "a" * 9000})
    assert resp.status == 431
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json()
    assert doc["status"] == 431


async def test_too_many_header_bytes_in_all_is_a_431(gateway: GatewayClient) -> None:
    client = await gateway()
    headers = {f"X-H{i}": "b" * 4000 for i in range(10)}
    resp = await client.get("/public/x", headers=headers)
    assert resp.status == 431
    assert resp.content_type == "application/problem+json"


async def test_an_oversized_request_target_is_a_414(gateway: GatewayClient) -> None:
    client = await gateway()
    resp = await client.get("/public/" + "x" * 9000)
    assert resp.status == 414
    assert resp.content_type == "application/problem+json"


async def test_an_oversized_body_is_a_413_problem(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    client = await gateway()
    resp = await client.post("/upload", data=b"x" * 101)
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    assert upstreams.seen(SVC) == []


async def test_unknown_route_404_and_wrong_method_405(gateway: GatewayClient) -> None:
    client = await gateway()
    resp = await client.get("/admin")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    resp = await client.put("/items")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD, POST"
