"""Forward: the request to an instance of the route's upstream; its response is the answer.

The fast way (ADR 0006): a route whose upstream has one healthy instance and no breaker, a
body all in, on the pooled HTTP/1.1 client: the request is written on an idle kept-alive
connection (`Http1Transport.start`) and the chain resumes from that connection's callback
with the response head - no task. Anything else (a balanced upstream, a breaker, retries, a
streamed body, no idle connection, a stale connection to replay) is `Upstream.send` in a
task. Failures before the answer starts are problems: 408, 413, 502, 503, 504.
"""

from __future__ import annotations

import logging
from typing import Any

from chassis import Problem, tracing
from chassis.logging import correlation_id

from ..config import IDEMPOTENT_METHODS
from ..http1 import Http1Transport
from ..routing import Route
from ..transport import OutboundRequest, PoolTimeout, TransportError, UpstreamTimeout
from ..upstreams import NoReadyInstance
from .body_limits import BodyLate, BodyTooLarge, LimitedBody, body_late, too_large
from .exchange import Exchange
from .policy import RELAY, SUSPEND, Policy, Verdict

__all__ = ["Forward", "failure"]

log = logging.getLogger("portico.gateway.proxy")


def failure(exc: Exception, upstream: str, outbound: OutboundRequest, limit: int) -> Problem:
    """The problem for a failure before the upstream's answer: 408, 413, 502, 503, 504."""
    if isinstance(exc, NoReadyInstance):
        return Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
    body = outbound.body
    if isinstance(exc, BodyTooLarge) or (isinstance(body, LimitedBody) and body.exceeded):
        return too_large(limit)
    if isinstance(exc, BodyLate) or (isinstance(body, LimitedBody) and body.late):
        return body_late(body.timeout if isinstance(body, LimitedBody) else 0.0)
    log.warning(
        "upstream request failed",
        extra={"upstream": upstream, "instance": outbound.origin, "error": str(exc)},
    )
    if isinstance(exc, UpstreamTimeout):
        return Problem(504, f"{upstream} did not answer in time")
    if isinstance(exc, PoolTimeout):
        return Problem(503, f"{upstream} is saturated", headers={"Retry-After": "1"})
    return Problem(502, f"{upstream} is unavailable")


class Forward(Policy):
    name = "forward"
    order = 1000

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.route: Route | None = None
        self.upstream: Any = None
        self.transport: Any = context.transport if context is not None else None
        self.pooled = False  # the pooled HTTP/1.1 client: the callback way is open

    def bind(self, route: Route) -> Policy | None:
        bound = Forward(None, self.context)
        bound.route = route
        bound.upstream = self.context.upstreams[route.upstream] if self.context else None
        bound.pooled = isinstance(self.transport, Http1Transport)
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        route = self.route
        upstream = self.upstream
        assert route is not None
        stream = ex.body_stream
        timeout = route.timeout
        if ex.vars is not None:
            timeout = ex.vars.get("timeout") or timeout
        upstream_headers = ex.upstream_headers
        outbound = OutboundRequest(  # positional: one per request (pool, origin, ..., timeout)
            upstream.name,
            "",
            ex.method,
            route.target(ex.target, ex.params),
            ex.headers if upstream_headers is None else upstream_headers,
            ex.body if stream is None else stream,
            timeout,
        )
        ex.outbound = outbound
        if stream is None and self.pooled and not tracing.ENABLED:
            instance = upstream.direct
            if instance is not None and instance.healthy:
                outbound.origin = instance.origin
                if self.transport.start(outbound, self._answered, ex) is not None:
                    return SUSPEND
                return self._relay(ex, self.transport.send(outbound))  # no idle connection
        retry = route.config.retry
        if retry is not None and (ex.method not in IDEMPOTENT_METHODS or stream is not None):
            retry = None
        return self._send(ex, outbound, retry)

    async def _send(self, ex: Exchange, outbound: OutboundRequest, retry: Any) -> Any:
        upstream = self.upstream
        route = self.route
        assert route is not None
        try:
            if tracing.ENABLED:  # a CLIENT span whose traceparent replaces the client's one
                carrier: dict[str, str] = {}
                with tracing.client_span(
                    f"{ex.method} {upstream.name}", carrier, **{"peer.service": upstream.name}
                ):
                    outbound.headers = _with_fields(outbound.headers, carrier)
                    response = await upstream.send(self.transport, outbound, retry)
            else:
                response = await upstream.send(self.transport, outbound, retry)
        except (NoReadyInstance, BodyTooLarge, BodyLate, TransportError) as exc:
            raise failure(exc, upstream.name, outbound, route.max_body_bytes) from None
        if upstream.balanced:  # which instance answered, for the access line
            ex.log_field("instance", outbound.origin)
        ex.response = response
        return RELAY

    async def _relay(self, ex: Exchange, pending: Any) -> Any:
        route = self.route
        assert route is not None and ex.outbound is not None
        try:
            ex.response = await pending
        except TransportError as exc:
            raise failure(exc, route.upstream, ex.outbound, route.max_body_bytes) from None
        return RELAY

    def _answered(self, ex: Exchange, response: Any) -> None:
        """`Http1Transport.start`'s callback: the response head is in (or it failed)."""
        chain = ex.chain
        assert chain is not None
        if response.failure() is None:  # the common case: no log line, no correlation id
            ex.response = response
            chain.relay(ex)
            return
        token = correlation_id.set(ex.rid)
        try:
            self._failed(ex, chain, response)
        except Exception:
            chain.crashed(ex, self.name)
        finally:
            correlation_id.reset(token)

    def _failed(self, ex: Exchange, chain: Any, response: Any) -> None:
        route = self.route
        assert route is not None
        error = response.failure()
        stale = response.stale
        response.close()
        if stale and ex.method in IDEMPOTENT_METHODS:
            # A kept-alive connection died before the first byte: once more, on a new one
            # (what `send` does itself for idempotent requests).
            again = self.transport.send(ex.outbound, fresh=True)
            chain.resume(ex, self._relay(ex, again))
            return
        chain.resume(ex, failure(error, route.upstream, ex.outbound, route.max_body_bytes))


def _with_fields(headers: Any, fields: dict[str, str]) -> list[tuple[str, str]]:
    """`headers` (pairs or a mapping) with `fields` replacing any of the same names: the
    propagator writes into a mapping, the forwarded request carries pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    names = {name.lower() for name in fields}
    return [(k, v) for k, v in items if k.lower() not in names] + list(fields.items())
