"""Payments and money.

Amounts travel as decimal strings ("12.50") and are kept as integer cents: exact, and the
same on SQLite and PostgreSQL. A payment is PENDING while the provider is asked (the row is
the claim on its Idempotency-Key), then CAPTURED or DECLINED; CAPTURED may become REFUNDED.

Only payment-method tokens are accepted, the way providers' test modes work; anything that
looks like a card number is refused without being echoed or stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "AMOUNT_DIGITS",
    "CURRENCY",
    "MAX_CENTS",
    "PAYMENT_METHODS",
    "Payment",
    "PaymentStatus",
    "check_payment_method",
    "format_cents",
    "parse_amount",
    "to_cents",
]

CURRENCY = "EUR"
MAX_CENTS = 100_000_000_00  # 100 million euros
PAYMENT_METHODS = ("pm_card_ok", "pm_card_declined", "pm_card_error", "pm_card_slow")
AMOUNT_DIGITS = len(str(MAX_CENTS // 100))
# ASCII digits ([0-9], not \d: that matches Arabic-Indic digits too), matched in full.
_AMOUNT = re.compile(rf"([0-9]{{1,{AMOUNT_DIGITS}}})(?:\.([0-9]{{1,2}}))?")
_DIGITS = re.compile(r"\d")


def parse_amount(text: str) -> int:
    """ "12.5" / "12.50" -> 1250 cents; more than 2 places is an error, never rounded."""
    match = _AMOUNT.fullmatch(text)
    if not match:
        raise ValueError("must be a decimal string with at most 2 places, like 12.50")
    return to_cents(Decimal(text))


def to_cents(amount: Decimal) -> int:
    """A bounded amount (at most AMOUNT_DIGITS digits, 2 places) -> cents, within the limits."""
    scaled = amount * 100
    cents = int(scaled)
    if scaled != cents:
        raise ValueError("must have at most 2 decimal places")
    if not 0 < cents <= MAX_CENTS:
        raise ValueError("must be above 0.00 and at most 100000000.00")
    return cents


def format_cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def check_payment_method(value: str) -> str | None:
    if len(_DIGITS.findall(value)) >= 12:
        return "raw card numbers are never accepted: send a payment-method token (pm_...)"
    if value not in PAYMENT_METHODS:
        return f"unknown payment method; one of {', '.join(PAYMENT_METHODS)}"
    return None


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"


@dataclass(frozen=True)
class Payment:
    id: str
    order_id: str
    amount_cents: int
    currency: str
    payment_method: str
    status: PaymentStatus
    idempotency_key: str
    fingerprint: str
    created_at: str
    updated_at: str
    attempt_at: float
    decline_code: str | None = None
    refunded_at: str | None = None
    # The user the payment is for (the order's owner); None only on rows from before owners
    # were recorded, which only a `payments:read:all` token can read.
    owner: str | None = None

    @property
    def amount(self) -> str:
        return format_cents(self.amount_cents)
