"""Flask glue for the chassis: correlation ids, JSON access logs, metrics, problem errors,
health endpoints and scope-checked routes. One call, `install`, from each app factory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import orjson
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import HTTPException

from .access import record_request
from .drain import DRAINING, PROCESS_DRAIN
from .health import LIVE, Check, run_checks
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
from .tokens import Claims, TokenError, TokenVerifier, bearer_token, token_problem
from .validation import load_json, query_params

__all__ = [
    "cacheable",
    "current_claims",
    "install",
    "json_body",
    "problem_response",
    "query_args",
    "require_scopes",
]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("portico.http")
_VERIFIER = "portico.verifier"


def problem_response(problem: Problem) -> Response:
    body = orjson.dumps(problem.document(instance=request.path))
    resp = Response(body, status=problem.status, mimetype=PROBLEM_JSON)
    for key, value in problem.headers.items():
        resp.headers[key] = value
    return resp


_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_DATETIME  # dates as Flask writes them (HTTP dates), via `default`
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON responses (`jsonify`, returned dicts) encoded by orjson: the same compact,
    key-sorted document, in UTF-8 rather than with `\\u` escapes. A value orjson cannot
    encode (an integer beyond 64 bits, a key that is not a string) falls back to Flask's own
    encoder. Out of debug mode only; parsing is unchanged."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self._app.debug or self.compact is False:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=_ORJSON_OPTIONS)
        except TypeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)


def install(
    app: Flask,
    service: str,
    *,
    ready_checks: Mapping[str, Check] | None = None,
    verifier: TokenVerifier | None = None,
) -> RequestMetrics:
    metrics = RequestMetrics(service)
    checks = dict(ready_checks or {})
    if verifier is not None:
        app.extensions[_VERIFIER] = verifier
    app.json = JsonProvider(app)

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        g.request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.cid_token = correlation_id.set(g.request_id)

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers[REQUEST_ID_HEADER] = rid
        started = getattr(g, "request_started", None)
        if started is not None:
            # the same line and metrics as the aiohttp glue and the gateway, by the same
            # path: one dict to the JSON handler, no LogRecord (`chassis.access`)
            claims: Claims | None = g.get("claims")
            record_request(
                metrics,
                request.method,
                request.url_rule.rule if request.url_rule else "unmatched",
                request.path,
                resp.status_code,
                time.perf_counter() - started,
                claims.client_id if claims else None,
            )
        return resp

    @app.teardown_request
    def _reset(_exc: BaseException | None) -> None:
        token = g.pop("cid_token", None)
        if token is not None:
            correlation_id.reset(token)

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        problem = Problem(exc.code or 500, exc.description)
        resp = problem_response(problem)
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path})
        return problem_response(Problem(500, "an unexpected error occurred"))

    @app.get("/health/live")
    def _live() -> Any:
        return LIVE

    @app.get("/health/ready")
    def _ready() -> Any:
        if PROCESS_DRAIN.draining:  # a gunicorn worker told to stop (chassis.gunicorn)
            return dict(DRAINING), 503
        status, body = run_checks(checks)
        return body, status

    @app.get("/metrics")
    def _metrics() -> Response:
        return Response(render(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    return metrics


def current_claims() -> Claims:
    return g.claims  # type: ignore[no-any-return]


def require_scopes(*scopes: str) -> Callable[[F], F]:
    """Verify the bearer token again (defence in depth) and demand `scopes`."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app

            verifier: TokenVerifier = current_app.extensions[_VERIFIER]
            try:
                claims = verifier.verify(bearer_token(request.headers.get("Authorization")))
                claims.require(scopes)
            except TokenError as exc:
                raise token_problem(exc) from exc
            g.claims = claims
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def json_body(schema: Schema, *, partial: bool = False) -> Any:
    """Parse and validate the request's JSON body, or raise the matching problem.

    Parsed by `chassis.validation.load_json`, as in the aiohttp glue (not Flask's `json`,
    which recurses on deep nesting and keeps lone surrogates).
    """
    if not request.is_json:
        raise Problem(415, "the request body must be application/json")
    data = load_json(request.get_data(cache=True))
    try:
        return schema.load(data, partial=partial)
    except ValidationError as exc:
        raise validation_problem(exc.messages) from exc


def query_args(schema: Schema) -> Any:
    """Load the query string (strict UTF-8, first value of each name) with `schema`, or raise
    the matching problem (400 undecodable, 422 naming the invalid parameters)."""
    try:
        return schema.load(query_params(request.query_string))
    except ValidationError as exc:
        raise validation_problem(exc.messages) from exc


def cacheable(
    resp: Response,
    policy: CachePolicy,
    *,
    etag: EntityTag | None = None,
    last_modified: datetime | None = None,
) -> Response:
    """Give a read's 200 its caching headers (`chassis.http_cache`), or answer 304 instead.

    Without `etag` the tag is taken from the body's bytes. Other statuses pass unchanged.
    """
    if resp.status_code != 200:
        return resp
    if etag is None:
        etag = representation_etag(resp.get_data())
    resp.headers.update(validator_headers(policy, etag, last_modified))
    # straight from the WSGI environ, which holds at most one value per field (the server
    # joins repeated ones): EnvironHeaders.getlist walks the whole environ for each name
    environ = request.environ
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if not is_not_modified(
        request.method,
        if_none_match=[] if if_none_match is None else [if_none_match],
        if_modified_since=[] if if_modified_since is None else [if_modified_since],
        etag=etag,
        last_modified=last_modified,
    ):
        return resp
    not_modified = Response(status=304, headers=not_modified_headers(resp.headers))
    not_modified.headers.pop("Content-Type", None)  # no representation, no metadata about one
    return not_modified
