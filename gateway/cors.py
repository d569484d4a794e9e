"""CORS per route: preflights answered here, CORS headers on the answers of CORS routes.

A policy is declared once under `cors:` in gateway.yaml and named by routes and aggregates
(`cors: web`). Which routes have one is decided when the config is compiled: with no policy
named anywhere `create_app` installs nothing and no request pays for CORS; otherwise

* a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) to a path whose
  route for the requested method has a policy is answered by the gateway, never forwarded:
  204 with the `Access-Control-Allow-*` fields when origin, method and headers are allowed,
  else 403 problem+json without any CORS field; other `OPTIONS` requests go on to the proxy;
* `on_response_prepare` adds `Access-Control-Allow-Origin` (the origin itself, or `*` for a
  `*` policy without credentials), `-Allow-Credentials` and `-Expose-Headers` to every answer
  of a CORS route whose `Origin` is allowed - errors included, so a browser can read them -
  and `Vary: Origin` to every answer of a route whose answer depends on the origin. A
  disallowed origin gets no CORS field at all. Routes without a policy cost one dict lookup.

Origins are compared exactly (scheme, host, port; case-insensitive); `*` allows any origin
and cannot be combined with `allow_credentials` (the config check refuses it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from chassis import Problem
from chassis.aiohttp import route_name, set_route_name

if TYPE_CHECKING:
    from .config import AggregateConfig, CorsPolicy, RouteConfig
    from .routing import Router

__all__ = ["Cors", "check_origin", "install"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ORIGIN = re.compile(r"^https?://[^/?#\s]+\Z", re.IGNORECASE)
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_PREFLIGHT = web.RequestKey("gateway.cors_preflight", bool)


def check_origin(value: str) -> str | None:
    """None for '*' or a serialized origin ('https://shop.example:8443')."""
    if value == "*" or _ORIGIN.match(value):
        return None
    return "must be '*' or an origin like https://app.example.com (no path)"


@dataclass(frozen=True, slots=True)
class _Policy:
    """A policy with its header values prepared once."""

    any_origin: bool
    origins: frozenset[str]  # lower-cased
    methods: frozenset[str] | None  # None: the route's own methods
    any_header: bool
    headers: frozenset[str]  # lower-cased
    allow_headers: str
    expose: str
    credentials: bool
    max_age: str | None

    @classmethod
    def compile(cls, p: CorsPolicy) -> _Policy:
        return cls(
            any_origin="*" in p.allow_origins,
            origins=frozenset(o.lower() for o in p.allow_origins if o != "*"),
            methods=frozenset(p.allow_methods) if p.allow_methods else None,
            any_header="*" in p.allow_headers,
            headers=frozenset(h.lower() for h in p.allow_headers if h != "*"),
            allow_headers=", ".join(h for h in p.allow_headers if h != "*"),
            expose=", ".join(p.expose_headers),
            credentials=p.allow_credentials,
            max_age=None if p.max_age is None else str(p.max_age),
        )

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.lower() in self.origins

    @property
    def varies(self) -> bool:
        """The answer depends on the Origin unless every origin gets a literal '*'."""
        return not (self.any_origin and not self.credentials)

    def allow_origin(self, origin: str) -> str:
        return "*" if self.any_origin and not self.credentials else origin


def _vary(headers: Mapping[str, str], *names: str) -> str:
    have = headers.get("Vary", "")
    present = {v.strip().lower() for v in have.split(",") if v.strip()}
    extra = [n for n in names if n.lower() not in present]
    return ", ".join([have, *extra] if have else extra)


class Cors:
    """The CORS policies of one config, by route (and aggregate) name."""

    def __init__(
        self,
        policies: Mapping[str, CorsPolicy],
        routes: Iterable[RouteConfig],
        aggregates: Iterable[AggregateConfig] = (),
    ) -> None:
        compiled = {name: _Policy.compile(p) for name, p in policies.items()}
        self.by_route: dict[str, _Policy] = {}
        self.methods: dict[str, tuple[str, ...]] = {}
        for cfg in routes:
            if cfg.cors is not None:
                self.by_route[cfg.name] = compiled[cfg.cors]
                self.methods[cfg.name] = cfg.methods
        self._aggregates: list[tuple[re.Pattern[str], str]] = []
        for agg in aggregates:
            if agg.cors is not None:
                self.by_route[agg.name] = compiled[agg.cors]
                self.methods[agg.name] = ("GET", "HEAD")
                pattern = "/".join(
                    "[^/]+" if _PARAM.fullmatch(seg) else re.escape(seg)
                    for seg in agg.path.split("/")
                )
                self._aggregates.append((re.compile(f"^{pattern}$"), agg.name))

    @property
    def enabled(self) -> bool:
        return bool(self.by_route)

    def route_for(self, router: Router, path: str, method: str) -> str | None:
        """The name of the route (or aggregate) a `method` request to `path` would take."""
        for regex, name in self._aggregates:
            if method in ("GET", "HEAD") and regex.match(path):
                return name
        found = router.match(path)
        if found is None:
            return None
        route = found[0].routes.get(method)
        return route.name if route is not None else None

    def preflight(self, request: web.Request, name: str) -> web.Response | None:
        """The answer to a preflight for route `name`; None when the route has no policy."""
        policy = self.by_route.get(name)
        if policy is None:
            return None
        set_route_name(request, name)
        request[_PREFLIGHT] = True  # its refusals get no CORS field from `decorate`
        origin = request.headers["Origin"]
        method = request.headers["Access-Control-Request-Method"]
        asked = [
            h.strip().lower()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        methods = policy.methods or frozenset(self.methods[name])
        if not policy.allows(origin):
            raise Problem(403, "this origin is not allowed (CORS)")
        if method not in methods:
            raise Problem(403, f"method {method} is not allowed from this origin (CORS)")
        refused = [h for h in asked if h not in policy.headers]
        if refused and not policy.any_header:
            raise Problem(403, f"request headers not allowed (CORS): {', '.join(refused)}")
        headers = {
            "Access-Control-Allow-Origin": policy.allow_origin(origin),
            "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        if asked:
            headers["Access-Control-Allow-Headers"] = (
                ", ".join(asked) if policy.any_header else policy.allow_headers
            )
        if policy.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if policy.max_age is not None:
            headers["Access-Control-Max-Age"] = policy.max_age
        return web.Response(status=204, headers=headers)

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """CORS fields on an actual (non-preflight) answer of a CORS route."""
        name = route_name(request)
        policy = self.by_route.get(name) if name is not None else None
        if (
            policy is None
            or "Access-Control-Allow-Origin" in response.headers
            or request.get(_PREFLIGHT)
        ):
            return
        if policy.varies:
            response.headers["Vary"] = _vary(response.headers, "Origin")
        origin = request.headers.get("Origin")
        if origin is None or not policy.allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = policy.allow_origin(origin)
        if policy.credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
        if policy.expose:
            response.headers["Access-Control-Expose-Headers"] = policy.expose


def install(
    app: web.Application,
    current: Callable[[], tuple[Cors, Router]],
    fallback: Handler,
) -> None:
    """Route OPTIONS through the preflight stage and decorate answers; only call when enabled.

    Must run before the catch-all proxy route is added: the OPTIONS route registered here
    takes OPTIONS requests, and hands every one that is not a CORS preflight to `fallback`.
    """

    async def options(request: web.Request) -> web.StreamResponse:
        if "Origin" in request.headers and "Access-Control-Request-Method" in request.headers:
            cors, router = current()
            path = request.raw_path.partition("?")[0]
            name = cors.route_for(router, path, request.headers["Access-Control-Request-Method"])
            if name is not None:
                answer = cors.preflight(request, name)
                if answer is not None:
                    return answer
        return await fallback(request)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        current()[0].decorate(request, response)

    app.router.add_route("OPTIONS", "/{tail:.*}", options)
    app.on_response_prepare.append(on_prepare)
