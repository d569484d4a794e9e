"""Demo products for `python -m services.catalog init --seed-demo` (only into an empty table)."""

from __future__ import annotations

from decimal import Decimal

from ..adapters.repository import ProductFilter
from .services import NewProduct, create_product
from .unit_of_work import AbstractUnitOfWork

__all__ = ["DEMO_PRODUCTS", "seed_demo"]

_RAW = [
    ("BK-0001", "The Pragmatic Programmer", "books", "39.90", "20th anniversary edition."),
    ("BK-0002", "Designing Data-Intensive Applications", "books", "44.50", "Kleppmann."),
    ("BK-0003", "Architecture Patterns with Python", "books", "36.00", "Percival and Gregory."),
    ("BK-0004", "Release It!", "books", "32.99", "Design and deploy production-ready software."),
    ("EL-0001", "USB-C Charger 65 W", "electronics", "29.99", "GaN, two ports."),
    ("EL-0002", "Noise-Cancelling Headphones", "electronics", "249.00", "30 h battery."),
    ("EL-0003", "Mechanical Keyboard", "electronics", "119.00", "Hot-swappable switches."),
    ("EL-0004", "27-inch 4K Monitor", "electronics", "329.90", "IPS, USB-C 90 W."),
    ("KT-0001", "Chef's Knife 20 cm", "kitchen", "89.00", "Forged stainless steel."),
    ("KT-0002", "Cast Iron Skillet 26 cm", "kitchen", "45.00", "Pre-seasoned."),
    ("KT-0003", "Pour-Over Coffee Set", "kitchen", "34.50", "Dripper, server and filters."),
    ("KT-0004", "Digital Kitchen Scale", "kitchen", "19.99", "0.1 g resolution."),
    ("OD-0001", "Trail Running Shoes", "outdoor", "139.00", "Grippy sole, 8 mm drop."),
    ("OD-0002", "Two-Person Tent", "outdoor", "199.00", "Freestanding, 1.9 kg."),
    ("OD-0003", "Insulated Water Bottle 750 ml", "outdoor", "24.90", "Keeps cold for 24 h."),
    ("OD-0004", "Headlamp 400 lm", "outdoor", "39.00", "Rechargeable."),
    ("TY-0001", "Wooden Building Blocks", "toys", "29.00", "100 pieces, beech."),
    ("TY-0002", "Beginner Chess Set", "toys", "22.00", "Folding board."),
    ("TY-0003", "Remote Control Car", "toys", "59.90", "1:18 scale, 25 km/h."),
    ("TY-0004", "1000-Piece Jigsaw Puzzle", "toys", "17.50", "Alpine lake."),
]

DEMO_PRODUCTS = [
    NewProduct(sku=s, name=n, category=c, price=Decimal(p), description=d) for s, n, c, p, d in _RAW
]


def seed_demo(uow: AbstractUnitOfWork) -> int:
    """Insert the demo products when there are no products at all; returns how many."""
    with uow:
        if uow.products.list(ProductFilter(), None, 1):
            return 0
    for product in DEMO_PRODUCTS:
        create_product(uow, product)
    return len(DEMO_PRODUCTS)
