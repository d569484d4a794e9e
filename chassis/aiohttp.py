"""aiohttp glue for the chassis: one middleware for correlation ids, JSON access logs,
metrics and problem errors, plus health and metrics routes and scope-checked handlers.

Handlers that stream (the gateway's proxy) prepare their own response: they read the
request id from `request[REQUEST_ID]` and set the header before `prepare()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError

from .access import record_request
from .drain import DRAIN, Drain, DrainSettings, readiness, until_stopped
from .health import LIVE
from .http_cache import (
    CachePolicy,
    EntityTag,
    is_not_modified,
    not_modified_headers,
    representation_etag,
    validator_headers,
)
from .logging import REQUEST_ID_HEADER, accept_request_id, correlation_id
from .metrics import CONTENT_TYPE_LATEST, RequestMetrics, render
from .problems import PROBLEM_JSON, Problem, validation_problem
from .tokens import AsyncTokenVerifier, Claims, TokenError, bearer_token, token_problem
from .validation import load_json, query_params

__all__ = [
    "CLAIMS",
    "METRICS",
    "REQUEST_ID",
    "VERIFIER",
    "access_log",
    "add_log_fields",
    "cacheable",
    "install",
    "json_body",
    "problem_response",
    "query_args",
    "require_scopes",
    "route_name",
    "run",
    "set_route_name",
]

log = logging.getLogger("portico.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METRICS = web.AppKey("portico.metrics", RequestMetrics)
VERIFIER = web.AppKey("portico.verifier", AsyncTokenVerifier)
# Typed request keys (aiohttp warns on plain string keys, and pytest turns that into an error).
REQUEST_ID = web.RequestKey("portico.request_id", str)
CLAIMS = web.RequestKey("portico.claims", Claims)


class _RequestState:
    """What the chassis tracks per request, kept in one request item: one lookup, not three."""

    __slots__ = ("fields", "route", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.route: str | None = None
        self.fields: dict[str, Any] | None = None


_STATE = web.RequestKey("portico.state", _RequestState)


def _state(request: web.Request) -> _RequestState:
    try:
        return request[_STATE]
    except KeyError:  # a request that did not pass the chassis middleware
        state = request[_STATE] = _RequestState(time.perf_counter())
        return state


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    resp = web.Response(
        body=orjson.dumps(problem.document(instance=instance)),
        status=problem.status,
        content_type=PROBLEM_JSON,
    )
    resp.headers.update(problem.headers)
    return resp


def _from_http_exception(exc: web.HTTPException) -> Problem:
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    problem = Problem(exc.status, detail)
    for name in ("Allow", "Retry-After", "WWW-Authenticate"):
        if name in exc.headers:
            problem.headers[name] = exc.headers[name]
    return problem


def _route_name(request: web.Request) -> str:
    route = _state(request).route
    if route:
        return route
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def set_route_name(request: web.Request, name: str) -> None:
    """Let a catch-all handler (the gateway) label metrics and logs with its own route."""
    _state(request).route = name


def route_name(request: web.Request) -> str | None:
    """The name `set_route_name` gave this request's route, if any (the gateway's CORS stage)."""
    return _state(request).route


def add_log_fields(request: web.Request, **fields: Any) -> None:
    """Extra fields for this request's access log line (the gateway adds `upstream`)."""
    state = _state(request)
    if state.fields is None:
        state.fields = fields
    else:
        state.fields.update(fields)


def access_log(request: web.Request, status: int, **fields: Any) -> None:
    state = _state(request)
    elapsed = time.perf_counter() - state.started
    added = state.fields
    if added:
        fields = {**added, **fields}
    claims: Claims | None = request.get(CLAIMS)
    record_request(
        request.app[METRICS],
        request.method,
        state.route or _route_name(request),
        request.path,
        status,
        elapsed,
        claims.client_id if claims else None,
        fields,
    )


@web.middleware
async def _chassis_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[_STATE] = _RequestState(time.perf_counter())
    rid = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = rid
    token = correlation_id.set(rid)
    try:
        try:
            resp = await handler(request)
        except Problem as exc:
            resp = problem_response(exc, request.path)
        except web.HTTPException as exc:
            resp = problem_response(_from_http_exception(exc), request.path)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            resp = problem_response(Problem(500, "an unexpected error occurred"), request.path)
        if not resp.prepared:
            resp.headers[REQUEST_ID_HEADER] = rid
        if not request.get("portico.logged"):
            access_log(request, resp.status)
        return resp
    finally:
        correlation_id.reset(token)


def install(
    app: web.Application,
    service: str,
    *,
    ready_checks: Mapping[str, Callable[[], Any]] | None = None,
    verifier: AsyncTokenVerifier | None = None,
    health_prefix: str = "/health",
    ready_info: Callable[[], Mapping[str, Any]] | None = None,
) -> RequestMetrics:
    """Chassis middleware, health routes and metrics. `ready_info`: extra members of the
    readiness answer (say, a read side's projection lag), never a reason to be unready."""
    metrics = RequestMetrics(service)
    app[METRICS] = metrics
    if verifier is not None:
        app[VERIFIER] = verifier
    app.middlewares.append(_chassis_middleware)
    checks = dict(ready_checks or {})
    drain = app[DRAIN] = Drain()

    async def live(_request: web.Request) -> web.Response:
        return web.json_response(LIVE)

    async def ready(_request: web.Request) -> web.Response:
        status, body = await readiness(checks, drain)
        if ready_info is not None:
            body.update(ready_info())
        return web.json_response(body, status=status)

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(
            body=render(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get(f"{health_prefix}/live", live)
    app.router.add_get(f"{health_prefix}/ready", ready)
    app.router.add_get("/metrics", metrics_view)
    return metrics


def require_scopes(*scopes: str) -> Callable[[Handler], Handler]:
    """Verify the bearer token again (defence in depth) and demand `scopes`."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            verifier = request.app[VERIFIER]
            try:
                claims = await verifier.verify(bearer_token(request.headers.get("Authorization")))
                claims.require(scopes)
            except TokenError as exc:
                raise token_problem(exc) from exc
            request[CLAIMS] = claims
            return await handler(request)

        return wrapper

    return decorate


async def json_body(request: web.Request, schema: Schema, *, partial: bool = False) -> Any:
    """Parse (`chassis.validation.load_json`, as in the Flask glue) and validate the JSON body,
    or raise the matching problem."""
    if request.content_type != "application/json":
        raise Problem(415, "the request body must be application/json")
    data = load_json(await request.read())
    try:
        return schema.load(data, partial=partial)
    except ValidationError as exc:
        raise validation_problem(exc.messages) from exc


def query_args(request: web.Request, schema: Schema) -> Any:
    """Load the query string (strict UTF-8, first value of each name) with `schema`, or raise
    the matching problem (400 undecodable, 422 naming the invalid parameters)."""
    try:
        return schema.load(query_params(request.rel_url.raw_query_string))
    except ValidationError as exc:
        raise validation_problem(exc.messages) from exc


def run(app: web.Application, host: str, port: int) -> None:
    """Serve `app` on uvloop until SIGINT/SIGTERM, then drain (`chassis.drain`, ADR 0033);
    the JSON access log replaces aiohttp's."""
    import uvloop

    settings = DrainSettings.from_env()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, host, port, settings))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, host: str, port: int, settings: DrainSettings) -> None:
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=settings.shutdown_grace
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        log.info("listening", extra={"host": host, "port": port})
        # cleanup(): the listener closes, idle connections close, requests in flight get
        # `shutdown_grace` seconds, then the app's on_shutdown and cleanup contexts run
        await until_stopped(app.get(DRAIN) or Drain(), settings, runner.cleanup)
    except BaseException:
        await runner.cleanup()  # start-up failed or we were cancelled: still clean up
        raise


def cacheable(
    request: web.Request,
    resp: web.Response,
    policy: CachePolicy,
    *,
    etag: EntityTag | None = None,
    last_modified: datetime | None = None,
) -> web.Response:
    """Give a read's 200 its caching headers (`chassis.http_cache`), or answer 304 instead.

    Without `etag` the tag is taken from the body's bytes (a `web.json_response` has them).
    Other statuses pass unchanged.
    """
    if resp.status != 200:
        return resp
    if etag is None:
        body = resp.body
        if not isinstance(body, bytes | bytearray):
            raise TypeError("cacheable() needs a response with its body in bytes, or an etag")
        etag = representation_etag(bytes(body))
    resp.headers.update(validator_headers(policy, etag, last_modified))
    if not is_not_modified(
        request.method,
        if_none_match=request.headers.getall("If-None-Match", ()),
        if_modified_since=request.headers.getall("If-Modified-Since", ()),
        etag=etag,
        last_modified=last_modified,
    ):
        return resp
    return web.Response(status=304, headers=not_modified_headers(resp.headers))
