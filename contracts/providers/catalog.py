"""catalog as a provider: products created through the catalog's own use case, and its
product events written by those use cases into its outbox and read back by the chassis relay
- the message exactly as it would be published."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from chassis import sqlite_url
from chassis.flags import FlagStore
from services.catalog.__main__ import init
from services.catalog.adapters.orm import outbox
from services.catalog.adapters.repository import ProductFilter
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.service_layer import services
from services.catalog.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from services.catalog.settings import CatalogSettings

from ..harness import serve_wsgi
from . import Context, Message, Provider, relay_capture


def start(ctx: Context) -> Provider:
    settings = CatalogSettings(database_url=sqlite_url(ctx.workdir / "catalog.db"), relay=False)
    init(settings)
    flags_file = ctx.workdir / "flags.yaml"
    flags = FlagStore(flags_file)

    def v2_products(on: bool) -> None:
        """The catalog.v2_products flag on (or off) for everyone, at once."""
        rule = "{enabled: true}" if on else "{enabled: false}"
        flags_file.write_text(f"flags:\n  catalog.v2_products: {rule}\n", encoding="utf-8")
        assert flags.reload() == []

    v2_products(True)
    app = create_app(settings, verifier=ctx.issuer.verifier(), flags=flags)
    engine = deps(app).engine

    def product_exists(
        id: str = "prod-1", sku: str = "SKU-1", price: str = "9.99", v2: str = "on"
    ) -> None:
        v2_products(v2 == "on")
        uow = SqlAlchemyUnitOfWork(engine)
        found = services.list_products(uow, ProductFilter(sku=sku), None, 1).items
        if found:
            ctx.alias(id, found[0].id)
            return
        new = services.NewProduct(sku=sku, name="Widget", category="tools", price=Decimal(price))
        ctx.alias(id, services.create_product(uow, new).product.id)

    def new_product() -> str:
        sku = f"SKU-{uuid.uuid4().hex[:8].upper()}"
        new = services.NewProduct(sku=sku, name="Widget", category="tools", price=Decimal("9.99"))
        return services.create_product(SqlAlchemyUnitOfWork(engine), new).product.id

    def event(change: Callable[[str], object]) -> Callable[[], Message]:
        def produce() -> Message:
            change(new_product())
            return relay_capture(engine, outbox)[-1]

        return produce

    events = {
        "product.created": event(lambda _id: None),
        "product.updated": event(
            lambda pid: services.update_product(
                SqlAlchemyUnitOfWork(engine), pid, {"name": "Widget 2"}
            )
        ),
        "product.deleted": event(
            lambda pid: services.delete_product(SqlAlchemyUnitOfWork(engine), pid)
        ),
    }
    backend = serve_wsgi(app)

    def close() -> None:
        engine.dispose()

    return Provider("catalog", backend, {"a product exists": product_exists}, events, close=close)
