"""The read-only admin view: a separate listener that shows what the gateway is running.

`GET /admin/status` on `GATEWAY_ADMIN_HOST:GATEWAY_ADMIN_PORT` (127.0.0.1 by default; off when
no token is set) answers the loaded config's version, each route's policy chain, every
upstream instance with its health and breaker state, the rate-limit policies and each policy's
own statistics (`Policy.stats()`: the cache's entries, a split's sides). It needs
`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`, compared in constant time, and changes nothing:
every other method is 405. `python -m gateway status` prints it.

It is a listener of its own, not a route of the public one, so that a firewall, a Kubernetes
port or nginx never exposes it by accident (Kong's Admin API and Envoy's admin port are
separate listeners for the same reason).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chassis import Problem
from chassis.aiohttp import problem_response
from chassis.settings import secret

from .reload import GatewayState, Reloader, StateHolder

__all__ = [
    "ADMIN_PATH",
    "AdminListener",
    "AdminSettings",
    "StatusError",
    "admin_app",
    "fetch_status",
    "render_status",
    "snapshot",
]

ADMIN_PATH = "/admin/status"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0..65535"


@dataclass(frozen=True)
class AdminSettings:
    """`GATEWAY_ADMIN_HOST`, `GATEWAY_ADMIN_PORT` (0: a free one), `GATEWAY_ADMIN_TOKEN`
    (or `GATEWAY_ADMIN_TOKEN_FILE`; unset: no admin listener)."""

    admin_host: str = "127.0.0.1"
    admin_port: int = field(default=8081, metadata={"check": _port})
    admin_token: str = secret(default="")

    @property
    def enabled(self) -> bool:
        return bool(self.admin_token)


def config_version(state: GatewayState) -> str:
    """A digest of the loaded config: equal configs, equal versions, on every replica."""
    return hashlib.sha256(repr(state.config).encode()).hexdigest()[:16]


def _instances(upstream: Any, now: float) -> list[dict[str, Any]]:
    return [
        {
            "origin": i.origin,
            "weight": i.weight,
            "healthy": i.healthy,
            "ejected": i.ejected_until > now,
            "breaker": i.breaker.state if i.breaker is not None else None,
            "in_flight": i.active,
        }
        for i in upstream.instances
    ]


def snapshot(holder: StateHolder, reloader: Reloader) -> dict[str, Any]:
    """Everything the admin view shows, from the state serving now (read, never changed)."""
    state = holder.state
    now = time.monotonic()
    pipeline = state.pipeline
    routes = []
    stats: dict[str, dict[str, Any]] = {}
    for name, chain in pipeline.chains.items():
        cfg = pipeline.routes[name].config
        routes.append(
            {
                "name": name,
                "methods": list(cfg.methods),
                "path": cfg.path,
                "upstream": cfg.upstream,
                "rate_limit": cfg.rate_limit,
                "chain": [p.label for p in chain.policies],
            }
        )
        for policy in chain.policies:
            found = policy.stats()
            if found is not None:
                stats.setdefault(name, {})[policy.label] = found
    limits = state.config.rate_limits
    return {
        "config": {
            "version": config_version(state),
            "generation": state.generation,
            "path": str(reloader.path) if reloader.path is not None else None,
            "reloads": reloader.reloads,
            "rejected_reloads": reloader.rejected,
        },
        "routes": routes,
        "aggregates": [
            {"name": a.name, "path": a.path, "parts": [p.name for p in a.parts]}
            for a in state.config.aggregates
        ],
        "upstreams": {
            name: {"balancing": u.config.balancing, "instances": _instances(u, now)}
            for name, u in state.upstreams.upstreams.items()
        },
        "rate_limits": {
            "backend": "redis" if state.limiter.remote is not None else "local",
            "redis_up": None if state.limiter.remote is None else state.limiter.quiet,
            "policies": {
                name: {
                    "limit": p.quota.limit,
                    "period": p.quota.period,
                    "burst": p.quota.burst,
                    "on_redis_error": p.on_redis_error,
                    "classes": sorted(p.classes),
                }
                for name, p in limits.policies.items()
            },
        },
        "policy_stats": stats,
    }


def admin_app(holder: StateHolder, reloader: Reloader, token: str) -> web.Application:
    """The admin listener's application: one read-only resource behind a bearer token."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            problem = Problem(401, "the admin view needs its bearer token")
            response = problem_response(problem, request.path)
            response.headers["WWW-Authenticate"] = 'Bearer realm="portico-admin"'
            return response
        if request.method not in ("GET", "HEAD"):
            return problem_response(Problem(405, "the admin view is read-only"), request.path)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return problem_response(Problem(404, "no such admin resource"), request.path)

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(snapshot(holder, reloader))

    app = web.Application(middlewares=[guard], client_max_size=1024)
    app.router.add_route("*", ADMIN_PATH, status)
    return app


class AdminListener:
    """The admin application on its own listener, started and stopped with the gateway."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound port when 0 was asked for
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.runner.cleanup()


# --- `python -m gateway status` -----------------------------------------------------------


class StatusError(RuntimeError):
    """The admin view could not be read; the message says why."""


def fetch_status(settings: AdminSettings, timeout: float = 5.0) -> dict[str, Any]:
    """GET the admin view of the gateway these settings describe (the same variables)."""
    if not settings.enabled:
        raise StatusError("GATEWAY_ADMIN_TOKEN (or GATEWAY_ADMIN_TOKEN_FILE) is not set")
    host = "127.0.0.1" if settings.admin_host in ("", "0.0.0.0") else settings.admin_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{settings.admin_port}{ADMIN_PATH}"
    bearer = {"Authorization": f"Bearer {settings.admin_token}"}
    request = urllib.request.Request(url, headers=bearer)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            document: dict[str, Any] = json.loads(resp.read())
            return document
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StatusError(f"{url}: {exc}") from exc


def render_status(doc: dict[str, Any]) -> str:
    """The admin view as an operator reads it in a terminal."""
    cfg = doc["config"]
    lines = [
        f"config {cfg['version']} (generation {cfg['generation']}, {cfg['reloads']} reloads, "
        f"{cfg['rejected_reloads']} rejected) from {cfg['path']}",
        "",
        "routes:",
    ]
    for route in doc["routes"]:
        methods = ",".join(route["methods"])
        lines.append(f"  {route['name']:<24} {methods:<16} {route['path']} -> {route['upstream']}")
        lines.append(f"  {'':<24} chain: {' > '.join(route['chain'])}")
    lines += ["", "upstreams:"]
    for name, upstream in doc["upstreams"].items():
        lines.append(f"  {name} ({upstream['balancing']})")
        for inst in upstream["instances"]:
            state = "healthy" if inst["healthy"] and not inst["ejected"] else "OUT"
            breaker = inst["breaker"] or "-"
            lines.append(
                f"    {inst['origin']:<40} {state:<8} breaker {breaker:<10} "
                f"in flight {inst['in_flight']}"
            )
    limits = doc["rate_limits"]
    redis = {None: "", True: ", Redis up", False: ", Redis DOWN"}[limits["redis_up"]]
    lines += ["", f"rate limits ({limits['backend']}{redis}):"]
    for name, p in limits["policies"].items():
        lines.append(f"  {name:<16} {p['limit']}/{p['period']}s burst {p['burst']}")
    if doc["policy_stats"]:
        lines += ["", "policy statistics:"]
        for route, policies in doc["policy_stats"].items():
            for policy, stats in policies.items():
                shown = ", ".join(f"{k}={v}" for k, v in stats.items())
                lines.append(f"  {route:<24} {policy}: {shown}")
    return "\n".join(lines)
