"""CORS per route: preflights answered here, CORS fields on the answers of CORS routes.

A policy is declared once under `cors:` in gateway.yaml and named by routes and aggregates
(`cors: web`). It is compiled with the rest of the pipeline, so a reload turns it on or off:

* a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) to a path whose
  route for the requested method has a policy is answered by the gateway, never forwarded
  (`Pipeline.start` asks `Cors.preflight` before routing, since the route it concerns is the
  one of the requested method): 204 with the `Access-Control-Allow-*` fields when origin,
  method and headers are allowed, else 403 problem+json without any CORS field; other
  `OPTIONS` requests go on like any request;
* the `CorsHeaders` policy (bound to CORS routes only) adds `Access-Control-Allow-Origin`
  (the origin itself, or `*` for a `*` policy without credentials), `-Allow-Credentials` and
  `-Expose-Headers` to every answer whose `Origin` is allowed - errors included, so a browser
  can read them - and `Vary: Origin` to every answer whose content depends on the origin.
  A disallowed origin gets no CORS field at all. Routes without a policy pay nothing.

Origins are compared exactly (scheme, host, port; case-insensitive); `*` allows any origin
and cannot be combined with `allow_credentials` (the config check refuses it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chassis import Problem

from ..config import check_origin
from .exchange import Exchange
from .policy import Answer, Policy

if TYPE_CHECKING:
    from ..config import AggregateConfig, CorsPolicy, RouteConfig
    from ..routing import Route, Router

__all__ = ["Cors", "CorsHeaders", "check_origin"]

_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


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

    def preflight(self, ex: Exchange, name: str) -> Answer | None:
        """The answer to a preflight for route `name`; None when the route has no policy."""
        policy = self.by_route.get(name)
        if policy is None:
            return None
        origin = ex.origin or ""
        method = ex.header("Access-Control-Request-Method") or ""
        asked = [
            h.strip().lower()
            for h in (ex.header("Access-Control-Request-Headers") or "").split(",")
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
        headers = [
            ("Access-Control-Allow-Origin", policy.allow_origin(origin)),
            ("Access-Control-Allow-Methods", ", ".join(sorted(methods))),
            ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ]
        if asked:
            headers.append(
                (
                    "Access-Control-Allow-Headers",
                    ", ".join(asked) if policy.any_header else policy.allow_headers,
                )
            )
        if policy.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if policy.max_age is not None:
            headers.append(("Access-Control-Max-Age", policy.max_age))
        return Answer(204, headers)


class CorsHeaders(Policy):
    """The CORS fields on the answers of one CORS route (see the module's docstring)."""

    name = "cors"
    order = 200
    responses = {"403": {"description": "a CORS preflight that is not allowed"}}

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.policy: _Policy | None = None

    def bind(self, route: Route) -> Policy | None:
        name = route.config.cors
        if name is None or self.context is None:
            return None
        bound = CorsHeaders(None, self.context)
        bound.policy = _Policy.compile(self.context.config.cors[name])
        return bound

    def on_response_head(self, ex: Exchange) -> None:
        policy = self.policy
        assert policy is not None
        if ex.response_header("Access-Control-Allow-Origin") is not None:
            return
        if policy.varies:
            vary = ex.response_header("Vary")
            ex.drop_response_header("Vary") if vary else None
            ex.add_response_header("Vary", _vary({"Vary": vary} if vary else {}, "Origin"))
        origin = ex.origin
        if origin is None or not policy.allows(origin):
            return
        ex.add_response_header("Access-Control-Allow-Origin", policy.allow_origin(origin))
        if policy.credentials:
            ex.add_response_header("Access-Control-Allow-Credentials", "true")
        if policy.expose:
            ex.add_response_header("Access-Control-Expose-Headers", policy.expose)
