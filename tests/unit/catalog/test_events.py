"""Catalog's product events: recorded by the use cases, written by the unit of work into the
outbox in the transaction of the change (none for a change that did not happen), with the
data the gateway's cache purges by (`id`, `sku`, `version`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from chassis.messaging import OutboxWriter
from services.catalog.adapters.events import PUBLISHES
from services.catalog.adapters.orm import outbox
from services.catalog.domain import ProductCreated, ProductDeleted, ProductUpdated
from services.catalog.entrypoints import deps
from services.catalog.service_layer import services
from services.catalog.service_layer.services import NewProduct
from services.catalog.service_layer.unit_of_work import InMemoryUnitOfWork, SqlAlchemyUnitOfWork

from .conftest import Api

NEW = NewProduct(sku="EV-0001", name="Mug", category="kitchen", price=Decimal("5.00"))


def _rows(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    with deps(app).engine.connect() as conn:
        rows = conn.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.seq))
        return [(t, dict(d)) for t, d in rows]


def test_publishes_the_event_types_the_gateway_purges_on() -> None:
    from gateway.config import load_config

    purge_on = {
        event
        for route in load_config().routes
        for ref in route.policies
        if ref.use == "cache"
        for event in ref.settings["purge_on"]
    }
    assert purge_on == set(PUBLISHES) == {"product.created", "product.updated", "product.deleted"}


def test_use_cases_record_one_event_per_change() -> None:
    uow = InMemoryUnitOfWork()
    product = services.create_product(uow, NEW, idempotency=("alice", "k1")).product
    services.create_product(uow, NEW, idempotency=("alice", "k1"))  # a replay: no new fact
    services.update_product(uow, product.id, {"price": Decimal("6.00")})
    services.update_product(uow, product.id, {"price": Decimal("6.00")})  # no change
    with pytest.raises(services.PreconditionFailed):
        services.update_product(uow, product.id, {"name": "Cup"}, expected_version=1)
    services.delete_product(uow, product.id)
    assert uow.published == [
        ProductCreated(product.id, "EV-0001", 1),
        ProductUpdated(product.id, "EV-0001", 2),
        ProductDeleted(product.id, "EV-0001", 2),
    ]
    assert uow.published[1].data() == {"id": product.id, "sku": "EV-0001", "version": 2}


def test_events_are_written_with_the_change_and_nudge_the_relay(app: Flask) -> None:
    woken: list[bool] = []
    sink = OutboxWriter(outbox, wake=lambda: woken.append(True))
    uow = SqlAlchemyUnitOfWork(deps(app).engine, sink)
    product = services.create_product(uow, NEW).product
    assert woken == [True]
    with uow:  # recorded, then rolled back: neither the change nor its event
        uow.record(ProductDeleted(product.id, product.sku, product.version))
    assert _rows(app) == [
        ("product.created", {"id": product.id, "sku": "EV-0001", "version": 1}),
    ]
    assert woken == [True]


def test_the_api_writes_the_events_into_the_outbox(app: Flask, api: Api) -> None:
    created = api.create(sku="EV-0002")
    assert created.status_code == 201
    url, pid = created.headers["Location"], created.get_json()["id"]
    patched = api.client.patch(url, json={"price": "7.50"}, headers=api.write)
    assert patched.status_code == 200
    unchanged = api.client.patch(url, json={"price": "7.50"}, headers=api.write)
    assert unchanged.status_code == 200
    assert api.client.delete(url, headers=api.write).status_code == 204
    assert _rows(app) == [
        ("product.created", {"id": pid, "sku": "EV-0002", "version": 1}),
        ("product.updated", {"id": pid, "sku": "EV-0002", "version": 2}),
        ("product.deleted", {"id": pid, "sku": "EV-0002", "version": 2}),
    ]
