"""SQL access to payments on one Connection (one transaction per step of a use case).

State changes are conditional UPDATEs (`WHERE status = ... AND attempt_at = ...`): whoever
loses a race changes nothing and reads what the winner stored.
"""

from __future__ import annotations

import abc
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..domain import Payment, PaymentStatus
from .orm import payments

__all__ = ["AbstractPaymentRepository", "DuplicateKey", "PaymentRepository"]


class DuplicateKey(Exception):
    """A payment with this Idempotency-Key exists already."""


def _payment(row: Row[Any]) -> Payment:
    m = row._mapping
    return Payment(
        id=m["id"],
        order_id=m["order_id"],
        amount_cents=int(m["amount_cents"]),
        currency=m["currency"],
        payment_method=m["payment_method"],
        status=PaymentStatus(m["status"]),
        idempotency_key=m["idempotency_key"],
        fingerprint=m["fingerprint"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        attempt_at=float(m["attempt_at"]),
        decline_code=m["decline_code"],
        refunded_at=m["refunded_at"],
        owner=m["owner"],
    )


# Built once: the read by id is the hot path.
_BY_ID = select(payments).where(payments.c.id == bindparam("payment_id"))


class AbstractPaymentRepository(abc.ABC):
    """What the use cases need from storage; SQL here, in memory in `adapters/memory.py`."""

    @abc.abstractmethod
    def add(self, p: Payment) -> None:
        """Store a new payment; raises DuplicateKey when its Idempotency-Key is taken."""

    @abc.abstractmethod
    def get(self, payment_id: str) -> Payment | None: ...

    @abc.abstractmethod
    def by_key(self, key: str) -> Payment | None: ...

    @abc.abstractmethod
    def by_order(
        self, order_id: str | None, limit: int, owner: str | None = None
    ) -> list[Payment]: ...

    @abc.abstractmethod
    def take_over(self, payment_id: str, seen_attempt: float, now: float) -> bool: ...

    @abc.abstractmethod
    def finish(
        self,
        payment_id: str,
        attempt: float,
        status: PaymentStatus,
        now_text: str,
        decline_code: str | None = None,
    ) -> bool: ...

    @abc.abstractmethod
    def abandon(self, payment_id: str, attempt: float) -> None: ...

    @abc.abstractmethod
    def refund(self, payment_id: str, key: str, now_text: str) -> bool: ...


class PaymentRepository(AbstractPaymentRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, p: Payment) -> None:
        values = {
            "id": p.id,
            "idempotency_key": p.idempotency_key,
            "fingerprint": p.fingerprint,
            "order_id": p.order_id,
            "owner": p.owner,
            "amount_cents": p.amount_cents,
            "currency": p.currency,
            "payment_method": p.payment_method,
            "status": p.status.value,
            "decline_code": p.decline_code,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
            "attempt_at": p.attempt_at,
        }
        try:
            self.conn.execute(insert(payments).values(**values))
        except IntegrityError as exc:
            raise DuplicateKey(p.idempotency_key) from exc

    def get(self, payment_id: str) -> Payment | None:
        row = self.conn.execute(_BY_ID, {"payment_id": payment_id}).first()
        return _payment(row) if row else None

    def by_key(self, key: str) -> Payment | None:
        row = self.conn.execute(select(payments).where(payments.c.idempotency_key == key)).first()
        return _payment(row) if row else None

    def by_order(self, order_id: str | None, limit: int, owner: str | None = None) -> list[Payment]:
        """Newest first; narrowed to one order's and/or one owner's when given."""
        stmt = select(payments).order_by(payments.c.created_at.desc(), payments.c.id).limit(limit)
        if order_id is not None:
            stmt = stmt.where(payments.c.order_id == order_id)
        if owner is not None:
            stmt = stmt.where(payments.c.owner == owner)
        return [_payment(row) for row in self.conn.execute(stmt)]

    def take_over(self, payment_id: str, seen_attempt: float, now: float) -> bool:
        """Claim an abandoned PENDING attempt; only one of several contenders wins."""
        c = payments.c
        result = self.conn.execute(
            update(payments)
            .where(c.id == payment_id, c.status == "PENDING", c.attempt_at == seen_attempt)
            .values(attempt_at=now)
        )
        return result.rowcount == 1

    def finish(
        self,
        payment_id: str,
        attempt: float,
        status: PaymentStatus,
        now_text: str,
        decline_code: str | None = None,
    ) -> bool:
        """PENDING (this attempt) -> CAPTURED or DECLINED; False if the attempt was lost."""
        c = payments.c
        result = self.conn.execute(
            update(payments)
            .where(c.id == payment_id, c.status == "PENDING", c.attempt_at == attempt)
            .values(status=status.value, decline_code=decline_code, updated_at=now_text)
        )
        return result.rowcount == 1

    def abandon(self, payment_id: str, attempt: float) -> None:
        """Drop this attempt's claim (provider outage: nothing charged, the key is free)."""
        c = payments.c
        self.conn.execute(
            delete(payments).where(
                c.id == payment_id, c.status == "PENDING", c.attempt_at == attempt
            )
        )

    def refund(self, payment_id: str, key: str, now_text: str) -> bool:
        c = payments.c
        result = self.conn.execute(
            update(payments)
            .where(c.id == payment_id, c.status == "CAPTURED")
            .values(status="REFUNDED", refund_key=key, refunded_at=now_text, updated_at=now_text)
        )
        return result.rowcount == 1
