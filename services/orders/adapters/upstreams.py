"""The saga's view of catalog, inventory and payments, and its HTTP implementation.

`Upstreams` answers every step in domain outcomes (`Reserved`, `Declined`, `Unavailable`,
...), so the saga never sees HTTP. `HttpUpstreams` calls the services with orders' own token,
a timeout per call, retries with backoff and jitter (every call here is idempotent or keyed
by the order id, so a retry has no second effect) and one circuit breaker per dependency;
whatever cannot be answered now becomes `Unavailable` and the saga retries it later.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from chassis import REQUEST_ID_HEADER, OutOfBounds, correlation_id, parse_decimal
from chassis.resilience import CircuitBreaker, CircuitOpen, Retry
from chassis.service_token import ServiceToken, TokenUnavailable

from ..domain import (
    Captured,
    Committed,
    Declined,
    Line,
    OutOfStock,
    Priced,
    Refunded,
    Refused,
    Released,
    Reserved,
    Unavailable,
    UnknownSkus,
)

__all__ = ["OUTBOUND", "SERVICE_SCOPE", "HttpUpstreams", "Transient", "Upstreams"]

SERVICE_SCOPE = "catalog:read inventory:write payments:write"

# Every outbound call orders makes (`HttpUpstreams`' methods, and `ServiceToken`'s token
# request -> the provider it calls): the contracts runner derives the orders -> service
# boundaries from this, so a new call needs a contract.
OUTBOUND = {
    "token": "identity",
    "prices": "catalog",
    "reserve": "inventory",
    "commit": "inventory",
    "release": "inventory",
    "charge": "payments",
    "refund": "payments",
}
# A price or an amount from catalog or payments: 12 digits is far above any real one (catalog
# caps a price at 1,000,000.00, payments an amount at 100,000,000.00).
MONEY_DIGITS = 12


def _money(value: object) -> Decimal:
    """An amount another service sent ("12.50"), bounded before it becomes a Decimal."""
    return parse_decimal(value, digits=MONEY_DIGITS, places=2, numbers=False)


class Upstreams(abc.ABC):
    """What the saga asks of the other services; fakes implement this in tests."""

    @abc.abstractmethod
    async def prices(self, skus: Sequence[str]) -> Priced | UnknownSkus | Unavailable: ...

    @abc.abstractmethod
    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable: ...

    @abc.abstractmethod
    async def commit(self, order_id: str) -> Committed | Refused | Unavailable: ...

    @abc.abstractmethod
    async def release(self, order_id: str) -> Released | Unavailable: ...

    @abc.abstractmethod
    async def charge(
        self, order_id: str, amount: Decimal, currency: str, payment_method: str, *, owner: str
    ) -> Captured | Declined | Refused | Unavailable:
        """Charge the order; the payment is `owner`'s (the order's owner), so that user, and
        only that user (or staff with payments:read:all), can read it at payments."""

    @abc.abstractmethod
    async def refund(self, order_id: str, payment_id: str) -> Refunded | Unavailable: ...


class Transient(Exception):
    """The dependency failed in a way worth retrying (timeout, connection, 5xx, 429)."""


def _detail(body: Any, status: int) -> str:
    if isinstance(body, dict):
        text = body.get("detail") or body.get("title")
        if isinstance(text, str):
            return text[:300]
    return f"HTTP {status}"


class _Dependency:
    """One upstream service: base URL, timeout, breaker; retries shared by all."""

    def __init__(
        self,
        name: str,
        base_url: str,
        timeout: float,
        breaker: CircuitBreaker,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.breaker = breaker


class HttpUpstreams(Upstreams):
    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: ServiceToken,
        *,
        catalog_url: str,
        inventory_url: str,
        payments_url: str,
        catalog_timeout: float = 2.0,
        inventory_timeout: float = 3.0,
        payments_timeout: float = 5.0,
        retry: Retry | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.session = session
        self.token = token
        self.retry = retry or Retry(attempts=3, base_delay=0.05, max_delay=1.0)
        if Transient not in self.retry.retry_on:
            self.retry = Retry(
                self.retry.attempts, self.retry.base_delay, self.retry.max_delay, (Transient,)
            )

        def breaker(name: str) -> CircuitBreaker:
            return CircuitBreaker(
                name,
                failure_threshold=failure_threshold,
                recovery_timeout=recovery_timeout,
                registry=registry,
            )

        self.catalog = _Dependency("catalog", catalog_url, catalog_timeout, breaker("catalog"))
        self.inventory = _Dependency(
            "inventory", inventory_url, inventory_timeout, breaker("inventory")
        )
        self.payments = _Dependency("payments", payments_url, payments_timeout, breaker("payments"))

    # -- transport --------------------------------------------------------------------------

    async def _attempt(
        self,
        dep: _Dependency,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
    ) -> tuple[int, Any]:
        token = await self.token.get()
        sent = {"Authorization": f"Bearer {token}", **headers}
        cid = correlation_id.get()
        if cid:
            sent[REQUEST_ID_HEADER] = cid
        try:
            async with self.session.request(
                method,
                dep.base_url + path,
                json=body,
                params=params,
                headers=sent,
                timeout=dep.timeout,
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"{dep.name}: {type(exc).__name__}") from exc
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            doc = None
        if status == 401:
            self.token.invalidate(token)
            raise Transient(f"{dep.name}: 401 (service token refused)")
        if status >= 500 or status in (403, 408, 425, 429):
            raise Transient(f"{dep.name}: {status} {_detail(doc, status)}")
        return status, doc

    async def _call(
        self,
        dep: _Dependency,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One logical call: retried on Transient, each attempt guarded by the breaker.

        Raises Transient (after the last attempt), CircuitOpen or TokenUnavailable.
        """

        async def guarded() -> tuple[int, Any]:
            return await dep.breaker.call_async(
                self._attempt, dep, method, path, body, headers or {}, params
            )

        return await self.retry.call_async(guarded)

    @staticmethod
    def _unavailable(exc: Exception) -> Unavailable:
        return Unavailable(str(exc) or type(exc).__name__)

    # -- the saga's steps ---------------------------------------------------------------------

    async def prices(self, skus: Sequence[str]) -> Priced | UnknownSkus | Unavailable:
        async def one(sku: str) -> Decimal | None:
            status, doc = await self._call(
                self.catalog, "GET", "/api/v1/products", params={"sku": sku, "limit": "1"}
            )
            if status != 200 or not isinstance(doc, dict):
                raise Transient(f"catalog: unexpected {status}")
            for item in doc.get("items") or []:
                if isinstance(item, dict) and item.get("sku") == sku:
                    try:
                        return _money(item["price"])
                    except (KeyError, OutOfBounds) as exc:
                        raise Transient("catalog: product without a price") from exc
            return None

        unique = list(dict.fromkeys(skus))
        try:
            found = await asyncio.gather(*(one(s) for s in unique))
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        unknown = tuple(s for s, p in zip(unique, found, strict=True) if p is None)
        if unknown:
            return UnknownSkus(unknown)
        return Priced({s: p for s, p in zip(unique, found, strict=True) if p is not None})

    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable:
        body = {
            "order_id": order_id,
            "items": [{"sku": ln.sku, "quantity": ln.quantity} for ln in lines],
        }
        try:
            status, doc = await self._call(self.inventory, "POST", "/api/v1/reservations", body)
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        if status in (200, 201):
            return Reserved()
        skus = doc.get("skus") if isinstance(doc, dict) else None
        if status == 409 and isinstance(skus, list) and skus:
            return OutOfStock(tuple(str(s) for s in skus))
        return Refused(_detail(doc, status))  # e.g. 409: this order's reservation was released

    async def commit(self, order_id: str) -> Committed | Refused | Unavailable:
        try:
            status, doc = await self._call(
                self.inventory, "POST", f"/api/v1/reservations/{order_id}/commit"
            )
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        if status in (200, 204):
            return Committed()
        return Refused(_detail(doc, status))

    async def release(self, order_id: str) -> Released | Unavailable:
        try:
            status, doc = await self._call(
                self.inventory, "POST", f"/api/v1/reservations/{order_id}/release"
            )
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        if status in (200, 204, 404):  # 404: nothing was reserved, nothing to release
            return Released()
        return Unavailable(f"inventory: release answered {status} {_detail(doc, status)}")

    async def charge(
        self, order_id: str, amount: Decimal, currency: str, payment_method: str, *, owner: str
    ) -> Captured | Declined | Refused | Unavailable:
        body = {
            "order_id": order_id,
            "amount": str(amount),
            "currency": currency,
            "payment_method": payment_method,
            "owner": owner,  # orders' token has payments:write: it may say whose payment it is
        }
        # One key per order: however often this is retried, payments charges once.
        headers = {"Idempotency-Key": f"charge-{order_id}"}
        try:
            status, doc = await self._call(
                self.payments, "POST", "/api/v1/payments", body, headers=headers
            )
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        if status in (200, 201) and isinstance(doc, dict):
            if doc.get("status") not in (None, "CAPTURED"):
                return Unavailable(f"payments: payment is {doc.get('status')}")
            try:
                return Captured(
                    str(doc["id"]),
                    _money(doc.get("amount", str(amount))),
                    str(doc.get("currency", currency)),
                )
            except (KeyError, OutOfBounds):
                return Unavailable("payments: malformed payment")
        if status == 402:
            return Declined(_detail(doc, status))
        if status == 409:  # the key is busy or bound to another body: never guess, look later
            return Unavailable(f"payments: 409 {_detail(doc, status)}")
        return Refused(_detail(doc, status))

    async def refund(self, order_id: str, payment_id: str) -> Refunded | Unavailable:
        headers = {"Idempotency-Key": f"refund-{order_id}"}
        try:
            status, doc = await self._call(
                self.payments, "POST", f"/api/v1/payments/{payment_id}/refund", headers=headers
            )
        except (Transient, CircuitOpen, TokenUnavailable) as exc:
            return self._unavailable(exc)
        if status == 200:
            return Refunded()
        return Unavailable(f"payments: refund answered {status} {_detail(doc, status)}")
