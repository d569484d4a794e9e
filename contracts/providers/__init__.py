"""Provider hooks: each module `contracts.providers.<service>` builds its service's app with the
real engine (SQLite in a temporary directory) and names the provider states it can set, each
through the service's own use cases and repositories (no SQL here).

A module exposes `start(ctx: Context) -> Provider`. Message providers also map each event
type they publish to a function producing the message with the service's real event code.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..harness import Backend, LoopThread

__all__ = ["Context", "Message", "Provider", "UnknownProvider", "load"]

# (body bytes, metadata) of one message as the provider would publish it
Message = tuple[bytes, dict[str, Any]]

CONTRACT_USER = "contract-user"  # the `sub` of the tokens the front sends


class UnknownProvider(Exception):
    """No service of that name has a provider hook."""


@dataclass
class Context:
    workdir: Path
    loop: LoopThread
    issuer: Any  # tests.support.tokens.TestIssuer
    aliases: dict[str, str] = field(default_factory=dict)
    bearer: dict[str, str] = field(default_factory=dict)  # {"token": ...} set by a state

    def alias(self, name: str, real: str) -> None:
        """A state made something whose id the provider chose: `name` in a path means it."""
        self.aliases[name] = real


@dataclass
class Provider:
    name: str
    backend: Backend | None
    states: Mapping[str, Callable[..., None]] = field(default_factory=dict)
    events: Mapping[str, Callable[[], Message]] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def load(name: str) -> ModuleType:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UnknownProvider(f"no provider named {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise UnknownProvider(
                f"no provider named {name!r} (no contracts.providers.{name})"
            ) from None
        raise


def relay_capture(engine: Any, table: Any) -> list[Message]:
    """Run the chassis outbox relay once over `table`, capturing what it would publish."""
    from chassis.messaging import BrokerSettings, OutboxRelay

    captured: list[Message] = []

    class _Producer:
        def publish(self, body: bytes, **kw: Any) -> None:
            meta = {"routing_key": kw.get("routing_key"), "contentType": kw.get("content_type")}
            captured.append((body, meta))

    relay = OutboxRelay(engine, table, BrokerSettings())
    relay._producer = lambda: _Producer()  # type: ignore[method-assign,assignment,return-value]
    relay.run_once()
    return captured
