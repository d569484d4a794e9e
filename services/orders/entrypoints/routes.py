"""`/api/v1/orders`: JSON -> use case -> status code. Errors leave as problem+json.

The operation docs after `---` in each handler are the OpenAPI operations (chassis.openapi).
"""

from __future__ import annotations

from aiohttp import web

from chassis import Problem, validation_problem
from chassis.aiohttp import CLAIMS, json_body, query_args, require_scopes
from chassis.pagination import cursor_param, encode_cursor
from chassis.validation import idempotency_key

from ..domain import Status
from ..schemas import (
    FeedQuerySchema,
    ListQuerySchema,
    OrderInputSchema,
    OrderQuerySchema,
    order_document,
)
from ..service_layer import history
from ..service_layer import orders as use_cases
from .deps import DEPS

__all__ = ["routes"]

READ, WRITE = "orders:read", "orders:write"
READ_ALL = "orders:read:all"  # staff: everyone's orders, not only one's own
EVENTS = "orders:events"  # the event feed: read-side services only (ADR 0029)


routes = web.RouteTableDef()
_input = OrderInputSchema()
_query = ListQuerySchema()
_order_query = OrderQuerySchema()
_feed_query = FeedQuerySchema()


_dump = order_document  # OrderSchema's dump, written out (schemas.py)


def _problem(exc: use_cases.OrdersError) -> Problem:
    if isinstance(exc, use_cases.OrderNotFound):
        return Problem(404, f"no order with id {exc}")
    if isinstance(exc, use_cases.UnknownProducts):
        return validation_problem({"items": [f"unknown sku: {', '.join(exc.skus)}"]})
    if isinstance(exc, use_cases.IdempotencyKeyReused):
        return Problem(
            422,
            "this Idempotency-Key was already used with a different request body",
            title="Unprocessable Content",
            errors={"Idempotency-Key": ["reused with a different request"]},
        )
    return Problem(500, "an unexpected error occurred")  # pragma: no cover


@routes.post("/api/v1/orders")
@require_scopes(WRITE)
async def create_order(request: web.Request) -> web.Response:
    """Place an order: stored PENDING, then reserved, charged and confirmed in the background.
    ---
    post:
      operationId: createOrder
      summary: Place an order
      tags: [orders]
      security: [{bearerAuth: ["orders:write"]}]
      parameters:
        - in: header
          name: Idempotency-Key
          required: true
          description: A retry with the same key and body returns the first order, for at
            least 24 hours (the key is kept with the order, for as long as the order)
          schema: {type: string, pattern: '^[!-~]{1,255}$'}
      requestBody:
        required: true
        content:
          application/json:
            schema: OrderInputSchema
      responses:
        202:
          description: 'Accepted (or accepted before, with `Idempotent-Replayed: true`);
            poll the Location until the status is CONFIRMED or REJECTED'
          headers:
            Location: {description: the order's URL, schema: {type: string}}
          content:
            application/json:
              schema: OrderSchema
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        413: ContentTooLarge
        415: UnsupportedMediaType
        422: UnprocessableContent
    """
    key = idempotency_key(request.headers)
    data = await json_body(request, _input)
    deps = request.app[DEPS]
    upstreams, driver = deps.started.upstreams, deps.started.driver
    assert upstreams is not None, "the app has not started"
    cmd = use_cases.PlaceOrder(
        owner=request[CLAIMS].subject,
        key=key,
        items=tuple((item["sku"], item["quantity"]) for item in data["items"]),
        payment_method=data["payment_method"],
    )
    try:
        placed = await use_cases.place_order(deps.uow, upstreams, cmd, reads=deps.reads)
    except use_cases.OrdersError as exc:
        raise _problem(exc) from exc
    if driver is not None and not placed.order.finished:
        driver.kick(placed.order.id)
    headers = {"Location": f"/api/v1/orders/{placed.order.id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(_dump(placed.order), status=202, headers=headers)


@routes.get("/api/v1/orders/{order_id}")
@require_scopes(READ)
async def get_order(request: web.Request) -> web.Response:
    """One of the caller's orders (anyone's with orders:read:all), with its saga step.
    ---
    get:
      operationId: getOrder
      summary: Get an order
      description: Another user's order answers 404, as one that does not exist (its
        existence is not revealed); a token with `orders:read:all` (staff) reads any. With
        `as_of`, the order as it was then, folded from its events (404 before it existed).
      tags: [orders]
      security: [{bearerAuth: ["orders:read"]}]
      parameters:
        - in: query
          schema: OrderQuerySchema
      responses:
        200:
          description: The order
          content:
            application/json:
              schema: OrderSchema
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableContent
    """
    deps = request.app[DEPS]
    owner = request[CLAIMS].owner_filter(READ_ALL)
    order_id = request.match_info["order_id"]
    try:
        if request.rel_url.raw_query_string:  # the hot path has none: no parsing there
            as_of = query_args(request, _order_query).get("as_of")
            if as_of is not None:
                past = await history.order_as_of(deps.uow, owner, order_id, as_of)
                return web.json_response(_dump(past))
        order = await use_cases.get_order(deps.reads or deps.uow, owner, order_id)
    except use_cases.OrdersError as exc:
        raise _problem(exc) from exc
    return web.json_response(_dump(order))


@routes.get("/api/v1/orders/{order_id}/history")
@require_scopes(READ)
async def get_order_history(request: web.Request) -> web.Response:
    """Every event of one of the caller's orders (anyone's with orders:read:all), in order.
    ---
    get:
      operationId: getOrderHistory
      summary: An order's history
      description: The order's events as recorded (placed, priced, stock reserved, payment
        captured or declined, compensations, confirmed or rejected), each with its version,
        time and cause. Another user's order answers 404, as one that does not exist.
      tags: [orders]
      security: [{bearerAuth: ["orders:read"]}]
      responses:
        200:
          description: The events, oldest first
          content:
            application/json:
              schema: OrderHistorySchema
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    order_id = request.match_info["order_id"]
    try:
        events = await history.order_history(
            request.app[DEPS].uow, request[CLAIMS].owner_filter(READ_ALL), order_id
        )
    except use_cases.OrdersError as exc:
        raise _problem(exc) from exc
    return web.json_response(
        {
            "order_id": order_id,
            "events": [
                {
                    "version": e.version,
                    "type": e.type,
                    "occurred_at": e.occurred_at,
                    "cause": e.cause,
                    "data": e.data,
                }
                for e in events
            ],
        }
    )


@routes.get("/internal/v1/events")
@require_scopes(EVENTS)
async def event_feed(request: web.Request) -> web.Response:
    """The order event log after a position: how a read side catches up (not routed by the
    gateway).
    ---
    get:
      operationId: getEventFeed
      summary: The order event feed
      description: Events with a position above `after`, by position, at most `limit`, each
        the envelope the broker carries plus `stream`, `version` and `position`; and the
        highest position in the log now. For read-side services (scope `orders:events`).
      tags: [internal]
      security: [{bearerAuth: ["orders:events"]}]
      parameters:
        - in: query
          schema: FeedQuerySchema
      responses:
        200:
          description: A page of the log
          content:
            application/json:
              schema: FeedSchema
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
    """
    args = query_args(request, _feed_query)
    events, last = await history.event_feed(request.app[DEPS].uow, args["after"], args["limit"])
    return web.json_response({"events": [e.envelope() for e in events], "last_position": last})


@routes.get("/api/v1/orders")
@require_scopes(READ)
async def list_orders(request: web.Request) -> web.Response:
    """The caller's orders (everyone's with orders:read:all), newest first, page by page.
    ---
    get:
      operationId: listOrders
      summary: List my orders
      description: Only the caller's own orders; a token with `orders:read:all` (staff) lists
        everyone's.
      tags: [orders]
      security: [{bearerAuth: ["orders:read"]}]
      parameters:
        - in: query
          schema: ListQuerySchema
      responses:
        200:
          description: A page of orders
          content:
            application/json:
              schema: OrderPageSchema
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
    """
    args = query_args(request, _query)
    before = cursor_param(args["cursor"]) if "cursor" in args else None
    status = Status(args["status"]) if "status" in args else None
    page, after = await use_cases.list_orders(
        request.app[DEPS].uow,
        request[CLAIMS].owner_filter(READ_ALL),
        status=status,
        before=before,
        limit=args["limit"],
    )
    return web.json_response(
        {
            "items": [_dump(o) for o in page],
            "next_cursor": encode_cursor(*after) if after else None,
        }
    )
