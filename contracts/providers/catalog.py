"""catalog as a provider: products created through the catalog's own use case."""

from __future__ import annotations

from decimal import Decimal

from chassis import sqlite_url
from chassis.flags import FlagStore
from services.catalog.__main__ import init
from services.catalog.adapters.repository import ProductFilter
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.service_layer import services
from services.catalog.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from services.catalog.settings import CatalogSettings

from ..harness import serve_wsgi
from . import Context, Provider


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

    backend = serve_wsgi(app)

    def close() -> None:
        engine.dispose()

    return Provider("catalog", backend, {"a product exists": product_exists}, close=close)
