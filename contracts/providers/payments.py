"""payments as a provider: HTTP (payments made through the PaymentService use cases; the
simulated card provider's test tokens pick approve / decline / outage) and the payment
events, written by the service's OutboxWriter into its outbox and read back by the chassis
relay - the message exactly as it would be published."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from chassis import sqlite_url
from services.payments.__main__ import init
from services.payments.adapters.events import PUBLISHES
from services.payments.adapters.orm import outbox
from services.payments.app import create_app
from services.payments.entrypoints import deps
from services.payments.service_layer.services import ChargeRequest, PaymentService
from services.payments.settings import PaymentsSettings

from ..harness import serve_wsgi
from . import CONTRACT_USER, Context, Message, Provider, relay_capture


def start(ctx: Context) -> Provider:
    settings = PaymentsSettings(database_url=sqlite_url(ctx.workdir / "payments.db"), relay=False)
    init(settings)
    app = create_app(settings, verifier=ctx.issuer.verifier())
    service: PaymentService = deps(app).service
    engine = deps(app).engine

    def charge(order_id: str) -> str:
        # The contract user's: the front's token reads only its own payments.
        request = ChargeRequest(
            order_id=order_id, amount_cents=1998, payment_method="pm_card_ok", owner=CONTRACT_USER
        )
        return service.charge(f"contract-{uuid.uuid4().hex}", request).payment.id

    def captured(id: str = "pay-1", order_id: str = "ord-1") -> None:
        ctx.alias(id, charge(order_id))

    def producer(event_type: str) -> Callable[[], Message]:
        def produce() -> Message:
            payment_id = charge(f"ord-{uuid.uuid4().hex[:8]}")
            if event_type == "payment.refunded":
                service.refund(payment_id, f"contract-{uuid.uuid4().hex}")
            sent = [m for m in relay_capture(engine, outbox) if m[1]["routing_key"] == event_type]
            return sent[-1]

        return produce

    backend = serve_wsgi(app)

    def close() -> None:
        engine.dispose()

    return Provider(
        "payments",
        backend,
        {"a payment was captured": captured},
        {t: producer(t) for t in PUBLISHES},
        close=close,
    )
