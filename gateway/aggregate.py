"""Aggregated endpoints: one GET answered by a small graph of GET calls through the gateway.

An aggregate (`aggregates:` in gateway.yaml) has a path template and a list of parts. Each part
is a GET whose path template may use the aggregate's path parameters and fields of earlier
parts' results::

    {id}                        the aggregate's path parameter `id`
    {order.payment_id}          field `payment_id` of part `order`'s (selected) result
    {order.items[0].sku}        list index (negative counts from the end)
    {order.items[*].sku}        fan-out: one call per element of `order.items`; the part's
                                value is the list of their results, in order

Grammar: `{ root ( .key | [n] | [*] )* }` with `root` a path parameter or an earlier part's
name; at most one `[*]` per expression, and every fan-out expression of one part iterates the
same list (they are zipped element by element). Values are percent-encoded into the path or
query. A part may `select:` a piece of its result with the same syntax, rootless (`items[0]`
takes the product out of a catalog page, `items` the list out of a page).

Null inputs: when a value a part needs is missing or null (an order not yet charged has no
`payment_id`), the part is not called and its value is null - not an error. A part whose input
part failed is not called either; it fails with status 424 naming the part it needed.

Each call goes through the gateway's own route table: the concrete path is matched to its
route, the caller's token is checked against that route's scopes (and its rate limit), and the
request goes to an instance of the route's upstream over the shared `Transport` with the
caller's `Authorization`, the request id and `X-Forwarded-*`. Parts run as tasks; each awaits
only the parts it names, so independent parts run at once and a composite takes about as long
as its slowest chain.

Failures. A failed call is described by the status the upstream answered (kept as is) or, when
there was no answer, by the gateway's own: 502 refused/broken/not JSON, 503 no healthy
instance or saturated pool, 504 timeout, 401/403/429 from the route's own checks. In
`mode: partial` an optional part that fails is `null` and listed under `errors`
(`{"part", "status", "title", "detail", "upstream"}`) and the response carries
`X-Portico-Partial: true`; a required part that fails fails the whole request with a problem
document naming the part: upstream 5xx or refused -> 502, no healthy instance -> 503, timeout ->
504, a 4xx (404, 403, ...) -> that 4xx. `mode: all_or_nothing` fails on any failed part. A
fan-out part fails when any of its calls fails.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from aiohttp import web
from multidict import CIMultiDict

from chassis import REQUEST_ID_HEADER, AsyncTokenVerifier, Claims, Problem
from chassis.aiohttp import CLAIMS, REQUEST_ID, add_log_fields, set_route_name

from .auth import authenticate
from .proxy import forward_headers
from .transport import OutboundRequest, PoolTimeout, Transport, TransportError, UpstreamTimeout
from .upstreams import NoReadyInstance

if TYPE_CHECKING:
    from .config import AggregateConfig, RouteConfig
    from .ratelimit import RateLimiter
    from .routing import Router
    from .upstreams import UpstreamPool

__all__ = [
    "PARTIAL_HEADER",
    "Aggregator",
    "Expr",
    "PartFailure",
    "Template",
    "check_aggregates",
    "parse_expr",
    "parse_template",
    "register",
]

log = logging.getLogger("portico.gateway.aggregate")

PARTIAL_HEADER = "X-Portico-Partial"
MODES = ("partial", "all_or_nothing")
RESERVED_PART_NAMES = frozenset({"errors"})
_MAX_BODY = 4 * 1024 * 1024  # a part's answer is read whole; beyond this it is refused
_FORWARDED = ("Authorization", "Accept-Language", "traceparent", "tracestate")

# --- the expression syntax ------------------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|\[(\*)\]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
STAR = object()  # the fan-out step


class ExprError(ValueError):
    """An expression or template that does not follow the syntax above."""


@dataclass(frozen=True, slots=True)
class Expr:
    """`root` then steps: a str key, an int index, or STAR (fan-out)."""

    text: str
    root: str
    steps: tuple[Any, ...]

    @property
    def star(self) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s is STAR), None)

    @property
    def list_key(self) -> tuple[Any, ...]:
        """Root and steps up to the `[*]`: what a fan-out iterates."""
        star = self.star
        assert star is not None
        return (self.root, *self.steps[:star])


def _steps(text: str, rest: str) -> tuple[Any, ...]:
    steps: list[Any] = []
    pos = 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if match is None:
            raise ExprError(f"bad expression {text!r} at {rest[pos:]!r}")
        key, index, star = match.groups()
        steps.append(key if key is not None else STAR if star else int(index))
        pos = match.end()
    if sum(1 for s in steps if s is STAR) > 1:
        raise ExprError(f"{text!r}: at most one '[*]' per expression")
    return tuple(steps)


def parse_expr(text: str) -> Expr:
    """`order.items[*].sku` -> Expr('order', ('items', STAR, 'sku'))."""
    match = re.match(_NAME, text)
    if match is None:
        raise ExprError(f"bad expression {text!r}: must start with a name")
    return Expr(text, match.group(0), _steps(text, text[match.end() :]))


def parse_select(text: str) -> tuple[Any, ...]:
    """A rootless path for `select:` (`items[0]`, `data.items`); no fan-out."""
    rest = text if text.startswith("[") else "." + text
    steps = _steps(text, rest)
    if STAR in steps:
        raise ExprError(f"{text!r}: '[*]' is not allowed in select")
    return steps


@dataclass(frozen=True, slots=True)
class Template:
    """A part's path: literal text and expressions, and the list it fans out over (if any)."""

    text: str
    pieces: tuple[str | Expr, ...]
    roots: frozenset[str]
    fanout: tuple[Any, ...] | None  # the list key shared by every `[*]` expression

    def sample(self) -> str:
        """The path with every expression replaced by 'x': what the config check routes."""
        return "".join(p if isinstance(p, str) else "x" for p in self.pieces).partition("?")[0]


def parse_template(text: str) -> Template:
    pieces: list[str | Expr] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > pos:
            pieces.append(text[pos : match.start()])
        pieces.append(parse_expr(match.group(1)))
        pos = match.end()
    tail = text[pos:]
    if (
        "{" in tail
        or "}" in tail
        or any("{" in p or "}" in p for p in pieces if isinstance(p, str))
    ):
        raise ExprError(f"unbalanced braces in {text!r}")
    if tail:
        pieces.append(tail)
    exprs = [p for p in pieces if isinstance(p, Expr)]
    keys = {e.list_key for e in exprs if e.star is not None}
    if len(keys) > 1:
        raise ExprError("every '[*]' of one path must iterate the same list")
    return Template(
        text=text,
        pieces=tuple(pieces),
        roots=frozenset(e.root for e in exprs),
        fanout=next(iter(keys)) if keys else None,
    )


_MISSING: Any = None


def walk(value: Any, steps: Iterable[Any]) -> Any:
    """Follow keys and indexes; None where anything is missing."""
    for step in steps:
        if isinstance(step, str):
            value = value.get(step) if isinstance(value, dict) else _MISSING
        elif isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        else:
            value = _MISSING
        if value is None:
            return None
    return value


class _NotScalar(Exception):
    pass


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return quote(str(value), safe="")
    raise _NotScalar


# --- config checks (called by gateway.config) -----------------------------------------------


def check_aggregates(
    aggregates: Sequence[Mapping[str, Any]], routes: Sequence[RouteConfig]
) -> dict[int, Any]:
    """Graph errors by aggregate index (marshmallow's shape): names, references, routes."""
    from .config import path_params
    from .routing import Router

    router = Router(routes)
    route_names = {r.name for r in routes}
    errors: dict[int, Any] = {}
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for i, agg in enumerate(aggregates):
        here: dict[str, Any] = {}
        name, path = agg["name"], agg["path"]
        if name in seen_names:
            here["name"] = [f"duplicate of aggregates[{seen_names[name]}].name"]
        elif name in route_names:
            here["name"] = ["is already the name of a route"]
        seen_names.setdefault(name, i)
        if path in seen_paths:
            here["path"] = [f"duplicate of aggregates[{seen_paths[path]}].path"]
        else:
            found = router.match(path)
            if found is not None and found[0].path == path and "GET" in found[0].routes:
                here["path"] = [f"GET {path} is already routed by {found[0].routes['GET'].name!r}"]
        seen_paths.setdefault(path, i)
        params = set(path_params(path))
        known: set[str] = set()
        parts: dict[int, Any] = {}
        for j, part in enumerate(agg["parts"]):
            problems: dict[str, list[str]] = {}
            pname = part["name"]
            if pname in known:
                problems["name"] = ["duplicate part name"]
            elif pname in params:
                problems["name"] = ["is also a path parameter"]
            try:
                template = parse_template(part["path"])
            except ExprError as exc:
                problems["path"] = [str(exc)]
            else:
                unknown = sorted(template.roots - params - known)
                if unknown:
                    problems["path"] = [
                        f"{u!r} is neither a path parameter nor an earlier part" for u in unknown
                    ]
                elif not template.text.startswith("/"):
                    problems["path"] = ["must start with '/'"]
                else:
                    found = router.match(template.sample())
                    if found is None or "GET" not in found[0].routes:
                        problems["path"] = [f"no GET route matches {template.sample()!r}"]
            if part.get("select") is not None:
                try:
                    parse_select(part["select"])
                except ExprError as exc:
                    problems["select"] = [str(exc)]
            known.add(pname)
            if problems:
                parts[j] = problems
        if parts:
            here["parts"] = parts
        if here:
            errors[i] = here
    return errors


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartFailure:
    """Why a part has no value: `status` kept as the upstream (or the gateway) gave it."""

    part: str
    status: int  # the upstream's answer, else the gateway's own (502/503/504/401/403/429/424)
    detail: str
    upstream: str | None = None
    answered: bool = False  # True: `status` is what the upstream answered
    escalate: int | None = None  # the status to fail the whole request with (default: mapped)
    headers: Mapping[str, str] | None = None

    @property
    def whole_status(self) -> int:
        """Status for the whole request: upstream 5xx -> 502; 4xx and gateway codes kept."""
        if self.escalate is not None:
            return self.escalate
        return 502 if self.answered and self.status >= 500 else self.status

    def entry(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "part": self.part,
            "status": self.status,
            "title": _title(self.status),
            "detail": self.detail,
        }
        if self.upstream is not None:
            doc["upstream"] = self.upstream
        return doc


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    template: Template
    required: bool
    timeout: float | None
    select: tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    config: AggregateConfig
    gate: _Gate
    parts: tuple[_Part, ...]
    all_or_nothing: bool


@dataclass(frozen=True, slots=True)
class _Gate:
    """The aggregate's own auth requirement, in the shape `authenticate` reads."""

    auth_required: bool
    scopes: frozenset[str]
    scope_list: tuple[str, ...]


class _Fatal(Exception):
    def __init__(self, failure: PartFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def _compile(cfg: AggregateConfig) -> _Compiled:
    parts = tuple(
        _Part(
            name=p.name,
            template=parse_template(p.path),
            required=p.required,
            timeout=p.timeout,
            select=parse_select(p.select) if p.select else None,
        )
        for p in cfg.parts
    )
    return _Compiled(
        config=cfg,
        gate=_Gate(cfg.auth.required, frozenset(cfg.auth.scopes), cfg.auth.scopes),
        parts=parts,
        all_or_nothing=cfg.mode == "all_or_nothing",
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _upstream_detail(body: bytes) -> str | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        detail = doc.get("detail") or doc.get("title")
        return str(detail) if detail else None
    return None


class _Context:
    """One aggregate request: what every call needs from the caller."""

    __slots__ = ("claims", "headers", "params", "request")

    def __init__(
        self,
        request: web.Request,
        params: Mapping[str, str],
        claims: Claims | None,
    ) -> None:
        self.request = request
        self.params = params
        self.claims = claims
        base = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
        base["Accept"] = "application/json"
        self.headers = forward_headers(
            base,
            remote=request.remote,
            scheme=request.scheme,
            host=request.host,
            request_id=request[REQUEST_ID],
        )


class Aggregator:
    """Runs the configured aggregates on the gateway's router, upstreams and transport."""

    def __init__(
        self,
        aggregates: Iterable[AggregateConfig],
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
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.aggregates = {cfg.name: _compile(cfg) for cfg in aggregates}

    # --- the endpoint -----------------------------------------------------------------------

    async def handle(self, name: str, request: web.Request) -> web.Response:
        compiled = self.aggregates.get(name)
        if compiled is None:  # dropped by a config reload
            raise Problem(404, "no route matches this path")
        set_route_name(request, name)
        params = dict(request.match_info)
        if any(v in (".", "..") for v in params.values()):
            raise Problem(400, "the path must not contain '.' or '..' segments")
        claims = await authenticate(
            self.verifier,
            compiled.gate,  # type: ignore[arg-type]
            request.headers.get("Authorization"),
        )
        if claims is not None:
            request[CLAIMS] = claims
        ctx = _Context(request, params, claims)
        values, failures = await self.run(compiled, ctx)
        if failures:
            add_log_fields(request, failed_parts=[f.part for f in failures])
        body: dict[str, Any] = {p.name: values.get(p.name) for p in compiled.parts}
        body["errors"] = [f.entry() for f in failures]
        headers = {REQUEST_ID_HEADER: request[REQUEST_ID]}
        if failures:
            headers[PARTIAL_HEADER] = "true"
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    async def run(
        self, compiled: _Compiled, ctx: _Context
    ) -> tuple[dict[str, Any], list[PartFailure]]:
        """Every part's value and the failures; raises the Problem that fails the whole."""
        tasks: dict[str, asyncio.Task[Any]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for part in compiled.parts:
                    tasks[part.name] = group.create_task(
                        self._part(compiled, part, tasks, ctx), name=f"part:{part.name}"
                    )
        except* _Fatal as fatal:
            first = min(
                (e for e in fatal.exceptions if isinstance(e, _Fatal)),
                key=lambda e: [p.name for p in compiled.parts].index(e.failure.part),
            )
            raise self._whole_failure(compiled, first.failure) from None
        values: dict[str, Any] = {}
        failures: list[PartFailure] = []
        for part in compiled.parts:
            result = tasks[part.name].result()
            if isinstance(result, PartFailure):
                failures.append(result)
            else:
                values[part.name] = result
        return values, failures

    @staticmethod
    def _whole_failure(compiled: _Compiled, failure: PartFailure) -> Problem:
        kind = "part" if compiled.config.mode == "all_or_nothing" else "required part"
        extra: dict[str, Any] = {"part": failure.part, "errors": [failure.entry()]}
        if failure.answered:
            extra["upstream_status"] = failure.status
        return Problem(
            failure.whole_status,
            f"{kind} {failure.part!r} failed: {failure.detail}",
            headers=dict(failure.headers or {}),
            **extra,
        )

    async def _part(
        self,
        compiled: _Compiled,
        part: _Part,
        tasks: Mapping[str, asyncio.Task[Any]],
        ctx: _Context,
    ) -> Any:
        """The part's value or its PartFailure; raises _Fatal when it fails the whole."""
        result = await self._evaluate(part, tasks, ctx)
        if isinstance(result, PartFailure) and (part.required or compiled.all_or_nothing):
            raise _Fatal(result)
        return result

    async def _evaluate(
        self, part: _Part, tasks: Mapping[str, asyncio.Task[Any]], ctx: _Context
    ) -> Any:
        inputs: dict[str, Any] = dict(ctx.params)
        for root in part.template.roots:
            if root in ctx.params:
                continue
            value = await tasks[root]
            if isinstance(value, PartFailure):
                return PartFailure(
                    part.name,
                    424,
                    f"not called: part {root!r} it depends on failed",
                    escalate=value.whole_status,
                )
            inputs[root] = value
        template = part.template
        if template.fanout is None:
            target = self._render(template, inputs, None)
            if isinstance(target, PartFailure | None):
                return target if target is None else _named(target, part.name)
            return await self._call(part, target, ctx)
        items = walk(inputs[template.fanout[0]], template.fanout[1:])
        if items is None:
            return None
        if not isinstance(items, list):
            return PartFailure(part.name, 502, f"the fan-out input of {part.name!r} is not a list")
        targets = [self._render(template, inputs, item) for item in items]
        for t in targets:
            if isinstance(t, PartFailure):
                return _named(t, part.name)
        unique = list(dict.fromkeys(t for t in targets if isinstance(t, str)))
        results = await asyncio.gather(*(self._call(part, t, ctx) for t in unique))
        by_target = dict(zip(unique, results, strict=True))
        for result in results:
            if isinstance(result, PartFailure):
                return result
        return [by_target[t] if isinstance(t, str) else None for t in targets]

    @staticmethod
    def _render(
        template: Template, inputs: Mapping[str, Any], item: Any
    ) -> str | PartFailure | None:
        """The call's target, or None when an input is null (the part is then null)."""
        out: list[str] = []
        for piece in template.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            if piece.star is not None:
                value: Any = walk(item, piece.steps[piece.star + 1 :])
            else:
                value = walk(inputs[piece.root], piece.steps)
            if value is None:
                return None
            try:
                out.append(_text(value))
            except _NotScalar:
                return PartFailure("", 502, f"{{{piece.text}}} is not a string or number")
        return "".join(out)

    async def _call(self, part: _Part, target: str, ctx: _Context) -> Any:
        """One GET through the route table; the (selected) JSON value or a PartFailure."""
        name = part.name
        path = target.partition("?")[0]
        found = self.router.match(path)
        route = found[0].routes.get("GET") if found is not None else None
        if found is None or route is None:
            return PartFailure(name, 404, f"no GET route matches {path}")
        try:
            claims = await authenticate(
                self.verifier, route, ctx.request.headers.get("Authorization")
            )
            if self.limiter is not None:
                await self.limiter.check(ctx.request, route.name, claims)
        except Problem as problem:
            return PartFailure(
                name, problem.status, problem.detail or problem.title, headers=problem.headers
            )
        # The proxy's own path to an instance: balancing, breaker, retries on another one.
        upstream = self.upstreams[route.upstream]
        timeout = part.timeout or route.timeout
        outbound = OutboundRequest(
            pool=upstream.name,
            origin="",  # set by `upstream.send` to the instance it picks
            method="GET",
            target=route.target(target, found[1]),
            headers=CIMultiDict(ctx.headers),
            timeout=timeout,
        )
        try:
            async with asyncio.timeout(timeout):
                response = await upstream.send(self.transport, outbound, route.config.retry)
                try:
                    if response.content_length is not None and response.content_length > _MAX_BODY:
                        return PartFailure(name, 502, "the answer is too large", upstream.name)
                    body = await response.read()
                finally:
                    response.close()
        except NoReadyInstance as exc:
            return PartFailure(
                name, 503, str(exc), upstream.name, headers={"Retry-After": str(exc.retry_after)}
            )
        except (TimeoutError, UpstreamTimeout):
            return PartFailure(name, 504, f"{upstream.name} did not answer in time", upstream.name)
        except PoolTimeout:
            return PartFailure(name, 503, f"{upstream.name} is saturated", upstream.name)
        except TransportError as exc:
            log.warning(
                "aggregate part failed",
                extra={"part": name, "upstream": upstream.name, "error": str(exc)},
            )
            return PartFailure(name, 502, f"{upstream.name} is unavailable", upstream.name)
        if not 200 <= response.status < 300:
            detail = _upstream_detail(body) or f"{upstream.name} answered {response.status}"
            return PartFailure(name, response.status, detail, upstream.name, answered=True)
        try:
            value = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return PartFailure(name, 502, f"{upstream.name} answered with no JSON", upstream.name)
        return walk(value, part.select) if part.select else value


def _named(failure: PartFailure, name: str) -> PartFailure:
    return PartFailure(name, failure.status, failure.detail, failure.upstream, failure.answered)


def register(
    app: web.Application,
    aggregates: Iterable[AggregateConfig],
    current: Callable[[], Aggregator],
) -> None:
    """A GET (and HEAD) route per aggregate path, ahead of the catch-all proxy route.

    `current()` is read per request, so a reloaded config's aggregator (same paths) is used
    by new requests; paths added or dropped by a reload need a restart.
    """
    for cfg in aggregates:

        async def view(request: web.Request, _name: str = cfg.name) -> web.StreamResponse:
            return await current().handle(_name, request)

        app.router.add_get(cfg.path, view)
