"""The payments' use cases.

A charge is three short steps, never a transaction held open while the provider is asked:

1. claim the Idempotency-Key: INSERT a PENDING row (unique key). A concurrent or later
   request with the same key finds the row instead: same body -> the stored answer (or 409
   while the first is still in flight), different body -> 422;
2. ask the provider (the simulated one may sleep; `pm_card_error` raises);
3. finish the claim: CAPTURED + `payment.captured` in the outbox (one transaction), or
   DECLINED; on an outage the claim is dropped so a retry with the key starts afresh.

A PENDING row older than the lease belongs to a process that died mid-charge; a retry with
the same key takes it over (compare-and-set on `attempt_at`). Exactly one attempt can finish
a row, and there is one row per key: a key never captures twice.

Exceptions::

    PaymentError
     +-- PaymentNotFound         (404; also another owner's payment: no existence leak)
     +-- Declined                (402)
     +-- ProviderDown            (503, retryable with the same key)
     +-- ChargeInProgress        (409, Retry-After)
     +-- KeyReused               (422: same key, different request)
     +-- NotRefundable           (409: declined or pending payments)
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..adapters import events as outgoing
from ..adapters.provider import ProviderUnavailable, SimulatedProvider
from ..adapters.repository import DuplicateKey
from ..domain import CURRENCY, Payment, PaymentStatus
from .unit_of_work import AbstractUnitOfWork

__all__ = [
    "ChargeInProgress",
    "ChargeRequest",
    "Declined",
    "KeyReused",
    "NotRefundable",
    "PaymentError",
    "PaymentNotFound",
    "PaymentService",
    "ProviderDown",
    "Result",
]


class PaymentError(Exception):
    pass


class PaymentNotFound(PaymentError):
    pass


class Declined(PaymentError):
    def __init__(self, payment: Payment) -> None:
        super().__init__(payment.decline_code or "declined")
        self.payment = payment


class ProviderDown(PaymentError):
    pass


class ChargeInProgress(PaymentError):
    pass


class KeyReused(PaymentError):
    pass


class NotRefundable(PaymentError):
    def __init__(self, payment: Payment) -> None:
        super().__init__(f"payment {payment.id} is {payment.status.value}")
        self.payment = payment


@dataclass(frozen=True)
class ChargeRequest:
    order_id: str
    amount_cents: int
    payment_method: str
    currency: str = CURRENCY
    # Whose payment it is. Not part of the fingerprint: the key's first charge sets it, and a
    # retry (the saga's "charge-{order_id}") always names the same order, hence the same owner.
    owner: str | None = None

    def fingerprint(self) -> str:
        text = f"{self.order_id}|{self.amount_cents}|{self.currency}|{self.payment_method}"
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Result:
    payment: Payment
    replayed: bool


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


class PaymentService:
    """The use cases over a unit-of-work factory (SQL in the app, in memory in unit tests)."""

    def __init__(
        self,
        uow: Callable[[], AbstractUnitOfWork],
        provider: SimulatedProvider,
        *,
        pending_lease: float,
        clock: Callable[[], float] = time.time,
        reads: Callable[[], AbstractUnitOfWork] | None = None,
    ) -> None:
        self.uow = uow
        # Units for the reads: in the app a read unit (no transaction: on PostgreSQL no
        # BEGIN/ROLLBACK round trips); `uow` itself when not given (the unit tests' fakes).
        self.reads = reads or uow
        self.provider = provider
        self.lease = pending_lease
        self.clock = clock

    # --- reads -------------------------------------------------------------------------------

    def get(self, payment_id: str, owner: str | None = None) -> Payment:
        """One payment; with `owner`, another owner's payment is "not found" too (no leak)."""
        with self.reads() as uow:
            found = uow.payments.get(payment_id)
        if found is None or (owner is not None and found.owner != owner):
            raise PaymentNotFound(payment_id)
        return found

    def list(
        self, order_id: str | None, limit: int = 100, owner: str | None = None
    ) -> list[Payment]:
        """Newest first; `owner` narrows to one owner's (None: everyone's, for staff)."""
        with self.reads() as uow:
            return uow.payments.by_order(order_id, limit, owner)

    # --- charge ------------------------------------------------------------------------------

    def charge(self, key: str, request: ChargeRequest) -> Result:
        now = self.clock()
        claim = Payment(
            id=str(uuid.uuid4()),
            order_id=request.order_id,
            owner=request.owner,
            amount_cents=request.amount_cents,
            currency=request.currency,
            payment_method=request.payment_method,
            status=PaymentStatus.PENDING,
            idempotency_key=key,
            fingerprint=request.fingerprint(),
            created_at=_iso(now),
            updated_at=_iso(now),
            attempt_at=now,
        )
        try:
            with self.uow() as uow:
                uow.payments.add(claim)
                uow.commit()
        except DuplicateKey:
            return self._existing(key, request)
        return self._attempt(claim, now)

    def _existing(self, key: str, request: ChargeRequest) -> Result:
        with self.uow() as uow:
            found = uow.payments.by_key(key)
        if found is None:  # the first attempt hit an outage and dropped its claim just now
            raise ChargeInProgress(key)
        if found.fingerprint != request.fingerprint():
            raise KeyReused(key)
        if found.status is PaymentStatus.PENDING:
            now = self.clock()
            if now - found.attempt_at < self.lease:
                raise ChargeInProgress(key)
            with self.uow() as uow:
                won = uow.payments.take_over(found.id, found.attempt_at, now)
                uow.commit()
            if not won:
                raise ChargeInProgress(key)
            return self._attempt(found, now)
        if found.status is PaymentStatus.DECLINED:
            raise Declined(found)
        return Result(found, replayed=True)  # CAPTURED, or REFUNDED since

    def _attempt(self, claim: Payment, attempt: float) -> Result:
        try:
            outcome = self.provider.charge(
                claim.idempotency_key, claim.payment_method, claim.amount_cents, claim.currency
            )
        except ProviderUnavailable as exc:
            with self.uow() as uow:
                uow.payments.abandon(claim.id, attempt)
                uow.commit()
            raise ProviderDown(str(exc)) from exc
        # Anything else (a bug, a killed worker) leaves the claim PENDING: the lease lets a
        # retry with the same key take it over.
        status = PaymentStatus.CAPTURED if outcome.approved else PaymentStatus.DECLINED
        now_text = _iso(self.clock())
        with self.uow() as uow:
            finished = uow.payments.finish(
                claim.id, attempt, status, now_text, outcome.decline_code
            )
            payment = uow.payments.get(claim.id)
            assert payment is not None
            if finished and status is PaymentStatus.CAPTURED:
                uow.record(outgoing.captured(payment))
            uow.commit()  # and wakes the relay when it wrote the event
        if not finished:  # a takeover finished it first: report what is stored
            if payment.status is PaymentStatus.DECLINED:
                raise Declined(payment)
            if payment.status is PaymentStatus.PENDING:
                raise ChargeInProgress(claim.idempotency_key)
            return Result(payment, replayed=True)
        if status is PaymentStatus.CAPTURED:
            return Result(payment, replayed=False)
        raise Declined(payment)

    # --- refund ------------------------------------------------------------------------------

    def refund(self, payment_id: str, key: str) -> Result:
        """Full refund, idempotent per payment: again (any key) answers the refund made."""
        now_text = _iso(self.clock())
        with self.uow() as uow:
            done = uow.payments.refund(payment_id, key, now_text)
            payment = uow.payments.get(payment_id)
            if done:
                assert payment is not None
                uow.record(outgoing.refunded(payment))
            uow.commit()
        if payment is None:
            raise PaymentNotFound(payment_id)
        if done:
            return Result(payment, replayed=False)
        if payment.status is PaymentStatus.REFUNDED:
            return Result(payment, replayed=True)
        raise NotRefundable(payment)
