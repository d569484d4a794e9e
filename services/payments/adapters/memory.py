"""An in-memory payment repository with the SQL adapter's behaviour, for fast use-case tests.

Like the SQL one, every state change is conditional (status and attempt) and reports whether
it happened, so a lost race changes nothing.
"""

from __future__ import annotations

import dataclasses

from ..domain import Payment, PaymentStatus
from .repository import AbstractPaymentRepository, DuplicateKey

__all__ = ["MemoryPaymentRepository"]


class MemoryPaymentRepository(AbstractPaymentRepository):
    def __init__(self, rows: dict[str, Payment]) -> None:
        self.rows = rows  # by id; Payment is frozen, so sharing rows is safe

    def add(self, p: Payment) -> None:
        if any(row.idempotency_key == p.idempotency_key for row in self.rows.values()):
            raise DuplicateKey(p.idempotency_key)
        self.rows[p.id] = p

    def get(self, payment_id: str) -> Payment | None:
        return self.rows.get(payment_id)

    def by_key(self, key: str) -> Payment | None:
        return next((p for p in self.rows.values() if p.idempotency_key == key), None)

    def by_order(self, order_id: str | None, limit: int, owner: str | None = None) -> list[Payment]:
        found = [
            p
            for p in self.rows.values()
            if (order_id is None or p.order_id == order_id) and (owner is None or p.owner == owner)
        ]
        found.sort(key=lambda p: p.id)
        found.sort(key=lambda p: p.created_at, reverse=True)  # newest first, then by id
        return found[:limit]

    def _pending(self, payment_id: str, attempt: float) -> Payment | None:
        p = self.rows.get(payment_id)
        ok = p is not None and p.status is PaymentStatus.PENDING and p.attempt_at == attempt
        return p if ok else None

    def take_over(self, payment_id: str, seen_attempt: float, now: float) -> bool:
        p = self._pending(payment_id, seen_attempt)
        if p is not None:
            self.rows[payment_id] = dataclasses.replace(p, attempt_at=now)
        return p is not None

    def finish(
        self,
        payment_id: str,
        attempt: float,
        status: PaymentStatus,
        now_text: str,
        decline_code: str | None = None,
    ) -> bool:
        p = self._pending(payment_id, attempt)
        if p is not None:
            self.rows[payment_id] = dataclasses.replace(
                p, status=status, decline_code=decline_code, updated_at=now_text
            )
        return p is not None

    def abandon(self, payment_id: str, attempt: float) -> None:
        if self._pending(payment_id, attempt) is not None:
            del self.rows[payment_id]

    def refund(self, payment_id: str, key: str, now_text: str) -> bool:
        p = self.rows.get(payment_id)
        if p is None or p.status is not PaymentStatus.CAPTURED:
            return False
        self.rows[payment_id] = dataclasses.replace(
            p, status=PaymentStatus.REFUNDED, refunded_at=now_text, updated_at=now_text
        )
        return True
