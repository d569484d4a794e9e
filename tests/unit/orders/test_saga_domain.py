"""The saga as a pure state machine: every path, every compensation, no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders.domain import (
    Captured,
    Committed,
    Declined,
    InvalidTransition,
    Order,
    OutOfStock,
    Priced,
    Refunded,
    Refused,
    Released,
    Reserved,
    Status,
    Step,
    Unavailable,
    UnknownSkus,
    retry_delay,
)

PRICES = {"A-1": Decimal("10.00"), "B-2": Decimal("2.50")}


def new_order(priced: bool = True) -> Order:
    order, events = Order.place(
        "alice", [("A-1", 2), ("B-2", 4)], "pm_card_ok", prices=PRICES if priced else None
    )
    assert [e.type for e in events] == ["order.created"]
    return order


def run(order: Order, *outcomes: object) -> list[str]:
    types: list[str] = []
    for outcome in outcomes:
        types += [e.type for e in order.apply(outcome)]  # type: ignore[arg-type]
    return types


def test_placing_prices_and_totals() -> None:
    order, events = Order.place("alice", [("A-1", 2), ("B-2", 4)], "pm_card_ok", prices=PRICES)
    assert order.status is Status.PENDING and order.step is Step.RESERVE
    assert order.total == Decimal("30.00")
    data = events[0].data
    assert data["total"] == "30.00" and data["owner"] == "alice"
    assert data["items"] == [
        {"sku": "A-1", "quantity": 2, "unit_price": "10.00"},
        {"sku": "B-2", "quantity": 4, "unit_price": "2.50"},
    ]


def test_happy_path_confirms_before_committing_and_emits_once() -> None:
    order = new_order(priced=False)
    assert order.step is Step.PRICE and order.total is None
    assert run(order, Priced(PRICES), Reserved()) == ["order.priced", "order.stock_reserved"]
    assert order.step is Step.CHARGE
    assert run(order, Captured("pay-1", Decimal("30.00"))) == [
        "order.payment_captured",
        "order.confirmed",
    ]
    assert order.status is Status.CONFIRMED and order.step is Step.COMMIT
    assert order.payment_id == "pay-1"
    assert run(order, Committed()) == ["order.stock_committed"]
    assert order.finished and order.status is Status.CONFIRMED


def test_confirmed_event_data() -> None:
    order = new_order()
    *_, event = order.apply(Reserved()) + order.apply(Captured("p", Decimal("30.00")))
    assert event.type == "order.confirmed"
    assert event.data == {
        "order_id": order.id,
        "owner": "alice",
        "total": "30.00",
        "currency": "EUR",
        "payment_id": "p",
    }


def test_unknown_sku_rejects_without_compensation() -> None:
    order = new_order(priced=False)
    assert run(order, UnknownSkus(("B-2",))) == ["order.rejected"]
    assert order.status is Status.REJECTED and order.finished
    assert order.reason == "unknown sku: B-2"


def test_prices_missing_a_sku_count_as_unknown() -> None:
    order = new_order(priced=False)
    assert run(order, Priced({"A-1": Decimal(1)})) == ["order.rejected"]
    assert order.reason == "unknown sku: B-2"


def test_out_of_stock_rejects_with_reason_and_nothing_to_release() -> None:
    order = new_order()
    events = order.apply(OutOfStock(("B-2", "A-1")))
    assert [e.type for e in events] == ["order.rejected"]
    assert events[0].data == {"order_id": order.id, "owner": "alice", "reason": order.reason}
    assert order.reason == "out of stock: A-1, B-2" and order.finished


def test_refused_reservation_is_released_then_rejected() -> None:
    order = new_order()
    assert run(order, Refused("reservation is RELEASED")) == ["order.compensating"]
    assert order.step is Step.RELEASE and order.status is Status.PENDING
    assert run(order, Released()) == ["order.stock_released", "order.rejected"]
    assert order.reason == "reservation refused: reservation is RELEASED"


def test_declined_payment_releases_stock_then_rejects() -> None:
    order = new_order()
    assert run(order, Reserved(), Declined("card declined")) == [
        "order.stock_reserved",
        "order.payment_declined",
    ]
    assert order.step is Step.RELEASE and order.status is Status.PENDING
    assert run(order, Released()) == ["order.stock_released", "order.rejected"]
    assert order.status is Status.REJECTED and order.reason == "payment declined: card declined"


def test_refused_charge_releases_stock_then_rejects() -> None:
    order = new_order()
    assert run(order, Reserved(), Refused("invalid payment method"), Released()) == [
        "order.stock_reserved",
        "order.payment_declined",
        "order.stock_released",
        "order.rejected",
    ]
    assert order.reason == "payment refused: invalid payment method"


@pytest.mark.parametrize(
    "capture",
    [Captured("pay-9", Decimal("29.99")), Captured("pay-9", Decimal("30.00"), currency="USD")],
)
def test_capture_that_does_not_match_is_refunded_released_and_rejected(
    capture: Captured,
) -> None:
    order = new_order()
    assert run(order, Reserved(), capture) == ["order.stock_reserved", "order.payment_captured"]
    assert order.step is Step.REFUND and order.payment_id == "pay-9"
    assert order.status is Status.PENDING
    assert run(order, Refunded()) == ["order.payment_refunded"]
    assert order.step is Step.RELEASE
    assert run(order, Released()) == ["order.stock_released", "order.rejected"]
    assert order.reason == "the payment did not match the order"


@pytest.mark.parametrize(
    "prefix",
    [
        [],  # PRICE
        [Priced(PRICES)],  # RESERVE
        [Priced(PRICES), Reserved()],  # CHARGE: payments down -> stays PENDING
        [Priced(PRICES), Reserved(), Captured("p", Decimal("30.00"))],  # COMMIT
        [Priced(PRICES), Reserved(), Declined("no")],  # RELEASE
        [Priced(PRICES), Reserved(), Captured("p", Decimal("1"))],  # REFUND
    ],
)
def test_unavailable_keeps_the_step_and_counts_attempts(prefix: list[object]) -> None:
    order = new_order(priced=False)
    run(order, *prefix)
    step, status = order.step, order.status
    assert run(order, Unavailable("payments: 503"), Unavailable("circuit open")) == []
    assert (order.step, order.status) == (step, status)
    assert order.attempts == 2 and order.last_error == "circuit open"
    # The next real answer moves on and clears the error.
    nxt = {
        Step.PRICE: Priced(PRICES),
        Step.RESERVE: Reserved(),
        Step.CHARGE: Captured("p", Decimal("30.00")),
        Step.COMMIT: Committed(),
        Step.RELEASE: Released(),
        Step.REFUND: Refunded(),
    }[step]
    order.apply(nxt)
    assert order.step is not step and order.attempts == 0 and order.last_error is None


def test_commit_refused_after_confirmation_never_unconfirms() -> None:
    order = new_order()
    run(order, Reserved(), Captured("p", Decimal("30.00")))
    assert run(order, Refused("reservation is RELEASED")) == []
    assert order.status is Status.CONFIRMED and order.step is Step.COMMIT
    assert order.attempts == 1 and "commit refused" in (order.last_error or "")
    assert run(order, Committed()) == ["order.stock_committed"] and order.finished


@pytest.mark.parametrize(
    ("prefix", "outcome"),
    [
        ([], Captured("p", Decimal(1))),
        ([Reserved()], Reserved()),
        ([Reserved()], Released()),
        ([Reserved(), Declined("x")], Refunded()),
        ([OutOfStock(("A-1",))], Reserved()),
        ([OutOfStock(("A-1",))], Unavailable("x")),
    ],
)
def test_outcomes_the_step_cannot_produce_are_refused(
    prefix: list[object], outcome: object
) -> None:
    order = new_order()
    run(order, *prefix)
    with pytest.raises(InvalidTransition):
        order.apply(outcome)  # type: ignore[arg-type]


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay(n, 0.5, 3.0) for n in (1, 2, 3, 4, 9)] == [0.5, 1.0, 2.0, 3.0, 3.0]
