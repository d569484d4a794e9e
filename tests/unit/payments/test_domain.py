"""Money parsing and payment-method rules."""

from __future__ import annotations

import pytest

from services.payments.domain import check_payment_method, format_cents, parse_amount


@pytest.mark.parametrize(
    ("text", "cents"), [("79.80", 7980), ("79.8", 7980), ("1", 100), ("0.01", 1)]
)
def test_parse_amount(text: str, cents: int) -> None:
    assert parse_amount(text) == cents
    assert format_cents(cents) == f"{cents // 100}.{cents % 100:02d}"


@pytest.mark.parametrize("text", ["0", "0.00", "1.005", "-1", "1e3", "", " 1", "12,50"])
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_payment_methods() -> None:
    assert check_payment_method("pm_card_ok") is None
    assert "unknown" in (check_payment_method("pm_card_gold") or "")
    assert "card numbers" in (check_payment_method("4242 4242 4242 4242") or "")
