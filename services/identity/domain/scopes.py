"""The scopes identity knows about, and what each means on the consent page.

`:read:all` scopes are staff-only reads of every user's records; without one, a service answers
only the caller's own (see `domain/roles.py` for who may hold which).
"""

from __future__ import annotations

__all__ = ["DESCRIPTIONS", "SUPPORTED", "describe"]

DESCRIPTIONS: dict[str, str] = {
    "catalog:read": "Read the product catalog",
    "catalog:write": "Create, change and delete products",
    "profile": "Read your username and email address",
    "orders:read": "See your orders",
    "orders:write": "Place orders",
    "inventory:read": "Read stock levels",
    "inventory:write": "Change stock and reservations",
    "payments:read": "See your payments",
    "payments:write": "Charge and refund payments",
    "notifications:read": "Read your notifications",
    "orders:read:all": "See every user's orders (staff)",
    "payments:read:all": "See every user's payments (staff)",
    "notifications:read:all": "Read every user's notifications (staff)",
    "users:read:all": "See every user's profile (staff)",
    "reports:read": "See sales reports (staff)",
    "orders:events": "Read the order event log (read-side services)",
}
SUPPORTED: tuple[str, ...] = tuple(DESCRIPTIONS)


def describe(scope: str) -> str:
    return DESCRIPTIONS.get(scope, scope)
