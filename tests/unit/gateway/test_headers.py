"""Header handling on the way up and down: hop-by-hop stripped, X-Forwarded-* and ids set."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.pipeline.forwarding import forward_headers, response_headers


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


# The front server's field lists: the same answers as the multidict versions above.

_HOPPY = (
    ("Host", "api.example"),
    ("Connection", "keep-alive, X-Secret-Hop"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authorization", "Basic abc"),
    ("Transfer-Encoding", "chunked"),
    ("X-Secret-Hop", "1"),
    ("X-Request-ID", "spoofed"),
    ("X-Forwarded-For", "203.0.113.7"),
    ("Authorization", "Bearer t"),
    ("Cookie", "a=1"),
    ("Cookie", "b=2"),
)


def test_forward_header_pairs_match_forward_headers() -> None:
    from gateway.pipeline.forwarding import forward_header_pairs

    args = {"remote": "10.0.0.9", "scheme": "http", "host": "api.example", "request_id": "r1"}
    for _ in range(2):  # the second time through the per-name cache
        expected = forward_headers(_headers(*_HOPPY), **args)
        pairs = forward_header_pairs(list(_HOPPY), forwarded_for=["203.0.113.7"], **args)
        assert pairs == list(expected.items())


def test_response_header_fields_match_response_headers() -> None:
    from gateway.pipeline.forwarding import response_header_fields

    upstream = [
        ("Content-Type", "application/json"),
        ("Connection", "X-Up-Hop"),
        ("X-Up-Hop", "1"),
        ("X-Request-ID", "up"),
        ("Content-Length", "2"),
    ]
    received = [(n.encode(), v.encode()) for n, v in upstream]
    for _ in range(2):  # the second time through the per-name cache
        assert [(n.decode(), v.decode()) for n, v in response_header_fields(received)] == list(
            response_headers(_headers(*upstream)).items()
        )


def test_http1_head_from_a_field_list_drops_framing_fields() -> None:
    from gateway.http1 import _head
    from gateway.transport import OutboundRequest

    fields = [("Host", "client.example"), ("Content-Length", "999"), ("Accept", "*/*")]
    request = OutboundRequest(
        pool="p", origin="http://u", method="POST", target="/x", headers=fields, body=b"{}"
    )
    for _ in range(2):
        head = _head(request, "u:80", "Content-Length: 2\r\n")
        assert head == (
            b"POST /x HTTP/1.1\r\nHost: u:80\r\nAccept: */*\r\nContent-Length: 2\r\n\r\n"
        )


def test_response_fields_as_received_lose_hop_by_hop_ones_too() -> None:
    """The front server relays the upstream's fields as bytes: the same rules as for text."""
    from gateway.pipeline.forwarding import response_header_fields

    received = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Internal"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Internal", b"secret"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"X-Request-ID", b"upstream-id"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"2"),
    ]
    kept = response_header_fields(received)
    assert kept == [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"2"),
    ]
    as_text = _headers(*[(n.decode(), v.decode()) for n, v in received])
    assert list(response_headers(as_text).items()) == [(n.decode(), v.decode()) for n, v in kept]


def test_the_serialized_response_head_is_the_filtered_fields_in_one_pass() -> None:
    """The front server's one-pass relay (`response_head_block`) keeps what
    `response_header_fields` keeps, in order, says whether `Date` came along, and steps aside
    (None) for a `Connection` field, whose named fields only the list filter removes."""
    from gateway.pipeline.forwarding import response_head_block, response_header_fields

    received = [
        (b"Content-Type", b"application/json"),
        (b"Keep-Alive", b"timeout=5"),
        (b"date", b"Thu, 26 Nov 2026 01:30:00 GMT"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"X-Request-ID", b"upstream-id"),
        (b"Set-Cookie", b"a=1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"2"),
    ]
    for _ in range(2):  # the second time through the per-name cache
        block = response_head_block(received)
        assert block is not None
        expected = b"".join(b"%s: %s\r\n" % pair for pair in response_header_fields(received))
        assert block == (expected, True)
        assert expected.startswith(b"Content-Type: application/json\r\ndate: ")
        assert b"Keep-Alive" not in expected and b"upstream-id" not in expected
    assert response_head_block(received[:1]) == (b"Content-Type: application/json\r\n", False)
    assert response_head_block([(b"Connection", b"X-Internal"), (b"X-Internal", b"1")]) is None
