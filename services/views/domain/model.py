"""The envelope of an event as the read side reads it, and the fold of an order's events into
its row of "my orders" plus, on confirmation, the sale the other two models count.

The contract (docs/adr/0030): `{"id","type","occurred_at","data"}` plus, for orders' events,
`stream` (the order id), `version` (1-based, no gaps in a stream) and `position` (global,
increasing). Extra keys are ignored, so a publisher may add fields without breaking us.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "BINDINGS",
    "ORDER_EVENTS",
    "PUBLISHES",
    "Envelope",
    "OrderView",
    "Sale",
    "cents",
    "evolve",
    "money",
    "parse_envelope",
]

BINDINGS = ("order.#", "notification.sent", "product.*")
PUBLISHES: tuple[str, ...] = ()
# The order stream's types this side knows (others advance the stream's version only).
ORDER_EVENTS = (
    "order.created",
    "order.priced",
    "order.stock_reserved",
    "order.payment_captured",
    "order.payment_declined",
    "order.confirmed",
    "order.stock_committed",
    "order.payment_refunded",
    "order.stock_released",
    "order.compensating",  # a step given up (ORDERS_SAGA_STEP_TIMEOUT): no column changes
    "order.rejected",
)
_MAX_ID = 64


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    occurred_at: datetime
    data: Mapping[str, Any]
    stream: str | None = None
    version: int | None = None
    position: int | None = None


def _int(doc: Mapping[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"envelope field {key} must be a non-negative integer")
    return value


def parse_envelope(doc: Any) -> Envelope:
    """An envelope from a decoded JSON body; ValueError when it is not one."""
    if not isinstance(doc, Mapping):
        raise ValueError("event is not a JSON object")
    kinds = {"id": str, "type": str, "occurred_at": str, "data": dict}
    bad = [k for k, kind in kinds.items() if not isinstance(doc.get(k), kind)]
    if bad:
        raise ValueError(f"event lacks or mistypes {', '.join(bad)}")
    try:
        when = datetime.fromisoformat(doc["occurred_at"])
    except ValueError as exc:
        raise ValueError("occurred_at is not an ISO 8601 time") from exc
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    stream = doc.get("stream")
    if stream is not None and (not isinstance(stream, str) or not 0 < len(stream) <= _MAX_ID):
        raise ValueError("envelope field stream must be a short string")
    version = _int(doc, "version")
    if version == 0:
        raise ValueError("envelope field version is 1-based")
    return Envelope(
        id=doc["id"][:_MAX_ID],
        type=doc["type"],
        occurred_at=when,
        data=doc["data"],
        stream=stream,
        version=version,
        position=_int(doc, "position"),
    )


def cents(text: object) -> int | None:
    """Money text ("12.50") as integer cents; None for null or anything not money."""
    if not isinstance(text, str | int):
        return None
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return None
    return int((value * 100).to_integral_value()) if value.is_finite() else None


def money(amount_cents: int) -> str:
    return f"{Decimal(amount_cents) / 100:.2f}"


def _items(raw: object) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for line in raw if isinstance(raw, list) else []:
        if not isinstance(line, Mapping) or not isinstance(line.get("sku"), str):
            continue
        qty = line.get("quantity")
        price = line.get("unit_price")
        items.append(
            {
                "sku": line["sku"][:_MAX_ID],
                "quantity": qty if isinstance(qty, int) and not isinstance(qty, bool) else 0,
                "unit_price": price if isinstance(price, str) else None,
            }
        )
    return items


@dataclass(frozen=True)
class OrderView:
    """One order in "my orders", and where its stream stands."""

    order_id: str
    owner: str
    status: str
    payment_state: str
    currency: str
    items: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    version: int
    position: int
    total: str | None = None
    payment_id: str | None = None
    captured_amount: str | None = None
    confirmed_day: str | None = None
    notifications: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Sale:
    """A confirmed order as the sales and bought-together models count it."""

    day: str
    currency: str
    lines: list[tuple[str, int, int]]  # (sku, units, revenue in cents)

    @property
    def skus(self) -> list[str]:
        return sorted({sku for sku, _, _ in self.lines})


def evolve(view: OrderView | None, env: Envelope) -> tuple[OrderView, Sale | None]:
    """The order's row after `env` (the next event of its stream), and the sale it makes."""
    d = env.data
    if view is None:
        view = OrderView(
            order_id=str(env.stream or d.get("order_id")),
            owner=str(d.get("owner") or ""),
            status="PENDING",
            payment_state="pending",
            currency=str(d.get("currency") or "EUR")[:3],
            items=[],
            created_at=env.occurred_at,
            updated_at=env.occurred_at,
            version=0,
            position=0,
        )
    changes: dict[str, Any] = {
        "version": env.version if env.version is not None else view.version + 1,
        "position": max(view.position, env.position or 0),
        "updated_at": env.occurred_at,
    }
    if not view.owner and isinstance(d.get("owner"), str):
        changes["owner"] = d["owner"]
    sale: Sale | None = None
    match env.type:
        case "order.created" | "order.priced":
            if "items" in d:
                changes["items"] = _items(d["items"])
            if isinstance(d.get("total"), str):
                changes["total"] = d["total"]
            if isinstance(d.get("currency"), str):
                changes["currency"] = d["currency"][:3]
        case "order.payment_captured":
            changes.update(
                payment_state="captured",
                payment_id=str(d.get("payment_id") or "")[:_MAX_ID] or None,
                captured_amount=d.get("amount") if isinstance(d.get("amount"), str) else None,
            )
        case "order.payment_declined":
            changes["payment_state"] = "declined"
        case "order.payment_refunded":
            changes["payment_state"] = "refunded"
        case "order.confirmed":
            day = env.occurred_at.astimezone(UTC).date().isoformat()
            changes.update(status="CONFIRMED", confirmed_day=day)
            if isinstance(d.get("total"), str):
                changes["total"] = d["total"]
            if isinstance(d.get("currency"), str):
                changes["currency"] = d["currency"][:3]
            if view.status != "CONFIRMED":
                items = changes.get("items", view.items)
                lines = [
                    (ln["sku"], ln["quantity"], ln["quantity"] * (cents(ln["unit_price"]) or 0))
                    for ln in items
                ]
                sale = Sale(day, changes.get("currency", view.currency), lines)
        case "order.rejected":
            changes["status"] = "REJECTED"
    return dataclasses.replace(view, **changes), sale
