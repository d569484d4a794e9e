"""The payments domain: money in cents, payment states, payment-method tokens."""

from .model import (
    AMOUNT_DIGITS,
    CURRENCY,
    PAYMENT_METHODS,
    Payment,
    PaymentStatus,
    check_payment_method,
    format_cents,
    parse_amount,
    to_cents,
)

__all__ = [
    "AMOUNT_DIGITS",
    "CURRENCY",
    "PAYMENT_METHODS",
    "Payment",
    "PaymentStatus",
    "check_payment_method",
    "format_cents",
    "parse_amount",
    "to_cents",
]
