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

The order is event-sourced (ADR 0029): every change of its state is an event `apply` returns
(and the runner appends to the order's stream), and `Order.from_events` folds a stream back
into the order - the `orders` row is a cache of that fold. A forward step (PRICE, RESERVE,
CHARGE) that stays unavailable past a bounded time is given up (`time_out`): what was done is
compensated and the order ends REJECTED; compensations and COMMIT are retried until they
succeed (giving them up would lose stock or money), visible as pending sagas by step and age.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

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
    "Recorded",
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
PUBLISHES = (
    "order.created",
    "order.priced",
    "order.stock_reserved",
    "order.payment_captured",
    "order.payment_declined",
    "order.confirmed",
    "order.stock_committed",
    "order.payment_refunded",
    "order.stock_released",
    "order.compensating",
    "order.rejected",
)
# Steps whose giving up only needs compensating what came before (ORDERS_SAGA_STEP_TIMEOUT).
FORWARD_STEPS = frozenset({"PRICE", "RESERVE", "CHARGE"})

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
    """`type` is the routing key (one of PUBLISHES); it occurred at the order's `updated_at`."""

    type: str
    data: dict[str, object]


class Recorded(Protocol):
    """An event as read back from the order's stream (`chassis.eventstore.RecordedEvent`)."""

    @property
    def type(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def version(self) -> int: ...
    @property
    def at(self) -> datetime: ...


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


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(CENT)


_MISMATCH = "the payment did not match the order"


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
    version: int = 1  # of the cached row (its conditional UPDATEs), not of the stream
    correlation_id: str | None = None
    stream_version: int = 0  # events in the order's stream (the last one's version)
    step_since: datetime = field(default_factory=utcnow)  # when the current step began

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
            step_since=now,
        )
        if prices is not None:
            order._price(prices)
        return order, order._emit([DomainEvent("order.created", order._created_data())])

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
        before = self.step
        events = self._transition(outcome)
        if not isinstance(outcome, Refused) or self.step is not Step.COMMIT:
            self.attempts, self.last_error = 0, None
        self.updated_at = now
        if self.step is not before:
            self.step_since = now
        return self._emit(events)

    def timed_out(self, now: datetime, timeout: float) -> bool:
        """A forward step that has not moved on for longer than `timeout` seconds."""
        return (
            self.step.value in FORWARD_STEPS and (now - self.step_since).total_seconds() > timeout
        )

    def time_out(self, now: datetime) -> list[DomainEvent]:
        """Give up the current forward step: reject at once when nothing was done yet
        (PRICE), else compensate (release the stock, which may be reserved) and reject after."""
        if self.step.value not in FORWARD_STEPS:
            raise InvalidTransition(f"step {self.step} cannot time out")
        error = f" (last error: {self.last_error})" if self.last_error else ""
        reason = f"{self.step.value.lower()} step timed out{error}"[:500]
        if self.step is Step.PRICE:
            events = self._reject(reason)
        elif self.step is Step.RESERVE:
            events = self._compensate(Step.RELEASE, reason)
        else:
            events = self._declined(reason)
        self.attempts, self.last_error = 0, None
        self.updated_at = self.step_since = now
        return self._emit(events)

    def _emit(self, events: list[DomainEvent]) -> list[DomainEvent]:
        self.stream_version += len(events)
        return events

    @classmethod
    def from_events(cls, events: Iterable[Recorded]) -> Order:
        """The order its stream describes (the events upcast to their current schemas)."""
        order: Order | None = None
        for event in events:
            if order is None:
                if event.type != "order.created":
                    raise ValueError(f"a stream starts with order.created, not {event.type}")
                order = cls._created(event.data, event.at)
            else:
                before = order.step
                order._fold(event.type, event.data)
                if order.step is not before:
                    order.step_since = event.at
            order.updated_at = event.at
            order.stream_version = event.version
        if order is None:
            raise ValueError("an empty stream")
        return order

    @classmethod
    def _created(cls, data: Mapping[str, Any], at: datetime) -> Order:
        lines = [
            Line(i["sku"], int(i["quantity"]), _decimal(i.get("unit_price"))) for i in data["items"]
        ]
        total = _decimal(data.get("total"))
        return cls(
            id=data["order_id"],
            owner=data["owner"],
            payment_method=data["payment_method"],
            lines=lines,
            currency=data.get("currency", CURRENCY),
            total=total,
            step=Step.PRICE if total is None else Step.RESERVE,
            created_at=at,
            updated_at=at,
            step_since=at,
        )

    def _fold(self, kind: str, data: Mapping[str, Any]) -> None:
        """One event's change (the same as `_transition` made when it was emitted)."""
        match kind:
            case "order.priced":
                for line, item in zip(self.lines, data["items"], strict=True):
                    line.unit_price = _decimal(item["unit_price"])
                self.total = _decimal(data["total"])
                self.currency = data.get("currency", self.currency)
                self.step = Step.RESERVE
            case "order.stock_reserved":
                self.step = Step.CHARGE
            case "order.payment_captured":
                self.payment_id = data["payment_id"]
                amount, currency = _decimal(data["amount"]), data["currency"]
                if amount != self.total or currency != self.currency:
                    self.step, self.reason = Step.REFUND, _MISMATCH
            case "order.payment_declined" | "order.compensating":
                self.step, self.reason = Step.RELEASE, data["reason"]
            case "order.confirmed":
                self.status, self.step = Status.CONFIRMED, Step.COMMIT
                self.total = _decimal(data["total"])
                self.payment_id = data.get("payment_id", self.payment_id)
            case "order.stock_committed":
                self.step = Step.DONE
            case "order.payment_refunded":
                self.step = Step.RELEASE
            case "order.stock_released":
                pass  # order.rejected follows in the same transaction
            case "order.rejected":
                self.status, self.step, self.reason = Status.REJECTED, Step.DONE, data["reason"]
            case _:
                raise ValueError(f"unknown order event {kind}")

    def snapshot(self) -> dict[str, object]:
        """What the events determine (not the saga's retry bookkeeping: attempts, last error,
        the row's own version): the cached row and the fold must agree on exactly this."""
        return {
            "id": self.id,
            "owner": self.owner,
            "payment_method": self.payment_method,
            "lines": [(ln.sku, ln.quantity, ln.unit_price) for ln in self.lines],
            "status": self.status,
            "step": self.step,
            "currency": self.currency,
            "total": self.total,
            "reason": self.reason,
            "payment_id": self.payment_id,
            "created_at": self.created_at,
            "step_since": self.step_since,
            "stream_version": self.stream_version,
        }

    def _transition(self, outcome: Outcome) -> list[DomainEvent]:
        match outcome:
            case Priced(prices=prices):
                missing = tuple(sorted({ln.sku for ln in self.lines} - set(prices)))
                if missing:
                    return self._reject(f"unknown sku: {', '.join(missing)}")
                self._price(prices)
                total = _money(self.total)
                items = self._items()
                return [
                    self._event("order.priced", items=items, total=total, currency=self.currency)
                ]
            case UnknownSkus(skus=skus):
                return self._reject(f"unknown sku: {', '.join(sorted(skus))}")
            case Reserved():
                self.step = Step.CHARGE
                return [self._event("order.stock_reserved")]
            case OutOfStock(skus=skus):
                return self._reject(f"out of stock: {', '.join(sorted(skus))}")
            case Refused(detail=detail) if self.step is Step.RESERVE:
                return self._compensate(Step.RELEASE, f"reservation refused: {detail}")
            case Refused(detail=detail) if self.step is Step.CHARGE:
                return self._declined(f"payment refused: {detail}")
            case Refused(detail=detail):  # COMMIT: already confirmed; an operator must look
                self.attempts += 1
                self.last_error = f"reservation commit refused: {detail}"[:500]
            case Captured(payment_id=pid, amount=amount, currency=currency):
                self.payment_id = pid
                captured = self._event(
                    "order.payment_captured",
                    payment_id=pid,
                    amount=_money(amount),
                    currency=currency,
                )
                if self.total is None or amount != self.total or currency != self.currency:
                    self.step, self.reason = Step.REFUND, _MISMATCH
                    return [captured]
                self.status = Status.CONFIRMED
                self.step = Step.COMMIT
                return [captured, DomainEvent("order.confirmed", self._outcome_data())]
            case Declined(reason=reason):
                return self._declined(f"payment declined: {reason}")
            case Committed():
                self.step = Step.DONE
                return [self._event("order.stock_committed")]
            case Refunded():
                self.step = Step.RELEASE
                return [self._event("order.payment_refunded", payment_id=self.payment_id)]
            case Released():
                released = self._event("order.stock_released")
                return [released, *self._reject(self.reason or "rejected")]
        return []

    def _price(self, prices: Mapping[str, Decimal]) -> None:
        for line in self.lines:
            line.unit_price = prices[line.sku].quantize(CENT)
        self.total = sum(
            (ln.unit_price * ln.quantity for ln in self.lines if ln.unit_price is not None),
            Decimal("0.00"),
        ).quantize(CENT)
        self.step = Step.RESERVE

    def _event(self, kind: str, **data: object) -> DomainEvent:
        return DomainEvent(kind, {"order_id": self.id, "owner": self.owner, **data})

    def _compensate(self, step: Step, reason: str) -> list[DomainEvent]:
        """Undo a reservation that may exist: `order.compensating` (not in the read side's
        contract; readers skip types they do not know, counting their versions)."""
        self.step = step
        self.reason = reason
        return [self._event("order.compensating", reason=reason, step=step.value)]

    def _declined(self, reason: str) -> list[DomainEvent]:
        self.step, self.reason = Step.RELEASE, reason
        return [self._event("order.payment_declined", reason=reason)]

    def _items(self) -> list[dict[str, object]]:
        return [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price": _money(ln.unit_price)}
            for ln in self.lines
        ]

    def _reject(self, reason: str) -> list[DomainEvent]:
        self.status = Status.REJECTED
        self.step = Step.DONE
        self.reason = reason
        return [DomainEvent("order.rejected", self._outcome_data())]

    def _created_data(self) -> dict[str, object]:
        return {
            "order_id": self.id,
            "owner": self.owner,
            "items": self._items(),
            "total": _money(self.total),
            "currency": self.currency,
            "payment_method": self.payment_method,
        }

    def _outcome_data(self) -> dict[str, object]:
        data: dict[str, object] = {"order_id": self.id, "owner": self.owner}
        if self.status is Status.CONFIRMED:
            data.update(total=_money(self.total), currency=self.currency)
            data["payment_id"] = self.payment_id
        else:
            data["reason"] = self.reason
        return data
