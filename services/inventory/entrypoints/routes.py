"""`/api/v1/inventory` and `/api/v1/reservations`: JSON -> use case -> status code.

The operation docs after `---` in each handler are the OpenAPI operations (chassis.openapi).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chassis import Problem, validation_problem
from chassis.aiohttp import cacheable, json_body, require_scopes

from ..domain import Line, Reservation, check_sku
from ..schemas import ORDER_ID, ReservationSchema, ReserveRequestSchema, StockLevelSchema
from ..schemas import StockUpdateSchema as _StockUpdate
from ..service_layer import services
from .deps import DEPS

__all__ = ["routes"]
READ, WRITE = "inventory:read", "inventory:write"

routes = web.RouteTableDef()
_level = StockLevelSchema()
_update = _StockUpdate()
_reserve = ReserveRequestSchema()
_reservation = ReservationSchema()


def _problem(exc: services.InventoryError) -> Problem:
    """Map a use-case error to the client's problem document."""
    if isinstance(exc, services.StockNotFound):
        return Problem(404, f"no stock record for sku {exc}")
    if isinstance(exc, services.ReservationNotFound):
        return Problem(404, f"no reservation for order {exc}")
    if isinstance(exc, services.OutOfStock):
        shortages = [
            {"sku": s.sku, "requested": s.requested, "available": s.available}
            for s in exc.reservation.shortages
        ]
        return Problem(
            409,
            f"not enough stock for: {exc}",
            title="Out of stock",
            order_id=exc.reservation.order_id,
            skus=[s["sku"] for s in shortages],
            shortages=shortages,
        )
    if isinstance(exc, services.ReservationConflict):
        return Problem(409, str(exc), status_of_reservation=exc.status.value)
    if isinstance(exc, services.ReservationMismatch):
        return Problem(
            422,
            "this order id was already reserved with different items",
            title="Unprocessable Content",
            errors={"items": ["differ from the first reservation of this order"]},
        )
    if isinstance(exc, services.BelowReserved):
        return Problem(409, f"on_hand for {exc} would be below the units already reserved")
    return Problem(500, "an unexpected error occurred")  # pragma: no cover


def _dump(reservation: Reservation) -> dict[str, Any]:
    return _reservation.dump(
        {
            "order_id": reservation.order_id,
            "status": reservation.status.value,
            "items": [{"sku": ln.sku, "quantity": ln.quantity} for ln in reservation.lines],
            "shortages": [
                {"sku": s.sku, "requested": s.requested, "available": s.available}
                for s in reservation.shortages
            ],
        }
    )


def _sku(request: web.Request) -> str:
    sku = request.match_info["sku"]
    if check_sku(sku):
        raise validation_problem({"sku": [check_sku(sku)]})
    return sku


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if not ORDER_ID.fullmatch(order_id):
        raise validation_problem({"order_id": ["must be 1-64 visible ASCII characters"]})
    return order_id


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except services.InventoryError as exc:
        raise _problem(exc) from exc


@routes.get("/api/v1/inventory/{sku}")
@require_scopes(READ)
async def get_stock(request: web.Request) -> web.Response:
    """Stock of one sku; ETag from the representation, so If-None-Match revalidates cheaply.
    ---
    get:
      operationId: getStock
      summary: Stock level of a sku
      tags: [inventory]
      security: [{bearerAuth: ["inventory:read"]}]
      parameters:
        - in: path
          name: sku
          required: true
          schema: {type: string, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'}
        - If-None-Match
      responses:
        200:
          description: on_hand, reserved and available units
          headers:
            ETag: ETag
            Cache-Control: Cache-Control
          content: {application/json: {schema: StockLevelSchema}}
        304: NotModified
        401: Unauthorized
        403: Forbidden
        404: NotFound
        422: UnprocessableContent
    """
    level = await _call(request.app[DEPS].service.get_stock(_sku(request)))
    resp = web.json_response(_level.dump({**vars(level), "available": level.available}))
    return cacheable(request, resp, request.app[DEPS].cache_policy)  # ETag from the body's bytes


@routes.put("/api/v1/inventory/{sku}")
@require_scopes(WRITE)
async def put_stock(request: web.Request) -> web.Response:
    """Set the units on hand (a stock count); creates the sku's record if new.
    ---
    put:
      operationId: setStock
      summary: Set the units on hand of a sku
      tags: [inventory]
      security: [{bearerAuth: ["inventory:write"]}]
      parameters:
        - in: path
          name: sku
          required: true
          schema: {type: string, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'}
      requestBody:
        required: true
        content: {application/json: {schema: StockUpdateSchema}}
      responses:
        200:
          description: The new stock level
          content: {application/json: {schema: StockLevelSchema}}
        401: Unauthorized
        403: Forbidden
        409: Conflict
        415: UnsupportedMediaType
        422: UnprocessableContent
    """
    sku = _sku(request)
    data = await json_body(request, _update)
    level = await _call(request.app[DEPS].service.set_stock(sku, data["on_hand"]))
    return web.json_response(_level.dump({**vars(level), "available": level.available}))


@routes.post("/api/v1/reservations")
@require_scopes(WRITE)
async def reserve(request: web.Request) -> web.Response:
    """Reserve every item or none; idempotent per order_id (a retry gets the first answer).
    ---
    post:
      operationId: reserveStock
      summary: Reserve stock for an order
      tags: [reservations]
      security: [{bearerAuth: ["inventory:write"]}]
      requestBody:
        required: true
        content: {application/json: {schema: ReserveRequestSchema}}
      responses:
        201:
          description: Reserved (or reserved before)
          headers:
            Location: {description: the reservation's URL, schema: {type: string}}
          content: {application/json: {schema: ReservationSchema}}
        401: Unauthorized
        403: Forbidden
        409: OutOfStock
        415: UnsupportedMediaType
        422: UnprocessableContent
    """
    data = await json_body(request, _reserve)
    lines = [Line(item["sku"], item["quantity"]) for item in data["items"]]
    reservation = await _call(request.app[DEPS].service.reserve(data["order_id"], lines))
    location = f"/api/v1/reservations/{reservation.order_id}"
    return web.json_response(_dump(reservation), status=201, headers={"Location": location})


@routes.get("/api/v1/reservations/{order_id}")
@require_scopes(READ)
async def get_reservation(request: web.Request) -> web.Response:
    """One reservation and its status.
    ---
    get:
      operationId: getReservation
      summary: Get the reservation of an order
      tags: [reservations]
      security: [{bearerAuth: ["inventory:read"]}]
      responses:
        200:
          description: The reservation
          content: {application/json: {schema: ReservationSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    reservation = await _call(request.app[DEPS].service.get_reservation(_order_id(request)))
    return web.json_response(_dump(reservation))


@routes.post("/api/v1/reservations/{order_id}/commit")
@require_scopes(WRITE)
async def commit(request: web.Request) -> web.Response:
    """The order is confirmed: reserved units leave the stock. Idempotent.
    ---
    post:
      operationId: commitReservation
      summary: Commit a reservation
      tags: [reservations]
      security: [{bearerAuth: ["inventory:write"]}]
      responses:
        200:
          description: Committed (or committed before)
          content: {application/json: {schema: ReservationSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
        409: Conflict
    """
    reservation = await _call(request.app[DEPS].service.commit(_order_id(request)))
    return web.json_response(_dump(reservation))


@routes.post("/api/v1/reservations/{order_id}/release")
@require_scopes(WRITE)
async def release(request: web.Request) -> web.Response:
    """Compensation: reserved units become available again. Idempotent; an unknown order id
    is recorded as released (a later reserve for it gets 409); a committed one gets 409.
    ---
    post:
      operationId: releaseReservation
      summary: Release a reservation
      tags: [reservations]
      security: [{bearerAuth: ["inventory:write"]}]
      responses:
        200:
          description: Released (or released, rejected or unknown before)
          content: {application/json: {schema: ReservationSchema}}
        401: Unauthorized
        403: Forbidden
        409: Conflict
    """
    reservation = await _call(request.app[DEPS].service.release(_order_id(request)))
    return web.json_response(_dump(reservation))
