"""`/api/v1/payments`: JSON -> use case -> status code. Errors leave as problem+json.

The operation docs after `---` in each view are the OpenAPI operations (chassis.openapi).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from chassis import Problem
from chassis.flask import current_claims, json_body, problem_response, query_args, require_scopes
from chassis.validation import idempotency_key

from ..domain import Payment
from ..schemas import ChargeRequestSchema, PaymentListQuerySchema, PaymentSchema
from ..service_layer import services
from ..service_layer.services import ChargeRequest
from .deps import deps

__all__ = ["payments_bp"]

READ, WRITE = "payments:read", "payments:write"
READ_ALL = "payments:read:all"  # staff: everyone's payments, not only one's own

payments_bp = Blueprint("payments", __name__, url_prefix="/api/v1/payments")
_payment = PaymentSchema()
_charge = ChargeRequestSchema()
_query = PaymentListQuerySchema()


def _dump(p: Payment) -> dict[str, Any]:
    return _payment.dump(
        {
            "id": p.id,
            "order_id": p.order_id,
            "amount": p.amount,
            "currency": p.currency,
            "payment_method": p.payment_method,
            "status": p.status.value,
            "decline_code": p.decline_code,
            "created_at": p.created_at,
            "refunded_at": p.refunded_at,
        }
    )


def _one(p: Payment, status: int, replayed: bool) -> Response:
    resp = jsonify(_dump(p))
    resp.status_code = status
    resp.headers["Location"] = url_for(".get_payment", payment_id=p.id)
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@payments_bp.errorhandler(services.PaymentError)
def _payment_error(exc: services.PaymentError) -> Response:
    retry = {"Retry-After": "1"}
    if isinstance(exc, services.PaymentNotFound):
        problem = Problem(404, f"no payment with id {exc}")
    elif isinstance(exc, services.Declined):
        problem = Problem(
            402,
            "the payment method was declined",
            title="Payment declined",
            payment_id=exc.payment.id,
            decline_code=exc.payment.decline_code,
        )
    elif isinstance(exc, services.ProviderDown):
        problem = Problem(
            503,
            "the payment provider is unavailable; nothing was charged. "
            "Retry with the same Idempotency-Key",
            title="Payment provider unavailable",
            headers=retry,
            retryable=True,
        )
    elif isinstance(exc, services.ChargeInProgress):
        problem = Problem(
            409,
            "a request with this Idempotency-Key is still being processed; retry",
            headers=retry,
        )
    elif isinstance(exc, services.KeyReused):
        problem = Problem(
            422,
            "this Idempotency-Key was already used with a different request body",
            title="Unprocessable Content",
            errors={"Idempotency-Key": ["reused with a different request"]},
        )
    elif isinstance(exc, services.NotRefundable):
        problem = Problem(409, f"{exc}: only captured payments can be refunded")
    else:  # pragma: no cover - every subclass is mapped above
        problem = Problem(500, "an unexpected error occurred")
    return problem_response(problem)


@payments_bp.post("")
@require_scopes(WRITE)
def create_payment() -> Response:
    """Charge (authorize and capture) an order; one charge per Idempotency-Key, ever.
    ---
    post:
      operationId: createPayment
      summary: Charge a payment method
      tags: [payments]
      security: [{bearerAuth: ["payments:write"]}]
      parameters:
        - in: header
          name: Idempotency-Key
          required: true
          description: 'Retries with the same key and body return the first result for at
            least 24 hours (the key is kept with the payment, for as long as the payment; the
            saga uses "charge-{order_id}")'
          schema: {type: string, pattern: '^[!-~]{1,255}$'}
      requestBody:
        required: true
        content: {application/json: {schema: ChargeRequestSchema}}
      responses:
        201:
          description: 'Captured (or captured before, with `Idempotent-Replayed: true`)'
          content: {application/json: {schema: PaymentSchema}}
        400: BadRequest
        401: Unauthorized
        402: PaymentDeclined
        403: Forbidden
        409: Conflict
        415: UnsupportedMediaType
        422: UnprocessableContent
        503: ProviderUnavailable
    """
    key = idempotency_key(request.headers)
    data = json_body(_charge)
    req = ChargeRequest(
        order_id=data["order_id"],
        # Only a payments:write token gets here (orders' own client, staff): it may name the
        # user the payment is for; otherwise the payment is the caller's.
        owner=data.get("owner") or current_claims().subject,
        amount_cents=data["amount"],
        payment_method=data["payment_method"],
        currency=data["currency"],
    )
    result = deps().service.charge(key, req)
    return _one(result.payment, 201, result.replayed)


@payments_bp.get("")
@require_scopes(READ)
def list_payments() -> Response:
    """The caller's payments (everyone's with payments:read:all), newest first; `order_id`
    narrows to one order's.
    ---
    get:
      operationId: listPayments
      summary: List my payments
      description: Only the caller's own payments; a token with `payments:read:all` (staff)
        lists everyone's.
      tags: [payments]
      security: [{bearerAuth: ["payments:read"]}]
      parameters:
        - in: query
          schema: PaymentListQuerySchema
      responses:
        200:
          description: The payments
          content: {application/json: {schema: PaymentListSchema}}
        401: Unauthorized
        403: Forbidden
        422: UnprocessableContent
    """
    args = query_args(_query)
    owner = current_claims().owner_filter(READ_ALL)
    found = deps().service.list(args.get("order_id"), args["limit"], owner)
    return jsonify({"items": [_dump(p) for p in found]})


@payments_bp.get("/<payment_id>")
@require_scopes(READ)
def get_payment(payment_id: str) -> Response:
    """One of the caller's payments (anyone's with payments:read:all); another user's is 404.
    ---
    get:
      operationId: getPayment
      summary: Get a payment
      description: Another user's payment answers 404, as one that does not exist (its
        existence is not revealed); a token with `payments:read:all` (staff) reads any.
      tags: [payments]
      security: [{bearerAuth: ["payments:read"]}]
      responses:
        200:
          description: The payment
          content: {application/json: {schema: PaymentSchema}}
        401: Unauthorized
        403: Forbidden
        404: NotFound
    """
    owner = current_claims().owner_filter(READ_ALL)
    return jsonify(_dump(deps().service.get(payment_id, owner)))


@payments_bp.post("/<payment_id>/refund")
@require_scopes(WRITE)
def refund_payment(payment_id: str) -> Response:
    """Refund a captured payment in full; idempotent (again: the refund made, 200).
    ---
    post:
      operationId: refundPayment
      summary: Refund a payment
      tags: [payments]
      security: [{bearerAuth: ["payments:write"]}]
      parameters:
        - in: header
          name: Idempotency-Key
          required: true
          schema: {type: string, pattern: '^[!-~]{1,255}$'}
      responses:
        200:
          description: Refunded (or refunded before)
          content: {application/json: {schema: PaymentSchema}}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        404: NotFound
        409: Conflict
        422: UnprocessableContent
    """
    key = idempotency_key(request.headers)
    result = deps().service.refund(payment_id, key)
    return _one(result.payment, 200, result.replayed)
