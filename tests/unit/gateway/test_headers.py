"""Header handling on the way up and down: hop-by-hop stripped, X-Forwarded-* and ids set."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy import forward_headers, response_headers


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_hop_by_hop_headers_are_stripped() -> None:
    incoming = _headers(
        ("Host", "api.example"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic abc"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("X-Secret-Hop", "1"),
        ("Expect", "100-continue"),
        ("Authorization", "Bearer t"),
        ("Accept", "application/json"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    )
    out = forward_headers(
        incoming, remote="10.0.0.9", scheme="https", host="api.example", request_id="rid-1"
    )
    assert sorted(k for k, _ in out.items()) == sorted(
        [
            "Authorization",
            "Accept",
            "Cookie",
            "Cookie",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Request-ID",
        ]
    )
    assert out["Authorization"] == "Bearer t"
    assert out.getall("Cookie") == ["a=1", "b=2"]


def test_x_forwarded_headers() -> None:
    out = forward_headers(
        _headers(("X-Forwarded-Proto", "gopher"), ("X-Request-ID", "spoofed")),
        remote="127.0.0.2",
        scheme="http",
        host="gw:8080",
        request_id="rid-2",
    )
    assert out["X-Forwarded-For"] == "127.0.0.2"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "gw:8080"
    assert out["X-Request-ID"] == "rid-2"


def test_x_forwarded_for_is_appended() -> None:
    incoming = _headers(("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("X-Forwarded-For", "3.3.3.3"))
    out = forward_headers(incoming, remote="127.0.0.1", scheme="http", host="h", request_id="r")
    assert out.getall("X-Forwarded-For") == ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"]


def test_response_hop_by_hop_headers_are_stripped() -> None:
    upstream = _headers(
        ("Connection", "close, X-Internal"),
        ("X-Internal", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Proxy-Authenticate", "Basic"),
        ("Upgrade", "h2c"),
        ("Location", "/api/v1/products/1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "application/problem+json"),
        ("X-Request-ID", "upstream-id"),
    )
    out = response_headers(upstream)
    assert sorted(k for k, _ in out.items()) == [
        "Content-Type",
        "Location",
        "Set-Cookie",
        "Set-Cookie",
    ]
