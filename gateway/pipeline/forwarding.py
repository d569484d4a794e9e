"""Forwarding headers: what goes upstream and what comes back, hop-by-hop fields gone.

On the way up (`Forwarding`, a chain step): the client's fields minus hop-by-hop ones and
those a `Connection` field names, with `X-Forwarded-For`, `-Proto`, `-Host` and the request id
set by the gateway. On the way back, the same filter over the upstream's fields
(`response_head_block` serializes them for the front server in one pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import AnyStr

from multidict import CIMultiDict, CIMultiDictProxy

from chassis import REQUEST_ID_HEADER

from ..routing import Route
from .exchange import Exchange
from .policy import Policy, Verdict

__all__ = [
    "HOP_BY_HOP",
    "Forwarding",
    "forward_header_pairs",
    "forward_headers",
    "response_head_block",
    "response_header_fields",
    "response_headers",
]

# RFC 9110 section 7.6.1, plus the legacy names still seen in the wild; any `Proxy-*` too.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# Set by the gateway itself (or by the client library from the URL) on the way up.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
}
_RESPONSE_DROP = HOP_BY_HOP | {"x-request-id"}

_READ_WHOLE_REQUEST = 64 * 1024  # request bodies up to this size are read, not streamed
_READ_WHOLE_RESPONSE = 256 * 1024  # response bodies up to this size are read before answering
_NO_BODY_STATUS = frozenset({204, 304})


def _connection_tokens(value: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


# Per header name as spelt on the wire: kept or not (a hot path: no lower() per header).
# Bounded: names beyond the cap are decided each time, never cached.
_KEEP_CACHE_MAX = 1024
_keep_request: dict[str, bool] = {}
_keep_response: dict[str, bool] = {}


def _strip(
    headers: Mapping[str, str], drop: frozenset[str], keep: dict[str, bool] | None = None
) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    connection = headers.get("Connection")
    if connection or keep is None:
        named = _connection_tokens(connection) if connection else frozenset()
        for name, value in headers.items():
            low = name.lower()
            if low in drop or low in named or low.startswith("proxy-"):
                continue
            out.add(name, value)
        return out
    for name, value in headers.items():
        kept = keep.get(name)
        if kept is None:
            kept = _decide(name, drop, keep)
        if kept:
            out.add(name, value)
    return out


def _decide(name: AnyStr, drop: frozenset[str], keep: dict[AnyStr, bool]) -> bool:
    """Whether a field of this name goes on (end-to-end), remembered in `keep` (bounded)."""
    low = _text(name).lower()
    kept = not (low in drop or low.startswith("proxy-"))
    if len(keep) < _KEEP_CACHE_MAX:
        keep[name] = kept
    return kept


def forward_headers(
    headers: CIMultiDictProxy[str] | Mapping[str, str],
    *,
    remote: str | None,
    scheme: str,
    host: str,
    request_id: str,
) -> CIMultiDict[str]:
    """The request headers for the upstream: hop-by-hop gone, `X-Forwarded-*` and id set."""
    out = _strip(headers, _REQUEST_DROP, _keep_request)
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        prior = ", ".join(headers.getall("X-Forwarded-For", ()))
    else:
        prior = headers.get("X-Forwarded-For", "")
    client = remote or "unknown"
    out["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    out[REQUEST_ID_HEADER] = request_id
    return out


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The upstream's response headers for the client, hop-by-hop gone."""
    return _strip(headers, _RESPONSE_DROP, _keep_response)


def _strip_pairs(
    pairs: list[tuple[AnyStr, AnyStr]], drop: frozenset[str], keep: dict[AnyStr, bool]
) -> list[tuple[AnyStr, AnyStr]]:
    """`_strip` for a list of fields, text or as received (bytes): the kept ones, without the
    fields a `Connection` field names either."""
    out = []
    connection = None
    for pair in pairs:
        name = pair[0]
        kept = keep.get(name)
        if kept is None:
            kept = _decide(name, drop, keep)
        if kept:
            out.append(pair)
        elif connection is None and _text(name).lower() == "connection":
            connection = pair[1]
    if connection:
        named = _connection_tokens(_text(connection))
        out = [p for p in out if _text(p[0]).lower() not in named]
    return out


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def forward_header_pairs(
    pairs: list[tuple[str, str]],
    *,
    forwarded_for: list[str],
    remote: str | None,
    scheme: str,
    host: str,
    request_id: str,
) -> list[tuple[str, str]]:
    """`forward_headers` for the front server's list of request fields."""
    out = _strip_pairs(pairs, _REQUEST_DROP, _keep_request)
    prior = ", ".join(forwarded_for)
    client = remote or "unknown"
    out.append(("X-Forwarded-For", f"{prior}, {client}" if prior else client))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("X-Forwarded-Host", host))
    out.append((REQUEST_ID_HEADER, request_id))
    return out


_keep_response_bytes: dict[bytes, bool] = {}


def response_header_fields(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`response_headers` for fields as received (bytes): the front server's relay, the
    upstream's answer with hop-by-hop fields gone."""
    return _strip_pairs(pairs, _RESPONSE_DROP, _keep_response_bytes)


# Per response field name as received: 0 relayed, 1 relayed (it is `Date`), 2 dropped,
# 3 `Connection` (the fields it names go too: `response_header_fields` decides those).
_relay_kind: dict[bytes, int] = {}


def response_head_block(pairs: list[tuple[bytes, bytes]]) -> tuple[bytes, bool] | None:
    """`response_header_fields` serialized for the front server's answer, in one pass: the
    kept fields as `Name: value\r\n` lines and whether `Date` was among them. None when the
    upstream sent a `Connection` field (rare: HTTP/1.1 keeps alive without it); the caller
    then filters the list."""
    parts: list[bytes] = []
    dated = False
    kinds = _relay_kind
    for name, value in pairs:
        kind = kinds.get(name)
        if kind is None:
            low = name.lower()
            if low == b"connection":
                kind = 3
            elif not _decide(name, _RESPONSE_DROP, _keep_response_bytes):
                kind = 2
            else:
                kind = 1 if low == b"date" else 0
            if len(kinds) < _KEEP_CACHE_MAX:
                kinds[name] = kind
        if kind < 2:
            dated = dated or kind == 1
            parts += (name, b": ", value, b"\r\n")
        elif kind == 3:
            return None
    return b"".join(parts), dated


class Forwarding(Policy):
    """The upstream request's fields (`ex.upstream_headers`), from `ex.headers` as the
    policies before it left them."""

    name = "forwarding"
    order = 800

    def bind(self, route: Route) -> Policy | None:
        return self

    def on_request(self, ex: Exchange) -> Verdict:
        # forward_header_pairs, inline: it runs for every proxied request
        out = _strip_pairs(ex.headers, _REQUEST_DROP, _keep_request)
        prior = ex.forwarded_for
        client = ex.remote or "unknown"
        out += (
            ("X-Forwarded-For", f"{', '.join(prior)}, {client}" if prior else client),
            ("X-Forwarded-Proto", ex.scheme),
            ("X-Forwarded-Host", ex.host or "localhost"),
            (REQUEST_ID_HEADER, ex.rid),
        )
        ex.upstream_headers = out
        return None
