"""The payments domain: money in cents, payment states, payment-method tokens."""

from .model import (
    CURRENCY,
    PAYMENT_METHODS,
    Payment,
    PaymentStatus,
    check_payment_method,
    format_cents,
    parse_amount,
)

__all__ = [
    "CURRENCY",
    "PAYMENT_METHODS",
    "Payment",
    "PaymentStatus",
    "check_payment_method",
    "format_cents",
    "parse_amount",
]
