"""Stage 3: which instance of the route's upstream gets the request.

Round-robin over the instances currently believed healthy. Health comes from active checks
(`GET health.path` every `health.interval` seconds, 2xx = healthy); every instance starts
healthy so the gateway serves at once. Readiness (`/readyz`) probes each upstream now and is
ready when at least one instance answers. Balancing policies and circuit breakers slot in
here later without changing `pick()`'s callers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from .config import UpstreamConfig
from .transport import OutboundRequest, Transport, TransportError

__all__ = ["Instance", "NoReadyInstance", "Upstream", "UpstreamPool"]

log = logging.getLogger("portico.gateway.upstreams")

_PROBE_TIMEOUT = 2.0
_PROBE_HEADERS = {"Accept": "application/json"}


class NoReadyInstance(Exception):
    """No instance of an upstream answered its health check."""


class Instance:
    __slots__ = ("healthy", "origin")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.healthy = True


class Upstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.instances = tuple(Instance(url) for url in config.instances)
        self._next = 0
        self._probe_timeout = min(_PROBE_TIMEOUT, config.timeout, config.health.interval)

    def pick(self) -> Instance | None:
        """The next healthy instance in turn, or None when none is healthy."""
        instances = self.instances
        count = len(instances)
        start = self._next
        for i in range(count):
            instance = instances[(start + i) % count]
            if instance.healthy:
                self._next = (start + i + 1) % count
                return instance
        return None

    async def _probe_one(self, transport: Transport, instance: Instance) -> bool:
        request = OutboundRequest(
            pool=self.name,
            origin=instance.origin,
            method="GET",
            target=self.config.health.path,
            headers=_PROBE_HEADERS,
            timeout=self._probe_timeout,
        )
        try:
            response = await transport.send(request)
            try:
                await response.read()
            finally:
                response.close()
            ok = 200 <= response.status < 300
        except TransportError as exc:
            log.debug("health probe failed", extra={"upstream": self.name, "error": str(exc)})
            ok = False
        if ok != instance.healthy:
            log.warning(
                "upstream instance is healthy" if ok else "upstream instance is unhealthy",
                extra={"upstream": self.name, "instance": instance.origin},
            )
        instance.healthy = ok
        return ok

    async def probe(self, transport: Transport) -> bool:
        """Check every instance now, update their health; True when any is healthy."""
        results = await asyncio.gather(*(self._probe_one(transport, i) for i in self.instances))
        return any(results)

    async def ready(self, transport: Transport) -> None:
        if not await self.probe(transport):
            raise NoReadyInstance(f"no instance of {self.name} is ready")

    async def watch(self, transport: Transport) -> None:
        """Probe forever at the configured interval (a background task)."""
        while True:
            await asyncio.sleep(self.config.health.interval)
            await self.probe(transport)


class UpstreamPool:
    def __init__(self, configs: Mapping[str, UpstreamConfig]) -> None:
        self.upstreams = {name: Upstream(cfg) for name, cfg in configs.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self.upstreams[name]
