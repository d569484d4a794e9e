"""The order and its saga as a pure state machine: no I/O, no framework, no ORM.

The saga's steps, in order, and what each one's outcome leads to::

    PRICE    Priced -> RESERVE          UnknownSkus -> REJECTED
    RESERVE  Reserved -> CHARGE         OutOfStock -> REJECTED      Refused -> RELEASE
    CHARGE   Captured -> CONFIRMED + COMMIT (or, if the capture does not match the order,
             REFUND)                    Declined -> RELEASE
    COMMIT   Committed -> DONE          (the order is already confirmed: only retried)
    REFUND   Refunded -> RELEASE        (compensates CHARGE)
    RELEASE  Released -> REJECTED       (compensates RESERVE)

Any step answers `Unavailable` when its service cannot be reached: the saga stays where it is
(the order stays PENDING) and is retried later with a growing delay. Every step is keyed by
the order id upstream, so repeating one after a crash has no second effect; the runner
stores each transition, with the events it emits, in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "CURRENCY",
    "PUBLISHES",
    "Captured",
    "Committed",
    "Declined",
    "DomainEvent",
    "InvalidTransition",
    "Line",
    "Order",
    "OutOfStock",
    "Outcome",
    "Priced",
    "Refunded",
    "Refused",
    "Released",
    "Reserved",
    "Status",
    "Step",
    "Unavailable",
    "UnknownSkus",
    "retry_delay",
    "utcnow",
]

# Every event type the Order aggregate emits: the contracts runner derives message boundaries
# from it (a new event without a consumer contract shows up there).
PUBLISHES = ("order.created", "order.confirmed", "order.rejected")

CURRENCY = "EUR"
CENT = Decimal("0.01")


class Status(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"


class Step(StrEnum):
    PRICE = "PRICE"
    RESERVE = "RESERVE"
    CHARGE = "CHARGE"
    COMMIT = "COMMIT"
    REFUND = "REFUND"
    RELEASE = "RELEASE"
    DONE = "DONE"


# --- outcomes of a step (what the adapters report back) --------------------------------------


@dataclass(frozen=True)
class Priced:
    prices: Mapping[str, Decimal]


@dataclass(frozen=True)
class UnknownSkus:
    skus: tuple[str, ...]


@dataclass(frozen=True)
class Reserved:
    pass


@dataclass(frozen=True)
class OutOfStock:
    skus: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    """A permanent refusal that is neither out of stock nor a decline (a 4xx we cannot fix)."""

    detail: str


@dataclass(frozen=True)
class Captured:
    payment_id: str
    amount: Decimal
    currency: str = CURRENCY


@dataclass(frozen=True)
class Declined:
    reason: str


@dataclass(frozen=True)
class Committed:
    pass


@dataclass(frozen=True)
class Refunded:
    pass


@dataclass(frozen=True)
class Released:
    pass


@dataclass(frozen=True)
class Unavailable:
    """The step's service could not answer (timeout, 5xx, open circuit): try again later."""

    error: str


Outcome = (
    Priced
    | UnknownSkus
    | Reserved
    | OutOfStock
    | Refused
    | Captured
    | Declined
    | Committed
    | Refunded
    | Released
    | Unavailable
)

_EXPECTED: dict[Step, tuple[type, ...]] = {
    Step.PRICE: (Priced, UnknownSkus),
    Step.RESERVE: (Reserved, OutOfStock, Refused),
    Step.CHARGE: (Captured, Declined, Refused),
    Step.COMMIT: (Committed, Refused),
    Step.REFUND: (Refunded,),
    Step.RELEASE: (Released,),
    Step.DONE: (),
}


class InvalidTransition(Exception):
    """An outcome that the current step cannot produce: a bug in the runner or an adapter."""


@dataclass(frozen=True)
class DomainEvent:
    """`type` is the routing key (`order.created`, `order.confirmed`, `order.rejected`)."""

    type: str
    data: dict[str, object]


@dataclass
class Line:
    sku: str
    quantity: int
    unit_price: Decimal | None = None


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff for a step whose service is unavailable (jitter is added later)."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(CENT))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Order:
    id: str
    owner: str
    payment_method: str
    lines: list[Line]
    status: Status = Status.PENDING
    step: Step = Step.PRICE
    currency: str = CURRENCY
    total: Decimal | None = None
    reason: str | None = None
    payment_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    version: int = 1
    correlation_id: str | None = None

    @classmethod
    def place(
        cls,
        owner: str,
        items: Sequence[tuple[str, int]],
        payment_method: str,
        *,
        prices: Mapping[str, Decimal] | None = None,
        now: datetime | None = None,
        correlation_id: str | None = None,
    ) -> tuple[Order, list[DomainEvent]]:
        """A new PENDING order; priced already when the catalog answered at placement."""
        now = now or utcnow()
        order = cls(
            id=str(uuid.uuid4()),
            owner=owner,
            payment_method=payment_method,
            lines=[Line(sku, qty) for sku, qty in items],
            created_at=now,
            updated_at=now,
            correlation_id=correlation_id,
        )
        if prices is not None:
            order._price(prices)
        return order, [DomainEvent("order.created", order._created_data())]

    @property
    def finished(self) -> bool:
        return self.step is Step.DONE

    def apply(self, outcome: Outcome, now: datetime | None = None) -> list[DomainEvent]:
        """Move the saga on by one step's outcome; returns the events to publish with it."""
        now = now or utcnow()
        if isinstance(outcome, Unavailable):
            if self.finished:
                raise InvalidTransition(f"order {self.id} is finished")
            self.attempts += 1
            self.last_error = outcome.error[:500]
            self.updated_at = now
            return []
        if not isinstance(outcome, _EXPECTED[self.step]):
            raise InvalidTransition(f"{type(outcome).__name__} cannot follow step {self.step}")
        events = self._transition(outcome)
        if not isinstance(outcome, Refused) or self.step is not Step.COMMIT:
            self.attempts, self.last_error = 0, None
        self.updated_at = now
        return events

    def _transition(self, outcome: Outcome) -> list[DomainEvent]:
        match outcome:
            case Priced(prices=prices):
                missing = tuple(sorted({ln.sku for ln in self.lines} - set(prices)))
                if missing:
                    return self._reject(f"unknown sku: {', '.join(missing)}")
                self._price(prices)
            case UnknownSkus(skus=skus):
                return self._reject(f"unknown sku: {', '.join(sorted(skus))}")
            case Reserved():
                self.step = Step.CHARGE
            case OutOfStock(skus=skus):
                return self._reject(f"out of stock: {', '.join(sorted(skus))}")
            case Refused(detail=detail) if self.step is Step.RESERVE:
                self._compensate(Step.RELEASE, f"reservation refused: {detail}")
            case Refused(detail=detail) if self.step is Step.CHARGE:
                self._compensate(Step.RELEASE, f"payment refused: {detail}")
            case Refused(detail=detail):  # COMMIT: already confirmed; an operator must look
                self.attempts += 1
                self.last_error = f"reservation commit refused: {detail}"[:500]
            case Captured(payment_id=pid, amount=amount, currency=currency):
                self.payment_id = pid
                if self.total is None or amount != self.total or currency != self.currency:
                    self._compensate(Step.REFUND, "the payment did not match the order")
                else:
                    self.status = Status.CONFIRMED
                    self.step = Step.COMMIT
                    return [DomainEvent("order.confirmed", self._outcome_data())]
            case Declined(reason=reason):
                self._compensate(Step.RELEASE, f"payment declined: {reason}")
            case Committed():
                self.step = Step.DONE
            case Refunded():
                self.step = Step.RELEASE
            case Released():
                return self._reject(self.reason or "rejected")
        return []

    def _price(self, prices: Mapping[str, Decimal]) -> None:
        for line in self.lines:
            line.unit_price = prices[line.sku].quantize(CENT)
        self.total = sum(
            (ln.unit_price * ln.quantity for ln in self.lines if ln.unit_price is not None),
            Decimal("0.00"),
        ).quantize(CENT)
        self.step = Step.RESERVE

    def _compensate(self, step: Step, reason: str) -> None:
        self.step = step
        self.reason = reason

    def _reject(self, reason: str) -> list[DomainEvent]:
        self.status = Status.REJECTED
        self.step = Step.DONE
        self.reason = reason
        return [DomainEvent("order.rejected", self._outcome_data())]

    def _created_data(self) -> dict[str, object]:
        return {
            "order_id": self.id,
            "owner": self.owner,
            "items": [
                {"sku": ln.sku, "quantity": ln.quantity, "unit_price": _money(ln.unit_price)}
                for ln in self.lines
            ],
            "total": _money(self.total),
            "currency": self.currency,
        }

    def _outcome_data(self) -> dict[str, object]:
        data: dict[str, object] = {"order_id": self.id, "owner": self.owner}
        if self.status is Status.CONFIRMED:
            data.update(total=_money(self.total), currency=self.currency)
        else:
            data["reason"] = self.reason
        return data
