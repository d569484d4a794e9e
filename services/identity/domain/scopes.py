"""The scopes identity knows about, and what each means on the consent page."""

from __future__ import annotations

__all__ = ["DESCRIPTIONS", "SUPPORTED", "describe"]

DESCRIPTIONS: dict[str, str] = {
    "catalog:read": "Read the product catalog",
    "catalog:write": "Create, change and delete products",
    "profile": "Read your username and email address",
}
SUPPORTED: tuple[str, ...] = tuple(DESCRIPTIONS)


def describe(scope: str) -> str:
    return DESCRIPTIONS.get(scope, scope)
