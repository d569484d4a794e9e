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

Each call goes through the gateway's own route table and that route's own chain - the same
policies a direct request meets (auth and scopes, rate limit, custom policies, forwarding
headers, forward) - with the caller's `Authorization`, the request id and `X-Forwarded-*`.
The aggregate is itself a route of the pipeline (`Aggregate` is its chain's last step), so
its path, auth and CORS follow config reloads. Parts run as tasks; each awaits
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
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import orjson

from chassis import Problem

from ..config.expressions import (
    Expr,
    ExprError,
    Template,
    check_aggregates,
    parse_expr,
    parse_select,
    parse_template,
    walk,
)
from ..transport import TransportError
from .chain import Chain, run_to_end
from .exchange import Exchange
from .policy import Answer, Policy, Verdict

if TYPE_CHECKING:
    from ..config import AggregateConfig
    from ..routing import Route, Router

__all__ = [
    "PARTIAL_HEADER",
    "Aggregate",
    "Expr",
    "ExprError",
    "PartFailure",
    "Template",
    "check_aggregates",
    "compile_aggregate",
    "parse_expr",
    "parse_template",
]

log = logging.getLogger("portico.gateway.aggregate")

PARTIAL_HEADER = "X-Portico-Partial"
MODES = ("partial", "all_or_nothing")
RESERVED_PART_NAMES = frozenset({"errors"})
_MAX_BODY = 4 * 1024 * 1024  # a part's answer is read whole; beyond this it is refused
_FORWARDED = ("Authorization", "Accept-Language", "traceparent", "tracestate")


class _NotScalar(Exception):
    pass


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return quote(str(value), safe="")
    raise _NotScalar


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


def compile_aggregate(cfg: AggregateConfig) -> _Compiled:
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

    __slots__ = ("ex", "headers", "params")

    def __init__(self, ex: Exchange, params: Mapping[str, str]) -> None:
        self.ex = ex
        self.params = params
        headers = [(h, v) for h in _FORWARDED if (v := ex.header(h)) is not None]
        headers.append(("Accept", "application/json"))
        self.headers = headers


class Aggregate(Policy):
    """The last step of an aggregate's chain: run its parts, answer the composite."""

    name = "aggregate"
    order = 1000

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.compiled: _Compiled | None = None
        self.router: Router | None = context.router if context is not None else None
        self.chains: Mapping[str, Chain] = {}  # filled by the pipeline once all are built

    def bind(self, route: Route) -> Policy | None:
        return self

    def on_request(self, ex: Exchange) -> Verdict:
        return self.handle(ex)

    async def handle(self, ex: Exchange) -> Answer:
        compiled = self.compiled
        assert compiled is not None
        params = ex.params or {}
        if any(v in (".", "..") for v in params.values()):
            raise Problem(400, "the path must not contain '.' or '..' segments")
        values, failures = await self.run(compiled, _Context(ex, params))
        if failures:
            ex.log_field("failed_parts", [f.part for f in failures])
        body: dict[str, Any] = {p.name: values.get(p.name) for p in compiled.parts}
        body["errors"] = [f.entry() for f in failures]
        headers = [(PARTIAL_HEADER, "true")] if failures else []
        return Answer.json(200, body, headers)

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
        """One GET through its route's chain; the (selected) JSON value or a PartFailure."""
        name = part.name
        path = target.partition("?")[0]
        assert self.router is not None
        found = self.router.match(path)
        route = found[0].routes.get("GET") if found is not None else None
        chain = self.chains.get(route.name) if route is not None else None
        if found is None or route is None or chain is None:
            return PartFailure(name, 404, f"no GET route matches {path}")
        parent = ctx.ex
        sub = Exchange(
            "GET",
            target,
            unquote(path) if "%" in path else path,
            list(ctx.headers),
            authorization=parent.authorization,
            host=parent.host,
            remote=parent.remote,
            scheme=parent.scheme,
        )
        sub.rid = parent.rid
        sub.route, sub.params = route, found[1]
        timeout = part.timeout or route.timeout
        if part.timeout:
            sub.vars = {"timeout": part.timeout}
        upstream = route.upstream
        try:
            async with asyncio.timeout(timeout + 1.0):  # the forward step's own comes first
                await run_to_end(chain, sub)
                answer = sub.answer
                if answer is not None and answer.problem is None and 200 <= answer.status < 300:
                    body = answer.body  # a policy's own answer (a cache hit): the part's value
                    response = answer
                elif answer is not None:
                    problem = answer.problem
                    detail = problem.detail or problem.title if problem else f"{answer.status}"
                    gateway = answer.status in (502, 503, 504)
                    return PartFailure(
                        name,
                        answer.status,
                        detail,
                        upstream if gateway else None,
                        headers=dict(problem.headers) if problem else None,
                    )
                else:
                    response = sub.response
                    try:
                        length = response.content_length
                        if length is not None and length > _MAX_BODY:
                            return PartFailure(name, 502, "the answer is too large", upstream)
                        body = await response.read()
                    finally:
                        response.close()
                    if chain.bodies:  # the body phases see a part's answer too
                        body = chain.body(sub, body, True)
        except TimeoutError:
            return PartFailure(name, 504, f"{upstream} did not answer in time", upstream)
        except TransportError as exc:
            log.warning(
                "aggregate part failed",
                extra={"part": name, "upstream": upstream, "error": str(exc)},
            )
            return PartFailure(name, 502, f"{upstream} is unavailable", upstream)
        finally:
            chain.log(sub)
        if not 200 <= response.status < 300:
            detail = _upstream_detail(body) or f"{upstream} answered {response.status}"
            return PartFailure(name, response.status, detail, upstream, answered=True)
        try:
            value = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return PartFailure(name, 502, f"{upstream} answered with no JSON", upstream)
        return walk(value, part.select) if part.select else value


def _named(failure: PartFailure, name: str) -> PartFailure:
    return PartFailure(name, failure.status, failure.detail, failure.upstream, failure.answered)
