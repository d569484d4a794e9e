"""`/openapi.json`: the catalog's OpenAPI 3.1 document, built by `chassis.openapi`.

Operations come from the YAML after `---` in each view's docstring; paths and their
parameters from the URL map, so every route is listed and none invented.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from chassis.openapi import build_spec as _build
from chassis.openapi import flask_operations

from .. import schemas

__all__ = ["build_spec", "install_spec", "openapi_bp"]

_SPEC = "catalog.openapi"

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
    return _build(
        title="Portico catalog",
        description="Products, their prices (EUR) and categories.",
        security="RFC 9068 access token. Scopes: catalog:read (reads), "
        "catalog:write (creates, updates, deletes).",
        # Names the gateway can merge with other services' specs without clashes.
        schemas={
            "Product": schemas.ProductSchema,
            "ProductInput": schemas.ProductInputSchema,
            "ProductPage": schemas.PageSchema,
        },
        errors=_ERRORS,
        operations=flask_operations(app),
        http_caching=True,
    )


def install_spec(app: Flask) -> None:
    """Build the document once, at start-up, so a broken operation doc stops the app early."""
    app.extensions[_SPEC] = build_spec(app)


@openapi_bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(current_app.extensions[_SPEC])
