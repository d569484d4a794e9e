"""`/openapi.json` and `/docs`: the public API as one document, merged from the services' specs.

Each upstream's `/openapi.json` is fetched lazily (first request), with a timeout, and cached.
A service operation is kept only when a gateway route reaches it, and it is listed under the
path a client uses: a route's `rewrite` (template or `/prefix/*`) is mapped back, and the
router must send that public path and method to that very route (no shadowed operations).
Every kept operation gets the route's security (OAuth2, the route's scopes) and the answers
the gateway itself may give, listed once here instead of in every service: 401/403 with
`WWW-Authenticate` on secured routes, 429 with `Retry-After` on rate-limited ones, 408 on
operations with a body, and on every route 400 (unparsable request), 404 (no route), 413,
414, 431 and 502/503/504 when the upstream fails. A status the service documents keeps the
service's description. The gateway's components are prefixed `Gateway`; component names that
two services define differently are prefixed with the service name (`CatalogProblem`) and
their `$ref`s rewritten. Every service path comes from its service's document (identity's
OAuth endpoints and users too); only `/healthz`, `/readyz` and the aggregates are written here.
A service that cannot be fetched is left out and logged, and is
tried again on a later request (at most once per `retry_interval`).

`/docs` is Swagger UI from the `swagger-ui-py` package's static files (no CDN).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from chassis import PROBLEM_JSON

from .config import GatewayConfig
from .routing import Route, Router
from .transport import OutboundRequest, Transport, TransportError
from .upstreams import UpstreamPool

__all__ = ["OpenApiMerger", "add_docs_routes", "public_path"]

log = logging.getLogger("portico.gateway.openapi")

_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"{([^{}/]+)}")
_PROBLEM_REF = {"$ref": "#/components/schemas/GatewayProblem"}
_SCHEME = "oauth2"

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, as every error is returned",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "correlation_id": {"type": "string"},
    },
    "additionalProperties": True,
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


_STRING = {"schema": {"type": "string"}}
_GATEWAY_RESPONSES: dict[str, Any] = {
    "Unauthorized": _problem(
        "No valid access token (RFC 6750 challenge in WWW-Authenticate)",
        {"WWW-Authenticate": {**_STRING, "description": 'Bearer error="invalid_token", ...'}},
    ),
    "Forbidden": _problem(
        "The token lacks a scope this operation needs",
        {"WWW-Authenticate": {**_STRING, "description": 'Bearer error="insufficient_scope"'}},
    ),
    "TooManyRequests": _problem(
        "Rate limit exceeded",
        {
            "Retry-After": {**_STRING, "description": "seconds to wait"},
            "RateLimit-Policy": _STRING,
            "RateLimit": _STRING,
        },
    ),
    "NotFound": _problem(
        "No route matches the path (a path parameter the router cannot place), or a "
        "required part of an aggregate was not found"
    ),
    "BadGateway": _problem("The upstream service failed"),
    "ServiceUnavailable": _problem(
        "No healthy upstream instance, or rate limiting unavailable",
        {"Retry-After": _STRING},
    ),
    "GatewayTimeout": _problem("The upstream service did not answer in time"),
    "BadRequest": _problem(
        "The gateway could not parse the request: malformed HTTP, '.' or '..' path "
        "segments, repeated Authorization or Host fields"
    ),
    "RequestTimeout": _problem("The announced body did not arrive in time"),
    "ContentTooLarge": _problem("The body exceeds the gateway's limit"),
    "UriTooLong": _problem("The request target is too long"),
    "HeaderFieldsTooLarge": _problem("A header field, or all of them, are too large"),
}

# What the gateway itself may answer on every routed operation, before or instead of the
# service (a service's own documentation of a status wins): listed once here, so that no
# service spells them.
_ON_EVERY_ROUTE = (
    ("400", "BadRequest"),
    ("404", "NotFound"),
    ("413", "ContentTooLarge"),
    ("414", "UriTooLong"),
    ("431", "HeaderFieldsTooLarge"),
    ("502", "BadGateway"),
    ("503", "ServiceUnavailable"),
    ("504", "GatewayTimeout"),
)


def _ref(name: str) -> dict[str, str]:
    """The gateway's own response components are prefixed: a service may define its own
    `Unauthorized` or `ContentTooLarge`, and neither must replace the other."""
    return {"$ref": f"#/components/responses/Gateway{name}"}


def _normal(path: str) -> str:
    return _PARAM.sub("{}", path)


def public_path(route: Route, upstream_path: str) -> str | None:
    """The path a client uses for `upstream_path` on `route`'s upstream; None if it does not
    map. Parameter names are the service's, so its parameter documentation still applies."""
    cfg = route.config
    if route.prefix_len:  # '/p/*', rewritten to '/q/*' or not
        upstream_prefix = cfg.rewrite[:-1] if cfg.rewrite else cfg.path[:-1]
        if not upstream_path.startswith(upstream_prefix):
            return None
        return cfg.path[:-1] + upstream_path[len(upstream_prefix) :]
    if cfg.rewrite is None:
        return upstream_path if _normal(upstream_path) == _normal(cfg.path) else None
    if _normal(upstream_path) != _normal(cfg.rewrite):
        return None
    renamed = dict(zip(_PARAM.findall(cfg.rewrite), _PARAM.findall(upstream_path), strict=True))
    return _PARAM.sub(lambda m: "{" + renamed.get(m.group(1), m.group(1)) + "}", cfg.path)


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value in renames:
                out[key] = renames[value]
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _health_path(summary: str, ready: bool) -> dict[str, Any]:
    body = {"type": "object", "additionalProperties": True}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": body}}}
    }
    if ready:
        responses["503"] = {
            "description": "Not ready: the failing checks are named",
            "content": {"application/json": {"schema": body}},
        }
    return {
        "get": {"tags": ["gateway"], "summary": summary, "security": [], "responses": responses}
    }


class OpenApiMerger:
    def __init__(
        self,
        router: Router,
        upstreams: UpstreamPool,
        transport: Transport,
        *,
        config: GatewayConfig | None = None,
        timeout: float = 3.0,
        retry_interval: float = 30.0,
        policies: Callable[[str], list[Any]] | None = None,
    ) -> None:
        self._router = router
        self._upstreams = upstreams
        self._transport = transport
        self._config = config
        self._policies = policies  # a route's bound policies: their documented answers
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
                self._document = orjson.dumps(self.merge(self._specs))
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

    # --- merging (pure: unit-tested with specs given directly) --------------------------------

    def _route_for(self, name: str, path: str, method: str) -> tuple[Route, str] | None:
        """The route that serves `method path` of upstream `name`, with the public path."""
        for route in self._router.routes:
            if route.upstream != name or method.upper() not in route.config.methods:
                continue
            public = public_path(route, path)
            if public is None:
                continue
            found = self._router.match(public)  # '{param}' segments match template segments
            if found is not None and found[0].routes.get(method.upper()) is route:
                return route, public
        return None

    def _operation(self, op: dict[str, Any], route: Route, service: str) -> dict[str, Any]:
        op = dict(op)
        op.setdefault("tags", [service])
        responses = dict(op.get("responses") or {})
        if route.auth_required:
            op["security"] = [{_SCHEME: list(route.scope_list)}]
            responses.setdefault("401", _ref("Unauthorized"))
            responses.setdefault("403", _ref("Forbidden"))
        else:
            op["security"] = []
        if route.config.rate_limit is not None:
            responses.setdefault("429", _ref("TooManyRequests"))
        if route.config.cors:
            responses.setdefault("403", _ref("Forbidden"))
        if "requestBody" in op:
            responses.setdefault("408", _ref("RequestTimeout"))
        for status, name in _ON_EVERY_ROUTE:
            responses.setdefault(status, _ref(name))
        edits = []
        for policy in self._policies(route.name) if self._policies is not None else ():
            for status, documented in policy.responses.items():
                responses.setdefault(str(status), copy.deepcopy(dict(documented)))
            edit = getattr(policy, "document_operation", None)  # e.g. deprecation's
            if edit is not None:
                edits.append(edit)
        op["responses"] = dict(sorted(responses.items()))
        for edit in edits:
            edit(op)
        return op

    def _security_scheme(self) -> dict[str, Any]:
        scopes = sorted({s for r in self._router.routes for s in r.scope_list})
        issuer = (self._config.auth.issuer if self._config else "").rstrip("/")
        described = {s: f"the {s} scope" for s in scopes}
        return {
            "type": "oauth2",
            "description": "RFC 9068 JWT access tokens; authorization code requires PKCE (S256)",
            "flows": {
                "clientCredentials": {"tokenUrl": f"{issuer}/oauth/token", "scopes": described},
                "authorizationCode": {
                    "authorizationUrl": f"{issuer}/oauth/authorize",
                    "tokenUrl": f"{issuer}/oauth/token",
                    "refreshUrl": f"{issuer}/oauth/token",
                    "scopes": described,
                },
            },
        }

    def _aggregates(self, paths: dict[str, Any]) -> None:
        """Aggregated endpoints from the config's `aggregates` section, when there is one."""
        for agg in getattr(self._config, "aggregates", None) or ():
            path = getattr(agg, "path", None)
            if not isinstance(path, str):
                continue
            auth = getattr(agg, "auth", None)
            scopes = list(getattr(auth, "scopes", ()) or ())
            required = getattr(auth, "required", True)
            params = [
                {"in": "path", "name": p, "required": True, "schema": {"type": "string"}}
                for p in _PARAM.findall(path)
            ]
            responses: dict[str, Any] = {
                "200": {
                    "description": "Every part's result by name; failed optional parts are "
                    "null and listed in `errors` (the response is then marked partial)",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": True}
                        }
                    },
                },
                "401": _ref("Unauthorized"),
                "403": _ref("Forbidden"),
                "404": _ref("NotFound"),
                "429": _ref("TooManyRequests"),
                "502": _ref("BadGateway"),
                "503": _ref("ServiceUnavailable"),
                "504": _ref("GatewayTimeout"),
            }
            paths[path] = {
                "get": {
                    "tags": ["aggregates"],
                    "summary": f"Aggregate {getattr(agg, 'name', path)}",
                    "operationId": f"aggregate_{getattr(agg, 'name', path)}".replace(".", "_"),
                    "parameters": params,
                    "security": [{_SCHEME: scopes}] if required else [],
                    "responses": responses,
                }
            }

    def _renames(self, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
        """Per service: `$ref` -> new `$ref` for components two services define differently."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for service, spec in specs.items():
            for section, entries in (spec.get("components") or {}).items():
                if section == "securitySchemes" or not isinstance(entries, dict):
                    continue
                for key, value in entries.items():
                    seen.setdefault((section, key), {})[service] = value
        renames: dict[str, dict[str, str]] = {s: {} for s in specs}
        for (section, key), by_service in seen.items():
            values = list(by_service.values())
            if all(v == values[0] for v in values[1:]):
                continue
            for service in by_service:
                renames[service][f"#/components/{section}/{key}"] = (
                    f"#/components/{section}/{service.capitalize()}{key}"
                )
        return renames

    def merge(self, specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        specs = {n: specs[n] for n in sorted(specs)}
        paths: dict[str, Any] = {
            "/healthz": _health_path("Liveness of the gateway", ready=False),
            "/readyz": _health_path("Readiness: upstreams and the JWKS reachable", ready=True),
        }
        components: dict[str, dict[str, Any]] = {
            "schemas": {"GatewayProblem": _PROBLEM_SCHEMA},
            "responses": {f"Gateway{k}": copy.deepcopy(v) for k, v in _GATEWAY_RESPONSES.items()},
            "securitySchemes": {_SCHEME: self._security_scheme()},
        }
        operation_ids: set[str] = set()
        renames = self._renames(specs)
        for service, spec in specs.items():
            spec = _rewrite_refs(spec, renames[service])
            for path, item in spec["paths"].items():
                if not isinstance(item, dict):
                    continue
                for method in _OPERATIONS:
                    op = item.get(method)
                    if not isinstance(op, dict):
                        continue
                    found = self._route_for(service, path, method)
                    if found is None:
                        continue
                    route, public = found
                    op = self._operation(op, route, service)
                    op_id = op.get("operationId")
                    if isinstance(op_id, str):  # unique across services, as OpenAPI wants
                        unique, n = op_id, 1
                        while unique in operation_ids:
                            n += 1
                            unique = f"{service}_{op_id}" + (f"_{n}" if n > 2 else "")
                        op["operationId"] = unique
                        operation_ids.add(unique)
                    target = paths.setdefault(public, {})
                    for key, value in item.items():  # path-level parameters, summary
                        if key not in _OPERATIONS:
                            target.setdefault(key, value)
                    target[method] = op
            for section, entries in (spec.get("components") or {}).items():
                if section == "securitySchemes" or not isinstance(entries, dict):
                    continue
                target = components.setdefault(section, {})
                for key, value in entries.items():
                    ref = renames[service].get(f"#/components/{section}/{key}")
                    target[ref.rsplit("/", 1)[1] if ref else key] = value
        self._aggregates(paths)
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "Portico API",
                "version": "1",
                "description": "The public API of Portico, through its gateway.",
            },
            "servers": [{"url": "/"}],
            "paths": dict(sorted(paths.items())),
            "components": components,
        }


# --- /docs ---------------------------------------------------------------------------------

_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Portico API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
    window.ui.initOAuth({usePkceWithAuthorizationCodeGrant: true});
  </script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """The static files of the installed `swagger-ui-py` package."""
    import swagger_ui

    return Path(swagger_ui.__file__).with_name("static")


def add_docs_routes(app: web.Application) -> None:
    """GET /docs (Swagger UI for /openapi.json) and its static files under /docs/static/."""

    async def docs(_request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_HTML, content_type="text/html")

    app.router.add_get("/docs", docs)
    app.router.add_static("/docs/static/", swagger_ui_dir(), append_version=False)
