"""`/openapi.json`: the catalog's OpenAPI 3.1 document, generated from the routes and schemas.

Operations come from the YAML after `---` in each view's docstring (apispec's yaml_utils);
paths and their parameters from the URL map, so every route is listed and none invented.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from chassis import PROBLEM_JSON

from .. import schemas

__all__ = ["build_spec", "install_spec", "openapi_bp"]

_SPEC = "catalog.openapi"
_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

openapi_bp = Blueprint("openapi", __name__)

_ERRORS = {
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such product",
    "Conflict": "The sku is taken, or the product changed concurrently",
    "PreconditionFailed": "If-Match does not match the product's version",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields or parameters, named in `errors`",
}


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Portico catalog",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Products, their prices (EUR) and categories."},
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "RFC 9068 access token. Scopes: catalog:read (reads), "
            "catalog:write (creates, updates, deletes).",
        },
    )
    # Names the gateway can merge with other services' specs without clashes.
    spec.components.schema("Product", schema=schemas.ProductSchema)
    spec.components.schema("ProductInput", schema=schemas.ProductInputSchema)
    spec.components.schema("ProductPage", schema=schemas.PageSchema)
    spec.components.schema("Problem", schema=schemas.ProblemSchema)
    for name, description in _ERRORS.items():
        spec.components.response(
            name,
            {"description": description, "content": {PROBLEM_JSON: {"schema": "ProblemSchema"}}},
        )
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        operations = load_operations_from_docstring(view.__doc__ or "")
        if not operations:
            continue  # health, metrics and this document are not part of the public API
        path = _ARG.sub(r"{\1}", rule.rule)
        params = [
            {"in": "path", "name": arg, "required": True, "schema": {"type": "string"}}
            for arg in sorted(rule.arguments)
        ]
        spec.path(path=path, operations=operations, parameters=params)
    return spec.to_dict()


def install_spec(app: Flask) -> None:
    """Build the document once, at start-up, so a broken operation doc stops the app early."""
    app.extensions[_SPEC] = build_spec(app)


@openapi_bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(current_app.extensions[_SPEC])
