"""The pipeline of one config: every route's chain, compiled once when the config loads.

A route's chain is the built-in policies that apply to it (each one's `bind` says; one that
does nothing there is left out and costs nothing), the top-level `policies:` and the route's
own, sorted by `order`. Aggregates are routes too, whose last step is `Aggregate`. A reload
compiles a new `Pipeline` with the new state; a config whose policies fail to build raises
`ConfigError` there and the running pipeline stays (gateway.reload).

`Pipeline.start(ex)` is what both servers call: the request id, a CORS preflight, the route
(400 for dot segments, 404, 405 with `Allow`), then the route's chain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from chassis import ConfigError, Problem

from ..config import GatewayConfig, PolicyRef, RouteAuth, RouteConfig
from ..routing import Route
from . import request_id
from .aggregate import Aggregate, compile_aggregate
from .auth import Auth
from .body_limits import BodyLimit
from .cache import CacheInvalidation
from .chain import Chain
from .cors import Cors, CorsHeaders
from .exchange import Exchange
from .forward import Forward
from .forwarding import Forwarding
from .policy import Policy, PolicyContext, overrides, problem_answer
from .rate_limit import RateLimit

__all__ = ["BUILTIN_POLICIES", "Pipeline"]

# The built-in behaviour, as policies, for proxied routes and for aggregates.
BUILTIN_POLICIES: tuple[type[Policy], ...] = (
    CorsHeaders,
    Auth,
    RateLimit,
    BodyLimit,
    CacheInvalidation,
    Forwarding,
)
log = logging.getLogger("portico.gateway.pipeline")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _has_dot_segment(path: str) -> bool:
    """True for '.' or '..' segments, encoded or not: never forwarded, never matched."""
    decoded = unquote(path) if "%" in path else path
    return any(seg in (".", "..") for seg in decoded.replace("\\", "/").split("/"))


def _instances(refs: Iterable[PolicyRef], context: PolicyContext) -> list[Policy]:
    policies = []
    for ref in refs:
        try:
            policy = ref.cls(ref.settings, context)
        except Exception as exc:
            raise ConfigError(f"policy {ref.use} could not be built: {exc}") from exc
        if ref.order != policy.order:
            policy.order = ref.order  # the entry's own `order:`
        policies.append(policy)
    return policies


def _aggregate_route(agg: Any) -> Route:
    cfg = RouteConfig(
        name=agg.name,
        methods=("GET", "HEAD"),
        path=agg.path,
        upstream="",
        rewrite=None,
        auth=RouteAuth(agg.auth.required, agg.auth.scopes),
        timeout=60.0,
        max_body_bytes=0,
        cors=agg.cors,
        policies=agg.policies,
        rate_limit=agg.rate_limit,
    )
    return Route.from_config(cfg)


class Pipeline:
    """Routes -> chains for one gateway state."""

    def __init__(self, config: GatewayConfig, context: PolicyContext) -> None:
        self.config = config
        self.context = context
        self.router = context.router
        built_in = [cls(None, context) for cls in BUILTIN_POLICIES]
        shared = _instances(config.policies, context)  # one instance for every route
        forward = Forward(None, context)
        self.chains: dict[str, Chain] = {}
        self.routes: dict[str, Route] = {}
        for route in self.router.routes:
            own = _instances(route.config.policies, context)
            self.chains[route.name] = self._chain(route, [*built_in, *shared, *own, forward])
            self.routes[route.name] = route
        self.aggregates: list[tuple[re.Pattern[str], Route]] = []
        # Each aggregate path's literal start: one `startswith` skips every aggregate's regex
        # for a request no aggregate can match (most of them).
        self._aggregate_prefixes: tuple[str, ...] = ()
        aggregate_steps: list[Aggregate] = []
        for agg in config.aggregates:
            route = _aggregate_route(agg)
            step = Aggregate(None, context)
            step.compiled = compile_aggregate(agg)
            aggregate_steps.append(step)
            own = _instances(agg.policies, context)
            policies = [p for p in built_in if not isinstance(p, Forwarding | BodyLimit)]
            self.chains[agg.name] = self._chain(route, [*policies, *shared, *own, step])
            self.routes[agg.name] = route
            pattern = "/".join(
                f"(?P<{m.group(1)}>[^/]+)" if (m := _PARAM.fullmatch(seg)) else re.escape(seg)
                for seg in agg.path.split("/")
            )
            self.aggregates.append((re.compile(f"^{pattern}\\Z"), route))
            literal = agg.path.split("{", 1)[0]
            self._aggregate_prefixes += (literal,)
        for step in aggregate_steps:
            step.chains = self.chains
        self.unrouted = Chain(())
        self.cors = Cors(config.cors, config.routes, config.aggregates)
        self._cors_on = self.cors.enabled

    @staticmethod
    def _chain(route: Route, policies: list[Policy]) -> Chain:
        bound: list[Policy] = []
        for policy in policies:
            try:
                one = policy.bind(route)
            except Exception as exc:
                problem = f"policy {policy.label} refused route {route.name}: {exc}"
                raise ConfigError(problem) from exc
            if one is not None:
                bound.append(one)
        return Chain(bound)

    def _started_policies(self) -> list[Policy]:
        """Every bound policy with its own `start` or `stop`, once."""
        seen: dict[int, Policy] = {}
        for chain in self.chains.values():
            for policy in chain.policies:
                if overrides(policy, "start") or overrides(policy, "stop"):
                    seen.setdefault(id(policy), policy)
        return list(seen.values())

    async def start_policies(self) -> None:
        """The policies' background work, before this pipeline serves."""
        for policy in self._started_policies():
            await policy.start()

    async def stop_policies(self) -> None:
        """Once this pipeline is retired; a policy that fails to stop is logged, not raised."""
        for policy in self._started_policies():
            try:
                await policy.stop()
            except Exception:
                log.exception("policy %s failed to stop", policy.label)

    def chain_for(self, name: str) -> Chain | None:
        return self.chains.get(name)

    def resolve(self, method: str, target: str, path: str) -> tuple[Route, dict[str, str] | None]:
        """The route: 400 for dot segments, 404, 405 with `Allow`."""
        raw = target.partition("?")[0]
        if ("/." in raw or "%" in raw or "\\" in raw) and _has_dot_segment(raw):
            raise Problem(400, "the path must not contain '.' or '..' segments")
        if (
            self._aggregate_prefixes
            and path.startswith(self._aggregate_prefixes)
            and method in ("GET", "HEAD")
        ):
            for regex, route in self.aggregates:
                m = regex.match(path)
                if m is not None:
                    return route, m.groupdict()
        found = self.router.match(raw)
        if found is None:
            raise Problem(404, "no route matches this path")
        entry, params = found
        route = entry.routes.get(method)
        if route is None:
            raise Problem(405, f"{method} is not allowed here", headers={"Allow": entry.allow})
        return route, params

    def start(self, ex: Exchange) -> None:
        """Answer `ex`: `ex.done(ex)` is called once with its answer (see `Chain`)."""
        if not ex.rid:  # first of all: every answer and access line carries it
            request_id.assign(ex)
        try:
            if (
                self._cors_on
                and ex.method == "OPTIONS"
                and ex.origin is not None
                and self._preflight(ex)
            ):
                return
            route, params = self.resolve(ex.method, ex.target, ex.path)
        except Problem as problem:
            self.answer(ex, problem)
            return
        ex.route = route
        ex.params = params
        if route.upstream:
            ex.fields = {"upstream": route.upstream}
        self.chains[route.name].start(ex)

    def answer(self, ex: Exchange, problem: Problem) -> None:
        """A problem answered before any route's chain (404, 405, a refused preflight)."""
        chain = self.unrouted
        ex.chain = chain
        chain._respond(ex, problem_answer(problem, ex))

    def _preflight(self, ex: Exchange) -> bool:
        asked = ex.header("Access-Control-Request-Method")
        if asked is None:
            return False
        name = self.cors.route_for(self.router, ex.path, asked)
        if name is None:
            return False
        route = self.routes.get(name)
        ex.route = route
        answer = self.cors.preflight(ex, name)
        if answer is None:
            return False
        chain = self.unrouted
        ex.chain = chain
        chain._respond(ex, answer)
        return True


def describe(pipeline: Pipeline) -> Callable[[str], list[Policy]]:
    """The policies bound to a route, by name (OpenAPI merges their documented answers)."""

    def policies(name: str) -> list[Policy]:
        chain = pipeline.chains.get(name)
        return list(chain.policies) if chain is not None else []

    return policies
