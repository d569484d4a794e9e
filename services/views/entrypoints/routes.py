"""The read models over HTTP: `/api/v1/me/orders`, `/api/v1/reports/sales`,
`/api/v1/products/{id}/recommendations`. Errors leave as problem+json.

Every answer from a read model first checks how stale the models are (`fresh`): beyond
VIEWS_MAX_LAG seconds it is 503 with Retry-After instead of data (ADR 0030). The
`X-Read-Model-Lag` header is set on every /api answer by the app (`app.py`).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from typing import Any

from aiohttp import web

from chassis import Problem
from chassis.aiohttp import CLAIMS, query_args, require_scopes
from chassis.pagination import cursor_param, encode_cursor
from chassis.problems import validation_problem

from ..adapters import reads
from ..domain import OrderView, money
from ..schemas import (
    MyOrderSchema,
    MyOrdersQuerySchema,
    RecommendationsQuerySchema,
    SalesQuerySchema,
)
from .deps import DEPS

__all__ = ["ORDERS_READ", "RECOMMENDATIONS_READ", "REPORTS_READ", "routes"]

ORDERS_READ = "orders:read"
REPORTS_READ = "reports:read"  # staff only (identity's role catalogue)
RECOMMENDATIONS_READ = "catalog:read"

routes = web.RouteTableDef()
_order = MyOrderSchema()
_my_query = MyOrdersQuerySchema()
_sales_query = SalesQuerySchema()
_rec_query = RecommendationsQuerySchema()


def fresh(request: web.Request) -> None:
    """503 unless the read models are within VIEWS_MAX_LAG of complete."""
    deps = request.app[DEPS]
    behind = deps.lag.staleness()
    if behind > deps.max_lag:
        raise Problem(
            503,
            f"the read model is {behind:.0f} s behind (more than {deps.max_lag:g} s); "
            "try again shortly",
            headers={"Retry-After": str(max(1, math.ceil(min(behind, deps.max_lag))))},
            lag_seconds=round(behind, 1),
        )


def _dump(v: OrderView) -> dict[str, Any]:
    return _order.dump(
        {
            "id": v.order_id,
            "status": v.status,
            "total": v.total,
            "currency": v.currency,
            "payment_state": v.payment_state,
            "notifications": v.notifications,
            "items": v.items,
            "created_at": v.created_at,
            "updated_at": v.updated_at,
        }
    )


@routes.get("/api/v1/me/orders")
@require_scopes(ORDERS_READ)
async def my_orders(request: web.Request) -> web.Response:
    """The caller's orders from the read model, newest first.
    ---
    get:
      operationId: listMyOrders
      summary: List my orders with their payment state
      description: The caller's own orders (never anyone else's) with total, payment state
        and notification count, from the "my orders" read model in one local query.
        `X-Read-Model-Lag` says how far behind it is; beyond VIEWS_MAX_LAG the answer is 503.
      tags: [views]
      security: [{bearerAuth: ["orders:read"]}]
      parameters:
        - in: query
          schema: MyOrdersQuerySchema
      responses:
        200:
          description: A page of the caller's orders
          content:
            application/json:
              schema: MyOrderPageSchema
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
        503: Stale
    """
    args = query_args(request, _my_query)
    before = cursor_param(args["cursor"]) if "cursor" in args else None
    fresh(request)
    limit = args["limit"]
    rows = await request.app[DEPS].read(reads.my_orders, request[CLAIMS].subject, before, limit + 1)
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return web.json_response(
        {
            "items": [_dump(v) for v in page],
            "next_cursor": encode_cursor(last.created_at, last.order_id) if last else None,
        }
    )


def _sales_cursor(text: str) -> tuple[str, str, str]:
    when, key = cursor_param(text)
    currency, _, sku = key.partition(":")
    if not sku:
        raise validation_problem({"cursor": ["is not a cursor returned by this API"]})
    return when.date().isoformat(), currency, sku


@routes.get("/api/v1/reports/sales")
@require_scopes(REPORTS_READ)
async def sales_report(request: web.Request) -> web.Response:
    """Units and revenue per day and sku of confirmed orders (staff).
    ---
    get:
      operationId: salesReport
      summary: Sales per day and sku
      description: Confirmed orders' units and revenue per UTC day (the day of confirmation),
        currency and sku, from the sales read model; `totals` sum the whole range. `to` must
        not be before `from`, and the range spans at most 366 days (else 422).
      tags: [views]
      security: [{bearerAuth: ["reports:read"]}]
      parameters:
        - in: query
          schema: SalesQuerySchema
      responses:
        200:
          description: A page of the report
          content:
            application/json:
              schema: SalesReportSchema
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
        503: Stale
    """
    args = query_args(request, _sales_query)
    first: date = args["from_"]
    last: date = args["to"]
    after = _sales_cursor(args["cursor"]) if "cursor" in args else None
    fresh(request)
    read = request.app[DEPS].read
    limit = args["limit"]
    rows = await read(reads.sales, first, last, after, limit + 1)
    sums = await read(reads.totals, first, last)
    page = rows[:limit]
    cursor = None
    if len(rows) > limit:
        day, currency, sku = page[-1][:3]
        midnight = datetime.combine(date.fromisoformat(day), time(), UTC)
        cursor = encode_cursor(midnight, f"{currency}:{sku}")
    return web.json_response(
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "items": [
                {"day": d, "currency": c, "sku": s, "units": u, "revenue": money(r)}
                for d, c, s, u, r in page
            ],
            "totals": [{"currency": c, "units": u, "revenue": money(r)} for c, u, r in sums],
            "next_cursor": cursor,
        }
    )


@routes.get("/api/v1/products/{product_id}/recommendations")
@require_scopes(RECOMMENDATIONS_READ)
async def recommendations(request: web.Request) -> web.Response:
    """Products bought together with this one.
    ---
    get:
      operationId: productRecommendations
      summary: Bought together
      description: Other products in the same confirmed orders as this one, most often
        first, from the "bought together" read model (products known by catalog's events).
      tags: [views]
      security: [{bearerAuth: ["catalog:read"]}]
      parameters:
        - in: query
          schema: RecommendationsQuerySchema
      responses:
        200:
          description: The recommendations
          content:
            application/json:
              schema: RecommendationsSchema
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableContent
        503: Stale
    """
    args = query_args(request, _rec_query)
    product_id = request.match_info["product_id"]
    if len(product_id) > 64:
        raise Problem(404, f"no product with id {product_id[:64]}")
    fresh(request)
    read = request.app[DEPS].read
    sku = await read(reads.product_sku, product_id)
    if sku is None:
        raise Problem(404, f"no product with id {product_id}")
    others = await read(reads.bought_with, sku, args["limit"])
    ids = await read(reads.product_ids, [s for s, _ in others])
    return web.json_response(
        {
            "product_id": product_id,
            "sku": sku,
            "items": [{"product_id": ids.get(s), "sku": s, "orders": n} for s, n in others],
        }
    )
