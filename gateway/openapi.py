"""`/openapi.json`: the public API as one document, merged from the upstream services' specs.

Each upstream's `/openapi.json` is fetched lazily (first request), with a timeout, and cached.
Only operations the gateway actually routes to that upstream are kept, so the document shows
what a client can reach through the gateway. A service that cannot be fetched is left out and
logged, and is tried again on a later request (at most once per `retry_interval`).
Routes with a `rewrite` are not mapped back from the upstream's paths yet: they are left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from .config import METHODS
from .routing import Router
from .transport import OutboundRequest, Transport, TransportError
from .upstreams import UpstreamPool

__all__ = ["OpenApiMerger"]

log = logging.getLogger("portico.gateway.openapi")

_OWN_PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Liveness of the gateway", "tags": ["gateway"]}},
    "/readyz": {
        "get": {"summary": "Readiness: every upstream and the JWKS reachable", "tags": ["gateway"]}
    },
    "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["gateway"]}},
    "/openapi.json": {"get": {"summary": "This document", "tags": ["gateway"]}},
}
for _item in _OWN_PATHS.values():
    _item["get"]["responses"] = {"200": {"description": "OK"}}
_OPERATIONS = frozenset(m.lower() for m in METHODS) | {"trace"}


class OpenApiMerger:
    def __init__(
        self,
        router: Router,
        upstreams: UpstreamPool,
        transport: Transport,
        *,
        timeout: float = 3.0,
        retry_interval: float = 30.0,
    ) -> None:
        self._router = router
        self._upstreams = upstreams
        self._transport = transport
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._specs: dict[str, dict[str, Any]] = {}
        self._failed_at: dict[str, float] = {}
        self._document: bytes | None = None
        self._lock = asyncio.Lock()
        # Only upstreams that some route reaches can contribute anything.
        self._names = sorted({r.upstream for r in router.routes})

    async def document(self) -> bytes:
        """The merged document as JSON bytes (cached until a missing service turns up)."""
        if self._document is not None and len(self._specs) == len(self._names):
            return self._document
        async with self._lock:
            now = time.monotonic()
            due = [
                n
                for n in self._names
                if n not in self._specs
                and now - self._failed_at.get(n, float("-inf")) >= self._retry_interval
            ]
            if due or self._document is None:
                results = await asyncio.gather(*(self._fetch(n) for n in due))
                for name, spec in zip(due, results, strict=True):
                    if spec is None:
                        self._failed_at[name] = now
                    else:
                        self._specs[name] = spec
                self._document = orjson.dumps(self._merge())
            return self._document

    async def _fetch(self, name: str) -> dict[str, Any] | None:
        for instance in self._upstreams[name].instances:
            request = OutboundRequest(
                pool=name,
                origin=instance.origin,
                method="GET",
                target="/openapi.json",
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
            try:
                response = await self._transport.send(request)
                try:
                    body = await response.read()
                finally:
                    response.close()
                if response.status != 200:
                    raise TransportError(f"answered {response.status}")
                spec = orjson.loads(body)
                if isinstance(spec, dict) and isinstance(spec.get("paths"), dict):
                    return spec
                raise TransportError("not an OpenAPI document")
            except (TransportError, orjson.JSONDecodeError) as exc:
                log.warning(
                    "cannot fetch an upstream's OpenAPI document; it is left out",
                    extra={"upstream": name, "instance": instance.origin, "error": str(exc)},
                )
        return None

    def _routed(self, name: str, path: str, method: str) -> bool:
        found = self._router.match(path)  # '{param}' segments match template segments
        if found is None:
            return False
        route = found[0].routes.get(method.upper())
        return route is not None and route.upstream == name and route.rewrite is None

    def _merge(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "openapi": "3.0.3",
            "info": {"title": "Portico API", "version": "1"},
            "paths": {k: dict(v) for k, v in _OWN_PATHS.items()},
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
        }
        components: dict[str, dict[str, Any]] = doc["components"]
        for name in self._names:
            spec = self._specs.get(name)
            if spec is None:
                continue
            for path, item in spec["paths"].items():
                if not isinstance(item, dict):
                    continue
                kept = {
                    key: value
                    for key, value in item.items()
                    if key in _OPERATIONS and self._routed(name, path, key)
                }
                if not kept:
                    continue
                kept.update({k: v for k, v in item.items() if k not in _OPERATIONS})
                doc["paths"].setdefault(path, {}).update(kept)
            for section, entries in (spec.get("components") or {}).items():
                if not isinstance(entries, dict):
                    continue
                target = components.setdefault(section, {})
                for key, value in entries.items():
                    if key in target and target[key] != value:
                        log.warning(
                            "OpenAPI component defined differently by two services; first kept",
                            extra={"upstream": name, "component": f"{section}/{key}"},
                        )
                        continue
                    target[key] = value
        return doc
