"""Request-head rules both servers enforce before routing, auth or a rate limit (issue 15).

Each is a place where the gateway and the service behind it could read one request two ways:

* more than one `Authorization` field: 400. The gateway authenticated the last one while
  aiohttp services act on the first, so a caller could pass the gateway's checks (and its
  rate limit) as one identity and be served as another.
* more than one `Host` field, or none on HTTP/1.1: 400 (RFC 9112 section 3.2).
* a `#fragment` in the request target: 400. A fragment is never part of a request target
  (RFC 9112 section 3.2, RFC 3986 section 3.5); refusing it is simpler to reason about than
  stripping it, and no client sends one (`%23` is an ordinary encoded byte and passes).
* `TRACE`: 405 with `Allow`. It would echo the request, credentials included, back to a
  script (cross-site tracing); no route may list it.

Every answer is problem+json and closes the connection: what else the client sent on it was
framed by a head we refused. The front server (`gateway.front`) applies these rules in its
parser callbacks, before it hands anything to aiohttp; `middleware` applies them on aiohttp's
server (`GATEWAY_SERVER=aiohttp`) and for whatever the front hands over. aiohttp's own parser
refuses a second or missing `Host` before any middleware runs: `handlers` gives its
connections an error answer in problem+json too (`ProblemRequestHandler`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_exceptions import HTTPMethodNotAllowed
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from chassis import REQUEST_ID_HEADER, Problem
from chassis.aiohttp import REQUEST_ID, Handler, problem_response, set_route_name

from .routing import Router

__all__ = [
    "ProblemRequestHandler",
    "duplicate",
    "fragment",
    "handlers",
    "middleware",
    "no_host",
    "trace",
]


def duplicate(name: str) -> Problem:
    return Problem(400, f"the request has more than one {name} field")


def no_host() -> Problem:
    return Problem(400, "an HTTP/1.1 request must have a Host field")


def fragment() -> Problem:
    return Problem(400, "the request target must not contain a fragment ('#')")


def trace(allow: str) -> Problem:
    return Problem(405, "TRACE is not allowed", headers={"Allow": allow})


def _allow(request: web.Request, router: Router) -> str:
    """The methods the target allows, for TRACE's 405: aiohttp's own for its endpoints, the
    route table's for proxied paths, none for paths nothing serves."""
    exc = getattr(request.match_info, "http_exception", None)
    if isinstance(exc, HTTPMethodNotAllowed):
        return ", ".join(sorted(exc.allowed_methods))
    route = request.match_info.route
    if route.method != hdrs.METH_ANY:
        return route.method
    found = router.match(request.raw_path.partition("?")[0].partition("#")[0])
    return found[0].allow if found is not None else ""


def head_problem(request: web.Request, router: Router) -> Problem | None:
    """The rule `request` breaks, if any."""
    headers = request.headers
    if len(headers.getall(hdrs.AUTHORIZATION, ())) > 1:
        return duplicate("Authorization")
    hosts = len(headers.getall(hdrs.HOST, ()))
    if hosts > 1:
        return duplicate("Host")
    if hosts == 0 and request.version >= (1, 1):
        return no_host()
    if "#" in request.raw_path:
        return fragment()
    if request.method == hdrs.METH_TRACE:
        return trace(_allow(request, router))
    return None


def middleware(router: Callable[[], Router]) -> Handler:
    """aiohttp's side of the rules; `router()` is the current state's route table. A 408
    (`gateway.pipeline.body_limits.body_late`) closes the connection here too."""

    @web.middleware
    async def strict_head(request: web.Request, handler: Handler) -> web.StreamResponse:
        problem = head_problem(request, router())
        if problem is None:
            try:
                return await handler(request)
            except Problem as late:
                if late.status != 408:
                    raise
                problem = late  # the body never came: what is left of it frames nothing
        else:
            set_route_name(request, "unmatched")
        response = problem_response(problem, request.path)
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        response.force_close()
        # Written here, then the connection closed at once: aiohttp would otherwise wait up
        # to its lingering time for a body that may never come before closing.
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response

    return strict_head


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the requests its own parser refuses (a second
    `Host`, a malformed head) in problem+json instead of plain text; still closing after."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises if too late
        detail = exc.message if isinstance(exc, HttpProcessingError) and status < 500 else None
        response = problem_response(Problem(status, detail or None))
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"  # said even to what reads as HTTP/1.0
        return response


def handlers(server: web.Server) -> Any:
    """The protocol factory for `loop.create_server` (and the front's hand-over): `server`'s
    own connection handlers, as `ProblemRequestHandler`. (`web.Server` builds plain
    `RequestHandler`s with no way to choose the class; its settings are read from it.)"""

    def make() -> RequestHandler:
        return ProblemRequestHandler(server, loop=server._loop, **server._kwargs)

    return make
