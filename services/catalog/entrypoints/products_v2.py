"""`/api/v2/products`: the same products, price as `{"amount", "currency"}` (API v2).

Reads only, behind the `catalog.v2_products` flag (`chassis.flags`, evaluated for the token's
client id and subject): a caller the flag is off for gets 404 problem+json, as if v2 did not
exist yet. Since the answer depends on who asks, v2 reads are `Cache-Control: private`.
Writes stay on v1 (its input already takes a plain price); docs/migrations/v1-to-v2.md.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from chassis import Problem
from chassis.flask import cacheable, current_claims, require_scopes
from chassis.http_cache import CachePolicy, version_etag

from ..schemas import product_v2_document
from ..service_layer import services
from .deps import deps
from .products import READ, _catalog_error, page_response

__all__ = ["V2_FLAG", "products_v2_bp"]

V2_FLAG = "catalog.v2_products"

products_v2_bp = Blueprint("products_v2", __name__, url_prefix="/api/v2/products")
products_v2_bp.register_error_handler(services.CatalogError, _catalog_error)


def _private() -> CachePolicy:
    return CachePolicy(deps().cache_policy.max_age, public=False)


def _flag_on() -> None:
    """404 unless the flag is on for this caller (after the token and scope checks)."""
    claims = current_claims()
    if not deps().flags.is_enabled(V2_FLAG, user=claims.subject, client=claims.client_id):
        raise Problem(404, "API v2 products are not available to this client yet; use /api/v1")


@products_v2_bp.get("")
@require_scopes(READ)
def list_products_v2() -> Response:
    """List products (v2 representation), oldest first, one page at a time.
    ---
    get:
      operationId: listProductsV2
      summary: List products, price as {amount, currency} (cursor pagination, filters)
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
              schema: PageV2Schema
        304: NotModified
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableContent
    """
    _flag_on()
    return cacheable(page_response(product_v2_document), _private())


@products_v2_bp.get("/<product_id>")
@require_scopes(READ)
def get_product_v2(product_id: str) -> Response:
    """One product (v2 representation), its version as ETag.
    ---
    get:
      operationId: getProductV2
      summary: Get a product, price as {amount, currency}
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
              schema: ProductV2Schema
        304: NotModified
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    _flag_on()
    product = services.get_product(deps().read_uow(), product_id)
    resp = jsonify(product_v2_document(product))
    etag = version_etag(product.version)
    resp.headers["ETag"] = str(etag)
    return cacheable(resp, _private(), etag=etag, last_modified=product.updated_at)
