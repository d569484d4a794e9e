"""The request path, top to bottom: route -> auth -> rate limit -> upstream instance -> forward
-> answer.

`Proxy.handle` is the gateway's one catch-all handler. Every failure before the upstream's
answer starts is a `chassis.Problem` (404, 405 with `Allow`, 401/403, 413, 502, 503, 504),
turned into problem+json by the chassis middleware. The upstream's own answer, errors and
`Location` included, passes through unchanged except for hop-by-hop headers.

Bodies stream both ways. A request body with a small `Content-Length` is read at once (one
write upstream, a known length); larger or chunked bodies are streamed and counted, so the
size limit holds without buffering. Response bodies of a small known length are read before
the answer starts (an upstream failure is still a clean 502); others are streamed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import AnyStr
from urllib.parse import unquote

from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy

from chassis import REQUEST_ID_HEADER, AsyncTokenVerifier, Claims, Problem, tracing
from chassis.aiohttp import CLAIMS, REQUEST_ID, add_log_fields, set_route_name

from .auth import authenticate, authenticate_cached
from .config import IDEMPOTENT_METHODS, RetryPolicy
from .ratelimit import RATE_HEADERS, RateLimiter
from .routing import Route, Router
from .transport import (
    OutboundRequest,
    PoolTimeout,
    Transport,
    TransportError,
    UpstreamResponse,
    UpstreamTimeout,
)
from .upstreams import NoReadyInstance, Upstream, UpstreamPool

__all__ = [
    "HOP_BY_HOP",
    "BodyLate",
    "BodyTooLarge",
    "Proxy",
    "body_late",
    "forward_header_pairs",
    "forward_headers",
    "read_whole",
    "response_head_block",
    "response_header_fields",
    "response_headers",
]

log = logging.getLogger("portico.gateway.proxy")

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


class BodyTooLarge(Exception):
    """The request body grew past the route's limit while streaming."""


class BodyLate(Exception):
    """The request body stopped arriving for longer than the route's body timeout."""


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


def _has_dot_segment(path: str) -> bool:
    """True for '.' or '..' segments, encoded or not: never forwarded, never matched."""
    decoded = unquote(path) if "%" in path else path
    return any(seg in (".", "..") for seg in decoded.replace("\\", "/").split("/"))


class _LimitedBody:
    """The request body as an async iterable that stops past `limit` bytes, or when no byte
    of it arrives for `timeout` seconds."""

    __slots__ = ("_content", "exceeded", "late", "limit", "timeout")

    def __init__(self, content: StreamReader, limit: int, timeout: float) -> None:
        self._content = content
        self.limit = limit
        self.timeout = timeout
        self.exceeded = False
        self.late = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        content = self._content
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await content.readany()
            except TimeoutError:
                self.late = True
                raise BodyLate from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge
            yield chunk


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the request body exceeds {limit} bytes", title="Content Too Large")


def body_late(timeout: float) -> Problem:
    """408: the body did not arrive in time. Both servers close the connection after it."""
    return Problem(408, f"the request body did not arrive within {timeout:g} s")


async def read_whole(upstream: UpstreamResponse, name: str) -> bytes:
    """A small answer's whole body before the answer starts: a failure is still a clean 502."""
    try:
        return await upstream.read()
    except TransportError as exc:
        log.warning("upstream body failed", extra={"upstream": name, "error": str(exc)})
        raise Problem(502, f"{name} broke off its answer") from None


class Proxy:
    def __init__(
        self,
        router: Router,
        upstreams: UpstreamPool,
        transport: Transport,
        verifier: AsyncTokenVerifier,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.router = router
        self.upstreams = upstreams
        self.transport = transport
        self.verifier = verifier
        # None when no route names a rate-limit policy: the stage costs nothing then.
        self.limiter = limiter if limiter is not None and limiter.enabled else None

    def resolve(self, method: str, raw_target: str) -> tuple[Route, dict[str, str] | None]:
        """Stage 1, the route: 400 for dot segments, 404, 405 with `Allow`."""
        path = raw_target.partition("?")[0]
        if ("/." in path or "%" in path or "\\" in path) and _has_dot_segment(path):
            raise Problem(400, "the path must not contain '.' or '..' segments")
        found = self.router.match(path)
        if found is None:
            raise Problem(404, "no route matches this path")
        entry, params = found
        route = entry.routes.get(method)
        if route is None:
            raise Problem(405, f"{method} is not allowed here", headers={"Allow": entry.allow})
        return route, params

    async def admit(
        self,
        route: Route,
        authorization: str | None,
        client_ip: Callable[[], str],
    ) -> tuple[Claims | None, tuple[str, str] | None]:
        """Stages 2 and 2b: the caller's claims (401/403) and the rate limit (429/503); the
        RateLimit header values when the route is limited. A refused token counts against
        the client's address (`RateLimiter.refused`)."""
        claims = None
        limiter = self.limiter
        if route.auth_required:
            try:
                claims = authenticate_cached(self.verifier, route, authorization)
                if claims is None:
                    claims = await authenticate(self.verifier, route, authorization)
            except Problem as problem:
                if limiter is None:
                    raise
                raise await limiter.refused(route.name, problem, client_ip) from None
        rate = None
        if limiter is not None:
            rate = await limiter.admit(route.name, claims, client_ip)
        return claims, rate

    def outbound(
        self,
        route: Route,
        params: dict[str, str] | None,
        method: str,
        raw_target: str,
        headers: CIMultiDict[str] | list[tuple[str, str]],
        body: bytes | _LimitedBody | None,
    ) -> tuple[Upstream, OutboundRequest, RetryPolicy | None]:
        """Stage 4: the upstream, the request for it and the retry policy that applies -
        only for idempotent methods whose body can be sent again."""
        upstream = self.upstreams[route.upstream]
        retry = route.config.retry
        if retry is not None and (
            method not in IDEMPOTENT_METHODS or isinstance(body, _LimitedBody)
        ):
            retry = None
        request = OutboundRequest(
            pool=upstream.name,
            origin="",
            method=method,
            target=route.target(raw_target, params),
            headers=headers,
            body=body,
            timeout=route.timeout,
        )
        return upstream, request, retry

    @staticmethod
    def failure(exc: Exception, upstream: str, outbound: OutboundRequest, limit: int) -> Problem:
        """The problem for a failure before the upstream's answer: 408, 413, 502, 503, 504."""
        if isinstance(exc, NoReadyInstance):
            return Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
        body = outbound.body
        if isinstance(exc, BodyTooLarge) or (isinstance(body, _LimitedBody) and body.exceeded):
            return _too_large(limit)
        if isinstance(exc, BodyLate) or (isinstance(body, _LimitedBody) and body.late):
            return body_late(body.timeout if isinstance(body, _LimitedBody) else 0.0)
        log.warning(
            "upstream request failed",
            extra={"upstream": upstream, "instance": outbound.origin, "error": str(exc)},
        )
        if isinstance(exc, UpstreamTimeout):
            return Problem(504, f"{upstream} did not answer in time")
        if isinstance(exc, PoolTimeout):
            return Problem(503, f"{upstream} is saturated", headers={"Retry-After": "1"})
        return Problem(502, f"{upstream} is unavailable")

    async def forward(
        self,
        route: Route,
        params: dict[str, str] | None,
        method: str,
        raw_target: str,
        headers: CIMultiDict[str] | list[tuple[str, str]],
        body: bytes | _LimitedBody | None,
    ) -> tuple[UpstreamResponse, str]:
        """Stages 4 and 5: the upstream's answer (headers in) and the instance that gave it.

        `upstream.send` picks the instance and, with the retry policy, tries another on
        failure. Failures before the answer are problems (`failure`)."""
        upstream, outbound, retry = self.outbound(route, params, method, raw_target, headers, body)
        try:
            if tracing.ENABLED:  # a CLIENT span whose traceparent replaces the client's one
                with tracing.client_span(
                    f"{method} {upstream.name}",
                    outbound.headers,
                    **{"peer.service": upstream.name},
                ):
                    response = await upstream.send(self.transport, outbound, retry)
            else:
                response = await upstream.send(self.transport, outbound, retry)
        except (NoReadyInstance, BodyTooLarge, BodyLate, TransportError) as exc:
            raise self.failure(exc, upstream.name, outbound, route.max_body_bytes) from None
        return response, outbound.origin if upstream.balanced else ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler: the stages above around aiohttp's request and response."""
        raw_target = request.raw_path
        method = request.method
        try:
            route, params = self.resolve(method, raw_target)
        except Problem:
            set_route_name(request, "unmatched")
            raise
        set_route_name(request, route.name)
        add_log_fields(request, upstream=route.upstream)

        limiter = self.limiter
        claims, rate = await self.admit(
            route,
            request.headers.get("Authorization"),
            lambda: limiter.client_ip(request) if limiter is not None else "",
        )
        if claims is not None:
            request[CLAIMS] = claims
        if rate is not None:
            request[RATE_HEADERS] = rate

        # 3. request body, within the route's limit
        limit = route.max_body_bytes
        body: bytes | _LimitedBody | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length > limit:
                raise _too_large(limit)
            if length is not None and length <= _READ_WHOLE_REQUEST:
                try:
                    async with asyncio.timeout(route.body_timeout):
                        body = await request.read()
                except TimeoutError:
                    raise body_late(route.body_timeout) from None  # closes: gateway.strict
            else:
                body = _LimitedBody(request.content, limit, route.body_timeout)

        rid: str = request[REQUEST_ID]
        headers = forward_headers(
            request.headers,
            remote=request.remote,
            scheme=request.scheme,
            host=request.host,
            request_id=rid,
        )
        upstream_response, instance = await self.forward(
            route, params, method, raw_target, headers, body
        )
        if instance:  # which instance answered, for the access log line
            add_log_fields(request, instance=instance)

        # 6. answer
        try:
            return await self._respond(request, upstream_response, rid, route.upstream)
        finally:
            upstream_response.close()

    async def _respond(
        self, request: web.Request, upstream: UpstreamResponse, rid: str, name: str
    ) -> web.StreamResponse:
        headers = response_headers(upstream.headers)
        headers[REQUEST_ID_HEADER] = rid
        length = upstream.content_length
        no_body = request.method == "HEAD" or upstream.status in _NO_BODY_STATUS
        whole: bytes | None = None
        if no_body:
            whole = b""
        elif length is not None and length <= _READ_WHOLE_RESPONSE:
            whole = await read_whole(upstream, name)
        if whole is not None:
            # A plain Response: aiohttp sends head and body in one write, after we return.
            return web.Response(
                body=whole, status=upstream.status, reason=upstream.reason or None, headers=headers
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason or None, headers=headers
        )
        await response.prepare(request)
        try:
            async for chunk in upstream.iter_chunks():
                await response.write(chunk)
        except TransportError as exc:
            # Too late for a problem document: cut the connection so the client sees a
            # truncated body, never a complete-looking one.
            log.warning("upstream body failed", extra={"upstream": name, "error": str(exc)})
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
