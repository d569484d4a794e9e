"""The boundaries the system has, derived at run time from the system itself - never a
hand-kept list - so a new route, aggregate part, outbound call or event without a contract
shows up as `missing` in the matrix and fails the run.

- gateway -> service: every route of `gateway.config.load_config()` (one item per route)
  and every part of every aggregate, when the config has `aggregates`.
- orders -> service: `services.orders.adapters.upstreams.OUTBOUND` (operation -> provider).
- consumer <- publisher (messages): each service's `BINDINGS` (in its `domain` package)
  matched, with topic-exchange rules, against each service's `PUBLISHES`.

An interaction covers an item when it carries the item's label in its `boundary` comment
(the consumer tests compute the label from the same sources, e.g. the gateway's router).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Boundary", "derive", "topic_matches"]


@dataclass
class Boundary:
    consumer: str
    provider: str
    kind: str  # "http" | "message"
    items: list[str] = field(default_factory=list)  # labels an interaction must carry

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.consumer, self.provider, self.kind)


def topic_matches(binding: str, key: str) -> bool:
    """AMQP topic rules: `*` is one word, `#` zero or more."""
    pattern = "^" + re.escape(binding).replace(r"\*", r"[^.]+").replace(r"\#", r".*") + "$"
    return re.match(pattern, key) is not None


def _aggregate_parts(config: Any) -> Iterable[tuple[str, str, str]]:
    """(aggregate, part, upstream) for each part; tolerant of the section's exact shape."""
    aggregates = getattr(config, "aggregates", None) or ()
    items = aggregates.items() if hasattr(aggregates, "items") else enumerate(aggregates)
    for key, agg in items:
        name = getattr(agg, "name", None) or str(key)
        parts = getattr(agg, "parts", None) or getattr(agg, "calls", None) or ()
        entries = parts.items() if hasattr(parts, "items") else enumerate(parts)
        for pkey, part in entries:
            upstream = getattr(part, "upstream", None)
            if upstream:
                yield name, str(getattr(part, "name", None) or pkey), str(upstream)


def gateway_boundaries() -> list[Boundary]:
    from gateway.config import load_config

    config = load_config()
    by_provider: dict[str, Boundary] = {}
    for route in config.routes:
        b = by_provider.setdefault(route.upstream, Boundary("gateway", route.upstream, "http"))
        b.items.append(f"route:{route.name}")
    for agg, part, upstream in _aggregate_parts(config):
        b = by_provider.setdefault(upstream, Boundary("gateway", upstream, "http"))
        b.items.append(f"aggregate:{agg}.{part}")
    return list(by_provider.values())


def orders_boundaries() -> list[Boundary]:
    from services.orders.adapters.upstreams import OUTBOUND

    by_provider: dict[str, Boundary] = {}
    for operation, provider in OUTBOUND.items():
        b = by_provider.setdefault(provider, Boundary("orders", provider, "http"))
        b.items.append(f"call:{operation}")
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


def derive() -> list[Boundary]:
    return [*gateway_boundaries(), *orders_boundaries(), *message_boundaries()]
