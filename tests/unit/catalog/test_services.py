"""Use cases against the in-memory unit of work: fast, and the same contract as SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.catalog.adapters.memory import MemoryIdempotencyStore, MemoryProductRepository
from services.catalog.adapters.repository import ProductFilter
from services.catalog.domain import InvalidProduct, Product
from services.catalog.service_layer import services
from services.catalog.service_layer.demo import DEMO_PRODUCTS, seed_demo
from services.catalog.service_layer.services import NewProduct
from services.catalog.service_layer.unit_of_work import InMemoryUnitOfWork


def ticking_clock() -> Iterator[datetime]:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    while True:
        yield t
        t += timedelta(seconds=1)


@pytest.fixture
def uow() -> InMemoryUnitOfWork:
    return InMemoryUnitOfWork()


def new(sku: str = "SKU-1", **kw: object) -> NewProduct:
    args: dict[str, object] = {"name": "Thing", "category": "misc", "price": Decimal("5")}
    args.update(kw)
    return NewProduct(sku=sku, **args)  # type: ignore[arg-type]


def create(uow: InMemoryUnitOfWork, sku: str = "SKU-1", **kw: object) -> Product:
    return services.create_product(uow, new(sku, **kw)).product


def test_unit_of_work_rolls_back_unless_committed(uow: InMemoryUnitOfWork) -> None:
    p = Product.create(sku="SKU-1", name="x", category="c", price=Decimal(1))
    with uow:
        uow.products.add(p)
    with uow:
        assert uow.products.get(p.id) is None
    with pytest.raises(RuntimeError), uow:
        uow.products.add(p)
        raise RuntimeError("boom")
    with uow:
        uow.products.add(p)
        uow.commit()
    with uow:
        assert uow.products.get(p.id) == p


def test_create_and_get(uow: InMemoryUnitOfWork) -> None:
    created = services.create_product(uow, new())
    assert not created.replayed and uow.commits == 1
    assert services.get_product(uow, created.product.id) == created.product


def test_get_missing(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(services.ProductNotFound):
        services.get_product(uow, "nope")


def test_duplicate_sku(uow: InMemoryUnitOfWork) -> None:
    create(uow)
    with pytest.raises(services.DuplicateSku):
        create(uow, name="Other")
    assert uow.commits == 1


def test_invalid_values_raise_domain_errors(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(InvalidProduct):
        services.create_product(uow, new(price=Decimal("-3")))


def test_idempotent_create_replays_the_first_result(uow: InMemoryUnitOfWork) -> None:
    first = services.create_product(uow, new(), idempotency=("client-a", "k1"))
    again = services.create_product(uow, new(), idempotency=("client-a", "k1"))
    assert again.replayed and again.product == first.product
    assert uow.commits == 1
    with pytest.raises(services.IdempotencyKeyReused):
        services.create_product(uow, new(name="Changed"), idempotency=("client-a", "k1"))
    # keys are per client: another client's same key is a new request (and here a dup sku)
    with pytest.raises(services.DuplicateSku):
        services.create_product(uow, new(), idempotency=("client-b", "k1"))


def test_fingerprint_ignores_how_the_price_is_written() -> None:
    assert new(price=Decimal("1")).fingerprint() == new(price=Decimal("1.00")).fingerprint()
    assert new(price=Decimal("1")).fingerprint() != new(price=Decimal("1.01")).fingerprint()
    assert new(price=Decimal("1")).fingerprint() != new(name="Other").fingerprint()


def test_replay_survives_later_changes(uow: InMemoryUnitOfWork) -> None:
    first = services.create_product(uow, new(), idempotency=("c", "k"))
    services.delete_product(uow, first.product.id)
    assert services.create_product(uow, new(), idempotency=("c", "k")).product == first.product


def test_lost_race_on_the_same_key_replays(
    uow: InMemoryUnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent retry committed between our lookups and our insert: we replay its result."""
    winner = services.create_product(uow, new(), idempotency=("c", "k"))
    lookups = iter([None])  # our first key lookup misses; later ones see the winner
    real_get = MemoryIdempotencyStore.get
    monkeypatch.setattr(
        MemoryIdempotencyStore, "get", lambda self, o, k: next(lookups, real_get(self, o, k))
    )
    monkeypatch.setattr(MemoryProductRepository, "get_by_sku", lambda self, sku: None)
    result = services.create_product(uow, new(), idempotency=("c", "k"))
    assert result.replayed and result.product == winner.product


def test_list_pages_in_creation_order(uow: InMemoryUnitOfWork) -> None:
    clock = ticking_clock()
    made = [
        services.create_product(uow, new(f"SKU-{i:02d}"), clock=lambda: next(clock)).product
        for i in range(5)
    ]
    page = services.list_products(uow, ProductFilter(), None, 2)
    assert page.items == made[:2] and page.next == made[1].sort_key
    page = services.list_products(uow, ProductFilter(), page.next, 2)
    assert page.items == made[2:4]
    page = services.list_products(uow, ProductFilter(), page.next, 2)
    assert page.items == made[4:] and page.next is None


def test_list_exact_multiple_has_no_empty_last_page(uow: InMemoryUnitOfWork) -> None:
    for i in range(4):
        create(uow, f"SKU-{i}")
    page = services.list_products(uow, ProductFilter(), None, 4)
    assert len(page.items) == 4 and page.next is None


def test_list_filters(uow: InMemoryUnitOfWork) -> None:
    create(uow, "A-1", name="Red Kettle", category="kitchen", price=Decimal("30"))
    create(uow, "A-2", name="Blue kettle", category="kitchen", price=Decimal("50"))
    create(uow, "A-3", name="Kettlebell", category="sport", price=Decimal("40"))
    create(uow, "A-4", name="Spoon", category="kitchen", price=Decimal("3"))

    def skus(**f: object) -> list[str]:
        items = services.list_products(uow, ProductFilter(**f), None, 10).items  # type: ignore[arg-type]
        return [p.sku for p in items]

    assert skus(category="kitchen") == ["A-1", "A-2", "A-4"]
    assert skus(q="KETTLE") == ["A-1", "A-2", "A-3"]
    assert skus(q="kettle", category="kitchen", min_price=Decimal("40")) == ["A-2"]
    assert skus(min_price=Decimal("30"), max_price=Decimal("40")) == ["A-1", "A-3"]
    assert skus(category="none") == []


def test_update(uow: InMemoryUnitOfWork) -> None:
    p = create(uow)
    updated = services.update_product(uow, p.id, {"price": Decimal("7.5")})
    assert updated.price == Decimal("7.50") and updated.version == 2
    assert services.get_product(uow, p.id) == updated


def test_update_without_change_does_not_commit(uow: InMemoryUnitOfWork) -> None:
    p = create(uow)
    assert services.update_product(uow, p.id, {"name": p.name}) == p
    assert uow.commits == 1


def test_update_conflicts(uow: InMemoryUnitOfWork) -> None:
    p = create(uow, "SKU-1")
    create(uow, "SKU-2")
    with pytest.raises(services.DuplicateSku):
        services.update_product(uow, p.id, {"sku": "SKU-2"})
    with pytest.raises(services.PreconditionFailed):
        services.update_product(uow, p.id, {"name": "x"}, expected_version=9)
    with pytest.raises(services.ProductNotFound):
        services.update_product(uow, "missing", {"name": "x"})
    assert services.get_product(uow, p.id) == p


def test_delete(uow: InMemoryUnitOfWork) -> None:
    p = create(uow)
    with pytest.raises(services.PreconditionFailed):
        services.delete_product(uow, p.id, expected_version=2)
    services.delete_product(uow, p.id, expected_version=1)
    with pytest.raises(services.ProductNotFound):
        services.delete_product(uow, p.id)


def test_seed_demo_only_into_an_empty_catalog(uow: InMemoryUnitOfWork) -> None:
    assert seed_demo(uow) == len(DEMO_PRODUCTS) >= 20
    assert seed_demo(uow) == 0
    page = services.list_products(uow, ProductFilter(), None, 100)
    assert len(page.items) == len(DEMO_PRODUCTS)
    assert len({p.category for p in page.items}) >= 4
