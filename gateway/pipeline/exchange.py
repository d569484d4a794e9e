"""`Exchange`: one request in flight, from its parsed head to its access line.

Both servers build one from what they parsed (the front server from httptools' callbacks, the
aiohttp application from its `web.Request`), hand it to the route's `Chain`, and write what
the chain answered. Policies read and set its attributes; nothing else carries a request's
state, so a policy written once runs the same on every server path and in aggregate parts.

It has `__slots__` and plain attributes because it is made for every request: an attribute
read is the cheapest thing Python does, and the fast path reads many.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chassis import Claims

    from ..routing import Route
    from .chain import Chain
    from .policy import Answer

__all__ = ["Exchange"]


class Exchange:
    """A request in flight: what came in, what the policies decided, what goes out.

    Request (set by the server adapter): `method`, `target` (as received, query included),
    `path` (percent-decoded, no query), `headers` (the fields as (name, value) text pairs, in
    order), `authorization`, `host`, `forwarded_for`, `request_id` (as received), `remote`,
    `scheme`, `body` (bytes or None) or `body_stream` (an async iterable of chunks), and
    `content_length`.

    Decided on the way in: `rid` (the request id answered and forwarded), `route` and
    `params`, `claims` and `consumer` (the token's client id), `rate` (the RateLimit-Policy
    and RateLimit values), `upstream_headers` (the fields for the upstream), `fields` (extra
    fields for the access line), `vars` (a dict for policies' own per-request values).

    The answer: `answer` (an `Answer`, or the upstream's response being relayed, `response`),
    `status`, and `response_extra`: fields the gateway adds to the answer as (name, value)
    text pairs (the request id, RateLimit, CORS, a policy's own). `response_drop` names
    fields (lower case) to remove from the upstream's answer.
    """

    __slots__ = (
        "answer",
        "authorization",
        "body",
        "body_stream",
        "chain",
        "claims",
        "consumer",
        "content_length",
        "done",
        "fields",
        "forwarded_for",
        "headers",
        "host",
        "keep_alive",
        "method",
        "origin",
        "outbound",
        "params",
        "path",
        "rate",
        "remote",
        "request_id",
        "response",
        "response_drop",
        "response_extra",
        "rid",
        "route",
        "scheme",
        "server",
        "started",
        "status",
        "step",
        "target",
        "upstream_headers",
        "vars",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        headers: list[tuple[str, str]],
        *,
        authorization: str | None = None,
        host: str | None = None,
        forwarded_for: list[str] | None = None,
        request_id: str | None = None,
        origin: str | None = None,
        remote: str | None = None,
        scheme: str = "http",
        body: bytes | None = None,
        body_stream: AsyncIterable[bytes] | None = None,
        content_length: int = 0,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers
        self.authorization = authorization
        self.host = host
        self.forwarded_for = forwarded_for if forwarded_for is not None else []
        self.request_id = request_id
        self.origin = origin
        self.remote = remote
        self.scheme = scheme
        self.body = body
        self.body_stream = body_stream
        self.content_length = content_length
        self.rid = ""
        self.route: Route | None = None
        self.params: dict[str, str] | None = None
        self.chain: Chain | None = None
        self.step = 0
        self.claims: Claims | None = None
        self.consumer: str | None = None
        self.rate: tuple[str, str] | None = None
        self.upstream_headers: list[tuple[str, str]] | None = None
        self.outbound: Any = None  # the upstream request (gateway.transport.OutboundRequest)
        self.fields: dict[str, Any] | None = None
        self.vars: dict[str, Any] | None = None
        self.answer: Answer | None = None
        self.response: Any = None
        self.status = 0
        self.response_extra: list[tuple[str, str]] = []
        self.response_drop: set[str] | None = None
        self.keep_alive = True
        self.started = 0.0
        self.server: Any = None  # the adapter's own object (its connection, its request)
        self.done: Callable[[Exchange], None] | None = None  # called once with the answer

    # --- helpers for policies -----------------------------------------------------------------

    def header(self, name: str) -> str | None:
        """The first request field called `name` (any case), or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [value for key, value in self.headers if key.lower() == low]

    def set_header(self, name: str, value: str | None) -> None:
        """Replace (or with None remove) a request field before it goes upstream."""
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]
        if value is not None:
            self.headers.append((name, value))

    def log_field(self, name: str, value: Any) -> None:
        """An extra field for this request's access line."""
        if self.fields is None:
            self.fields = {name: value}
        else:
            self.fields[name] = value

    def var(self, name: str, default: Any = None) -> Any:
        return default if self.vars is None else self.vars.get(name, default)

    def set_var(self, name: str, value: Any) -> None:
        if self.vars is None:
            self.vars = {}
        self.vars[name] = value

    def add_response_header(self, name: str, value: str) -> None:
        """A field the gateway adds to the answer (after the upstream's own)."""
        self.response_extra.append((name, value))

    def drop_response_header(self, name: str) -> None:
        """Remove the upstream's fields called `name` from the answer (and any added)."""
        low = name.lower()
        if self.response_drop is None:
            self.response_drop = {low}
        else:
            self.response_drop.add(low)
        self.response_extra = [(k, v) for k, v in self.response_extra if k.lower() != low]

    def response_header(self, name: str) -> str | None:
        """A field of the answer: one the gateway added, else the upstream's (first)."""
        low = name.lower()
        for key, value in self.response_extra:
            if key.lower() == low:
                return value
        if self.response_drop is not None and low in self.response_drop:
            return None
        answer = self.answer
        if answer is not None:
            return answer.header(low)
        response = self.response
        if response is not None:
            got = response.headers.get(name)
            return got if got is None else str(got)
        return None
