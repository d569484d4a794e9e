"""views as a provider: read models filled by its own projector from events in the contract's
envelope, and catalog's product ids through its own product map."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from chassis import create_db_engine, sqlite_url
from services.views.__main__ import migrate
from services.views.adapters import projection
from services.views.app import create_app
from services.views.domain import parse_envelope
from services.views.service_layer.lag import LagTracker
from services.views.service_layer.projector import Projector
from services.views.settings import ViewsSettings

from ..harness import serve_aiohttp
from . import CONTRACT_USER, Context, Provider

DAY = datetime(2026, 6, 1, 12, tzinfo=UTC)  # inside the report range the pact asks for


def start(ctx: Context) -> Provider:
    url = sqlite_url(ctx.workdir / "views.db")
    settings = ViewsSettings(
        database_url=url.replace("sqlite://", "sqlite+aiosqlite://"), consume=False, max_lag=3600
    )
    migrate(settings)
    lag = LagTracker()
    lag.caught_up_now(0)  # no broker here: the states below are everything there is
    app = create_app(settings, verifier=ctx.issuer.async_verifier(), lag=lag)
    backend = ctx.loop.run(serve_aiohttp(app))
    engine = create_db_engine(url)
    projector = Projector(lag)
    position = iter(range(1, 1_000_000))

    def order(order_id: str, owner: str, skus: list[str]) -> None:
        lines = [{"sku": s, "quantity": 1, "unit_price": "9.99"} for s in skus]
        total = f"{9.99 * len(skus):.2f}"
        base = {"order_id": order_id, "owner": owner}
        steps: list[tuple[str, dict[str, Any]]] = [
            ("order.created", {**base, "items": lines, "total": total, "currency": "EUR"}),
            ("order.stock_reserved", base),
            ("order.payment_captured", {**base, "payment_id": "pay-1", "amount": total}),
            ("order.confirmed", {**base, "total": total, "currency": "EUR"}),
        ]
        with engine.begin() as conn:
            for version, (type_, data) in enumerate(steps, 1):
                env = {
                    "id": uuid.uuid4().hex,
                    "type": type_,
                    "occurred_at": DAY.isoformat(),
                    "data": data,
                    "stream": order_id,
                    "version": version,
                    "position": next(position),
                }
                projector.apply_order(conn, parse_envelope(env))

    def confirmed_order(id: str = "ord-1", sku: str = "SKU-1") -> None:
        order(f"{id}-{uuid.uuid4().hex[:8]}", CONTRACT_USER, [sku])

    def bought_together(id: str = "prod-1", sku: str = "SKU-1") -> None:
        order(f"ord-{uuid.uuid4().hex[:8]}", CONTRACT_USER, [sku, f"{sku}-other"])
        with engine.begin() as conn:
            projection.upsert_product(conn, id, sku, 1, False)

    def close() -> None:
        ctx.loop.run(backend.stop())  # type: ignore[arg-type]
        engine.dispose()

    return Provider(
        "views",
        backend,
        {
            "a confirmed order is in the read models": confirmed_order,
            "a product was bought with another": bought_together,
        },
        close=close,
    )
