"""The scopes identity knows about, and what each means on the consent page."""

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
    "payments:read": "See payments",
    "payments:write": "Charge and refund payments",
    "notifications:read": "Read your notifications",
}
SUPPORTED: tuple[str, ...] = tuple(DESCRIPTIONS)


def describe(scope: str) -> str:
    return DESCRIPTIONS.get(scope, scope)
