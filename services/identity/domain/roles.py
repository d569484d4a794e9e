"""User roles and the scopes each may hold.

A user token carries `requested ∩ client's allowed ∩ role's allowed`: the client's list says what
an application may ask for, the role says what the person signing in may have. Customers
register themselves, so their role must never reach writes that change what others see (the
catalog, stock, payments) or anyone else's records (`:read:all`). Staff and admins are created
only by identity's command line.
"""

from __future__ import annotations

from enum import StrEnum

from .scopes import SUPPORTED

__all__ = ["CUSTOMER_SCOPES", "ROLE_SCOPES", "Role", "allowed_scopes", "cap_scope"]


class Role(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    ADMIN = "admin"


CUSTOMER_SCOPES: frozenset[str] = frozenset(
    {
        "catalog:read",
        "profile",
        "orders:read",
        "orders:write",
        "inventory:read",
        "payments:read",
        "notifications:read",
    }
)
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.CUSTOMER: CUSTOMER_SCOPES,
    Role.STAFF: frozenset(SUPPORTED),
    Role.ADMIN: frozenset(SUPPORTED),
}


def allowed_scopes(role: str) -> frozenset[str]:
    """What `role` may hold; an unknown role (a damaged row) may hold nothing: fail closed."""
    try:
        return ROLE_SCOPES[Role(role)]
    except ValueError:
        return frozenset()


def cap_scope(role: str, scope: str | None) -> str:
    """The scopes of the space-separated `scope` that `role` may hold, in their order."""
    allowed = allowed_scopes(role)
    return " ".join(s for s in dict.fromkeys((scope or "").split()) if s in allowed)
