"""The boundaries the system has, derived at run time from the system itself - never a
hand-kept list - so a new route, aggregate part, outbound call or event without a contract
shows up as `missing` in the matrix and fails the run.

- gateway -> service: every route of `gateway.config.load_config()` and each of its methods
  (`route:products.update PUT`), and every part of every aggregate, counted on the upstream
  of the GET route the part's path resolves to (`aggregate:orders.details.payment`).
- orders -> service: `services.orders.adapters.upstreams.OUTBOUND` (operation -> provider),
  its token request to identity included (`call:token`); and over gRPC (kind `grpc`),
  `services.orders.adapters.inventory_grpc.OUTBOUND_GRPC` (method -> provider,
  `grpc:Reserve`); views -> service the same from `services.views.adapters.feed.OUTBOUND`
  (orders' history feed, views' token).
- verifier -> identity: the gateway and every service that verifies tokens against the
  JWKS it fetches over HTTP (`jwks`).
- gateway -> identity: the API-key feed and the key-for-token exchange
  (`gateway.apikeys.IDENTITY_CALLS`: `api-keys`, `api-keys:token`; ADR 0036).
- consumer <- publisher (messages): each service's `BINDINGS` (in its `domain` package)
  matched, with topic-exchange rules, against each service's `PUBLISHES`.

An interaction covers an item when it carries the item's label in its `boundary` comment
(the consumer tests compute the label from the same sources, e.g. the gateway's router).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Boundary", "derive", "topic_matches"]


@dataclass
class Boundary:
    consumer: str
    provider: str
    kind: str  # "http" | "message" | "grpc"
    items: list[str] = field(default_factory=list)  # labels an interaction must carry

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.consumer, self.provider, self.kind)


def topic_matches(binding: str, key: str) -> bool:
    """AMQP topic rules: `*` is one word, `#` zero or more."""
    pattern = "^" + re.escape(binding).replace(r"\*", r"[^.]+").replace(r"\#", r".*") + "$"
    return re.match(pattern, key) is not None


def route_items(config: Any) -> Iterator[tuple[str, str]]:
    """(upstream, label) for every route and each of its methods."""
    for route in config.routes:
        for method in route.methods:
            yield route.upstream, f"route:{route.name} {method}"


def aggregate_items(config: Any) -> Iterator[tuple[str, str]]:
    """(upstream, label) for every aggregate part: the part's path, its expressions replaced
    by sample values, resolved by the gateway's own router to the GET route the part calls
    (as `gateway.pipeline.aggregate` does per request and the config check at load)."""
    from gateway.config.expressions import parse_template
    from gateway.routing import Router

    router = Router(config.routes)
    for agg in config.aggregates:
        for part in agg.parts:
            found = router.match(parse_template(part.path).sample())
            route = found[0].routes.get("GET") if found is not None else None
            if route is None:  # the config check refuses this at load; never silently skipped
                raise ValueError(f"aggregate {agg.name}: part {part.name} matches no GET route")
            yield route.upstream, f"aggregate:{agg.name}.{part.name}"


def gateway_boundaries(config: Any = None) -> list[Boundary]:
    from gateway.config import load_config

    config = load_config() if config is None else config
    by_provider: dict[str, Boundary] = {}
    for upstream, item in (*route_items(config), *aggregate_items(config)):
        b = by_provider.setdefault(upstream, Boundary("gateway", upstream, "http"))
        b.items.append(item)
    return list(by_provider.values())


def orders_boundaries() -> list[Boundary]:
    from services.orders.adapters.inventory_grpc import OUTBOUND_GRPC
    from services.orders.adapters.upstreams import OUTBOUND

    return _outbound("orders", {"http": OUTBOUND, "grpc": OUTBOUND_GRPC})


def views_boundaries() -> list[Boundary]:
    from services.views.adapters.feed import OUTBOUND

    return _outbound("views", {"http": OUTBOUND})


_PREFIX = {"http": "call", "grpc": "grpc"}


def _outbound(consumer: str, calls: dict[str, dict[str, str]]) -> list[Boundary]:
    """One boundary per provider and kind: `call:<operation>` (HTTP), `grpc:<Method>`."""
    by_provider: dict[tuple[str, str], Boundary] = {}
    for kind, outbound in calls.items():
        for operation, provider in outbound.items():
            b = by_provider.setdefault((provider, kind), Boundary(consumer, provider, kind))
            b.items.append(f"{_PREFIX[kind]}:{operation}")
    return list(by_provider.values())


def _service_constant(service: str, name: str) -> tuple[str, ...]:
    found: list[str] = []
    modules = ("domain", "domain.model", "adapters.events")
    for module in (f"services.{service}.{m}" for m in modules):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        found.extend(getattr(mod, name, ()))
    return tuple(dict.fromkeys(found))


def services() -> list[str]:
    import services as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def message_boundaries() -> list[Boundary]:
    names = services()
    published = {s: _service_constant(s, "PUBLISHES") for s in names}
    out: list[Boundary] = []
    for consumer in names:
        bindings = _service_constant(consumer, "BINDINGS")
        for provider, types in published.items():
            wanted = [t for t in types if any(topic_matches(b, t) for b in bindings)]
            if wanted:
                out.append(Boundary(consumer, provider, "message", [f"event:{t}" for t in wanted]))
    return out


ISSUER = "identity"  # signs every access token and serves the JWKS the verifiers fetch
JWKS = "jwks"


def jwks_consumers() -> list[str]:
    """Who fetches the issuer's JWKS over HTTP to verify tokens: the gateway
    (`gateway.auth.make_verifier`) and every service whose app builds its verifier from the
    shared `chassis.TokenSettings`; identity verifies against its own key store."""
    found = ["gateway"]
    for name in services():
        if name == ISSUER:
            continue
        try:
            app = importlib.import_module(f"services.{name}.app")
        except ModuleNotFoundError:
            continue
        if hasattr(app, "TokenSettings"):
            found.append(name)
    return found


def jwks_boundaries() -> list[Boundary]:
    return [Boundary(c, ISSUER, "http", [JWKS]) for c in jwks_consumers()]


API_KEYS, API_KEYS_TOKEN = "api-keys", "api-keys:token"


def api_key_boundaries() -> list[Boundary]:
    """The gateway's own calls to identity for API keys."""
    from gateway.apikeys import IDENTITY_CALLS

    return [Boundary("gateway", ISSUER, "http", list(IDENTITY_CALLS))]


def derive(gateway_config: Any = None) -> list[Boundary]:
    """Every boundary, merged per (consumer, provider, kind); `gateway_config` defaults to
    `gateway.config.load_config()`."""
    merged: dict[tuple[str, str, str], Boundary] = {}
    for b in (
        *gateway_boundaries(gateway_config),
        *orders_boundaries(),
        *views_boundaries(),
        *jwks_boundaries(),
        *api_key_boundaries(),
        *message_boundaries(),
    ):
        have = merged.setdefault(b.key, Boundary(*b.key))
        have.items.extend(i for i in b.items if i not in have.items)
    return list(merged.values())
