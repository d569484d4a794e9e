"""`/openapi.json` for every service: an OpenAPI 3.1 document built from routes and schemas.

Operations come from the YAML after `---` in each view's docstring (apispec's yaml_utils);
paths and their parameters from the framework's router, so every route is listed and none
invented. Views without such YAML (health, metrics, this document) are not public API.
The document is built once at start-up, so a broken operation doc stops the app early.

    install_flask(app, title=..., description=..., security=..., schemas=..., errors=...)
    install_aiohttp(app, ...)   # after every route is added
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from marshmallow import INCLUDE, Schema, fields

from .problems import PROBLEM_JSON

__all__ = [
    "Operations",
    "ProblemSchema",
    "aiohttp_operations",
    "build_spec",
    "flask_operations",
    "install_aiohttp",
    "install_flask",
]

# (path template with {params}, operations by lower-case method, path parameter names)
Operations = tuple[str, dict[str, Any], list[str]]

_FLASK_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_TEMPLATE_ARG = re.compile(r"{([^{}:]+)(?::[^{}]*)?}")


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error is returned (application/problem+json)."""

    class Meta:
        unknown = INCLUDE  # extension members

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    instance = fields.String()
    correlation_id = fields.String()
    errors = fields.Dict(metadata={"description": "per-field messages on 422"})


def build_spec(
    *,
    title: str,
    description: str,
    security: str,
    schemas: Mapping[str, type[Schema] | Schema],
    errors: Mapping[str, str],
    operations: Iterable[Operations],
    version: str = "1.0.0",
    http_caching: bool = False,
) -> dict[str, Any]:
    """The document: `schemas` become components under the given (service-unique) names,
    `errors` become problem+json response components (name -> description).

    `http_caching` adds the components of `chassis.http_cache` reads, for operation docs to
    name: response `NotModified`, headers `ETag` `Cache-Control` `Last-Modified`, parameters
    `If-None-Match` `If-Modified-Since` (one text for every service, so the gateway's merged
    document holds them once)."""
    spec = APISpec(
        title=title,
        version=version,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": description},
    )
    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": security},
    )
    for name, schema in schemas.items():
        spec.components.schema(name, schema=schema)
    spec.components.schema("Problem", schema=ProblemSchema)
    for name, text in errors.items():
        spec.components.response(
            name, {"description": text, "content": {PROBLEM_JSON: {"schema": ProblemSchema}}}
        )
    if http_caching:
        _caching_components(spec)
    local = _local_schemas(schemas.values())
    for path, ops, args in sorted(operations, key=lambda o: o[0]):
        ops = _resolve(ops, local)
        params = [
            {"in": "path", "name": arg, "required": True, "schema": {"type": "string"}}
            for arg in sorted(args)
        ]
        spec.path(path=path, operations=ops, parameters=params)
    return spec.to_dict()


def _caching_components(spec: APISpec) -> None:
    text = {"type": "string"}
    spec.components.response(
        "NotModified",
        {
            "description": "Not Modified: If-None-Match names the current ETag (or `*`), or "
            "If-Modified-Since is not older than Last-Modified. No body; ETag, Cache-Control "
            "and Last-Modified as the 200 would have them",
            "headers": {
                name: name  # apispec turns a component's name into its $ref
                for name in ("ETag", "Cache-Control", "Last-Modified")
            },
        },
    )
    spec.components.header(
        "ETag", {"description": "Strong entity tag of the representation", "schema": text}
    )
    spec.components.header(
        "Cache-Control",
        {
            "description": "`public, max-age=N` (any cache may keep it N seconds), "
            "`public, no-cache` (keep, but revalidate every use) or `private, ...` (only the "
            "consumer's own cache); N is the service's *_CACHE_MAX_AGE setting",
            "schema": text,
        },
    )
    spec.components.header(
        "Last-Modified",
        {"description": "When the resource last changed (HTTP-date)", "schema": text},
    )
    spec.components.parameter(
        "If-None-Match",
        "header",
        {
            "name": "If-None-Match",
            "required": False,
            "description": "ETags held (a list, or `*`); a match (weak comparison) is 304",
            "schema": text,
        },
    )
    spec.components.parameter(
        "If-Modified-Since",
        "header",
        {
            "name": "If-Modified-Since",
            "required": False,
            "description": "HTTP-date; 304 when not changed since (ignored with If-None-Match)",
            "schema": text,
        },
    )


def _local_schemas(given: Iterable[type[Schema] | Schema]) -> dict[str, type[Schema]]:
    """Every Schema class in the modules of the given schemas, by class name.

    Docstrings name schemas as strings; marshmallow's global registry refuses a name that two
    services share (both have a `ListQuerySchema` once the gateway's tests import them all),
    so names are resolved against the service's own schema module first.
    """
    found: dict[str, type[Schema]] = {}
    for schema in given:
        cls = schema if isinstance(schema, type) else type(schema)
        module = sys.modules.get(cls.__module__)
        for name, value in vars(module).items() if module else ():
            if isinstance(value, type) and issubclass(value, Schema) and value is not Schema:
                found.setdefault(name, value)
    return found


def _resolve(node: Any, local: Mapping[str, type[Schema]]) -> Any:
    if isinstance(node, dict):
        return {
            k: local.get(v, v) if k == "schema" and isinstance(v, str) else _resolve(v, local)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_resolve(v, local) for v in node]
    return node


@functools.lru_cache(maxsize=512)
def _parsed(docstring: str) -> dict[str, Any]:
    return load_operations_from_docstring(docstring)  # type: ignore[no-any-return]


def _operations(docstring: str | None) -> dict[str, Any]:
    """The operations in a view's docstring: parsed once per process (the YAML parse is most of
    an app build, and tests build hundreds), a fresh copy for every caller."""
    return copy.deepcopy(_parsed(docstring or ""))


def flask_operations(app: Any) -> list[Operations]:
    """Documented operations of a Flask app, one entry per URL rule."""
    found: list[Operations] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        ops = _operations(view.__doc__)
        if ops:
            found.append((_FLASK_ARG.sub(r"{\1}", rule.rule), ops, sorted(rule.arguments)))
    return found


def aiohttp_operations(app: Any) -> list[Operations]:
    """Documented operations of an aiohttp app, merged per path (one handler per method)."""
    by_path: dict[str, Operations] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        ops = _operations(route.handler.__doc__)
        method = route.method.lower()
        if method not in ops:
            continue
        path = _TEMPLATE_ARG.sub(r"{\1}", resource.canonical)
        entry = by_path.setdefault(path, (path, {}, _TEMPLATE_ARG.findall(resource.canonical)))
        entry[1][method] = ops[method]
    return list(by_path.values())


def install_flask(app: Any, **spec: Any) -> dict[str, Any]:
    """Build the document from `app`'s rules now and serve it at GET /openapi.json."""
    from flask import jsonify

    document = build_spec(operations=flask_operations(app), **spec)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(document), methods=["GET"])
    return document


def install_aiohttp(app: Any, **spec: Any) -> dict[str, Any]:
    """Build the document from `app`'s routes now (add them first) and serve it."""
    from aiohttp import web

    document = build_spec(operations=aiohttp_operations(app), **spec)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)
    return document
