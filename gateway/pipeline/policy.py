"""The policy API: what a policy is, what its phases return, and what it declares.

A policy is one class. The gateway makes one instance per place it is named in gateway.yaml
(top-level `policies:` for every route, or a route's own `policies:`), with its settings
loaded by the policy's own marshmallow schema (`Settings`; unknown keys are refused with
their key path). At config load it is bound to each route it applies to (`bind`), and the
route's chain is compiled from the bound policies, sorted by `order`.

Phases (override only those you need: a phase left alone costs nothing per request):

- `on_request(ex)` returns None (continue with the next policy), an `Answer` (answer now:
  the rest of the chain is skipped, the response phases still run), `RELAY` (the upstream's
  response is in `ex.response`: the forward policy's), an awaitable whose result is one of
  these (the chain goes on in a task from there: only this request pays for it), or
  `SUSPEND` (the policy will call `ex.chain.resume(ex, verdict)` itself, from a callback).
  Raising `chassis.Problem` answers that problem; raising anything else answers a 500
  problem+json with the request id and logs the policy's name once.
- `on_response_head(ex)`: the answer's status (`ex.status`) and fields are known, nothing is
  written yet; add or drop fields (`ex.add_response_header`, `ex.drop_response_header`).
  Runs in reverse order (the first policy sees the answer last), for every answer.
- `on_response_body(ex, chunk, last)` returns the bytes to send instead of `chunk` (the
  answer's length is then recomputed, or it is sent chunked).
- `on_log(ex)`: after the answer's last byte (or the connection's end); for metrics, audit.

Background work (connections, subscriptions): `start()` is awaited before a config whose
chains hold the policy serves, `stop()` once that config is retired (its requests drained) or
the gateway stops. What must outlive one config (a connection, a cache's entries) goes in
`context.resources`, a dict kept across reloads of one gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Union

import orjson
from marshmallow import Schema

from chassis import PROBLEM_JSON, Problem
from chassis.logging import correlation_id

if TYPE_CHECKING:
    from ..routing import Route
    from .exchange import Exchange

__all__ = [
    "RELAY",
    "SUSPEND",
    "Answer",
    "Policy",
    "PolicyContext",
    "Verdict",
    "problem_answer",
]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SUSPEND: Any = _Marker("SUSPEND")  # a callback will resume the chain
RELAY: Any = _Marker("RELAY")  # the upstream's response (`ex.response`) is the answer


class Answer:
    """An answer made by the gateway (not relayed): status, fields, body."""

    __slots__ = ("body", "headers", "problem", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        problem: Problem | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        self.problem = problem

    @classmethod
    def json(cls, status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Answer:
        fields = [("Content-Type", "application/json"), *(headers or [])]
        return cls(status, fields, orjson.dumps(doc))

    def header(self, name: str) -> str | None:
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None


def problem_answer(problem: Problem, ex: Exchange) -> Answer:
    """The problem+json answer for `problem`, naming the request's path (every server adds
    the request id and the RateLimit fields to every answer)."""
    token = correlation_id.set(ex.rid) if ex.rid else None  # the document names it
    try:
        body = orjson.dumps(problem.document(instance=ex.path))
    finally:
        if token is not None:
            correlation_id.reset(token)
    headers = [("Content-Type", PROBLEM_JSON), *problem.headers.items()]
    return Answer(problem.status, headers, body, problem=problem)


Verdict = Union[None, Answer, Awaitable[Any], Any]  # noqa: UP007 - an alias, not an annotation


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What built-in and custom policies may use, from the gateway state they are built for.

    Typed loosely on purpose: this module imports no other part of the gateway.
    """

    config: Any  # gateway.config.GatewayConfig
    router: Any = None  # gateway.routing.Router
    upstreams: Any = None  # gateway.upstreams.UpstreamPool
    transport: Any = None  # gateway.transport.Transport
    verifier: Any = None  # chassis.AsyncTokenVerifier
    limiter: Any = None  # gateway.ratelimit.RateLimiter (None: no limits anywhere)
    extra: Mapping[str, Any] | None = None
    # Kept across reloads of one gateway: where a policy keeps what outlives a config.
    resources: dict[str, Any] | None = None


class Policy:
    """Base class of every policy, built-in or custom.

    Class attributes a policy declares:
    - `name`: how gateway.yaml and logs call it (custom ones are named by dotted path too);
    - `order`: where it runs; lower runs earlier on request (built-ins: request id 0, CORS
      200, auth 300, rate limit 400, body limits 500, custom default 600, forwarding headers
      800, forward / aggregate 1000);
    - `Settings`: a marshmallow schema for its `settings:` (None: it takes none);
    - `responses`: the answers it may give, as OpenAPI response objects by status, merged
      into `/openapi.json` for the routes it is bound to.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 600
    Settings: ClassVar[type[Schema] | None] = None
    responses: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, settings: Any = None, context: PolicyContext | None = None) -> None:
        self.settings = settings
        self.context = context

    def bind(self, route: Route) -> Policy | None:
        """This policy for `route` (at config load): self, another instance, or None when it
        does nothing there (then it costs that route nothing)."""
        return self

    def on_request(self, ex: Exchange) -> Verdict:
        return None

    def on_response_head(self, ex: Exchange) -> None:
        return None

    def on_response_body(self, ex: Exchange, chunk: bytes, last: bool) -> bytes:
        return chunk

    def on_log(self, ex: Exchange) -> None:
        return None

    async def start(self) -> None:
        """Before the config it is bound in serves (see the module's docstring)."""
        return None

    async def stop(self) -> None:
        """After that config is retired or the gateway stops."""
        return None

    def stats(self) -> dict[str, Any] | None:
        """What the read-only admin view shows of this policy on its route (`gateway.admin`);
        None: nothing. Read there, never on the request path."""
        return None

    @property
    def label(self) -> str:
        return self.name or f"{type(self).__module__}:{type(self).__qualname__}"


def overrides(policy: Policy, phase: str) -> bool:
    """Whether `policy`'s class has its own `phase` (the chain skips the base's no-ops)."""
    return getattr(type(policy), phase) is not getattr(Policy, phase)
