"""`/api/v1/products`: JSON -> use case -> status code. Errors leave as problem+json.

The operation docs after `---` in each view are the OpenAPI operations (see openapi.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request, url_for

from chassis import Problem, validation_problem
from chassis.flask import (
    cacheable,
    current_claims,
    json_body,
    problem_response,
    query_args,
    require_scopes,
)
from chassis.http_cache import ANY, parse_entity_tags, version_etag
from chassis.validation import idempotency_key

from ..adapters.repository import ProductFilter
from ..domain import InvalidProduct, Product
from ..schemas import ListQuerySchema, ProductInputSchema, product_document
from ..service_layer import services
from ..service_layer.pagination import encode_cursor
from .deps import deps

__all__ = ["page_response", "products_bp"]

READ, WRITE = "catalog:read", "catalog:write"

products_bp = Blueprint("products", __name__, url_prefix="/api/v1/products")

_input = ProductInputSchema()
_query = ListQuerySchema()
_VERSION = re.compile(r"v([0-9]{1,18})")  # fullmatch; bounded so int() is cheap and fits


def _one(product: Product, status: int = 200, **headers: str) -> Response:
    resp = jsonify(product_document(product))
    resp.status_code = status
    resp.headers["ETag"] = str(version_etag(product.version))
    resp.headers.update(headers)
    return resp


def _expected_version() -> int | None:
    """The version named by If-Match (strong ETags `"vN"`); `*` or no header: any version."""
    header = request.headers.getlist("If-Match")
    if not header:
        return None
    tags = parse_entity_tags(", ".join(header))
    if tags == ANY:
        return None
    for tag in tags or ():
        match = None if tag.weak else _VERSION.fullmatch(tag.opaque)  # strong comparison
        if match:
            return int(match.group(1))
    raise Problem(412, "If-Match names no current version of this product")


@products_bp.errorhandler(services.CatalogError)
def _catalog_error(exc: services.CatalogError) -> Response:
    if isinstance(exc, services.ProductNotFound):
        problem = Problem(404, f"no product with id {exc}")
    elif isinstance(exc, services.DuplicateSku):
        problem = Problem(409, f"a product with sku {exc} already exists", sku=str(exc))
    elif isinstance(exc, services.ConcurrentUpdate):
        problem = Problem(409, "the product changed while being written; retry")
    elif isinstance(exc, services.PreconditionFailed):
        problem = Problem(412, "the product changed since the given ETag")
    elif isinstance(exc, services.IdempotencyKeyReused):
        problem = Problem(
            422,
            "this Idempotency-Key was already used with a different request body",
            title="Unprocessable Content",
            errors={"Idempotency-Key": ["reused with a different request"]},
        )
    else:  # pragma: no cover - every subclass is mapped above
        problem = Problem(500, "an unexpected error occurred")
    return problem_response(problem)


@products_bp.errorhandler(InvalidProduct)
def _invalid_product(exc: InvalidProduct) -> Response:
    return problem_response(validation_problem({exc.field: [exc.message]}))


@products_bp.get("")
@require_scopes(READ)
def list_products() -> Response:
    """List products, oldest first, one page at a time.
    ---
    get:
      operationId: listProducts
      summary: List products (cursor pagination, filters)
      tags: [products]
      security: [{bearerAuth: ["catalog:read"]}]
      parameters:
        - in: query
          schema: ListQuerySchema
        - If-None-Match
      responses:
        200:
          description: A page of products; `Link rel="next"` when there is another page
          headers:
            Link:
              description: '<...>; rel="next"'
              schema: {type: string}
            ETag: ETag
            Cache-Control: Cache-Control
          content:
            application/json:
              schema: PageSchema
        304: NotModified
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
    """
    return cacheable(page_response(product_document), deps().cache_policy)  # ETag: the bytes


def page_response(document: Callable[[Product], dict[str, Any]]) -> Response:
    """A page of products per the query, each in `document`'s representation (v1 or v2),
    with `Link rel="next"` when there is another page."""
    args = query_args(_query)
    filters = ProductFilter(
        category=args.get("category"),
        q=args.get("q"),
        min_price=args.get("min_price"),
        max_price=args.get("max_price"),
        sku=args.get("sku"),
    )
    page = services.list_products(deps().read_uow(), filters, args.get("cursor"), args["limit"])
    next_cursor = encode_cursor(page.next) if page.next else None
    items = [document(p) for p in page.items]
    resp = jsonify({"items": items, "next_cursor": next_cursor})
    if next_cursor:
        query = {k: v for k, v in request.args.to_dict().items() if k != "cursor"}
        query.update(limit=str(args["limit"]), cursor=next_cursor)
        resp.headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return resp


@products_bp.get("/<product_id>")
@require_scopes(READ)
def get_product(product_id: str) -> Response:
    """One product, with its version as ETag (for If-None-Match on reads, If-Match on writes).
    ---
    get:
      operationId: getProduct
      summary: Get a product
      tags: [products]
      security: [{bearerAuth: ["catalog:read"]}]
      parameters:
        - If-None-Match
        - If-Modified-Since
      responses:
        200:
          description: The product
          headers:
            ETag: {description: 'the version, "vN" (strong)', schema: {type: string}}
            Last-Modified: Last-Modified
            Cache-Control: Cache-Control
          content:
            application/json:
              schema: ProductSchema
        304: NotModified
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    product = services.get_product(deps().read_uow(), product_id)
    return cacheable(
        _one(product),
        deps().cache_policy,
        etag=version_etag(product.version),
        last_modified=product.updated_at,
    )


@products_bp.post("")
@require_scopes(WRITE)
def create_product() -> Response:
    """Create a product; a retry with the same Idempotency-Key returns the first result.
    ---
    post:
      operationId: createProduct
      summary: Create a product
      tags: [products]
      security: [{bearerAuth: ["catalog:write"]}]
      parameters:
        - in: header
          name: Idempotency-Key
          required: true
          description: Required, as on every creating endpoint (missing - 400); retries with
            the same key and body return the first result for at least 24 hours (the key is
            kept CATALOG_RETENTION_DAYS, 7 by default, never less); the same key with another
            body - 422
          schema: {type: string, pattern: '^[!-~]{1,255}$'}
      requestBody:
        required: true
        content:
          application/json:
            schema: ProductInputSchema
      responses:
        201:
          description: 'Created (or created before, with `Idempotent-Replayed: true`)'
          headers:
            Location: {description: the product's URL, schema: {type: string}}
            ETag: {description: 'the version, "vN"', schema: {type: string}}
          content:
            application/json:
              schema: ProductSchema
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        409: Conflict
        415: UnsupportedMediaType
        422: UnprocessableContent
    """
    key = idempotency_key(request.headers)
    data = json_body(_input)
    idempotency = (current_claims().subject, key)
    created = services.create_product(
        deps().uow(), services.NewProduct(**data), idempotency=idempotency
    )
    headers = {"Location": url_for(".get_product", product_id=created.product.id)}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return _one(created.product, 201, **headers)


def _update(product_id: str, *, partial: bool) -> Response:
    changes: dict[str, Any] = json_body(_input, partial=partial)
    product = services.update_product(
        deps().uow(), product_id, changes, expected_version=_expected_version()
    )
    return _one(product)


@products_bp.patch("/<product_id>")
@require_scopes(WRITE)
def patch_product(product_id: str) -> Response:
    """Change some fields; If-Match makes it conditional on the version read.
    ---
    patch:
      operationId: patchProduct
      summary: Update some fields of a product
      tags: [products]
      security: [{bearerAuth: ["catalog:write"]}]
      parameters:
        - in: header
          name: If-Match
          required: false
          schema: {type: string}
      requestBody:
        required: true
        content:
          application/json:
            schema: ProductInputSchema
      responses:
        200:
          description: The updated product
          content: {application/json: {schema: ProductSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        409: Conflict
        412: PreconditionFailed
        422: UnprocessableContent
    """
    return _update(product_id, partial=True)


@products_bp.put("/<product_id>")
@require_scopes(WRITE)
def put_product(product_id: str) -> Response:
    """Replace every editable field (ids are server-assigned: PUT never creates).
    ---
    put:
      operationId: replaceProduct
      summary: Replace a product's fields
      tags: [products]
      security: [{bearerAuth: ["catalog:write"]}]
      parameters:
        - in: header
          name: If-Match
          required: false
          schema: {type: string}
      requestBody:
        required: true
        content:
          application/json:
            schema: ProductInputSchema
      responses:
        200:
          description: The updated product
          content: {application/json: {schema: ProductSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        409: Conflict
        412: PreconditionFailed
        422: UnprocessableContent
    """
    return _update(product_id, partial=False)


@products_bp.delete("/<product_id>")
@require_scopes(WRITE)
def delete_product(product_id: str) -> Response:
    """Delete a product.
    ---
    delete:
      operationId: deleteProduct
      summary: Delete a product
      tags: [products]
      security: [{bearerAuth: ["catalog:write"]}]
      parameters:
        - in: header
          name: If-Match
          required: false
          schema: {type: string}
      responses:
        204: {description: Deleted}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        409: Conflict
        412: PreconditionFailed
    """
    services.delete_product(deps().uow(), product_id, expected_version=_expected_version())
    return Response(status=204)
